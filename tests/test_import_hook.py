"""The .pth import hook: cheap at start-up, aliases our agents, runs compat fixes."""

import subprocess
import sys


def run_python(code):
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=120, check=True).stdout.strip()


def test_hook_is_installed_at_startup_without_torch_or_parlai():
    out = run_python(
        "import sys; from parlai_hash._import_hook import ParlaiHashFinder;"
        "print(any(isinstance(f, ParlaiHashFinder) for f in sys.meta_path),"
        " 'torch' in sys.modules, 'parlai' in sys.modules)"
    )
    assert out == 'True False False'


def test_agent_alias_is_the_same_module_with_its_real_name():
    out = run_python(
        "import parlai.agents.hash_generator.hash_generator as a;"
        "import parlai_hash.agents.hash_generator.hash_generator as b;"
        "print(a is b, a.__spec__.name, a.HashGeneratorAgent.__module__)"
    )
    assert out == ('True parlai_hash.agents.hash_generator.hash_generator '
                   'parlai_hash.agents.hash_generator.hash_generator')


def test_parlai_loader_resolves_short_name():
    out = run_python(
        "from parlai.core.loader import load_agent_module;"
        "print(load_agent_module('hash_generator').__name__)"
    )
    assert out == 'HashGeneratorAgent'


def test_parlai_loader_resolves_base_generator_to_the_base_layers_agent():
    out = run_python(
        "from parlai.core.loader import load_agent_module;"
        "print(load_agent_module('base_generator').__name__,"
        " load_agent_module('mixed_generator').__name__)"
    )
    assert out == 'BaseLayersGeneratorAgent MixedGeneratorAgent'


def test_unrelated_parlai_names_are_untouched():
    out = run_python(
        "import importlib.util; print(importlib.util.find_spec('parlai.agents.nonexistent_xyz'))"
    )
    assert out == 'None'
