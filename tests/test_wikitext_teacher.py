"""``-t wikitext103`` through ParlAI: splits, carving, errors, the real command."""

import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import PARLAI, SHARED_DATA, requires_shared
from parlai_hash.errors import OptionError

FIXTURE_DIR = Path(__file__).parent / 'fixtures' / 'wikitext'
WT103_DIR = SHARED_DATA / 'wikitext-103'


def teacher(*args, datapath):
    from parlai.core.params import ParlaiParser
    from parlai.core.teachers import create_task_agent_from_taskname

    opt = ParlaiParser(True, False).parse_args(['-t', 'wikitext103', '--datapath', str(datapath), *args])
    return create_task_agent_from_taskname(opt)[0]


def messages(*args, datapath):
    t = teacher(*args, datapath=datapath)
    out = []
    while not t.epoch_done():
        out.append(t.act())
    return out


def test_reads_the_split_file_of_a_complete_folder(tmp_path):
    folder = tmp_path / 'wt'
    folder.mkdir()
    for split in ('train', 'valid', 'test'):
        shutil.copy(FIXTURE_DIR / 'wiki.valid.tokens', folder / f'wiki.{split}.tokens')
    train = messages('--wikitext-dir', str(folder), '-dt', 'train:ordered',
                     '--wikitext-chunk-tokens', '16', datapath=tmp_path)
    valid = messages('--wikitext-dir', str(folder), '-dt', 'valid',
                     '--wikitext-chunk-tokens', '16', datapath=tmp_path)
    assert [m['labels'] for m in train] == [m['eval_labels'] for m in valid]
    assert all(m['episode_done'] and m['id'] == 'wikitext103' for m in valid)
    assert len({m['wikitext_title'] for m in valid}) == 12


def test_carving_gives_disjoint_splits_of_whole_articles(tmp_path):
    by_split = {
        split: messages('--wikitext-dir', str(FIXTURE_DIR), '--wikitext-carve-from', 'valid',
                        '-dt', dt, datapath=tmp_path)
        for split, dt in [('train', 'train:ordered'), ('valid', 'valid'), ('test', 'test')]
    }
    titles = {s: [m['wikitext_title'] for m in ms] for s, ms in by_split.items()}
    assert sorted(set(titles['valid'])) == ['Grey heron in folklore']  # article 8
    assert sorted(set(titles['test'])) == ['Kessler Bridge']  # article 9
    assert len(set(titles['train'])) == 10  # articles 0-7, 10, 11
    assert not set(titles['train']) & (set(titles['valid']) | set(titles['test']))


def test_missing_split_names_the_file_and_the_carving_option(tmp_path):
    with pytest.raises(OptionError) as err:
        teacher('--wikitext-dir', str(FIXTURE_DIR), '-dt', 'train', datapath=tmp_path)
    message = str(err.value)
    assert 'wiki.train.tokens does not exist' in message
    assert '--wikitext-carve-from valid' in message and '-dt valid' in message


def test_too_few_articles_to_carve_is_an_error(tmp_path):
    (tmp_path / 'wiki.valid.tokens').write_text(' \n = A = \n \n a b \n \n = B = \n \n c \n', encoding='utf-8')
    with pytest.raises(OptionError, match='--wikitext-carve-from: the test split carved from .* is empty'):
        teacher('--wikitext-dir', str(tmp_path), '--wikitext-carve-from', 'valid', '-dt', 'test',
                datapath=tmp_path)


def test_stream_mode_counts_without_writing_beside_the_data(tmp_path):
    folder = tmp_path / 'ro'
    folder.mkdir()
    shutil.copy(FIXTURE_DIR / 'wiki.valid.tokens', folder)
    t = teacher('--wikitext-dir', str(folder), '-dt', 'valid:stream', datapath=tmp_path)
    loaded = len(messages('--wikitext-dir', str(folder), '-dt', 'valid', datapath=tmp_path))
    assert t.num_examples() == t.num_episodes() == loaded
    assert sorted(p.name for p in folder.iterdir()) == ['wiki.valid.tokens']


def test_offline_download_fails_with_one_line_saying_where_to_put_the_files(tmp_path, monkeypatch):
    from parlai.core import build_data

    def no_network(url, path, fname, *args, **kwargs):
        raise RuntimeError('Connection broken too many times. Stopped retrying.')

    monkeypatch.setattr(build_data, 'download', no_network)
    with pytest.raises(OptionError) as err:
        teacher('-dt', 'valid', datapath=tmp_path)
    message = str(err.value)
    assert '\n' not in message and 'could not download' in message
    assert str(tmp_path / 'wikitext103' / 'wikitext-103') in message and '--wikitext-dir' in message
    assert [p.name for p in (tmp_path / 'wikitext103').iterdir()] == []  # nothing half-written


