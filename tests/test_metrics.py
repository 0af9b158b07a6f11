import itertools
import json
import math

import pytest

from ssft.eval.metrics import (
    Generation,
    best_tag,
    compute_metrics,
    fair_split,
    interleave,
    majority_vote,
    nmi,
    pass_at_k,
)


def G(q: str, tag: int | None, sample: int, answer: str | None, gold: str, mode: str | None) -> Generation:
    length = 10 * (tag or 0) + sample
    return Generation(q, tag, sample, answer, answer == gold, mode, length)


def tagged_set(answers: dict[str, tuple[str, dict[int, list]]], mode=lambda t: f"m{t}") -> list[Generation]:
    """answers: question -> (gold, {tag: [answer per sample]}); mode(tag) gives every sample's mode."""
    return [
        G(q, t, s, a, gold, mode(t))
        for q, (gold, by_tag) in answers.items()
        for t, row in by_tag.items()
        for s, a in enumerate(row)
    ]


# q1 rounds: [4,4,5,4] -> 4 (right), [4,5,5,None] -> 5 (wrong); q2 rounds: [7,8,7,9] -> 7 (right), [8,8,7,7] tie
FOUR_TAGS = {
    "q1": ("4", {1: ["4", "4"], 2: ["4", "5"], 3: ["5", "5"], 4: ["4", None]}),
    "q2": ("7", {1: ["7", "8"], 2: ["8", "8"], 3: ["7", "7"], 4: ["9", "7"]}),
}
FOUR_TAGS_EXPECTED = {
    "pass@1": 0.5, "pass@1_tag1": 0.75, "pass@1_best_tag": 0.5,  # all 16 samples; tag 1; tag 3 (best=3)
    "cons@N": 0.5, "cons@N_ties": 0.25, "pass@N": 1 - 1 / 70,  # 1 - C(4,4)/C(8,4) in both questions
    "cons@N_split": 0.625,  # q2's tie [8,8,7,7] holds the right 7 as one of two winners: (1 + 0 + 1 + 0.5) / 4
    "coverage": 4.0, "purity": 1.0, "nmi": 1.0, "blended": 0.0,
    "distinct_answers": 2.25,  # q1 rounds {4,5} {4,5}; q2 rounds {7,8,9} {7,8}
    "acc_tag1": 0.75, "acc_tag2": 0.25, "acc_tag3": 0.5, "acc_tag4": 0.5,
    "len_tag1": 10.5, "len_tag2": 20.5, "len_tag3": 30.5, "len_tag4": 40.5,
    "n_questions": 2.0, "n_generations": 16.0,
}  # fmt: skip


def assert_metrics(got: dict[str, float], expected: dict[str, float]) -> None:
    assert set(got) == set(expected), f"keys differ: {set(got) ^ set(expected)}"
    for key, want in expected.items():
        assert got[key] == pytest.approx(want), f"{key}: got {got[key]}, want {want}"


def test_pass_at_k_matches_enumeration():
    for n in range(1, 8):
        for c in range(n + 1):
            for k in range(1, n + 1):
                samples = [True] * c + [False] * (n - c)
                subsets = list(itertools.combinations(samples, k))
                want = sum(any(s) for s in subsets) / len(subsets)
                assert pass_at_k(n, c, k) == pytest.approx(want), f"n={n} c={c} k={k}"


