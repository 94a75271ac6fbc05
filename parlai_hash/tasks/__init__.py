"""ParlAI teachers; reachable as ``-t pushshift_reddit``, ``-t wikitext103`` and
``-t bst`` through the import hook (``parlai_hash._import_hook.ALIASES``).

Task data cards (sources, licences, formats) live in the top-level ``tasks/``
folder; the code lives here so the only installed import name is ``parlai_hash``.
"""
