"""Sweeps that regenerate the paper's tables and figures.

A sweep file (``sweeps/*.yaml``) names a grid of ``parlai train_model`` runs
at the paper's size and at a scaled-down ``local`` twin. Modules, one job each:

* ``spec``: load and check a sweep file, expand it into points;
* ``runner``: which points to run (skip finished, add needed ones);
* ``local`` / ``slurm``: run them here one by one, or submit them (submitit);
* ``worker``: train one point in this process and write its record;
* ``records``: the per-point JSON record (atomic);
* ``report``: the paper's table with pandas (text, CSV, Markdown);
* ``plots`` / ``figures``: the paper's figures with matplotlib;
* ``expert_load``: tokens per expert of a trained model (``parlai expert_load``);
* ``sizing``: parameter counts without training (``params``);
* ``model_cards``: fill the generated parts of ``model_cards/*.md``;
* ``cli``: the command line.
"""
