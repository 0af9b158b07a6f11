"""Answer checkers: one table per checker of (text, gold, correct?, extracted answer)."""

import subprocess
import sys
import threading

import pytest

from ssft.config import CHECKERS
from ssft.data.checkers import get_checker, gold_latex, last_boxed

FRAC = r"\frac{1}{2}"

INT = [  # text, gold, correct, extract
    ("3+4=7,7*2=14#14", "14", True, "14"),
    ("leading zeros#012", "12", True, "12"),
    ("gold with zeros#12", "012", True, "12"),
    ("negative#-5", "-5", True, "-5"),
    ("minus zero#-0", "0", True, "0"),
    ("answer then newline#7\n", "7", True, "7"),
    ("wrong answer#13", "12", False, "13"),
    ("hash not at the end #12 and more", "12", False, None),
    ("no answer at all", "12", False, None),
    (r"\boxed{12}", "12", False, None),
    ("#", "12", False, None),
    ("garbage }{#$%", "12", False, None),
    ("", "12", False, None),
    ("#12", "", False, "12"),  # an empty gold never matches
]

MATH = [
    (r"So the answer is $\boxed{\frac{1}{2}}$.", FRAC, True, "1/2"),
    (r"So the answer is $\boxed{\frac{1}{2}}$.", "0.5", True, "1/2"),
    (r"So the answer is $\boxed{\frac{1}{2}}$.", "1/2", True, "1/2"),
    ("The answer is 0.5", FRAC, True, "1/2"),  # a float is voted as its exact decimal
    ("The answer is 1/2", FRAC, True, "1/2"),
    (r"\boxed{12}", "12", True, "12"),
    (r"\boxed{12.0}", "12", True, "12"),
    ("12", r"\boxed{12}", True, "12"),
    (r"$\boxed{3}$", r"$\boxed{3}$", True, "3"),
    (r"\boxed{x=3}", "3", True, "3"),  # an assignment is its value
    (r"$x = 3$", "3", True, "3"),
    (r"\boxed{\sqrt 2}", r"$\sqrt{2}$", True, "sqrt(2)"),
    (r"\boxed{\frac{\sqrt{3}}{2}}", r"\frac{\sqrt{3}}{2}", True, "sqrt(3)/2"),  # nested braces
    (r"\boxed{\{2, 1\}}", r"\{1,2\}", True, "{1, 2}"),
    (r"\boxed{[0, 1)}", "[0,1)", True, "Interval.Ropen(0, 1)"),
    (r"\boxed{[0, 1]}", "[0,1)", False, "Interval(0, 1)"),
    (r"We first get \boxed{5}, then 5+2 = 7 is not the answer", "5", True, "5"),  # box mid-text wins
    (r"first \boxed{4}, then correct it: \boxed{7}", "7", True, "7"),  # only the last box counts
    (r"first \boxed{4}, then correct it: \boxed{7}", "4", False, "7"),
    (r"\boxed{13}", "12", False, "13"),
    (r"\boxed{\frac{1}{3}}", "0.5", False, "1/3"),
    (r"truncated \boxed{\frac{1}{2", FRAC, False, None),
    (r"\boxed{}", "3", False, None),
    ("no answer at all", "12", False, None),
    ("#012", "12", False, None),  # the synthetic '#' style is int's, not math's
    ("garbage }{!!@#", "12", False, None),
    ("", "12", False, None),
    ("12", "", False, "12"),
    ("12", "not an answer }{", False, "12"),
]

