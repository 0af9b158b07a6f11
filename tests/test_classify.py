"""Teacher classifier: learns three synthetic writing styles, and only them (shuffled labels score chance)."""

import random

import pytest

from ssft.eval.classify import fit_teacher_classifier, heldout_split

QUESTIONS = 40  # per teacher: one trace each, 120 traces; 8 questions (24 traces) held out


def verbose(rng: random.Random, a: int, b: int, c: int) -> str:
    opener = rng.choice(["First,", "First of all,", "First"])
    return (f"{opener} we add {a} and {b}, which gives {a + b}. Next we multiply that by {c} to get "
            f"{(a + b) * c}. Therefore the answer is {(a + b) * c}.")


def bullets(rng: random.Random, a: int, b: int, c: int) -> str:
    word = rng.choice(["step", "Step", "step"])
    return f"- {word} 1: {a} + {b} = {a + b}\n- {word} 2: {a + b} * {c} = {(a + b) * c}\n- answer: {(a + b) * c}"


def terse(rng: random.Random, a: int, b: int, c: int) -> str:
    return f"{a}+{b}={a + b} => {a + b}*{c}={(a + b) * c} => {(a + b) * c}"


STYLES = {"verbose": verbose, "bullets": bullets, "terse": terse}


def traces(seed: int, questions: int = QUESTIONS) -> tuple[list[str], list[str], list[str]]:
    """(texts, teachers, question ids): every question answered once by every teacher."""
    rng = random.Random(seed)
    texts, teachers, groups = [], [], []
    for q in range(questions):
        a, b, c = rng.randint(1, 99), rng.randint(1, 99), rng.randint(2, 9)
        for name, style in STYLES.items():
            texts.append(style(rng, a, b, c))
            teachers.append(name)
            groups.append(f"q{q}")
    return texts, teachers, groups


@pytest.fixture(scope="module")
def fitted():
    texts, teachers, groups = traces(seed=0)
    return fit_teacher_classifier(texts, teachers, groups, seed=0)


def test_learns_the_styles(fitted) -> None:
    assert fitted.labels == ["bullets", "terse", "verbose"]
    assert fitted.heldout_accuracy >= 0.9
    rng = random.Random(123)  # new questions, not seen in training
    for name, style in STYLES.items():
        new = [style(rng, rng.randint(100, 999), rng.randint(100, 999), rng.randint(2, 9)) for _ in range(5)]
        assert fitted.predict(new) == [name] * 5, name


def test_shuffled_teachers_score_about_chance() -> None:
    """Labels that carry no style can't be learned: the held-out accuracy is ~1/3, so the metric measures style."""
    texts, teachers, groups = traces(seed=0)
    accuracies = []
    for seed in range(3):
        shuffled = list(teachers)
        random.Random(seed).shuffle(shuffled)
        accuracies.append(fit_teacher_classifier(texts, shuffled, groups, seed=seed).heldout_accuracy)
    assert sum(accuracies) / len(accuracies) <= 0.6, accuracies


def test_heldout_questions_are_never_fitted(fitted) -> None:
    _, _, groups = traces(seed=0)
    fit, held = heldout_split(groups, seed=0, heldout_share=0.2)
    fit_q, held_q = {groups[i] for i in fit}, {groups[i] for i in held}
    assert fit_q.isdisjoint(held_q)
    assert fit_q | held_q == set(groups)
    assert len(held_q) == 8  # 20% of 40 questions
    assert set(fitted.heldout_questions) == held_q  # the classifier was scored on exactly this split


def test_same_seed_same_predictions() -> None:
    texts, teachers, groups = traces(seed=0)
    shuffled = list(teachers)
    random.Random(7).shuffle(shuffled)  # noisy labels, so ties and the split actually matter
    probe, _, _ = traces(seed=99, questions=10)
    one = fit_teacher_classifier(texts, shuffled, groups, seed=3)
    two = fit_teacher_classifier(texts, shuffled, groups, seed=3)
    assert one.predict(probe) == two.predict(probe)
    assert (one.heldout_accuracy, one.heldout_questions) == (two.heldout_accuracy, two.heldout_questions)


def test_empty_texts_get_no_teacher(fitted) -> None:
    assert fitted.predict(["", "   ", "7+8=15 => 15*3=45 => 45"]) == [None, None, "terse"]
    assert fitted.predict([]) == []


def test_single_teacher_is_always_predicted() -> None:
    clf = fit_teacher_classifier(["a", "b", "c"], ["only"] * 3, ["q1", "q2", "q3"], seed=0)
    assert (clf.labels, clf.heldout_accuracy) == (["only"], 1.0)
    assert clf.predict(["anything at all", ""]) == ["only", None]


def test_mismatched_lengths_are_an_error() -> None:
    with pytest.raises(ValueError, match="one teacher and one question id per trace"):
        fit_teacher_classifier(["a", "b"], ["t1"], ["q1", "q2"], seed=0)


def test_one_question_cannot_be_held_out() -> None:
    with pytest.raises(ValueError, match=">= 2 questions"):
        fit_teacher_classifier(["a", "b"], ["t1", "t2"], ["q1", "q1"], seed=0)
