"""The sparse layer does not know about workers: importing it loads no module that uses torch.distributed."""

import ast
import json
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / 'parlai_hash'


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _imports_distributed_at_top(path: Path) -> bool:
    """Whether the module's own body (not a function) imports torch.distributed."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import) and any(a.name.startswith('torch.distributed') for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith('torch.distributed'):
                return True
            if node.module == 'torch' and any(a.name == 'distributed' for a in node.names):
                return True
    return False


def distributed_modules() -> set:
    return {_module_name(p) for p in PACKAGE.rglob('*.py') if _imports_distributed_at_top(p)}


def test_importing_the_sparse_layer_loads_no_distributed_module():
    found = distributed_modules()
    # The scan sees the modules that move tokens between workers (else the check below is empty).
    assert {'parlai_hash.parallel.exchange', 'parlai_hash.parallel.sharded_experts'} <= found
    code = ('import json, sys, parlai_hash.layers; '
            'print(json.dumps(sorted(m for m in sys.modules if m.startswith("parlai_hash"))))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert 'parlai_hash.layers' in loaded
    assert not loaded & found, f'parlai_hash.layers imports {sorted(loaded & found)}'
    assert not any(m == 'parlai_hash.parallel' or m.startswith('parlai_hash.parallel.') for m in loaded)
