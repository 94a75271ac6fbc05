"""WikiText-103 language modelling as a ParlAI task: ``-t wikitext103``.

``articles`` splits a ``wiki.*.tokens`` file into articles, ``sentences``
splits an article into sentences, ``examples`` turns sentences or fixed chunks
into (context, label) examples, ``settings`` reads and checks the options that
choose between them, ``splits`` finds or carves the split file, ``build``
downloads the official archive, ``agents`` is the ParlAI teacher. The data card
is ``tasks/wikitext103.md``.
"""
