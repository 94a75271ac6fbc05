"""Token frequencies on a task's training data, for ``balanced`` hash tables.

ParlAI's word dictionaries carry the training counts, but a byte-level BPE
dictionary is loaded with every count set to 1 (``parlai/utils/bpe.py``,
``sync_with_dict``): nothing to balance on. Then we count ourselves, the way
``parlai build_dict`` reads the data: the training split, in order, text and
labels, through the model's own tokenizer.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

import torch
from parlai.utils import logging as logger  # ParlAI's log: shown at its --loglevel


def counts_are_informative(counts: torch.Tensor) -> bool:
    """False when every (non-special) token has the same count, e.g. all 1."""
    seen = counts[counts > 0]
    return seen.numel() > 0 and bool(seen.max() > seen.min())


def count_training_tokens(opt: Mapping[str, Any], dictionary, max_examples: int) -> torch.Tensor:
    """``[len(dictionary)]`` counts over up to ``max_examples`` training examples."""
    from parlai.agents.repeat_label.repeat_label import RepeatLabelAgent
    from parlai.core.worlds import create_task

    task_opt = copy.deepcopy(dict(opt))
    task_opt.update(datatype='train:ordered', batchsize=1, num_epochs=1)
    task_opt.pop('pytorch_teacher_task', None)
    world = create_task(task_opt, RepeatLabelAgent(task_opt))
    counts = torch.zeros(len(dictionary), dtype=torch.float64)
    examples = 0
    while examples < max_examples and not world.epoch_done():
        world.parley()
        message = world.get_acts()[0]
        texts = [message.get('text') or '']
        texts += list(message.get('labels') or message.get('eval_labels') or [])[:1]
        for text in texts:
            if text:
                ids = torch.as_tensor(dictionary.txt2vec(text), dtype=torch.long)
                counts += torch.bincount(ids, minlength=len(dictionary)).to(torch.float64)
        examples += 1
    logger.info(f"counted token frequencies on {examples} training examples for the hash table")
    return counts
