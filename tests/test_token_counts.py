"""balanced hashing gets real frequencies even from a dictionary without counts."""

import torch
from parlai.core.agents import create_agent
from parlai.core.params import ParlaiParser

from parlai_hash.token_counts import count_training_tokens, counts_are_informative


def agent_with(tmp_path, dict_counts_all_one):
    from parlai.scripts.build_dict import BuildDict
    d = str(tmp_path / 'model.dict')
    BuildDict.main(task='integration_tests:nocandidate', dict_file=d)
    if dict_counts_all_one:  # what ParlAI does to a byte-level BPE dictionary
        lines = [line.split('\t')[0] + '\t1' for line in open(d).read().splitlines()]
        open(d, 'w').write('\n'.join(lines) + '\n')
    args = ['-m', 'hash_generator', '-t', 'integration_tests:nocandidate', '--dict-file', d,
            '-mf', str(tmp_path / 'm'), '--n-layers', '2', '--embedding-size', '16',
            '--ffn-size', '32', '--n-heads', '2', '--num-experts', '4', '--hash-type', 'balanced']
    return create_agent(ParlaiParser(True, True).parse_args(args))


def test_informative_counts():
    assert counts_are_informative(torch.tensor([0., 3., 1.]))
    assert not counts_are_informative(torch.tensor([0., 1., 1., 1.]))
    assert not counts_are_informative(torch.zeros(3))


def test_counting_matches_the_dictionary_counts_on_the_same_data(tmp_path):
    agent = agent_with(tmp_path, dict_counts_all_one=False)
    counted = count_training_tokens(agent.opt, agent.dict, max_examples=10**6)
    for tok in ('1', '5', '9'):
        assert counted[agent.dict[tok]] == agent.dict.freq[tok]


def test_balanced_table_uses_counted_frequencies_when_the_dictionary_has_none(tmp_path):
    with_counts = agent_with(tmp_path / 'a', dict_counts_all_one=False)
    without = agent_with(tmp_path / 'b', dict_counts_all_one=True)
    t1 = with_counts.model.decoder.layers[0].ffn.router.table
    t2 = without.model.decoder.layers[0].ffn.router.table
    assert torch.equal(t1, t2)  # counting recovered the same frequencies
