"""WikiText-103 language modelling as a ParlAI task: ``-t wikitext103``.

``articles`` splits a ``wiki.*.tokens`` file into articles, ``examples`` cuts an
article into (context, label) chunks, ``splits`` finds or carves the split file,
``build`` downloads the official archive, ``agents`` is the ParlAI teacher. The
data card is ``tasks/wikitext103.md``.
"""