@pytest.mark.parametrize("n,c,k", [(5, 1, 6), (5, 1, 0), (5, 6, 1), (5, -1, 1)])
def test_pass_at_k_rejects_bad_args(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


@pytest.mark.parametrize(
    "k,n_tags,want",
    [(32, 6, [6, 6, 5, 5, 5, 5]), (8, 4, [2, 2, 2, 2]), (3, 4, [1, 1, 1, 0]), (0, 2, [0, 0]), (5, 1, [5])],
)
def test_fair_split(k, n_tags, want):
    got = fair_split(k, n_tags)
    assert got == want, f"fair_split({k}, {n_tags}) = {got}"
    assert sum(got) == k


@pytest.mark.parametrize(
    "answers,want",
    [
        (["a", "b"], (None, True)),
        (["a", "a", "b", "b"], (None, True)),
        (["a", "b", "c"], (None, True)),
        (["a", "a", "b", "b", "c", None, None, None], (None, True)),
        (["a", "a", "b", None, None], ("a", False)),
        (["b", None], ("b", False)),
        ([], (None, False)),
        ([None, None], (None, False)),
    ],
)
def test_majority_vote_is_order_independent(answers, want):
    for perm in set(itertools.permutations(answers)):
        assert majority_vote(perm) == want, f"majority_vote({perm})"


def test_interleave_order_and_unequal_buckets():
    buckets = {2: [G("q", 2, 1, "x", "x", None), G("q", 2, 0, "x", "x", None)],
               1: [G("q", 1, 0, "x", "x", None), G("q", 1, 1, "x", "x", None)]}  # fmt: skip
    got = [(g.tag, g.sample) for g in interleave(buckets)]
    assert got == [(1, 0), (2, 0), (1, 1), (2, 1)], got
    with pytest.raises(ValueError, match="unequal"):
        interleave({1: buckets[1], 2: buckets[2][:1]})


@pytest.mark.parametrize("counts,want", [({1: 5, 2: 7}, 2), ({3: 4, 1: 4, 2: 1}, 1), ({2: 0, 3: 1}, 3)])
def test_best_tag_is_the_most_distinct_trajectories_then_the_lowest_tag(counts, want):
    assert best_tag(counts) == want, counts


def test_best_tag_counts_distinct_trajectories_not_matches_or_sources():
    """Eq. 4 of the paper: tag 3 saw four distinct (question, trace) pairs; tag 1 has the most matches (7) and
    as many sources, but only three distinct pairs."""
    from ssft.train.matching import MatchStats

    stats = MatchStats(num_tags=3)
    visits = [("q1", [3, 1]), ("q1", [1, 3]), ("q2", [3, 2]), ("q2", [2, 3])] + [("q3", [1, 2])] * 5
    for epoch, (qid, tags) in enumerate(visits):  # a question is seen once per epoch
        stats.record(qid, ["a", "b"], tags)
        stats.close_epoch(epoch, epoch)
    assert stats.trajectory_counts() == {1: 3, 2: 3, 3: 4}
    assert best_tag(stats.trajectory_counts()) == 3
    again = MatchStats.from_state(json.loads(json.dumps(stats.state())))
    assert again.trajectory_counts() == stats.trajectory_counts(), "survives a checkpoint"


def test_nmi():
    assert nmi([(1, "a"), (2, "b"), (3, "c"), (1, "a")]) == pytest.approx(1.0), "1:1 mapping"
    assert nmi([(1, "a"), (1, "b"), (2, "a"), (2, "b")]) == 0.0, "independent"
    assert nmi([(1, "a"), (1, "b"), (1, "c")]) == 0.0, "single tag"
    assert nmi([]) == 0.0, "no pairs"
    # tag 1 -> a, a; tag 2 -> a, b
    mi = 0.5 * math.log(0.5 / (0.5 * 0.75)) + 0.25 * math.log(0.25 / (0.5 * 0.75)) + 0.25 * math.log(2)
    h_t, h_s = math.log(2), -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert nmi([(1, "a"), (1, "a"), (2, "a"), (2, "b")]) == pytest.approx(mi / ((h_t + h_s) / 2))
    assert nmi([(1, "a"), (1, "a"), (2, "a"), (2, "b")]) == pytest.approx(0.343712, abs=1e-6)


def test_specialised_four_tags():
    assert_metrics(compute_metrics(tagged_set(FOUR_TAGS), n_tags=4, best=3), FOUR_TAGS_EXPECTED)


def test_collapsed_four_tags():
    got = compute_metrics(tagged_set(FOUR_TAGS, mode=lambda t: "m1"), n_tags=4, best=3)
    assert_metrics(got, {**FOUR_TAGS_EXPECTED, "coverage": 1.0, "nmi": 0.0})


def test_ks_and_suffix():
    got = compute_metrics(tagged_set(FOUR_TAGS), n_tags=4, ks=(2, 4, 8, 16), best=3, suffix="_greedy")
    # k=4 is cons@N/pass@N, k=16 exceeds the 8 samples per question.
    # cons@2 chunks q1: [4,4] right, [5,4] tie, [4,5] tie, [5,None] wrong; q2: tie, tie, [8,8] wrong, [7,7] right
    # cons@8: q1 4 (x4) beats 5 (x3); q2 7 (x4) beats 8 (x3). pass@2 = 1 - C(4,2)/C(8,2) in both questions.
    extra = {"cons@2": 0.25, "cons@2_ties": 0.5, "cons@8": 1.0, "cons@8_ties": 0.0,
             "pass@2": 1 - 6 / 28, "pass@8": 1.0}  # fmt: skip
    want = {k + "_greedy": v for k, v in {**FOUR_TAGS_EXPECTED, **extra}.items()}
    assert_metrics(got, want)


def test_untagged():
    # rounds of 2 (n_tags): [1,2] tie, [1,1] right; the 5th sample is dropped from rounds
    rows = [(3, "1", None), (0, "1", "a"), (4, "3", "a"), (1, "2", "b"), (2, "1", "a")]  # shuffled on purpose
    gens = [G("q", None, s, a, "1", m) for s, a, m in rows]
    expected = {
        "pass@1": 0.6, "pass@1_tag1": 0.6, "pass@1_best_tag": 0.6, "pass@1_val_tag": 0.6,  # one prompt
        "cons@N": 0.5, "cons@N_ties": 0.5, "pass@N": 1 - 1 / 10,  # 1 - C(2,2)/C(5,2)
        "cons@N_split": 0.75,  # the tie [1,2] is right half the time
        "cons@4": 1.0, "cons@4_ties": 0.0, "pass@4": 1.0,
        "coverage": 1.5, "purity": 0.6, "nmi": 0.0, "blended": 0.2, "distinct_answers": 1.5,  # {1,2} {1}
        "n_questions": 1.0, "n_generations": 5.0,
    }  # fmt: skip
    assert_metrics(compute_metrics(gens, n_tags=2, ks=(2, 4, 8), best=None), expected)


def test_tie_round_scores_zero():
    gens = tagged_set({"q": ("5", {1: ["3", "5"], 2: ["4", "5"]})})
    got = compute_metrics(gens, n_tags=2)
    assert (got["cons@N"], got["cons@N_ties"]) == (0.5, 0.5), got


def test_a_tie_broken_at_random_scores_its_share_of_correct_winners():
    # round 0: "5" and "4" tie (one of two winners correct: 1/2); round 1: "5" wins alone (1)
    gens = tagged_set({"q": ("5", {1: ["5", "5"], 2: ["4", "5"]})})
    got = compute_metrics(gens, n_tags=2)
    assert (got["cons@N"], got["cons@N_ties"], got["cons@N_split"]) == (0.5, 0.5, 0.75), got


@pytest.mark.parametrize(("answers", "want"), [
    (["5", "4", "3"], 1 / 3), (["5", "5", "4"], 1.0), (["4", "4", "5"], 0.0), (["5", None, None], 1.0),
    ([None, None], 0.0), (["4", "6", "5", "6"], 0.0), (["5", "7", "4", "7", "5", "4"], 1 / 3)])
def test_split_vote_is_the_chance_a_random_tie_break_is_correct(answers, want):
    from ssft.eval.metrics import split_vote

    assert split_vote(answers, {"5"}) == pytest.approx(want)


def test_question_without_correct_answer_scores_zero():
    gens = tagged_set({"q": ("9", {1: ["3", "3"], 2: ["3", "4"]})})
    got = compute_metrics(gens, n_tags=2)
    assert (got["cons@N"], got["pass@N"], got["pass@1"]) == (0.0, 0.0, 0.0), got


TWO_TAGS = tagged_set({"q": ("1", {1: ["1"], 2: ["1"]})})


@pytest.mark.parametrize(
    "gens,n_tags,kwargs,match",
    [
        (tagged_set({"q7": ("1", {1: ["1"], 2: ["1"]})}), 3, {}, "q7"),  # tag 3 missing
        (tagged_set({"q7": ("1", {1: ["1", "1"], 2: ["1"]})}), 2, {}, "q7.*unequal"),
        ([G("q7", None, 0, "1", "1", None)], 2, {}, "q7.*fewer"),
        ([G("q", None, 0, "1", "1", None), G("q", 1, 0, "1", "1", None)], 1, {}, "mix"),
        ([], 2, {}, "no generations"),
        (TWO_TAGS, 2, {"best": 3}, "best"),
        (TWO_TAGS, 2, {"ks": (0,)}, "ks"),
    ],
)
def test_compute_metrics_errors(gens, n_tags, kwargs, match):
    with pytest.raises(ValueError, match=match):
        compute_metrics(gens, n_tags=n_tags, **kwargs)
