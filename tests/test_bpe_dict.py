"""The paper's two dictionaries: ``parlai build_bpe_dict`` and the word level one."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import PARLAI, TINY_MODEL_ARGS
from parlai_hash.errors import OptionError

FIXTURES = Path(__file__).parent / 'fixtures'
WIKITEXT = ['-t', 'wikitext103', '--wikitext-dir', str(FIXTURES / 'wikitext'),
            '--wikitext-carve-from', 'valid', '--wikitext-chunk-tokens', '32']
TRAIN = ['-m', 'hash_generator', *TINY_MODEL_ARGS, '-bs', '4', '--max-train-steps', '6',
         '-vstep', '6', '--short-final-eval', 'true', '-lr', '1e-2', '--optimizer', 'adam']


def parlai(*args, env):
    proc = subprocess.run([PARLAI, *args], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, f'{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}'
    return proc


@pytest.fixture(scope='module')
def bpe_dir(tmp_path_factory):
    env = {k: v for k, v in os.environ.items() if k != 'PARLAI_DATAPATH'}
    out = tmp_path_factory.mktemp('bpe') / 'dict'
    parlai('build_bpe_dict', *WIKITEXT, '--bpe-vocab-size', '8000', '--out', str(out), env=env)
    return out


def parlai_dictionary(bpe_dir, tmp_path):
    from parlai.core.dict import DictionaryAgent
    from parlai.core.params import ParlaiParser

    parser = ParlaiParser(False, False)
    DictionaryAgent.add_cmdline_args(parser, partial_opt=None)
    opt = parser.parse_args([
        '--dict-tokenizer', 'bytelevelbpe', '--bpe-vocab', str(bpe_dir / 'vocab.json'),
        '--bpe-merge', str(bpe_dir / 'merges.txt'), '--dict-file', str(tmp_path / 'unused.dict'),
    ])
    return DictionaryAgent(opt)


def test_build_bpe_dict_writes_what_parlai_bytelevelbpe_loads(bpe_dir, tmp_path):
    assert sorted(p.name for p in bpe_dir.iterdir()) == ['merges.txt', 'vocab.json']
    vocab = json.loads((bpe_dir / 'vocab.json').read_text(encoding='utf-8'))
    # The tiny fixture runs out of pairs seen twice long before 8000 tokens.
    assert 256 < len(vocab) < 8000
    dictionary = parlai_dictionary(bpe_dir, tmp_path)
    assert len(dictionary) == len(vocab) + 4  # ParlAI's __null__, __start__, __end__, __unk__
    line = 'Lake Vostrava is a freshwater lake in the <unk> highlands , about 1 @,@ 200 metres'
    ids = dictionary.txt2vec(line)
    assert dictionary.vec2txt(ids).strip() == line
    assert len(ids) < len(line) / 2  # merges were learnt: far fewer tokens than bytes


def test_a_model_trains_and_evaluates_with_the_bpe_dictionary(bpe_dir, tmp_path, cli_env):
    mf = tmp_path / 'model'
    parlai('train_model', *WIKITEXT, *TRAIN, '-mf', str(mf),
           '--dict-tokenizer', 'bytelevelbpe', '--bpe-vocab', str(bpe_dir / 'vocab.json'),
           '--bpe-merge', str(bpe_dir / 'merges.txt'),
           # ParlAI quirk: an untrained model's first BPE token may lack the
           # prefix space (utils/bpe.py:236); LM evaluation needs ppl only.
           '--skip-generation', 'true', '-vmt', 'ppl', env=cli_env)
    assert mf.exists()
    vocab = json.loads((bpe_dir / 'vocab.json').read_text(encoding='utf-8'))
    assert len(Path(str(mf) + '.dict').read_text(encoding='utf-8').splitlines()) == len(vocab) + 4
    test_report = json.loads(Path(str(mf) + '.trainstats').read_text())['final_test_report']
    assert test_report['exs'] == 2  # the carved test article in 32-word chunks
    # Perplexity per BPE token, below the uniform guess after a few steps.
    assert 1 < test_report['ppl'] < len(vocab) + 4


def test_word_level_dictionary_is_the_training_vocabulary(tmp_path, cli_env):
    from parlai_hash.tasks.wikitext103.articles import read_articles
    from parlai_hash.tasks.wikitext103.splits import carved_split

    mf = tmp_path / 'model'
    parlai('train_model', *WIKITEXT, *TRAIN, '-mf', str(mf), '--dict-tokenizer', 'space',
           '--skip-generation', 'true', '-vmt', 'ppl', env=cli_env)
    lines = (FIXTURES / 'wikitext' / 'wiki.valid.tokens').read_text(encoding='utf-8').splitlines()
    train_words = {
        token
        for index, article in enumerate(read_articles(lines))
        if carved_split(index) == 'train'
        for token in article.tokens()
    }
    dict_lines = Path(str(mf) + '.dict').read_text(encoding='utf-8').splitlines()
    tokens = [line.split('\t')[0] for line in dict_lines]
    assert tokens[:4] == ['__null__', '__start__', '__end__', '__unk__']
    assert set(tokens[4:]) == train_words and len(tokens) == len(train_words) + 4
    assert '<unk>' in train_words and '@,@' in train_words  # the dataset's tokens, kept whole


def test_teacher_texts_are_text_and_labels_of_one_pass(tmp_path):
    from parlai.core.params import ParlaiParser
    from parlai_hash.dictionaries import teacher_texts

    opt = ParlaiParser(True, False).parse_args([
        '-t', 'bst', '--bst-datafile', str(FIXTURES / 'bst' / 'valid.json'), '-dt', 'valid',
        '--datapath', str(tmp_path)])
    texts = list(teacher_texts(opt))
    assert len(texts) == 12  # 6 examples, each a text and a label
    assert texts[:2] == [texts[0], 'Two hulls spread the weight, so they barely heel.']
    assert texts[0].startswith('your persona: i teach chemistry')


@pytest.mark.parametrize('vocab_size, min_frequency, out, option', [
    (256, 2, 'dir', '--bpe-vocab-size'),
    (8000, 0, 'dir', '--bpe-min-frequency'),
    (8000, 2, None, '--out'),
])
def test_bad_bpe_options_name_the_option(vocab_size, min_frequency, out, option):
    from parlai_hash.dictionaries import check_bpe_options

    with pytest.raises(OptionError) as err:
        check_bpe_options(vocab_size, min_frequency, out)
    assert str(err.value).startswith(option + ': ')


def test_bad_option_through_the_command_is_one_line(tmp_path, cli_env):
    proc = subprocess.run(
        [PARLAI, 'build_bpe_dict', *WIKITEXT, '--bpe-vocab-size', '100', '--out', str(tmp_path)],
        capture_output=True, text=True, env=cli_env, timeout=300,
    )
    errors = [l for l in proc.stderr.splitlines() if l.startswith('parlai-hash: error:')]
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr
    assert len(errors) == 1 and '--bpe-vocab-size: got 100' in errors[0]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize('out, problem', [
    ('a_file', 'a_file is a file, not a folder'),
    ('a_file/sub', 'a_file is a file, so the folder'),
])
def test_out_that_is_a_file_is_refused_before_training(tmp_path, cli_env, out, problem):
    (tmp_path / 'a_file').write_text('keep me')
    # A task that cannot load: the --out error must come first, before any training.
    broken_task = ['-t', 'wikitext103', '--wikitext-dir', str(tmp_path / 'no_such_dir')]
    for task in (WIKITEXT, broken_task):
        proc = subprocess.run([PARLAI, 'build_bpe_dict', *task, '--out', out], cwd=tmp_path,
                              capture_output=True, text=True, env=cli_env, timeout=300)
        errors = [l for l in proc.stderr.splitlines() if l.startswith('parlai-hash: error:')]
        assert proc.returncode != 0 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
        assert len(errors) == 1 and errors[0].startswith(f'parlai-hash: error: --out: {problem}')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a_file']
    assert (tmp_path / 'a_file').read_text() == 'keep me'


def test_an_existing_folder_is_a_fine_out(tmp_path):
    from parlai_hash.scripts.build_bpe_dict import check_out_folder

    check_out_folder(str(tmp_path))  # its vocab.json/merges.txt are replaced atomically
    check_out_folder(str(tmp_path / 'new' / 'deeper'))
    check_out_folder(None)  # build_bpe_dict reports the missing --out itself
