"""Matching: assignment against brute force, cached against uncached scoring, statistics and their state."""

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ssft.config import ModelConfig
from ssft.data.tasks import get_task
from ssft.train import models
from ssft.train.forking import completion_ids, prompt_ids
from ssft.train.matching import MatchStats, ScoreItem, assign, score_costs


def brute_force(cost: np.ndarray) -> float:
    m, n = cost.shape
    return min(sum(cost[j, p[j]] for j in range(m)) for p in itertools.permutations(range(n), m))


@pytest.mark.parametrize("seed", range(5))
def test_assignment_equals_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for n in range(1, 7):
        for m in range(1, n + 1):
            cost = rng.gamma(2.0, 1.0, size=(m, n))
            tags = assign(cost)
            assert len(set(tags)) == m, "assignment must be injective"
            assert cost[np.arange(m), tags].sum() == pytest.approx(brute_force(cost), abs=1e-5), (m, n)


def test_ties_break_deterministically_towards_low_tags() -> None:
    assert assign(np.ones((4, 4))).tolist() == [0, 1, 2, 3]
    assert assign(np.ones((2, 6))).tolist() == [0, 1]
    c = np.ones((3, 3))
    c[2, 0] = 0.5                                   # a real preference wins over the tie-breaker
    assert assign(c).tolist()[2] == 0


def test_more_traces_than_tags_is_an_error() -> None:
    with pytest.raises(ValueError, match="ssft.num_tags must be >= traces"):
        assign(np.zeros((3, 2)))


@pytest.fixture(scope="module")
def scored() -> tuple:
    task = get_task("add4", marked=False)
    model, tok = models.build(ModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64), 6, 0)
    problems = task.problems(5, seed=0)
    items = [ScoreItem([prompt_ids(tok, p.question, i) for i in range(1, 7)],
                       [completion_ids(tok, task.render(p, s)) for s in task.strategies[: 2 + k % 3]])
             for k, p in enumerate(problems)]
    return model, tok, items


@pytest.mark.parametrize("cost_tokens", [0, 5, 12])
def test_prefix_cache_gives_the_same_costs(scored: tuple, cost_tokens: int) -> None:
    model, tok, items = scored
    a = score_costs(model, items, cost_tokens, tok.pad_token_id, prefix_cache=True)
    b = score_costs(model, items, cost_tokens, tok.pad_token_id, prefix_cache=False)
    assert [x.shape for x in a] == [(len(it.completions), 6) for it in items]
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, atol=1e-5)


def test_cost_is_mean_nll_of_first_l_trace_tokens_only(scored: tuple) -> None:
    model, tok, items = scored
    it, L = items[0], 7
    costs = score_costs(model, items[:1], L, tok.pad_token_id)[0]
    for j, i in [(0, 0), (1, 3)]:
        prompt, comp = list(it.prompts[i]), list(it.completions[j])
        ids = torch.tensor([prompt + comp])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0]
        nll = F.cross_entropy(logits[:-1], ids[0, 1:], reduction="none")
        want = nll[len(prompt) - 1: len(prompt) - 1 + L].mean().item()
        assert costs[j, i] == pytest.approx(want, abs=1e-5)


def test_scoring_leaves_training_mode_and_grads_alone(scored: tuple) -> None:
    model, tok, items = scored
    model.train()
    score_costs(model, items, 4, tok.pad_token_id)
    assert model.training and all(p.grad is None for p in model.parameters())


def test_match_stats_epochs_churn_and_state_round_trip() -> None:
    st = MatchStats(num_tags=3)
    st.record("q1", ["a", "b"], [1, 2], [0.5, 1.5])
    st.record("q2", ["a", "b"], [2, 1], [1.0, 1.0])
    s0 = st.close_epoch(0, step=1)
    assert s0["churn"] is None and s0["mean_matched_cost"] == 1.0
    assert s0["tag_match_rate"] == {"1": 1.0, "2": 1.0, "3": 0.0}
    assert s0["tag_source_counts"] == {"1": {"a": 1, "b": 1}, "2": {"a": 1, "b": 1}}
    assert s0["assignment_entropy"] == pytest.approx(np.log(2))
    st.record("q1", ["a", "b"], [1, 2])
    st.record("q2", ["a", "b"], [1, 3])
    restored = MatchStats.from_state(st.state())
    for s in (st, restored):
        assert s.summary()["churn"] == 0.5
    assert restored.totals() == st.totals() == {1: {"a": 3, "b": 1}, 2: {"a": 1, "b": 2}, 3: {"b": 1}}
