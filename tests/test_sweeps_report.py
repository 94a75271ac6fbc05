"""Records, the paper-layout table and the plots, from records written here."""

import json
import math
import os

import numpy as np
import pytest

from parlai_hash.sweeps import plots
from parlai_hash.sweeps.records import numeric_report, read_record, train_dropped, valid_curve, write_record
from parlai_hash.sweeps.report import human_count, paper_table, records_frame, to_markdown, write_report
from parlai_hash.sweeps.spec import Point

PNG = b'\x89PNG\r\n\x1a\n'


def point(tmp_path, name, model, configuration):
    return Point(sweep='s', scale='local', name=name, model=model, configuration=configuration,
                 options={}, run_dir=tmp_path / name)


def test_records_are_written_atomically_and_read_back(tmp_path, monkeypatch):
    path = tmp_path / 'p' / 'record.json'
    write_record(path, {'point': 'p', 'valid': {'ppl': 12.5}})
    record = read_record(path)
    assert record['valid'] == {'ppl': 12.5} and record['format'] == 1 and 'finished_at' in record
    assert read_record(tmp_path / 'missing.json') is None

    # A failure while writing leaves the old record, and no temporary file.
    def fail(*args, **kwargs):
        raise OSError('disk full')

    monkeypatch.setattr(json, 'dump', fail)
    with pytest.raises(OSError):
        write_record(path, {'point': 'p', 'valid': {'ppl': 99.0}})
    assert read_record(path)['valid'] == {'ppl': 12.5}
    assert os.listdir(path.parent) == ['record.json']


def test_numeric_report_keeps_finite_numbers_only():
    class Metric:
        def __init__(self, v):
            self.v = v

        def value(self):
            return self.v

    report = {'ppl': Metric(20.0), 'loss': 3.0, 'exs': 7, 'bad': float('nan'), 'inf': math.inf,
              'text': 'x', 'flag': True}
    assert numeric_report(report) == {'ppl': 20.0, 'loss': 3.0, 'exs': 7.0}


def test_valid_curve_reads_parlai_trainstats():
    stats = {'valid_reports': [{'train_steps': 100, 'ppl': 50.0}, {'train_steps': 200, 'ppl': 40.0},
                               {'ppl': 1.0}]}
    assert valid_curve(stats, 'ppl') == [{'train_steps': 100.0, 'ppl': 50.0}, {'train_steps': 200.0, 'ppl': 40.0}]


def test_train_dropped_is_the_last_windows_mean_over_layers():
    stats = {'train_reports': [{'dec1_dropped': 0.5, 'dec3_dropped': 0.5},
                               {'dec1_dropped': 0.10, 'dec3_dropped': 0.30, 'dec1_load_max': 2.0, 'ppl': 9.0}]}
    assert train_dropped(stats) == pytest.approx(0.20)
    assert train_dropped({'train_reports': [{'ppl': 9.0, 'dec1_load_max': 1.5}]}) is None  # a hash layer
    assert train_dropped({'valid_reports': []}) is None  # no training log window


@pytest.mark.parametrize('n, text', [
    (222_000_000, '222M'), (751_234_567, '751M'), (1_284_159_488, '1.28B'), (18_032, '18K'),
    (2_791_040, '2.79M'), (950, '950'), (None, '—'),
])
def test_parameter_counts_are_written_the_papers_way(n, text):
    assert human_count(n) == text


def test_table_rows_follow_the_sweep_and_show_missing_points(tmp_path):
    points = [point(tmp_path, 'dense', 'Baseline Transformer', 'dense'),
              point(tmp_path, 'hash', 'Hash Layer', '1x64'),
              point(tmp_path, 'switch', 'Switch Transformer', '1x64')]
    write_record(points[0].record_file, {'params': 222_000_000, 'valid': {'ppl': 24.9}, 'test': {'ppl': 24.8},
                                         'train_steps': 100})
    write_record(points[1].record_file, {'params': 751_000_000, 'valid': {'ppl': 23.164}, 'test': {'ppl': 23.001},
                                         'train_steps': 100})
    frame = records_frame(points, 'ppl')
    assert list(frame['point']) == ['dense', 'hash', 'switch']
    assert list(frame['finished']) == [True, True, False]
    table = paper_table(frame, 'ppl')
    assert list(table.columns) == ['Model', 'Configuration', 'Params', 'Valid PPL', 'Test PPL']
    assert table.iloc[1].tolist() == ['Hash Layer', '1x64', '751M', '23.16', '23.00']
    assert table.iloc[2].tolist() == ['Switch Transformer', '1x64', '—', '—', '—']
    md = to_markdown(table).splitlines()
    assert md[0] == '| Model | Configuration | Params | Valid PPL | Test PPL |'
    assert md[1] == '|---|---|---:|---:|---:|'
    paths = write_report(frame, 'ppl', tmp_path / 'out', 'demo', 'Demo')
    text = paths['md'].read_text()
    assert text.startswith('# Demo\n') and '1 of 3 points have no result yet.' in text
    assert paths['csv'].read_text().splitlines()[0].startswith('point,model,configuration,params,valid_ppl,test_ppl')


def test_expert_load_is_relative_to_the_mean_and_sorted():
    ratio = plots.load_vs_mean([10, 30, 20, 20])
    assert ratio.tolist() == [1.5, 1.0, 1.0, 0.5]
    assert plots.load_vs_mean([0, 0]).tolist() == [0.0, 0.0]


def test_plots_are_png_files(tmp_path):
    curves = plots.plot_valid_curves({'Hash': [(100, 50.0), (200, 30.0)], 'Dense': [(100, 55.0), (200, 35.0)]},
                                     tmp_path / 'curves.png')
    versus = plots.plot_versus({'Hash': [(16, 20.0), (64, 18.0), (128, 17.5)]}, tmp_path / 'versus.png',
                               'experts', log_x=True)
    load = plots.plot_expert_load({'random': np.array([5, 1, 1, 1]), 'balanced': [2, 2, 2, 2]},
                                  tmp_path / 'load.png', subtitle='valid')
    for path in (curves, versus, load):
        data = path.read_bytes()
        assert data[:8] == PNG and len(data) > 5000
