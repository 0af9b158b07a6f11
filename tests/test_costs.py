"""`ssft costs`: which trace tokens decide the matching, by how much, and whether the tags mean strategies."""

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import TINY, tiny_cfg

from ssft.cli import main
from ssft.eval import costs


def _brute(nll: np.ndarray) -> tuple[float, float, tuple[int, ...]]:
    """(best, second-best total cost, best tags) over every injective map traces -> tags."""
    counts = (~np.isnan(nll[:, 0, :])).sum(axis=1)
    cost = np.nansum(nll, axis=2) / counts[:, None]
    m, n = cost.shape
    totals = sorted((sum(cost[j, p[j]] for j in range(m)), p) for p in itertools.permutations(range(n), m))
    return totals[0][0], totals[1][0], tuple(i + 1 for i in totals[0][1])


@pytest.mark.parametrize(("m", "n"), [(2, 2), (2, 3), (3, 4), (4, 4), (3, 6)])
def test_the_runner_up_is_the_second_cheapest_assignment(m: int, n: int) -> None:
    rng = np.random.default_rng(m * 10 + n)
    for _ in range(20):
        nll = rng.exponential(size=(m, n, 5))
        nll[0, :, 3:] = np.nan  # a short trace: its mean is over its own tokens
        d = costs.decide(nll)
        best, second, tags = _brute(nll)
        assert d.margin == pytest.approx(second - best) and d.tags == tags
        assert d.by_position.sum() == pytest.approx(d.margin), "the positions' shares add up to the margin"


def test_a_margin_made_at_one_position_is_put_there() -> None:
    """Two traces, two tags, three tokens: only the first token depends on the tag (0.1 under its own, 5 under
    the other); the margin (5 + 5 - 0.1 - 0.1) / 3 is all position 1's."""
    nll = np.ones((2, 2, 3))
    nll[:, :, 0] = [[0.1, 5.0], [5.0, 0.1]]
    d = costs.decide(nll)
    assert d.tags == (1, 2) and d.margin == pytest.approx(9.8 / 3)
    np.testing.assert_allclose(d.by_position, [9.8 / 3, 0, 0], atol=1e-12)


def test_position_nll_of_a_padded_batch_is_each_row_alone() -> None:
    """Prompts and traces of different lengths in one padded pass give each row's own teacher-forced NLL, NaN
    past a trace's end (a shifted state or a padded one would not)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=20, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                         num_key_value_heads=2, intermediate_size=32)).eval()
    prompts, completions = [[1, 2, 3], [1, 2, 3, 4, 5]], [[6, 7, 8, 9], [10, 11]]
    got = costs.position_nll(model, prompts, completions, 3)
    assert got.shape == (2, 2, 3) and np.isnan(got[1, :, 2]).all() and not np.isnan(got[0]).any()
    for j, c in enumerate(completions):
        for i, p in enumerate(prompts):
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=torch.tensor([p + c])).logits[0], -1)
            want = [-float(logp[len(p) + k - 1, c[k]]) for k in range(min(3, len(c)))]
            np.testing.assert_allclose(got[j, i, :len(want)], want, rtol=1e-4, atol=1e-5)


def test_agreement_tells_one_map_per_strategy_from_one_per_question() -> None:
    nll = np.zeros((2, 2, 1))
    same = [costs.Decision(1.0, np.array([1.0]), (1, 2)), costs.Decision(1.0, np.array([1.0]), (2, 1))]
    r = costs.summarise([nll, nll], same, [("forward", "reverse"), ("reverse", "forward")], ["a"])
    assert r["agreement"] == 1.0 and r["tag_strategy"] == {"1": {"forward": 2}, "2": {"reverse": 2}}
    r = costs.summarise([nll, nll], same, [("forward", "reverse"), ("forward", "reverse")], ["a"])
    assert r["agreement"] == 0.5 and r["tag_strategy"]["1"] == {"forward": 1, "reverse": 1}


def test_ssft_costs_reads_a_trained_model(tmp_path: Path, trace_dir: Path, capsys: pytest.CaptureFixture,
                                         caplog: pytest.LogCaptureFixture) -> None:
    from ssft.train.trainer import run_stage

    cfg = tiny_cfg()
    for method in ("ssft", "sft"):
        run_stage(cfg, method, trace_dir / "train.parquet", tmp_path / "models" / method, tmp_path / "ckpt" / method)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(TINY))
    args = ["--params", str(tmp_path / "params.yaml"), "costs", "--models", str(tmp_path / "models"), "--traces",
            str(trace_dir), "--questions", "4", "--tokens", "5", "--out", str(tmp_path / "costs.json")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "training questions: 4 questions" in out and "held-out questions: 4 questions" in out
    result = json.loads((tmp_path / "costs.json").read_text())
    assert [p["position"] for p in result["splits"]["training questions"]["positions"]] == [1, 2, 3, 4, 5]
    assert main([*args[:-2], "--method", "sft"]) != 0
    assert "models/sft: a sft model has one tag (<think>), no matching to explain" in caplog.text