EXACT = [
    (r"so \boxed{\frac{1}{2}}", FRAC, True, FRAC),
    (r"so \boxed{\frac{1}{2}}", "0.5", False, FRAC),  # no maths: strings only
    (r"\boxed{ x  =   3 }", "x = 3", True, "x = 3"),  # whitespace collapsed
    (r"\boxed{\{1,2\}} and a remark afterwards", r"\{1,2\}", True, r"\{1,2\}"),
    (r"first \boxed{4}, then \boxed{7}", "7", True, "7"),
    (r"\boxed{12}", r"\boxed{12}", True, "12"),  # the gold is read the same way
    ("working\n#012", "012", True, "012"),
    ("working\n#012", "12", False, "012"),  # exact: no integer normalisation
    ("# Heading\nworking\nThe answer is 7\n\n", "The answer is 7", True, "The answer is 7"),
    ("line one\n  Paris  \n", "Paris", True, "Paris"),
    ("line one\nLondon", "Paris", False, "London"),
    (r"truncated \boxed{\frac{1}{2", FRAC, False, r"truncated \boxed{\frac{1}{2"),
    (r"\boxed{}", "", False, None),
    ("abc #", "abc", False, None),
    ("   \n\t\n", "x", False, None),
    ("", "", False, None),
]

CASES = [("int", *row) for row in INT] + [("math", *row) for row in MATH] + [("exact", *row) for row in EXACT] + [
    ("none", *row) for row in EXACT]


@pytest.mark.parametrize("name,text,gold,correct,extract", CASES)
def test_checker_table(name: str, text: str, gold: str, correct: bool, extract: str | None) -> None:
    checker = get_checker(name)
    assert checker.name == name
    assert checker.extract(text) == extract, f"{name}.extract({text!r})"
    assert checker.correct(text, gold) is correct, f"{name}.correct({text!r}, {gold!r})"


@pytest.mark.parametrize("name", ["math", "exact"])
def test_a_correct_text_extracts_like_its_gold(name: str) -> None:
    """What votes count and what is correct agree: a correct text extracts to the gold's own extraction
    (math reads a bare gold such as ``\\frac{1}{2}`` as LaTeX; in running text it needs ``$`` or a box)."""
    checker = get_checker(name)
    as_gold = gold_latex if name == "math" else str
    for _, text, gold, correct, _ in [c for c in CASES if c[0] == name]:
        if correct:
            assert checker.extract(text) == checker.extract(as_gold(gold)), (text, gold)


def test_math_votes_agree_on_equivalent_answers() -> None:
    texts = [r"\boxed{\frac{1}{2}}", "1/2", "0.5", r"$\frac12$", r"\boxed{0.50}"]
    votes = {get_checker("math").extract(t) for t in texts}
    assert votes == {"1/2"}


def test_math_works_in_a_worker_thread() -> None:
    """math-verify's SIGALRM timeouts raise outside the main thread; the checker turns them off there."""
    out: list = []
    worker = threading.Thread(target=lambda: out.append(
        (get_checker("math").extract(r"\boxed{\frac{1}{2}}"), get_checker("math").correct("0.5", FRAC))))
    worker.start()
    worker.join()
    assert out == [("1/2", True)]


@pytest.mark.parametrize("text,content", [
    (r"\boxed{a{b}c} then \boxed{d}", "d"),
    (r"\boxed{a{b}c}", "a{b}c"),
    (r"\boxed{\frac{1}{2}} and \boxed{oops", r"\frac{1}{2}"),  # an unclosed last box is skipped
    ("no box", None),
])
def test_last_boxed(text: str, content: str | None) -> None:
    assert last_boxed(text) == content


def test_unknown_checker_names_the_field() -> None:
    with pytest.raises(ValueError, match="data.checker.*'regex'.*int, math, exact, none"):
        get_checker("regex")


def test_every_configurable_checker_exists() -> None:
    for name in CHECKERS:
        assert get_checker(name).name == name


def test_math_verify_is_imported_only_when_used() -> None:
    """ssft/ imports on a box without math-verify or scikit-learn; only the checker that needs it loads it."""
    code = ("import sys; import ssft.data.checkers, ssft.eval.classify; "
            "assert not {'math_verify', 'sklearn'} & set(sys.modules), sorted(sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
