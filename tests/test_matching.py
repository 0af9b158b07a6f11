"""Matching: assignment against brute force, cached against uncached scoring, packed against batched scoring,
statistics and their state."""

import itertools
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ssft.config import ModelConfig
from ssft.errors import UserError
from ssft.train import models
from ssft.train.matching import (
    MatchStats,
    ScoreItem,
    agreement_with_full,
    assign,
    block_mask,
    packed_batch,
    score_costs,
)


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


def test_ties_break_at_random_given_a_generator() -> None:
    """Equal costs (new tags share one embedding; traces that share their first L tokens cost the same)
    must not hand trace j to tag j: that would copy the data's strategy order onto the tags."""
    rng = np.random.default_rng(0)
    draws = [tuple(assign(np.ones((4, 4)), rng)) for _ in range(480)]
    counts = Counter(draws)
    assert len(counts) == 24 and max(counts.values()) < 45, counts   # all 24 matchings, none favoured
    assert all(sorted(d) == [0, 1, 2, 3] for d in draws)
    c = np.ones((3, 3))
    c[2, 0] = 1 - 2e-6                               # a real preference (2 x TIE_RESOLUTION) always wins
    assert all(assign(c, rng)[2] == 0 for _ in range(200))
    near = np.ones((2, 2))
    near[0, 1] += 1e-9                               # below the resolution: still a tie
    assert {tuple(assign(near, rng)) for _ in range(100)} == {(0, 1), (1, 0)}


def test_more_traces_than_tags_is_an_error() -> None:
    with pytest.raises(ValueError, match="ssft.num_tags must be >= traces"):
        assign(np.zeros((3, 2)))


@pytest.fixture(scope="module", params=["eager", "sdpa"])
def scored(request: pytest.FixtureRequest) -> tuple:
    """A tiny model and 5 questions of different lengths (so shared prefixes are padded differently), each
    with N = 6 tag prompts (question + tag + a shared suffix) and 2..4 traces of different lengths."""
    cfg = ModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                      attn_implementation=request.param)
    model, tok = models.build(cfg, 6, 0)
    g = torch.Generator().manual_seed(0)
    ids = lambda n: torch.randint(5, 60, (n,), generator=g).tolist()
    items = []
    for k in range(5):
        question, suffix = ids(3 + 2 * k), ids(k % 2)
        tags = [60 + i for i in range(6)]
        items.append(ScoreItem([question + [t] + suffix for t in tags],
                               [ids(4 + (3 * j + k) % 7) + [2] for j in range(2 + k % 3)]))
    return model, tok, items


def _naive(model, prompt: list[int], comp: list[int], cost_tokens: int) -> float:  # noqa: ANN001
    """One unpadded forward per (trace, tag): mean NLL of the first L trace tokens."""
    n = cost_tokens or len(comp)
    x = torch.tensor([prompt + comp])
    with torch.no_grad():
        logits = model(input_ids=x).logits[0].float()
    nll = F.cross_entropy(logits[:-1], x[0, 1:], reduction="none")
    return nll[len(prompt) - 1: len(prompt) - 1 + min(n, len(comp))].mean().item()


@pytest.mark.parametrize("prefix_cache", [True, False])
@pytest.mark.parametrize("cost_tokens", [0, 5])
def test_costs_equal_one_unpadded_forward_per_pair(scored: tuple, cost_tokens: int, prefix_cache: bool) -> None:
    model, tok, items = scored
    costs = score_costs(model, items, cost_tokens, tok.pad_token_id, prefix_cache=prefix_cache)
    assert [c.shape for c in costs] == [(len(it.completions), 6) for it in items]
    for it, c in zip(items, costs):
        want = [[_naive(model, list(p), list(t), cost_tokens) for p in it.prompts] for t in it.completions]
        np.testing.assert_allclose(c, np.array(want), atol=1e-5)


def test_scoring_leaves_training_mode_and_grads_alone(scored: tuple) -> None:
    model, tok, items = scored
    model.train()
    score_costs(model, items, 4, tok.pad_token_id)
    assert model.training and all(p.grad is None for p in model.parameters())


