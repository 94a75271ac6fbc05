"""parlai-hash: Hash Layers (Roller et al., 2021) and sparse baselines for ParlAI.

Kept import-free: a ``.pth`` hook imports ``parlai_hash._import_hook`` at every
interpreter start, so nothing here may pull in torch or ParlAI.
"""

__version__ = "0.1.0"
