"""Raw BST episodes -> ParlAI messages, as ParlAI's ``blended_skill_talk`` builds them.

ParlAI (``parlai/tasks/blended_skill_talk/build.py: _get_line``) makes one
example per pair of turns: the free worker's message is the text, the guided
worker's reply the label. The first text is prefixed by the guided worker's
persona ("your persona: ..."), the Wizard of Wikipedia topic when the seed came
from WoW (never the EmpatheticDialogues situation), and the two seed
utterances. Here the persona and the topic+seed context are options, so a
model can be fine-tuned with or without them; the defaults reproduce ParlAI.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

from parlai_hash.errors import OptionError

PERSONA_MODES = ('self', 'both', 'none')
SUGGESTION_TASKS = ('convai2', 'empathetic_dialogues', 'wizard_of_wikipedia')
REQUIRED_KEYS = (
    'personas', 'context_dataset', 'free_turker_utterance', 'guided_turker_utterance', 'dialog',
)
_OPTION = '--bst-datafile'
_WANTED = (
    'pass the train/valid/test.json of the BST release (a list of episodes with personas, '
    'dialog, ...)'
)


def load_episodes(path: Path) -> List[Dict[str, Any]]:
    """The episodes of a raw BST ``{split}.json``; a one-line error if it is not one."""
    try:
        with open(path, encoding='utf-8') as f:
            episodes = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise OptionError(_OPTION, f'{path} is not JSON ({err})', _WANTED) from None
    if not isinstance(episodes, list) or not episodes:
        raise OptionError(_OPTION, f'{path} is not a non-empty list of episodes', _WANTED)
    for index, episode in enumerate(episodes):
        _check_episode(path, index, episode)
    return episodes


def _check_episode(path: Path, index: int, episode: Any) -> None:
    def bad(problem: str) -> OptionError:
        return OptionError(_OPTION, f'{path}: episode {index} {problem}', _WANTED)

    if not isinstance(episode, dict):
        raise bad('is not an object')
    if 'dialogue' in episode and 'dialog' not in episode:
        raise bad("has 'dialogue', not 'dialog': a derived format, not the raw release")
    missing = [k for k in REQUIRED_KEYS if k not in episode]
    if missing:
        raise bad(f'lacks {", ".join(missing)}')
    personas = episode['personas']
    if not (isinstance(personas, list) and len(personas) == 2
            and all(isinstance(p, list) and all(isinstance(s, str) for s in p) for p in personas)):
        raise bad('has personas that are not two lists of strings')
    dialog = episode['dialog']
    if not (isinstance(dialog, list)
            and all(isinstance(t, list) and len(t) == 2 and isinstance(t[1], str) for t in dialog)):
        raise bad('has a dialog that is not a list of [speaker, text] pairs')
    for key in ('suggestions', 'chosen_suggestions'):
        if key in episode and len(episode[key]) != len(dialog):
            raise bad(f'has {len(episode[key])} {key} for {len(dialog)} dialog turns')
    guided_turns = range(1, len(dialog), 2)
    if 'suggestions' in episode and not all(
        isinstance(episode['suggestions'][i], dict)
        and all(t in episode['suggestions'][i] for t in SUGGESTION_TASKS)
        for i in guided_turns
    ):
        raise bad(f'has a guided turn whose suggestions lack one of {", ".join(SUGGESTION_TASKS)}')
    if 'label_candidates' in episode and len(episode['label_candidates']) < len(guided_turns):
        raise bad(f'has label_candidates for fewer than its {len(guided_turns)} guided turns')
    if episode['context_dataset'] == 'wizard_of_wikipedia' and not isinstance(
        episode.get('additional_context'), str
    ):
        raise bad('comes from wizard_of_wikipedia but has no additional_context (its topic)')


def first_turn_context(episode: Dict[str, Any], persona: str, context: bool) -> List[str]:
    """Lines put before the first free message."""
    lines: List[str] = []
    if persona in ('self', 'both'):
        lines += [f'your persona: {p}' for p in episode['personas'][1]]
    if persona == 'both':
        lines += [f"partner's persona: {p}" for p in episode['personas'][0]]
    if context:
        if episode['context_dataset'] == 'wizard_of_wikipedia':
            lines.append(episode['additional_context'])
        lines += [episode['free_turker_utterance'], episode['guided_turker_utterance']]
    return lines


def episode_messages(episode: Dict[str, Any], persona: str, context: bool) -> List[Dict[str, Any]]:
    """One message per (free, guided) pair of turns; a trailing free turn is dropped."""
    dialog = episode['dialog']
    messages = []
    for entry in range(len(dialog) // 2):
        free, guided = 2 * entry, 2 * entry + 1
        text = dialog[free][1]
        if entry == 0:
            text = '\n'.join(first_turn_context(episode, persona, context) + [text])
        message: Dict[str, Any] = {
            'text': text,
            'labels': [dialog[guided][1]],
            'context_dataset': episode['context_dataset'],
            'free_message': dialog[free][1],
        }
        if 'suggestions' in episode:
            message.update({t: episode['suggestions'][guided][t] for t in SUGGESTION_TASKS})
        if 'chosen_suggestions' in episode:
            message['guided_chosen_suggestion'] = episode['chosen_suggestions'][guided]
        if 'label_candidates' in episode:
            # Indexed by the guided worker's turn, i.e. by example.
            message['label_candidates'] = list(episode['label_candidates'][entry])
        messages.append(message)
    return messages
