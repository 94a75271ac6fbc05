"""Make ``-m hash_generator`` (and our tasks) resolvable by ParlAI's loader.

ParlAI finds ``-m NAME`` as ``parlai.agents.NAME.NAME``. A ``.pth`` file runs
``import parlai_hash._import_hook`` at interpreter start; that installs one
``sys.meta_path`` finder, which costs well under a millisecond and imports
neither torch nor ParlAI. The finder

* aliases ``parlai.agents.<ours>[.sub]`` to ``parlai_hash.agents.<ours>[.sub]``
  (the same module object, so classes are not duplicated), and
* runs ``parlai_hash.compat`` fixes right after the ParlAI modules they repair
  are imported.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from typing import Optional

#: ParlAI package path -> our package path. Only names ParlAI itself lacks.
ALIASES = {
    'parlai.agents.hash_generator': 'parlai_hash.agents.hash_generator',
}

#: Must match ``parlai_hash.compat.FIXES`` (kept here so start-up imports nothing).
PATCHED_MODULES = frozenset({'parlai.nn.lr_scheduler', 'parlai.core.dict'})


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


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, loader, name: str):
        self.loader = loader
        self.name = name

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        from parlai_hash import compat

        compat.patch_module(self.name, module)

    def __getattr__(self, attr):
        return getattr(self.loader, attr)


class ParlaiHashFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
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
        if fullname in PATCHED_MODULES:
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, 'find_spec'):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    spec.loader = _PatchingLoader(spec.loader, fullname)
                    return spec
        return None


def install() -> None:
    if not any(isinstance(f, ParlaiHashFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, ParlaiHashFinder())


install()
