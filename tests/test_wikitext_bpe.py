"""Table 4's BPE column on ``-t wikitext103``: the BPE built by ``train_model`` itself."""

import json
from pathlib import Path

import pytest

from conftest import TINY_MODEL_ARGS
from parlai_hash.errors import OptionError

FIXTURE_DIR = Path(__file__).parent / 'fixtures' / 'wikitext'
WIKITEXT = ['-t', 'wikitext103', '--wikitext-dir', str(FIXTURE_DIR), '--wikitext-carve-from', 'valid',
            '--wikitext-unit', 'sentence']


def bpe_options(folder: Path):
    """The dictionary options of the local twin's BPE column (tasks/wikitext103.md)."""
    return ['--dict-tokenizer', 'bytelevelbpe', '--bpe-vocab', str(folder / 'vocab.json'),
            '--bpe-merge', str(folder / 'merges.txt'),
            '--dict-class', 'parlai_hash.dictionaries:TaskBpeDictionaryAgent']


def parse(*args, datapath):
    from parlai.scripts.train_model import setup_args

    return setup_args().parse_args(['-m', 'transformer/generator', '--datapath', str(datapath), *args])


def test_train_model_builds_a_missing_bpe_from_the_training_split_then_reuses_it(tmp_path):
    from parlai.scripts.train_model import TrainModel

    from parlai_hash.dictionaries import ensure_task_bpe

    bpe = tmp_path / 'bpe'
    mf = tmp_path / 'model'
    TrainModel.main(*WIKITEXT, *bpe_options(bpe), '-m', 'hash_generator', *TINY_MODEL_ARGS,
                    '-bs', '8', '--max-train-steps', '4', '-vstep', '4', '--short-final-eval', 'true',
                    '--skip-generation', 'true', '-vmt', 'ppl', '-mf', str(mf), '--datapath', str(tmp_path))
    assert sorted(p.name for p in bpe.iterdir()) == ['merges.txt', 'vocab.json']
    vocab = json.loads((bpe / 'vocab.json').read_text(encoding='utf-8'))
    assert 256 < len(vocab) < 8000  # the fixture runs out of pairs seen twice
    assert len(Path(str(mf) + '.dict').read_text(encoding='utf-8').splitlines()) == len(vocab) + 4
    test_report = json.loads(Path(str(mf) + '.trainstats').read_text())['final_test_report']
    assert test_report['exs'] == 5  # the sentences of the carved test article
    # A second point finds the files and leaves them alone.
    before = {p.name: p.stat().st_mtime_ns for p in bpe.iterdir()}
    assert ensure_task_bpe(parse(*WIKITEXT, *bpe_options(bpe), datapath=tmp_path)) is None
    assert before == {p.name: p.stat().st_mtime_ns for p in bpe.iterdir()}


def test_the_bpe_is_trained_on_train_whatever_the_datatype_and_keeps_wikitext_markers(tmp_path):
    from parlai.core.dict import DictionaryAgent

    from parlai_hash.dictionaries import ensure_task_bpe

    opt = parse(*WIKITEXT, *bpe_options(tmp_path / 'bpe'), '-dt', 'test', datapath=tmp_path)
    built = ensure_task_bpe(opt)
    assert built is not None and built.vocab == tmp_path / 'bpe' / 'vocab.json'
    opt['dict_file'] = str(tmp_path / 'unused.dict')
    dictionary = DictionaryAgent(opt)
    # Dataset tokens go to the BPE as text and come back unchanged.
    label = 'a 14 @.@ 5 km long Danish @-@ born <unk> , 1 @,@ 200 m . <eos> <eos>'
    assert dictionary.vec2txt(dictionary.txt2vec(label)).strip() == label
    # Only the carved training articles were read: words of the test article are rare pieces.
    assert 'ĠKessler' not in json.loads(built.vocab.read_text(encoding='utf-8'))


def test_examples_do_not_depend_on_the_dictionary(tmp_path):
    from parlai.core.teachers import create_task_agent_from_taskname

    def messages(*dict_args):
        opt = parse(*WIKITEXT, *dict_args, '-dt', 'valid', datapath=tmp_path)
        t = create_task_agent_from_taskname(opt)[0]
        out = []
        while not t.epoch_done():
            m = t.act()
            out.append((m['text'], m['eval_labels']))
        return out

    assert messages('--dict-tokenizer', 'space') == messages(*bpe_options(tmp_path / 'never_built'))


@pytest.mark.parametrize('args, option', [
    (['--dict-tokenizer', 'bytelevelbpe'], '--bpe-vocab'),
    (['--dict-tokenizer', 'bytelevelbpe', '--bpe-vocab', 'x/vocab.json', '--bpe-merge', 'y/merges.txt'],
     '--bpe-merge'),
    (['--dict-tokenizer', 'bytelevelbpe', '--bpe-vocab', 'x/my.json', '--bpe-merge', 'x/merges.txt'],
     '--bpe-merge'),
])
def test_missing_bpe_files_that_cannot_be_built_name_the_option(tmp_path, args, option):
    from parlai_hash.dictionaries import ensure_task_bpe

    with pytest.raises(OptionError) as err:
        ensure_task_bpe(parse(*WIKITEXT, *args, datapath=tmp_path))
    assert str(err.value).startswith(option + ': ') and '\n' not in str(err.value)
