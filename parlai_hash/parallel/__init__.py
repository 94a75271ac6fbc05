"""Expert parallelism (``--expert-parallel``): each of W workers holds K/W experts.

Rank r owns the contiguous block of experts ``[r·K/W, (r+1)·K/W)`` of every
sparse layer (under MultiHash, those copies of every segment); the dense
parameters stay data-parallel. Everything that knows about workers is here;
the sparse layer (``parlai_hash.layers``) does not:

* ``exchange``: moving a dispatch plan's rows to the workers that own their
  experts and back (``all_to_all_single`` with autograd), derived from the
  plan's counts once per plan.
* ``sharded_experts``: ``ShardedExpertFFN`` / ``ShardedMultiHashExpertFFN``,
  called like the local expert modules and swapped into ``ffn.experts`` when
  a model is built for expert-parallel training; in eval mode they run a
  gathered copy of all K experts, so evaluation needs no collective.
* ``training``: ``ExpertParallel``, one model trained this way (sharding it,
  DDP, gradients, norms, optimizer state, whole checkpoints).
* ``agent``: the hooks a ParlAI agent needs around that (saving, updates,
  evaluation, resuming).
"""
