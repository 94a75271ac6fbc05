"""Make ``-m hash_generator`` (and our tasks) resolvable by ParlAI's loader.

ParlAI finds ``-m NAME`` as ``parlai.agents.NAME.NAME``. A ``.pth`` file runs
``import parlai_hash._import_hook`` at interpreter start; that installs one
``sys.meta_path`` finder, which costs well under a millisecond and imports
neither torch nor ParlAI. The finder

* aliases ``parlai.agents.<ours>[.sub]`` to ``parlai_hash.agents.<ours>[.sub]``
  and ``parlai.tasks.<ours>`` to ``parlai_hash.tasks.<ours>`` (the same module
  object, so classes are not duplicated), and
* runs a hook right after some ParlAI modules are imported: the
  ``parlai_hash.compat`` fixes, and the registration of our ``parlai <command>``
  scripts when ParlAI sets up its script registry; and one just before ParlAI
  itself is first imported (a warnings filter for ParlAI's ``pkg_resources``).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from typing import Optional

#: ParlAI package path -> our package path. Only names ParlAI itself lacks; a
#: target that does not exist (yet) is simply not found.
ALIASES = {
    'parlai.agents.hash_generator': 'parlai_hash.agents.hash_generator',
    'parlai.agents.switch_generator': 'parlai_hash.agents.switch_generator',
    'parlai.agents.base_generator': 'parlai_hash.agents.base_generator',
    'parlai.agents.mixed_generator': 'parlai_hash.agents.mixed_generator',
    'parlai.tasks.pushshift_reddit': 'parlai_hash.tasks.pushshift_reddit',
    'parlai.tasks.wikitext103': 'parlai_hash.tasks.wikitext103',
    'parlai.tasks.bst': 'parlai_hash.tasks.bst',
}

#: ParlAI module -> "our_module:function(name, module)" run right after it is
#: imported. Strings, so that start-up imports nothing. The compat entries must
#: match ``parlai_hash.compat.FIXES`` (a test checks).
AFTER_IMPORT = {
    'parlai.nn.lr_scheduler': 'parlai_hash.compat:patch_module',
    'parlai.core.dict': 'parlai_hash.compat:patch_module',
    'parlai.core.torch_agent': 'parlai_hash.compat:patch_module',
    'parlai.utils.distributed': 'parlai_hash.compat:patch_module',
    'parlai.core.torch_generator_agent': 'parlai_hash.compat:patch_module',
    'parlai.utils.fsdp': 'parlai_hash.compat:patch_module',
    'parlai.core.opt': 'parlai_hash.compat:patch_module',
    'parlai.core.agents': 'parlai_hash.compat:patch_module',
    'parlai.scripts.multiprocessing_train': 'parlai_hash.compat:patch_module',
    'parlai.scripts.build_dict': 'parlai_hash.compat:patch_module',
    'parlai.core.script': 'parlai_hash.scripts:extend_registry',
    'parlai.scripts.train_model': 'parlai_hash.train_hooks:extend_train_loop',
}


#: "our_module:function()" run once, just before ParlAI itself is first imported:
#: what must be in place before any ParlAI module runs (a warnings filter).
BEFORE_PARLAI = 'parlai_hash.compat:silence_pkg_resources_warning'


def _call(target: str, *args) -> None:
    module, func = target.split(':')
    getattr(importlib.import_module(module), func)(*args)


def alias_target(fullname: str) -> Optional[str]:
    for alias, target in ALIASES.items():
        if fullname == alias or fullname.startswith(alias + '.'):
            return target + fullname[len(alias) :]
    return None


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target
        self.real_spec = None

    def create_module(self, spec):
        module = importlib.import_module(self.target)
        self.real_spec = module.__spec__
        return module

    def exec_module(self, module):
        # The import system stamped the alias spec on the shared module; put
        # the real one back so pickling and reloading see the true name.
        module.__spec__ = self.real_spec


class _AfterImportLoader(importlib.abc.Loader):
    """Wraps a ParlAI module's own loader and runs our hook after it."""

    def __init__(self, loader, name: str):
        self.loader = loader
        self.name = name

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        _call(AFTER_IMPORT[self.name], self.name, module)

    def __getattr__(self, attr):
        return getattr(self.loader, attr)


class ParlaiHashFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname == 'parlai':
            _call(BEFORE_PARLAI)  # then the normal finders import ParlAI
            return None
        if not fullname.startswith('parlai.'):
            return None
        aliased = alias_target(fullname)
        if aliased is not None:
            real = importlib.util.find_spec(aliased)
            if real is None:
                return None
            return importlib.util.spec_from_loader(
                fullname,
                _AliasLoader(aliased),
                is_package=real.submodule_search_locations is not None,
            )
        if fullname in AFTER_IMPORT:
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, 'find_spec'):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    spec.loader = _AfterImportLoader(spec.loader, fullname)
                    return spec
        return None


def install() -> None:
    if not any(isinstance(f, ParlaiHashFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, ParlaiHashFinder())


install()
