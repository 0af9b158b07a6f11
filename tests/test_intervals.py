"""The paired difference of a study: seeds are resampled before questions, and disagreeing seeds are no win."""

from __future__ import annotations

import numpy as np
import pytest

from ssft.eval.intervals import Difference, paired_difference


def _seeds(means: list[float], questions: int = 300, sd: float = 0.05, seed: int = 0) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    return [list(m + rng.normal(0, sd, questions)) for m in means]


def test_the_mean_is_over_seeds_and_each_seed_is_reported() -> None:
    d = paired_difference([[0.5, 0.0], [0.5]])  # seed 0: 0.25 over two questions; seed 1: 0.5
    assert (d.mean, d.per_seed, d.pairs) == (pytest.approx(0.375), (0.25, 0.5), 3)


def test_seeds_that_vary_widen_the_interval_past_what_questions_say() -> None:
    """The rerun the issue quotes: +0.20, +0.42, +0.02 on three seeds. A normal interval over the 900 pairs is
    ±0.025 wide; the seeds say the next seed may land anywhere from ~0 to ~0.4."""
    groups = _seeds([0.20, 0.42, 0.02])
    pooled = np.concatenate(groups)
    naive = 1.96 * pooled.std(ddof=1) / np.sqrt(pooled.size)
    d = paired_difference(groups)
    assert naive < 0.02 and d.high - d.low > 0.25, (naive, d)
    assert d.low < 0.05 and d.high > 0.38, d


def test_disagreeing_seeds_are_never_a_win() -> None:
    d = paired_difference(_seeds([0.30, 0.25, -0.05]))
    assert d.seeds_disagree and d.reading() == "no clear difference (the seeds disagree)", d
    agree = paired_difference(_seeds([0.30, 0.25, 0.20]))
    assert agree.low > 0.1 and agree.reading() == "ssft ahead (interval above 0)", agree
    assert paired_difference(_seeds([-0.3, -0.2, -0.25])).reading() == "ssft behind (interval below 0)"
    assert Difference(0.01, -0.02, 0.04, 10, (0.01,)).reading() == "no clear difference (interval spans 0)"


def test_one_seed_resamples_its_questions() -> None:
    d = paired_difference(_seeds([0.2], questions=400, sd=0.2))
    assert 0.2 - 0.04 < d.low < 0.2 - 0.01 and 0.2 + 0.01 < d.high < 0.2 + 0.04, d  # half-width 1.96 * 0.2 / 20


def test_the_interval_covers_the_true_difference_as_often_as_it_says() -> None:
    """Five seeds whose true differences scatter (sd 0.1) around 0.2, 100 noisy questions each: over 100
    repetitions the bootstrap interval holds 0.2 most of the time (a percentile bootstrap over 5 units falls a
    little short of 95%); the pooled normal interval, which takes the 500 pairs for independent, rarely does."""
    rng = np.random.default_rng(1)
    boot = naive = 0
    for rep in range(100):
        groups = [list(0.2 + rng.normal(0, 0.1) + rng.normal(0, 0.3, 100)) for _ in range(5)]
        d = paired_difference(groups, draws=1000, seed=rep)
        boot += d.low <= 0.2 <= d.high
        pooled = np.concatenate(groups)
        half = 1.96 * pooled.std(ddof=1) / np.sqrt(pooled.size)
        naive += pooled.mean() - half <= 0.2 <= pooled.mean() + half
    assert boot >= 80 and naive <= 60, (boot, naive)


def test_no_pairs_is_an_error() -> None:
    with pytest.raises(ValueError, match="no paired"):
        paired_difference([[], []])
