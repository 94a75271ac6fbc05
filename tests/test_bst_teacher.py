"""``-t bst``: same messages as ParlAI's blended_skill_talk, options, errors."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import PARLAI, SHARED_DATA, requires_shared
from parlai_hash.errors import OptionError
from parlai_hash.tasks.bst.episodes import episode_messages

FIXTURE = Path(__file__).parent / 'fixtures' / 'bst' / 'valid.json'
REGRESSION = SHARED_DATA / 'blended_skill_talk' / 'parlai_regression_fixtures'


def teacher(task, *args, datapath):
    from parlai.core.params import ParlaiParser
    from parlai.core.teachers import create_task_agent_from_taskname

    opt = ParlaiParser(True, False).parse_args(['-t', task, '--datapath', str(datapath), *args])
    return create_task_agent_from_taskname(opt)[0]


def messages(task, *args, datapath):
    t = teacher(task, *args, datapath=datapath)
    out = []
    while not t.epoch_done():
        out.append(dict(t.act()))
    return out


def fixture_episodes():
    return json.loads(FIXTURE.read_text(encoding='utf-8'))


@pytest.fixture
def built_datapath(tmp_path):
    """A datapath where ParlAI's own builder has already run on the fixture."""
    from parlai.core import build_data
    from parlai.tasks.blended_skill_talk.build import _create_parlai_format

    dpath = tmp_path / 'blended_skill_talk'
    dpath.mkdir()
    for split in ('train', 'valid', 'test'):
        shutil.copy(FIXTURE, dpath / f'{split}.json')
    _create_parlai_format(str(dpath))
    build_data.mark_done(str(dpath), 'v1.5')
    return tmp_path


def _without_artefacts(message):
    # ParlAI writes each example as a text line ending in ' \n' and reads the
    # space back into the last field (guided_chosen_suggestion or the last
    # label candidate); the ids differ by design.
    out = {k: v for k, v in message.items() if k != 'id'}
    if 'guided_chosen_suggestion' in out:
        out['guided_chosen_suggestion'] = out['guided_chosen_suggestion'].strip()
    if 'label_candidates' in out:
        out['label_candidates'] = [c.strip() for c in out['label_candidates']]
    return out


@pytest.mark.parametrize('datatype', ['train:ordered', 'valid'])
def test_defaults_give_exactly_parlai_blended_skill_talk_messages(built_datapath, datatype):
    theirs = messages('blended_skill_talk', '-dt', datatype, datapath=built_datapath)
    ours = messages('bst', '-dt', datatype, datapath=built_datapath)  # reads the built valid.json
    assert len(ours) == len(theirs) == 6  # 3 + 2 + 1 pairs; the trailing free turn is dropped
    assert [_without_artefacts(m) for m in ours] == [_without_artefacts(m) for m in theirs]
    assert ours[2]['eval_labels' if datatype == 'valid' else 'labels'] == [
        'Anything that changes colour | or explodes, safely.']


def test_persona_and_context_options():
    wow = fixture_episodes()[0]
    first = lambda persona, context: episode_messages(wow, persona, context)[0]['text'].split('\n')
    assert first('self', True) == [
        'your persona: i teach chemistry at a high school.',
        'your persona: i grow tomatoes on my balcony.',
        'Catamaran',
        'Have you ever sailed on a catamaran?',
        'Only once, they feel much steadier than a monohull.',
        'Why are they steadier?',
    ]
    assert first('both', False) == [
        'your persona: i teach chemistry at a high school.',
        'your persona: i grow tomatoes on my balcony.',
        "partner's persona: i restore old sailboats.",
        "partner's persona: my dog is named pepper.",
        'Why are they steadier?',
    ]
    assert first('none', False) == ['Why are they steadier?']
    assert first('none', True)[0] == 'Catamaran'
    # The EmpatheticDialogues situation is never shown, as in ParlAI.
    ed = episode_messages(fixture_episodes()[1], 'none', True)[0]['text']
    assert 'relieved' not in ed and ed.startswith('I finally unpacked the last box today!')
    # Later turns are the free message alone.
    assert episode_messages(wow, 'both', True)[1]['text'] == 'Do you sail often?'


def test_options_reach_the_teacher_and_folder_or_file_both_work(tmp_path):
    by_folder = messages('bst', '--bst-datafile', str(FIXTURE.parent), '-dt', 'valid',
                         '--bst-persona', 'none', '--bst-context', 'false', datapath=tmp_path)
    by_file = messages('bst', '--bst-datafile', str(FIXTURE), '-dt', 'valid',
                       '--bst-persona', 'none', '--bst-context', 'false', datapath=tmp_path)
    assert by_folder == by_file
    assert by_file[0]['text'] == 'Why are they steadier?'
    assert [m['episode_done'] for m in by_file] == [False, False, True, False, True, True]


