"""``make demo``: train a small hash-layer model, evaluate it, show replies.

Runs the real ``parlai`` commands (printed before each step) so the demo is
also the tutorial. Data: PersonaChat dialogues from ``../shared/data`` when
present (or ``--data-dir``), else ParlAI's offline ``integration_tests`` task.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

from parlai_hash.io_utils import atomic_write

REPO = Path(__file__).resolve().parents[1]
PERSONACHAT = Path('personachat/knowee_preprocessed/valid_original.json')


def _escape(text: str) -> str:
    # ParlAI text format: tab-separated fields, newlines written as \n.
    return text.replace('\t', ' ').replace('\n', '\\n')


def personachat_to_parlai(src: Path, out_prefix: Path, n_valid: int = 100) -> None:
    """Write ``<prefix>_{train,valid,test}.txt`` in ParlAI's text format.

    Each turn: the partner's utterance (with the bot's persona before the
    first one) as ``text``, the bot's reply as ``labels``. The last
    ``n_valid`` dialogues are held apart for valid/test.
    """
    dialogues = json.loads(src.read_text())
    splits = {
        'train': dialogues[: -n_valid],
        'valid': dialogues[-n_valid:],
        'test': dialogues[-n_valid:],
    }
    for split, items in splits.items():
        path = Path(f'{out_prefix}_{split}.txt')
        if path.exists():
            continue
        with atomic_write(path) as f:
            for d in items:
                persona = '\n'.join(f'your persona: {p}' for p in d['listener persona'])
                turns = d['dialogue']
                pairs = list(zip(turns[0::2], turns[1::2]))
                for i, (text, label) in enumerate(pairs):
                    if i == 0 and persona:
                        text = f'{persona}\n{text}'
                    fields = [f'text:{_escape(text)}', f'labels:{_escape(label)}']
                    if i == len(pairs) - 1:
                        fields.append('episode_done:True')
                    f.write('\t'.join(fields) + '\n')


def run(args: List[str]) -> None:
    parlai = str(Path(sys.executable).with_name('parlai'))
    print('\n$ parlai ' + ' '.join(shlex.quote(a) for a in args), flush=True)
    subprocess.run([parlai, *args], check=True)


def task_args(data_dir: Optional[Path], out: Path) -> List[str]:
    if data_dir is not None and (data_dir / PERSONACHAT).exists():
        prefix = out / 'data' / 'personachat'
        personachat_to_parlai(data_dir / PERSONACHAT, prefix)
        print(f"data: PersonaChat dialogues from {data_dir / PERSONACHAT}")
        return [
            '-t', 'fromfile:parlaiformat', '--fromfile-datapath', str(prefix),
            '--fromfile-datatype-extension', 'true',
        ]
    print(
        "data: no real corpus found, so the demo trains on ParlAI's offline "
        "integration_tests task.\n      Put the shared data folder next to the repo "
        "(../shared/data) or pass --data-dir DIR."
    )
    return ['-t', 'integration_tests:nocandidate']


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--data-dir', type=Path, default=REPO.parent / 'shared' / 'data')
    ap.add_argument('--out', type=Path, default=REPO / 'runs' / 'demo')
    ap.add_argument('--steps', type=int, default=600)
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    task = task_args(a.data_dir, a.out)
    mf = str(a.out / 'model')
    model = [
        '-m', 'hash_generator', '--n-layers', '4', '--embedding-size', '128',
        '--ffn-size', '512', '--n-heads', '4', '--num-experts', '16',
        '--hash-layers', '2', '--hash-type', 'balanced',
    ]
    run(['train_model', *task, '-mf', mf, *model, '--dict-maxtokens', '8000',
         '-bs', '32', '--max-train-steps', str(a.steps), '-vstep', str(a.steps // 2),
         '--validation-max-exs', '200', '-lr', '3e-3', '--optimizer', 'adam',
         '--lr-scheduler', 'invsqrt', '--warmup-updates', '100', '--skip-generation', 'true',
         '-vmt', 'ppl', '-vmm', 'min', '--truncate', '128', '--log-every-n-secs', '20',
         '--short-final-eval', 'true'])
    run(['eval_model', *task, '-mf', mf, '-dt', 'valid', '--num-examples', '300',
         '--skip-generation', 'true'])
    run(['display_model', *task, '-mf', mf, '-dt', 'valid', '--num-examples', '4',
         '--inference', 'beam', '--beam-size', '3', '--beam-min-length', '5',
         '--beam-block-ngram', '3', '--skip-generation', 'false'])
    print(f"\nmodel: {mf}\nchat with it: .venv/bin/parlai interactive -mf {mf}")


if __name__ == '__main__':
    main()
