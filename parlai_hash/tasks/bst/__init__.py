"""Blended Skill Talk for fine-tuning: ``-t bst``.

``episodes`` reads the raw release (``{split}.json``) and turns an episode into
ParlAI messages exactly as ParlAI's ``blended_skill_talk`` teacher does, with
the persona and seed context optional; ``agents`` is the teacher, which finds
the file (``--bst-datafile``) or has ParlAI's own builder download it. The data
card is ``tasks/bst.md``.
"""