# -- packed scoring (ssft.scoring: packed): the paper's one forward pass -----------------------------------
def test_packed_rows_exactly() -> None:
    """Two questions of different lengths, N = 2 tags + a shared suffix token 9, M = 1 and 2 traces, L = 2: one
    row each (right-padded), the question once, then trace-major (trace j, tag i) segments: the tag, the
    suffix and the first L trace tokens but the last; positions restart after the question in each segment."""
    items = [ScoreItem([[7, 8, 60, 9], [7, 8, 61, 9]], [[3, 4, 5]]),
             ScoreItem([[6, 60, 9], [6, 61, 9]], [[3, 2], [4]])]
    b = packed_batch(items, 2, pad_id=0)
    assert b.ids.tolist() == [[7, 8, 60, 9, 3, 61, 9, 3, 0, 0, 0],
                              [6, 60, 9, 3, 61, 9, 3, 60, 9, 61, 9]]
    assert b.segment.tolist() == [[0, 0, 1, 1, 1, 2, 2, 2, -1, -1, -1],
                                  [0, 1, 1, 1, 2, 2, 2, 3, 3, 4, 4]]
    assert b.positions.tolist() == [[0, 1, 2, 3, 4, 2, 3, 4, 0, 0, 0],
                                    [0, 1, 2, 3, 1, 2, 3, 1, 2, 1, 2]]
    # the state at the suffix predicts the first trace token; trace [4] is shorter than L: scored whole
    assert b.targets.positions.tolist() == [3, 4, 6, 7, 11 + 2, 11 + 3, 11 + 5, 11 + 6, 11 + 8, 11 + 10]
    assert b.targets.tokens.tolist() == [3, 4, 3, 4, 3, 2, 3, 2, 4, 4]
    assert b.row.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 5] and b.counts.tolist() == [2, 2, 2, 2, 1, 1]


def test_block_mask_sees_the_question_and_its_own_segment_only() -> None:
    seg = torch.tensor([[0, 0, 1, 1, 2, 2, -1]])
    want = torch.tensor([[1, 0, 0, 0, 0, 0, 0],
                         [1, 1, 0, 0, 0, 0, 0],
                         [1, 1, 1, 0, 0, 0, 0],
                         [1, 1, 1, 1, 0, 0, 0],
                         [1, 1, 0, 0, 1, 0, 0],
                         [1, 1, 0, 0, 1, 1, 0],
                         [1, 1, 0, 0, 0, 0, 1]], dtype=torch.bool)   # padding: the question and itself
    assert torch.equal(block_mask(seg, "sdpa", torch.float32)[0, 0], want)
    eager = block_mask(seg, "eager", torch.bfloat16)
    assert eager.dtype == torch.bfloat16 and torch.equal(eager[0, 0] == 0, want)   # additive: 0 or the minimum
    assert (eager[0, 0][~want] == torch.finfo(torch.bfloat16).min).all()
    with pytest.raises(UserError, match="model.attn_implementation to eager or sdpa"):
        block_mask(seg, "flash_attention_2", torch.float32)


def _random_items(seed: int, n: int = 5) -> list[ScoreItem]:
    """4 questions of different lengths (one micro-batch, so packed rows pad differently), N tags, M = 1..4 < N
    traces of 1..10 tokens (some shorter than the L = 6 tested), a tag suffix of 0..2 tokens."""
    g = torch.Generator().manual_seed(seed)
    ids = lambda k: torch.randint(5, 60, (k,), generator=g).tolist()  # noqa: E731
    draw = lambda lo, hi: int(torch.randint(lo, hi + 1, (1,), generator=g))  # noqa: E731
    items = []
    for _ in range(4):
        question, suffix = ids(draw(1, 9)), ids(draw(0, 2))
        items.append(ScoreItem([question + [60 + i] + suffix for i in range(n)],
                               [ids(draw(0, 9)) + [2] for _ in range(draw(1, n - 1))]))
    return items


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("cost_tokens", [0, 6])
def test_packed_costs_equal_batched_costs(scored: tuple, seed: int, cost_tokens: int) -> None:
    """One packed row per question gives every (trace, tag) cost of the batched rows, cached or not, to 1e-5 in
    float32 (eager and sdpa, by the fixture), in one forward call whatever the data (FSDP keeps ranks in step)."""
    model, tok, _ = scored
    items = _random_items(seed)
    calls = []
    hook = model.register_forward_pre_hook(lambda mod, args: calls.append(1))
    try:
        packed = score_costs(model, items, cost_tokens, tok.pad_token_id, scoring="packed")
    finally:
        hook.remove()
    assert len(calls) == 1, "packed scoring is one forward call for the whole micro-batch"
    for cache in (True, False):
        batched = score_costs(model, items, cost_tokens, tok.pad_token_id, prefix_cache=cache)
        for it, p, b in zip(items, packed, batched):
            assert p.shape == b.shape == (len(it.completions), 5)
            np.testing.assert_allclose(p, b, rtol=0, atol=1e-5)
    assert any(not np.allclose(c, c[:, :1], atol=1e-3) for c in packed), "the tags must cost differently"


