"""Every command in README.md and docs/*.md runs, for real, at tiny sizes.

The fenced ``bash``/``sh``/``console`` blocks of the documentation are read;
each ``parlai ...`` and ``python -m ...`` line (backslash continuations joined)
is run with the real executables, the commands of one block in order (so
``eval_model`` finds the model ``train_model`` wrote), blocks two at a time.
Before running, a command is made small and local:

- model sizes become tiny (``--embedding-size 16 --ffn-size 32 --n-heads 2
  --num-experts 4 --max-train-steps 2 -bs 4``, short final evaluations);
- ``/tmp/...`` paths move into the test's temporary folder, and a ``...``
  placeholder for further options is dropped;
- ``/data/reddit``, ``/data/wikitext-103`` and ``/data/bst/`` become the shared
  data next to the repository (``../shared/data``) or the test fixtures; a
  WikiText command without its data trains on ``integration_tests:nocandidate``,
  and a Reddit block without the dumps is skipped, naming the path.

A block preceded by ``<!-- not run: REASON -->`` is not run (it needs a GPU, a
SLURM cluster or hours); there may be at most ``MAX_NOT_RUN`` of them.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from conftest import PARLAI, REPO, SHARED_DATA, REDDIT_MONTHS

DOC_FILES = [REPO / 'README.md', *sorted((REPO / 'docs').glob('*.md'))]
RUN_LANGUAGES = {'bash', 'sh', 'console'}
NOT_RUN = re.compile(r'^\s*<!--\s*not run:\s*(?P<reason>.*?)\s*-->\s*$')
MAX_NOT_RUN = 5
WORKERS = 2

TRAIN_SCRIPTS = {'train_model', 'tm', 'multiprocessing_train', 'distributed_train'}
EVAL_SCRIPTS = {'eval_model', 'em', 'display_model'}
OUR_AGENTS = {'hash_generator', 'switch_generator', 'base_generator', 'mixed_generator'}
#: option -> (aliases, tiny value); replaced where given, added to training commands where not.
TINY = {
    '--embedding-size': (('--embedding-size', '-esz', '--esz'), '16'),
    '--ffn-size': (('--ffn-size', '-hid', '--hid'), '32'),
    '--n-heads': (('--n-heads',), '2'),
    '--max-train-steps': (('--max-train-steps', '--max-lr-steps', '-tstep', '--tstep'), '2'),
    '--batchsize': (('--batchsize', '-bs', '--bs'), '4'),
}
#: added to training commands unless given: final valid/test on a few examples only.
SHORT_EVAL = {'--short-final-eval': 'true', '--validation-max-exs': '16'}
INTERACTIVE_INPUT = 'the game was released in 2004 .\n[EXIT]\n'

SHARED_WIKITEXT = SHARED_DATA / 'wikitext-103'
SHARED_REDDIT = SHARED_DATA / 'reddit'
BST_FIXTURE = REPO / 'tests' / 'fixtures' / 'bst'


@dataclass
class Command:
    argv: List[str]
    env: Dict[str, str]
    line: int

    def __str__(self) -> str:
        return ' '.join(shlex.quote(a) for a in self.argv)


@dataclass
class Block:
    path: Path
    line: int
    not_run: Optional[str]
    commands: List[Command] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f'{self.path.relative_to(REPO)}:{self.line}'


def _logical_lines(body: List[Tuple[int, str]], console: bool) -> List[Tuple[int, str]]:
    """Join backslash continuations; in ``console`` blocks keep only ``$ `` lines."""
    out: List[Tuple[int, str]] = []
    current, start = '', 0
    for number, raw in body:
        if not current:
            if console:
                if not raw.lstrip().startswith('$ '):
                    continue
                raw = raw.lstrip()[2:]
            start = number
        stripped = raw.rstrip()
        if stripped.endswith('\\'):
            current += stripped[:-1] + ' '
            continue
        out.append((start, current + stripped))
        current = ''
    if current:
        out.append((start, current))
    return out


def _command(line: str, number: int) -> Optional[Command]:
    """A ``parlai`` or ``python -m`` command (after ``VAR=value`` prefixes), else None."""
    tokens = shlex.split(line, comments=True)
    env = {}
    while tokens and re.match(r'^[A-Za-z_][A-Za-z0-9_]*=', tokens[0]):
        name, _, value = tokens.pop(0).partition('=')
        env[name] = value
    if not tokens:
        return None
    if tokens[0] == 'parlai' or (tokens[0] in ('python', 'python3') and tokens[1:2] == ['-m']):
        return Command(tokens, env, number)
    return None


def extract(path: Path) -> List[Block]:
    """The fenced shell blocks of one Markdown file, with the commands to run."""
    lines = path.read_text().splitlines()
    blocks: List[Block] = []
    reason: Optional[str] = None
    i = 0
    while i < len(lines):
        line = lines[i]
        marker = NOT_RUN.match(line)
        fence = re.match(r'^(`{3,})\s*([\w-]*)\s*$', line)
        if marker:
            reason = marker.group('reason')
        elif fence:
            end = i + 1
            while end < len(lines) and not lines[end].startswith(fence.group(1)):
                end += 1
            if fence.group(2) in RUN_LANGUAGES:
                body = [(n + 1, lines[n]) for n in range(i + 1, end)]
                block = Block(path, i + 1, reason)
                for number, logical in _logical_lines(body, console=fence.group(2) == 'console'):
                    command = _command(logical, number)
                    if command is not None:
                        block.commands.append(command)
                blocks.append(block)
            reason = None
            i = end
        elif line.strip():
            reason = None  # the marker must sit right before its block
        i += 1
    return blocks


ALL_BLOCKS = [block for path in DOC_FILES for block in extract(path)]
RUN_BLOCKS = [block for block in ALL_BLOCKS if block.not_run is None and block.commands]


# --- making a documented command small and local ------------------------------------------


def _value_index(argv: List[str], names) -> Optional[int]:
    for i, arg in enumerate(argv[:-1]):
        if arg in names:
            return i + 1
    return None


def _set(argv: List[str], names, value: str, add: bool = True) -> None:
    index = _value_index(argv, names)
    if index is not None:
        argv[index] = value
    elif add:
        argv += [names[0], value]


def _drop_options(argv: List[str], prefix: str) -> List[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg.startswith(prefix):
            skip = True
            continue
        out.append(arg)
    return out


class NeedsData(Exception):
    pass


def prepare(command: Command, tmp: Path) -> Tuple[List[str], Dict[str, str], Optional[str]]:
    """argv, extra environment and stdin of the small, local version of ``command``."""
    # ``...`` stands for "more options": nothing to add at tiny size.
    argv = [arg.replace('/tmp/', f'{tmp}/') for arg in command.argv if arg not in ('...', '…')]
    argv = [str(BST_FIXTURE) + '/' if arg in ('/data/bst', '/data/bst/') else arg for arg in argv]
    if '/data/reddit' in argv:
        if not SHARED_REDDIT.exists():
            raise NeedsData(f'real data not present: {SHARED_REDDIT} (../shared is absent)')
        dumps = tmp / 'reddit_dumps'
        if not dumps.exists():
            dumps.mkdir(parents=True)
            for month in REDDIT_MONTHS:
                os.symlink(SHARED_REDDIT / f'{month}.zst', dumps / f'{month}.zst')
        argv = [str(dumps) if arg == '/data/reddit' else arg for arg in argv]
    if argv[0] in ('python', 'python3'):
        return [sys.executable, *argv[1:]], command.env, None

    argv[0] = PARLAI
    script = argv[1]
    task_index = _value_index(argv, ('-t', '--task'))
    if task_index is not None and argv[task_index] == 'wikitext103':
        if SHARED_WIKITEXT.exists():
            argv = [str(SHARED_WIKITEXT) if arg == '/data/wikitext-103' else arg for arg in argv]
            _set(argv, ('--wikitext-dir',), str(SHARED_WIKITEXT))
            if not (SHARED_WIKITEXT / 'wiki.train.tokens').exists():
                _set(argv, ('--wikitext-carve-from',), 'valid')
        else:
            argv = _drop_options(argv, '--wikitext-')
            argv[_value_index(argv, ('-t', '--task'))] = 'integration_tests:nocandidate'
    if '--help' in argv or '-h' in argv:
        return argv, command.env, None

    if script in TRAIN_SCRIPTS:
        model_index = _value_index(argv, ('-m', '--model'))
        ours = model_index is not None and argv[model_index] in OUR_AGENTS
        for names, value in TINY.values():
            _set(argv, names, value)
        _set(argv, ('--num-experts',), '4', add=ours)
        for option, value in SHORT_EVAL.items():
            if _value_index(argv, (option,)) is None:
                argv += [option, value]
    elif script in EVAL_SCRIPTS:
        index = _value_index(argv, ('--num-examples', '-ne', '--ne'))
        if index is None:
            argv += ['--num-examples', '16']
        else:
            argv[index] = str(min(int(argv[index]), 16))
    stdin = INTERACTIVE_INPUT if script == 'interactive' else None
    return argv, command.env, stdin


# --- running -------------------------------------------------------------------------------


def _environment(datapath: Path, extra: Dict[str, str]) -> Dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHONWARNINGS='ignore',
               PARLAI_DATAPATH=str(datapath))
    env.update(extra)
    return env


def run_block(block: Block, root: Path) -> Tuple[str, str]:
    """('passed' | 'failed' | 'skipped', log) for one block, its commands in order."""
    tmp = root / re.sub(r'[^A-Za-z0-9_.-]', '_', block.id)
    tmp.mkdir(parents=True)
    log = []
    for command in block.commands:
        try:
            argv, env, stdin = prepare(command, tmp)
        except NeedsData as absent:
            return 'skipped', str(absent)
        started = time.monotonic()
        try:
            proc = subprocess.run(argv, cwd=REPO, env=_environment(root / 'parlai_data', env),
                                  input=stdin, capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            return 'failed', '\n'.join(log + [f'line {command.line}: timed out: {command}'])
        log.append(f'line {command.line} ({time.monotonic() - started:.1f}s): {command}\n'
                   f'  ran as: {shlex.join(argv)}')
        if proc.returncode != 0:
            log.append(f'exit status {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}')
            return 'failed', '\n'.join(log)
    return 'passed', '\n'.join(log)


@pytest.fixture(scope='module')
def block_results():
    """Run every runnable block once, two at a time; results by block id."""
    with tempfile.TemporaryDirectory(prefix='docs_commands_') as root:
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            futures = {block.id: pool.submit(run_block, block, Path(root)) for block in RUN_BLOCKS}
            yield {block_id: future.result() for block_id, future in futures.items()}


@pytest.mark.parametrize('block', RUN_BLOCKS, ids=[block.id for block in RUN_BLOCKS])
def test_documented_commands_run(block, block_results):
    status, log = block_results[block.id]
    if status == 'skipped':
        pytest.skip(log)
    assert status == 'passed', f'{block.id}: a documented command failed\n{log}'


# --- the extraction itself -----------------------------------------------------------------


def test_every_page_is_read_and_commands_are_found():
    assert (REPO / 'docs').is_dir() and len(DOC_FILES) >= 8, DOC_FILES
    commands = [c for block in RUN_BLOCKS for c in block.commands]
    assert len(commands) >= 15, [str(c) for c in commands]
    scripts = {c.argv[1] for c in commands if c.argv[0] == 'parlai'}
    assert {'train_model', 'eval_model', 'interactive', 'multiprocessing_train'} <= scripts


def test_blocks_not_run_are_few_and_say_why():
    not_run = [block for block in ALL_BLOCKS if block.not_run is not None]
    assert len(not_run) <= MAX_NOT_RUN, [f'{b.id}: {b.not_run}' for b in not_run]
    for block in not_run:
        assert block.not_run, f'{block.id}: say why the block is not run'
        assert block.commands, f'{block.id}: marked not run but has no command to run'


def test_every_shell_block_is_run_or_marked():
    """A shell block whose commands the test cannot run must say so."""
    for block in ALL_BLOCKS:
        assert block.commands or block.not_run is not None, (
            f'{block.id}: a shell block with no parlai/python -m command; use a plain ``` fence '
            'for output, or mark it <!-- not run: ... -->')


def test_two_commands_section_lists_two_commands():
    readme = (REPO / 'README.md').read_text()
    section = readme.split('## Two commands', 1)[1].split('\n## ', 1)[0]
    block = section.split('```', 2)[1]
    commands = [line.split('#')[0].strip() for line in block.splitlines()[1:] if line.strip()]
    assert commands == ['make demo', 'make test'], commands
    assert len(readme.splitlines()) <= 250


def test_extraction_joins_continuations_and_reads_markers(tmp_path):
    page = tmp_path / 'page.md'
    page.write_text(
        'text\n\n<!-- not run: needs a GPU -->\n```bash\n'
        'parlai train_model -m hash_generator \\\n    --num-experts 64   # a comment\nmake demo\n```\n\n'
        '```console\n$ python -m parlai_hash.sweeps check x.yaml\noutput line\n```\n\n'
        '<!-- not run: too far -->\nsome prose\n```sh\nFOO=1 parlai eval_model -mf /tmp/m\n```\n'
    )
    first, second, third = extract(page)
    assert first.not_run == 'needs a GPU' and first.line == 4
    assert [c.argv for c in first.commands] == [['parlai', 'train_model', '-m', 'hash_generator',
                                                 '--num-experts', '64']]
    assert [c.argv for c in second.commands] == [['python', '-m', 'parlai_hash.sweeps', 'check', 'x.yaml']]
    assert second.not_run is None and third.not_run is None
    assert third.commands[0].env == {'FOO': '1'}
    argv, env, stdin = prepare(first.commands[0], tmp_path)
    assert argv[argv.index('--num-experts') + 1] == '4' and argv[argv.index('--batchsize') + 1] == '4'
    argv, _, _ = prepare(third.commands[0], tmp_path)
    assert argv[argv.index('-mf') + 1] == f'{tmp_path}/m' and '--num-examples' in argv
    argv, _, _ = prepare(Command(['parlai', 'train_model', '-m', 'hash_generator', '...'], {}, 1), tmp_path)
    assert '...' not in argv and '--short-final-eval' in argv
