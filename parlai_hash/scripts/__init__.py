"""Our ``parlai <command>`` scripts.

ParlAI's ``parlai`` entry point imports every module of ``parlai.scripts`` so
that their ``@register_script`` decorators run. Right after
``parlai.core.script`` is imported, ``extend_registry`` (called by the import
hook) makes that set-up import the modules of this package too. Each script
module here uses ``@register_script('name')`` like ParlAI's own.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

_MARK = '_parlai_hash_scripts'


def import_all() -> None:
    """Import every script module here, so each registers itself."""
    for info in pkgutil.iter_modules(__path__, __name__ + '.'):
        importlib.import_module(info.name)


def extend_registry(name: str, module: ModuleType) -> None:
    """Wrap ``parlai.core.script.setup_script_registry`` to add our scripts."""
    original = module.setup_script_registry
    if getattr(original, _MARK, False):
        return

    def setup_script_registry():
        original()
        import_all()

    setup_script_registry.__doc__ = original.__doc__
    setattr(setup_script_registry, _MARK, True)
    module.setup_script_registry = setup_script_registry
