"""``-t wikitext103`` units through ParlAI: sentence by default, chunk kept for old commands."""

from pathlib import Path

import pytest

from conftest import SHARED_DATA, requires_shared
from parlai_hash.errors import OptionError
from parlai_hash.tasks.wikitext103.articles import read_articles
from parlai_hash.tasks.wikitext103.settings import example_settings

FIXTURE_DIR = Path(__file__).parent / 'fixtures' / 'wikitext'
WT103_DIR = SHARED_DATA / 'wikitext-103'


def teacher(*args, datapath, folder=FIXTURE_DIR):
    from parlai.core.params import ParlaiParser
    from parlai.core.teachers import create_task_agent_from_taskname

    opt = ParlaiParser(True, False).parse_args(
        ['-t', 'wikitext103', '--wikitext-dir', str(folder), '--datapath', str(datapath), *args])
    return create_task_agent_from_taskname(opt)[0]


def messages(*args, datapath, folder=FIXTURE_DIR):
    t = teacher(*args, datapath=datapath, folder=folder)
    out = []
    while not t.epoch_done():
        out.append(t.act())
    return out


def test_sentence_is_the_default_and_chunk_tokens_keep_the_chunk_unit():
    assert example_settings({}).unit == 'sentence' and example_settings({}).max_tokens == 64
    assert example_settings({'wikitext_chunk_tokens': 16}).unit == 'chunk'
    chunk = example_settings({'wikitext_unit': 'chunk'})
    assert (chunk.unit, chunk.max_tokens, chunk.context_tokens) == ('chunk', 256, 0)


def test_an_old_chunk_command_gives_the_examples_it_always_gave(tmp_path):
    valid = messages('-dt', 'valid', '--wikitext-chunk-tokens', '16', datapath=tmp_path)
    # Messages as the chunk-only teacher produced them.
    assert {k: valid[1][k] for k in ('text', 'eval_labels', 'wikitext_title', 'wikitext_chunk')} == {
        'text': '<eos> = Lake Vostrava = <eos> <eos> Lake Vostrava is a freshwater lake in the <unk>',
        'eval_labels': ['highlands , about 1 @,@ 200 metres above sea level . <eos> It is fed by'],
        'wikitext_title': 'Lake Vostrava',
        'wikitext_chunk': 1,
    }
    assert valid[2]['eval_labels'] == [
        'three glacial streams and drains into the Ostra River . <eos> <eos> = = Geography =']
    assert valid == messages('-dt', 'valid', '--wikitext-unit', 'chunk', '--wikitext-chunk-tokens', '16',
                             datapath=tmp_path)


def test_carving_in_sentence_mode_keeps_whole_articles_and_every_token(tmp_path):
    by_split = {
        split: messages('--wikitext-carve-from', 'valid', '-dt', dt, datapath=tmp_path)
        for split, dt in [('train', 'train:ordered'), ('valid', 'valid'), ('test', 'test')]
    }
    titles = {s: [m['wikitext_title'] for m in ms] for s, ms in by_split.items()}
    assert sorted(set(titles['valid'])) == ['Grey heron in folklore']  # article 8
    assert sorted(set(titles['test'])) == ['Kessler Bridge']  # article 9
    assert len(set(titles['train'])) == 10
    lines = (FIXTURE_DIR / 'wiki.valid.tokens').read_text(encoding='utf-8').splitlines()
    tokens = {a.title: a.tokens() for a in read_articles(lines)}
    for ms in by_split.values():
        for title in set(m['wikitext_title'] for m in ms):
            mine = [m for m in ms if m['wikitext_title'] == title]
            labels = [(m.get('labels') or m['eval_labels'])[0] for m in mine]
            assert ' '.join(labels).split(' ') == tokens[title]
            assert [m['wikitext_sentence'] for m in mine] == list(range(len(mine)))
            assert [m['text'] for m in mine[1:]] == labels[:-1]


@requires_shared(WT103_DIR / 'wiki.valid.tokens')
def test_the_local_carve_of_the_real_valid_file_in_sentences(tmp_path):
    counts = {
        split: len(messages('--wikitext-carve-from', 'valid', '-dt', dt, datapath=tmp_path, folder=WT103_DIR))
        for split, dt in [('train', 'train:ordered'), ('valid', 'valid'), ('test', 'test')]
    }
    assert counts == {'train': 7396, 'valid': 808, 'test': 544}  # 48 / 6 / 6 articles


@pytest.mark.parametrize('args, option, fix', [
    (['--wikitext-unit', 'sentence', '--wikitext-chunk-tokens', '64'], '--wikitext-chunk-tokens',
     'or pass --wikitext-unit chunk'),
    (['--wikitext-chunk-tokens', '64', '--wikitext-sentence-tokens', '64'], '--wikitext-sentence-tokens',
     'pass --wikitext-unit sentence without --wikitext-chunk-tokens'),
    (['--wikitext-sentence-tokens', '0'], '--wikitext-sentence-tokens', 'such as 64'),
    (['--wikitext-unit', 'chunk', '--wikitext-chunk-tokens', '0'], '--wikitext-chunk-tokens', 'such as 256'),
    (['--wikitext-context-tokens', '-1'], '--wikitext-context-tokens', 'pass 0'),
    (['--wikitext-context', 'none', '--wikitext-context-tokens', '100'], '--wikitext-context-tokens',
     'pass --wikitext-context prev'),
])
def test_bad_unit_options_name_the_option_and_the_fix(tmp_path, args, option, fix):
    with pytest.raises(OptionError) as err:
        teacher('-dt', 'valid', *args, datapath=tmp_path)
    message = str(err.value)
    assert message.startswith(option + ': ') and fix in message.split('; ')[-1]
    assert '\n' not in message