def test_stream_mode_counts_without_writing_beside_the_data(tmp_path):
    folder = tmp_path / 'bst'
    folder.mkdir()
    shutil.copy(FIXTURE, folder)
    t = teacher('bst', '--bst-datafile', str(folder / 'valid.json'), '-dt', 'valid:stream',
                datapath=tmp_path)
    assert (t.num_episodes(), t.num_examples()) == (3, 6)
    assert [p.name for p in folder.iterdir()] == ['valid.json']


@pytest.mark.parametrize('content, problem', [
    ('{"personas": ', 'is not JSON'),
    ('{"a": 1}', 'is not a non-empty list of episodes'),
    ('[{"dialogue": ["hi", "hello"], "speaker persona": []}]', "episode 0 has 'dialogue', not 'dialog'"),
    ('[{"personas": [[], []], "dialog": []}]', 'episode 0 lacks context_dataset, free_turker_utterance'),
])
def test_bad_files_are_one_line_errors_naming_the_option(tmp_path, content, problem):
    bad = tmp_path / 'valid.json'
    bad.write_text(content, encoding='utf-8')
    with pytest.raises(OptionError) as err:
        messages('bst', '--bst-datafile', str(bad), '-dt', 'valid', datapath=tmp_path)
    assert str(err.value).startswith('--bst-datafile: ') and problem in str(err.value)
    assert '\n' not in str(err.value)


def test_a_wizard_episode_without_its_topic_is_refused(tmp_path):
    episodes = fixture_episodes()
    del episodes[0]['additional_context']
    bad = tmp_path / 'valid.json'
    bad.write_text(json.dumps(episodes), encoding='utf-8')
    with pytest.raises(OptionError, match='episode 0 comes from wizard_of_wikipedia but has no'):
        messages('bst', '--bst-datafile', str(bad), '-dt', 'valid', datapath=tmp_path)


def test_missing_split_in_a_folder_names_the_file(tmp_path):
    with pytest.raises(OptionError, match=r'--bst-datafile: .*/bst/train\.json does not exist'):
        teacher('bst', '--bst-datafile', str(FIXTURE.parent), '-dt', 'train', datapath=tmp_path)


def test_offline_without_a_datafile_is_one_line(tmp_path, monkeypatch):
    from parlai.core import build_data

    def no_network(url, path, fname, *args, **kwargs):
        raise RuntimeError('Connection broken too many times. Stopped retrying.')

    monkeypatch.setattr(build_data, 'download', no_network)
    with pytest.raises(OptionError) as err:
        teacher('bst', '-dt', 'valid', datapath=tmp_path)
    message = str(err.value)
    assert message.startswith('--bst-datafile: could not download BST') and '\n' not in message
    assert 'blended_skill_talk.tar.gz' in message and 'pass --bst-datafile' in message


@requires_shared(REGRESSION)
@pytest.mark.parametrize('split, datatype', [('train', 'train:ordered'), ('valid', 'valid')])
def test_messages_have_the_fields_of_parlai_regression_fixture(tmp_path, split, datatype):
    acts = yaml.safe_load((REGRESSION / f'blended_skill_talk_{split}.yml').read_text())['acts']
    real = [a[0] for a in acts]
    episodes = fixture_episodes()
    if split == 'train':  # the release has label candidates for valid and test only
        for episode in episodes:
            del episode['label_candidates']
    datafile = tmp_path / f'{split}.json'
    datafile.write_text(json.dumps(episodes), encoding='utf-8')
    ours = messages('bst', '--bst-datafile', str(datafile), '-dt', datatype, datapath=tmp_path)
    assert {frozenset(m) for m in real} == {frozenset(m) for m in ours[:2]}
    real_lines, our_lines = real[0]['text'].split('\n'), ours[0]['text'].split('\n')
    assert [l.startswith('your persona: ') for l in real_lines[:3]] == [True, True, False]
    assert [l.startswith('your persona: ') for l in our_lines[:3]] == [True, True, False]
    assert real_lines[-1] == real[0]['free_message'] and our_lines[-1] == ours[0]['free_message']


def test_display_data_and_a_bad_file_through_the_parlai_command(tmp_path, cli_env):
    proc = subprocess.run(
        [PARLAI, 'display_data', '-t', 'bst', '--bst-datafile', str(FIXTURE), '-dt', 'valid',
         '-n', '3', '--datapath', str(tmp_path)],
        capture_output=True, text=True, env=cli_env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    shown = proc.stdout[proc.stdout.index('NEW EPISODE'):]
    assert 'your persona: i teach chemistry at a high school.\n' in shown
    assert '   Two hulls spread the weight, so they barely heel.' in shown

    bad = tmp_path / 'valid.json'
    bad.write_text('not json', encoding='utf-8')
    proc = subprocess.run(
        [PARLAI, 'display_data', '-t', 'bst', '--bst-datafile', str(bad), '-dt', 'valid',
         '--datapath', str(tmp_path)],
        capture_output=True, text=True, env=cli_env, timeout=300,
    )
    errors = [l for l in proc.stderr.splitlines() if l.startswith('parlai-hash: error:')]
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr
    assert len(errors) == 1 and '--bst-datafile' in errors[0] and 'is not JSON' in errors[0]
