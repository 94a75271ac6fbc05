"""``parlai expert_load`` and the measurement behind it (the paper's Figure 4).

The counts are checked against an independent computation: the label tokens
of the validation split, as the decoder sees them under teacher forcing
(start token, then the label without its end token), looked up in the
routing table saved in the checkpoint.
"""

import math
import subprocess

import pandas as pd
import pytest
import torch

from conftest import PARLAI, REPO
from parlai_hash.errors import OptionError

FIXTURE = REPO / 'tests' / 'fixtures' / 'wikitext'
K = 4
TASK_ARGS = ['-t', 'wikitext103', '--wikitext-dir', str(FIXTURE), '--wikitext-carve-from', 'valid',
             '--wikitext-chunk-tokens', '16']
MODEL_ARGS = ['--n-layers', '2', '--embedding-size', '16', '--ffn-size', '32', '--n-heads', '2',
              '--dict-tokenizer', 'space', '-bs', '4', '--max-train-steps', '2', '--skip-generation', 'true',
              '-vmt', 'ppl', '-lr', '0.01', '--optimizer', 'adam']


def parlai(*args, cwd=None):
    proc = subprocess.run([PARLAI, *args], capture_output=True, text=True, timeout=300, cwd=cwd)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


@pytest.fixture(scope='module')
def hash_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp('load')
    mf = str(folder / 'balanced' / 'model')
    parlai('train_model', '-m', 'hash_generator', *TASK_ARGS, *MODEL_ARGS, '--datapath', str(folder),
           '--num-experts', str(K), '--hash-layers', '0,1', '--hash-type', 'balanced', '-mf', mf)
    return mf, folder


def expected_counts(model_file: str, datapath) -> torch.Tensor:
    """Tokens per expert computed from the saved table, without running the model."""
    from parlai.core.agents import create_agent_from_model_file
    from parlai.core.params import ParlaiParser
    from parlai.core.teachers import create_task_agent_from_taskname

    agent = create_agent_from_model_file(model_file)
    table = torch.load(model_file, map_location='cpu', weights_only=False)['model']['decoder.layers.1.ffn.router.table']
    opt = ParlaiParser(True, False).parse_args([*TASK_ARGS, '-dt', 'valid', '--datapath', str(datapath)])
    teacher = create_task_agent_from_taskname(opt)[0]
    counts = torch.zeros(K, dtype=torch.long)
    while not teacher.epoch_done():
        label = teacher.act()['eval_labels'][0]
        inputs = [agent.dict[agent.dict.start_token]] + agent.dict.txt2vec(label)
        counts += torch.bincount(table[0][torch.tensor(inputs)], minlength=K)
    return counts


def test_counts_match_the_routing_table_on_the_split(hash_model):
    from parlai.scripts.eval_model import setup_args

    from parlai_hash.sweeps.expert_load import measure_expert_load

    mf, folder = hash_model
    opt = setup_args().parse_args(['-mf', mf, *TASK_ARGS, '-dt', 'valid', '--datapath', str(folder)])
    load = measure_expert_load(opt)
    assert list(load.layers) == ['dec0', 'dec1']
    expected = expected_counts(mf, folder)
    assert load.layers['dec1'] == expected.tolist()
    assert load.layers['dec0'] == load.layers['dec1']  # --hash-per-layer same: one table
    assert load.examples == 2  # the one carved valid article, 16-token chunks
    summary = load.summary()['dec1']
    assert summary['max'] == pytest.approx(max(expected.tolist()) * K / expected.sum().item())
    frame = load.frame()
    assert frame.groupby('layer')['share'].sum().tolist() == pytest.approx([1.0, 1.0])