def test_a_corrupt_archive_in_the_datapath_is_refused(tmp_path):
    (tmp_path / 'wikitext103').mkdir()
    (tmp_path / 'wikitext103' / 'wikitext-103-v1.zip').write_bytes(b'not a zip')
    with pytest.raises(OptionError, match='is not the official archive'):
        teacher('-dt', 'valid', datapath=tmp_path)


def test_files_placed_in_the_datapath_are_used_without_download(tmp_path):
    folder = tmp_path / 'wikitext103' / 'wikitext-103'
    folder.mkdir(parents=True)
    shutil.copy(FIXTURE_DIR / 'wiki.valid.tokens', folder)
    valid = messages('-dt', 'valid', '--wikitext-unit', 'chunk', datapath=tmp_path)
    assert len(valid) == 12  # every fixture article fits in one default 256-token chunk
    assert valid[0]['eval_labels'][0].startswith('<eos> = Lake Vostrava = <eos> <eos> Lake Vostrava is')


def run_parlai(*args, env):
    return subprocess.run([PARLAI, *args], capture_output=True, text=True, env=env, timeout=300)


@requires_shared(WT103_DIR)
def test_display_data_on_real_wikitext_103_and_one_line_error_for_a_missing_split(tmp_path, cli_env):
    proc = run_parlai('display_data', '-t', 'wikitext103', '--wikitext-dir', str(WT103_DIR),
                      '-dt', 'valid', '-n', '2', '--datapath', str(tmp_path), env=cli_env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    shown = proc.stdout[proc.stdout.index('NEW EPISODE'):]
    assert shown.count('NEW EPISODE: wikitext103') == 2
    # Sentences by default: the title, then the first sentence with the title as its input.
    assert '= Homarus gammarus = <eos> <eos>\n   Homarus gammarus , known as the European lobster' in shown

    proc = run_parlai('display_data', '-t', 'wikitext103', '--wikitext-dir', str(WT103_DIR),
                      '--datapath', str(tmp_path), env=cli_env)
    errors = [l for l in proc.stderr.splitlines() if l.startswith('parlai-hash: error:')]
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr
    assert len(errors) == 1 and '--wikitext-carve-from valid' in errors[0]


def serve_archive(tmp_path: Path, monkeypatch) -> Path:
    """ParlAI's download, faked: it serves a well-formed archive with the official
    layout (the fixture as every split), but not the official bytes."""
    import zipfile

    from parlai.core import build_data
    from parlai_hash.tasks.wikitext103 import build

    served = tmp_path / 'served.zip'
    with zipfile.ZipFile(served, 'w') as zf:
        for split in ('train', 'valid', 'test'):
            zf.write(FIXTURE_DIR / 'wiki.valid.tokens', f'wikitext-103/wiki.{split}.tokens')

    def fake_download(url, path, fname, *args, **kwargs):
        assert url == build.ARCHIVE.url
        shutil.copy(served, Path(path) / fname)

    monkeypatch.setattr(build_data, 'download', fake_download)
    return served


def test_download_is_checked_extracted_and_published_in_place(tmp_path, monkeypatch):
    import hashlib

    from parlai_hash.tasks.wikitext103 import build

    served = serve_archive(tmp_path, monkeypatch)
    monkeypatch.setattr(build.ARCHIVE, 'hashcode', hashlib.sha256(served.read_bytes()).hexdigest())
    datapath = tmp_path / 'data'
    assert len(messages('-dt', 'test', '--wikitext-unit', 'chunk', datapath=datapath)) == 12
    root = datapath / 'wikitext103'
    assert sorted(p.name for p in root.iterdir()) == ['wikitext-103']  # archive and staging gone
    assert sorted(p.name for p in (root / 'wikitext-103').iterdir()) == [
        'wiki.test.tokens', 'wiki.train.tokens', 'wiki.valid.tokens']


def test_a_download_with_the_wrong_checksum_is_refused_and_nothing_is_published(tmp_path, monkeypatch):
    from parlai_hash.tasks.wikitext103 import build

    serve_archive(tmp_path, monkeypatch)  # the official checksum stays expected
    datapath = tmp_path / 'data'
    with pytest.raises(OptionError) as err:
        teacher('-dt', 'test', datapath=datapath)
    message = str(err.value)
    assert f'{build.ARCHIVE.url} did not send the official archive (sha256 differs' in message
    assert '\n' not in message and '--wikitext-dir' in message
    root = datapath / 'wikitext103'
    assert [p.relative_to(root) for p in root.rglob('*')] == []  # no archive, staging or tokens file
