"""Model cards: one per agent the sweeps train, in ParlAI's card layout, and
their generated parts up to date with the sweep files and committed results."""

import re
import shutil
import textwrap

import pytest

from conftest import REPO
from parlai_hash.sweeps.errors import SweepError
from parlai_hash.sweeps.model_cards import fill_blocks, load_cards_config, update_cards
from parlai_hash.sweeps.records import write_record
from parlai_hash.sweeps.spec import load_sweep

CARDS = REPO / 'model_cards'
SECTIONS = ['## Quick Usage', '## Intended Use', '## Limitations', '## Privacy', '## Datasets Used',
            '## Evaluation Results', '## Extra Analysis', '## Related Paper(s)', '## Hyperparameters']


def test_every_agent_the_sweeps_train_has_a_card():
    agents = {p.options['model'] for path in (REPO / 'sweeps').glob('*.yaml')
              for p in load_sweep(path).points('local', strict_env=False)}
    config = load_cards_config(CARDS / 'cards.yaml')
    carded = set()
    for card in config.cards:
        points = {p.name: p for p in config.for_card(card).sweep.points('local', strict_env=False)}
        carded.add(points[card.point].options['model'])
    assert agents == {'hash_generator', 'switch_generator', 'base_generator', 'transformer/generator',
                      'mixed_generator'}
    assert agents <= carded


@pytest.mark.parametrize('card', ['hash_layer.md', 'switch_transformer.md', 'base_layer.md',
                                  'baseline_transformer.md', 'mixed_stack.md'])
def test_cards_have_parlais_sections_filled_blocks_and_existing_images(card):
    text = (CARDS / card).read_text()
    assert text.startswith('# ')
    positions = [text.index(s) for s in SECTIONS]
    assert positions == sorted(positions)
    for name in ('details', 'usage', 'evaluation', 'expert_load', 'hyperparameters'):
        block = re.search(rf'<!-- generated:{name} -->\n(.*?)<!-- /generated:{name} -->', text, re.S)
        assert block and block.group(1).strip(), name
    for image in re.findall(r'!\[[^\]]*\]\(([^)]+)\)', text):
        assert (CARDS / image).exists(), image


def test_committed_cards_are_up_to_date_with_sweeps_and_results():
    stale = update_cards(CARDS / 'cards.yaml', check=True)
    assert stale == [], f'run: python -m parlai_hash.sweeps cards model_cards/cards.yaml ({stale})'


def test_generated_parts_come_from_the_records(tmp_path):
    """A card regenerated against a made-up result shows that result."""
    (tmp_path / 'pyproject.toml').write_text('')
    shutil.copytree(REPO / 'sweeps', tmp_path / 'sweeps', ignore=shutil.ignore_patterns('results'))
    cards = tmp_path / 'model_cards'
    cards.mkdir()
    shutil.copy(CARDS / 'hash_layer.md', cards / 'hash_layer.md')
    (cards / 'cards.yaml').write_text(textwrap.dedent("""
        sweep: ../sweeps/table4.yaml
        results: ../results
        cards: [{file: hash_layer.md, point: hash_balanced, compare: [baseline]}]
    """))
    common = {'options': {'task': 'wikitext103'}, 'train_steps': 123, 'seed': 5, 'active_params': 1_000_000}
    write_record(tmp_path / 'results' / 'records' / 'hash_balanced.json',
                 {**common, 'params': 2_500_000, 'valid': {'ppl': 321.987}, 'test': {'ppl': 300.5}})
    write_record(tmp_path / 'results' / 'records' / 'baseline.json',
                 {**common, 'params': 1_000_000, 'valid': {'ppl': 400.0}, 'test': {'ppl': 390.0}})
    (tmp_path / 'results' / 'expert_load').mkdir()
    (tmp_path / 'results' / 'expert_load' / 'hash_balanced.csv').write_text(
        'layer,expert,tokens,share,load_vs_mean\n' + ''.join(
            f'dec2,{e},{t},0,0\n' for e, t in enumerate([30] + [10] * 15)))
    assert update_cards(cards / 'cards.yaml') == [cards / 'hash_layer.md']
    text = (cards / 'hash_layer.md').read_text()
    assert '| **Hash Layer** | layers=4, modules=1x16 balanced | 2.5M | 321.99 | 300.50 |' in text
    assert '| Baseline Transformer | layers=4, d=128, D=128 | 1M | 400.00 | 390.00 |' in text
    assert '123 steps, seed 5' in text
    assert 'the busiest gets 2.67x the mean' in text  # 30 / (180 / 16)
    assert (cards / 'images' / 'hash_layer_expert_load.png').read_bytes()[:4] == b'\x89PNG'
    assert '| `num_experts` | 16 | 16 |' in text  # Table 4 is 1x16 at both scales
    assert '| `load_balance_weight` |' not in text  # a hash card lists no Switch option
    assert update_cards(cards / 'cards.yaml', check=True) == []
    # A second seed turns the cells into mean ± 95% interval and names the seeds.
    write_record(tmp_path / 'results' / 'records' / 'hash_balanced@seed1.json',
                 {**common, 'seed': 6, 'params': 2_500_000, 'valid': {'ppl': 331.987}, 'test': {'ppl': 310.5}})
    assert update_cards(cards / 'cards.yaml') == [cards / 'hash_layer.md']
    text = (cards / 'hash_layer.md').read_text()
    assert '123 steps, seeds 5, 6, mean ± half-width of a 95% Student t interval' in text
    # mean 326.987, sd 7.071, t(0.975, 1) = 12.706: half-width 63.53
    assert '| **Hash Layer** | layers=4, modules=1x16 balanced | 2.5M | 326.99 ± 63.53 | 305.50 ± 63.53 |' in text
    assert '| Baseline Transformer | layers=4, d=128, D=128 | 1M | 400.00 | 390.00 |' in text
    # A compared model's seed that the card's model did not run is left out:
    # a seed shifts every model, so rows must average the same seeds.
    write_record(tmp_path / 'results' / 'records' / 'baseline@seed2.json',
                 {**common, 'seed': 7, 'params': 1_000_000, 'valid': {'ppl': 100.0}, 'test': {'ppl': 90.0}})
    assert update_cards(cards / 'cards.yaml') == []
    assert '| Baseline Transformer | layers=4, d=128, D=128 | 1M | 400.00 | 390.00 |' in text


def test_a_card_without_a_generated_block_is_an_error():
    with pytest.raises(SweepError, match='has no <!-- generated:usage --> block'):
        fill_blocks('# Card\n<!-- generated:details -->\n<!-- /generated:details -->\n',
                    {'details': 'x\n', 'usage': 'y\n'}, 'card.md')