def test_a_train_split_is_read_without_training(hash_model):
    from parlai.scripts.eval_model import setup_args

    from parlai_hash.sweeps.expert_load import measure_expert_load

    mf, folder = hash_model
    before = torch.load(mf, map_location='cpu', weights_only=False)['model']
    opt = setup_args().parse_args(['-mf', mf, *TASK_ARGS, '-dt', 'train', '--datapath', str(folder)])
    load = measure_expert_load(opt, max_examples=8)
    assert load.datatype == 'train:evalmode' and sum(load.layers['dec1']) > 0
    after = torch.load(mf, map_location='cpu', weights_only=False)['model']
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_command_writes_csv_and_png_into_the_current_folder(hash_model, tmp_path, monkeypatch, capsys):
    from parlai_hash.scripts.expert_load import ExpertLoadScript

    mf, folder = hash_model
    monkeypatch.chdir(tmp_path)
    ExpertLoadScript.main('-mf', mf, *TASK_ARGS, '--datapath', str(folder))
    # The model file is <folder>/balanced/model: the files are named after the folder.
    csv, png = tmp_path / 'expert_load_balanced.csv', tmp_path / 'expert_load_balanced.png'
    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    frame = pd.read_csv(csv)
    assert list(frame.columns) == ['layer', 'expert', 'tokens', 'share', 'load_vs_mean']
    assert len(frame) == 2 * K
    assert f'dec1: {K} experts, busiest' in capsys.readouterr().out


def test_parlai_registers_the_command(hash_model, tmp_path):
    mf, folder = hash_model
    out = parlai('expert_load', '-mf', mf, *TASK_ARGS, '--datapath', str(folder), '--outdir', str(tmp_path / 'o'),
                 '--load-name', 'mine')
    assert (tmp_path / 'o' / 'expert_load_mine.png').exists() and (tmp_path / 'o' / 'expert_load_mine.csv').exists()
    assert 'wrote ' + str(tmp_path / 'o' / 'expert_load_mine.csv') in out.stdout


def test_a_dense_model_or_no_model_is_a_one_line_error(tmp_path):
    from parlai.scripts.eval_model import setup_args

    from parlai_hash.sweeps.expert_load import measure_expert_load

    opt = setup_args().parse_args(['-mf', str(tmp_path / 'nothing'), *TASK_ARGS])
    with pytest.raises(OptionError, match='--model-file: no model at'):
        measure_expert_load(opt)
    mf = str(tmp_path / 'dense' / 'model')
    parlai('train_model', '-m', 'transformer/generator', *TASK_ARGS, *MODEL_ARGS, '--max-train-steps', '1',
           '--datapath', str(tmp_path), '-mf', mf)
    opt = setup_args().parse_args(['-mf', mf, *TASK_ARGS, '--datapath', str(tmp_path)])
    with pytest.raises(OptionError, match='has no sparse layer .*pass a hash_generator, switch_generator'):
        measure_expert_load(opt)


def test_load_metric_sums_counts_over_batches():
    from parlai.core.metrics import Metrics

    from parlai_hash.metrics import ExpertLoadMetric, load_metrics

    a, b = ExpertLoadMetric([3, 1], 'max'), ExpertLoadMetric([1, 3], 'max')
    assert a.value() == pytest.approx(1.5) and b.value() == pytest.approx(1.5)
    assert (a + b).value() == pytest.approx(1.0)  # [4, 4]: balanced
    ent = ExpertLoadMetric([3, 1], 'entropy') + ExpertLoadMetric([1, 3], 'entropy')
    assert ent.value() == pytest.approx(1.0)
    # three batches, the way ParlAI accumulates them between reports
    metrics = Metrics()
    for counts in ([6, 0, 0, 2], [0, 2, 0, 2], [0, 0, 4, 0]):
        for key, metric in load_metrics('dec0', torch.tensor(counts)).items():
            metrics.add(key, metric)
    report = metrics.report()
    assert float(report['dec0_load_max']) == pytest.approx(6 / 16 * 4)
    shares = [6 / 16, 2 / 16, 4 / 16, 4 / 16]
    assert float(report['dec0_load_ent']) == pytest.approx(
        -sum(s * math.log(s) for s in shares) / math.log(4))