def test_packed_scoring_through_agreement_and_the_config_rule(scored: tuple) -> None:
    from ssft.config import ConfigError, from_dict

    model, tok, items = scored
    assert agreement_with_full(model, items, 5, tok.pad_token_id, seed=0, scoring="packed") == \
        agreement_with_full(model, items, 5, tok.pad_token_id, seed=0)
    with pytest.raises(UserError, match="ssft.scoring='flat'"):
        score_costs(model, items, 5, tok.pad_token_id, scoring="flat")
    with pytest.raises(ConfigError, match="ssft.scoring"):
        from_dict({"ssft": {"scoring": "flat"}})
    with pytest.raises(ConfigError, match="ssft.scoring.*eager or sdpa"):
        from_dict({"ssft": {"scoring": "packed"}, "model": {"attn_implementation": "flash_attention_2"}})
    assert from_dict({"ssft": {"scoring": "packed"}}).ssft.scoring == "packed"


def test_the_trainer_scores_packed_when_configured(tmp_path: Path, trace_dir: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """ssft.scoring reaches SSFTTrainer.compute_loss: every step's costs come from packed rows, and it trains."""
    from conftest import tiny_cfg

    from ssft.train import trainer

    layouts, real = [], trainer.score
    monkeypatch.setattr(trainer, "score", lambda model, batch, items: layouts.append(type(batch).__name__) or
                        real(model, batch, items))
    cfg = tiny_cfg(**{"ssft.scoring": "packed", "train.max_steps": 2, "train.logging_steps": 1})
    stats = trainer.run_stage(cfg, "ssft", trace_dir / "train.parquet", tmp_path / "models", tmp_path / "ckpt")
    assert layouts == ["PackedBatch", "PackedBatch"] and np.isfinite(stats["train_loss"])


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


def test_fork_depth_makes_a_short_cost_prefix_blind() -> None:
    """task.options.fork_depth = k: every strategy's trace shares its first k tokens. A cost over L <= k tokens
    cannot tell the traces apart (each tag's costs are equal across traces: the matching is a tie-break);
    past the fork it can."""
    from ssft.data.tasks import get_task

    task = get_task("add4", marked=True, fork_depth=6)
    problem = task.problems(1, seed=0)[0]
    texts = [task.render(problem, s) for s in task.strategies]
    assert len({t[:6] for t in texts}) == 1 and len({t[:7] for t in texts}) == len(texts)
    assert [task.classify(problem, t) for t in texts] == list(task.strategies), "classified past the prefix"
    model, tok = models.build(ModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64), 4, 0)
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    item = ScoreItem([enc(f"{problem.question}<think{i}>") for i in range(1, 5)], [enc(t) for t in texts])
    blind = score_costs(model, [item], 6, tok.pad_token_id)[0]
    sighted = score_costs(model, [item], 8, tok.pad_token_id)[0]
    assert np.allclose(blind, blind[:1], atol=1e-5), blind      # every trace row the same
    assert not np.allclose(sighted, sighted[:1], atol=1e-3), sighted


def test_a_cost_prefix_inside_the_shared_tokens_disagrees_with_whole_trace_matching() -> None:
    """Traces that share their first 4 tokens cost the same under L <= 4 for every tag (a tie: a random
    matching), while their whole texts differ: agreement near 1/3! = 0.17; past the fork it is exact."""
    model, _ = models.build(ModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64), 3, 0)
    g = torch.Generator().manual_seed(1)
    ids = lambda n: torch.randint(5, 60, (n,), generator=g).tolist()
    items = []
    for _ in range(60):
        question, shared = ids(4), ids(4)
        items.append(ScoreItem([question + [60 + i] for i in range(3)], [shared + ids(5) + [2] for _ in range(3)]))
    assert agreement_with_full(model, items, 10, 0, seed=0) == 1.0
    assert agreement_with_full(model, items, 4, 0, seed=0) < 0.4
    # Without ties, one scored token still ranks the tags otherwise than whole traces for some questions
    # (never all: the comparison must be with whole-trace costs, not the short ones again).
    distinct = [ScoreItem(it.prompts, [ids(9) + [2] for _ in range(3)]) for it in items]
    assert 0.0 < agreement_with_full(model, distinct, 1, 0, seed=0) < 1.0


def test_a_question_counts_once_per_epoch() -> None:
    """accelerate's even_batches repeats questions at a DDP epoch's end: they are trained, not counted twice."""
    from ssft.train.matching import MatchStats

    stats = MatchStats(num_tags=2)
    assert stats.record("q", ["a", "b"], [1, 2]) and not stats.record("q", ["a", "b"], [2, 1])
    restored = MatchStats.from_state(stats.state())
    assert not restored.record("q", ["a", "b"], [1, 2]), "the open epoch's questions survive a checkpoint"
    assert stats.close_epoch(0, 1)["questions"] == 1
    assert stats.record("q", ["a", "b"], [2, 1]), "a new epoch counts it again"
