"""Tasks: every strategy's trace is classified as itself, answers check, blends and junk are None."""

import pytest

from ssft.data.sources import synthetic
from ssft.data.tasks import TASKS, extract_answer, get_task
from ssft.data.tasks.base import problem_from
from ssft.data.tasks.pathstar import PathStar


@pytest.mark.parametrize("name", sorted(TASKS))
@pytest.mark.parametrize("marked", [False, True])
def test_every_strategy_is_classified_as_itself(name: str, marked: bool) -> None:
    task = get_task(name, marked=marked)
    for p in task.problems(300, seed=1):
        for s in task.strategies:
            trace = task.render(p, s)
            assert task.classify(p, trace) == s, f"{name} {p.question} {s}: {trace}"
            assert task.check(p, trace), trace


def test_add4_traces_exactly() -> None:
    task = get_task("add4", marked=True)
    p = task.problem((3, 2, 5, 2))
    assert p.question == "3+2+5+2?" and p.answer == "12"
    assert [task.render(p, s) for s in task.strategies] == [
        "L3+2=5,5+5=10,10+2=12#12", "R2+5=7,7+2=9,9+3=12#12", "P3+2=5,5+2=7,5+7=12#12",
        "S5,3,2,2;5+3=8,8+2=10,10+2=12#12"]


def test_mult_traces_exactly() -> None:
    task = get_task("mult")
    p = task.problem((47, 86))
    assert [task.render(p, s) for s in task.strategies] == [
        "47*6=282,47*80=3760,282+3760=4042#4042", "40*86=3440,7*86=602,3440+602=4042#4042",
        "40*80=3200,40*6=240,7*80=560,7*6=42,3200+240+560+42=4042#4042", "47*90=4230,47*4=188,4230-188=4042#4042"]


@pytest.mark.parametrize("text, mode, correct", [
    ("L3+2=5,5+5=10,10+2=12#12", "l2r", True),
    ("L3+2=6,6+5=11,11+2=13#13", "l2r", False),      # arithmetic slips keep the structure
    ("L3+2=5,5+2=7,5+7=12#12", None, True),          # l2r marker, pair body: a blend
    ("3+2=5,5+5=10,10+2=12#12", None, True),         # marker missing
    ("L3+2=5,5+5=10", None, False),                  # unfinished
    ("", None, False),
    ("#12", None, True),
])
def test_classify_and_check_generated_text(text: str, mode: str | None, correct: bool) -> None:
    task = get_task("add4", marked=True)
    p = task.problem((3, 2, 5, 2))
    assert task.classify(p, text) == mode
    assert task.check(p, text) == correct


@pytest.mark.parametrize("text, answer", [("x#12", "12"), ("#007", "7"), ("#-0", "0"), ("12", None), ("#1#2", "2"),
                                          ("#12 ", "12"), ("#1a", None)])
def test_extract_answer(text: str, answer: str | None) -> None:
    assert extract_answer(text) == answer


def test_held_out_questions_never_appear_in_training() -> None:
    task = get_task("add4")
    held = {task.canonical(p.operands) for p in task.problems(200, seed=5)}
    train = task.problems(800, seed=6, exclude=held)
    assert not held & {task.canonical(p.operands) for p in train}
    assert len({p.question_id for p in train}) == 800


@pytest.mark.parametrize("name", ["add4", "mult"])
def test_the_demo_split_holds_out_reorderings_and_their_traces(name: str) -> None:
    """At the demo's sizes (500 held out, 800 trained) no training question is a reordering of an evaluation
    question, so no evaluation trace (the sorted-order one included) appears word for word in training."""
    task = get_task(name, marked=True)
    s = synthetic.synthetic_splits(task, 800, 500, seed=0)
    canon = lambda rows: {task.canonical(problem_from(r["question_id"], r["question"], r["answer"]).operands)  # noqa: E731
                          for r in rows}
    assert not canon(s["train"]) & canon(s["eval"])
    assert not {r["trace"] for r in s["train"]} & {r["trace"] for r in s["eval"]}


@pytest.mark.parametrize("name", sorted(TASKS))
def test_a_trace_file_row_parses_back_to_its_problem(name: str) -> None:
    task = get_task(name, marked=True)
    for p in task.problems(20, seed=3):
        assert task.parse(p.question_id, p.question, p.answer) == p
    assert problem_from("mult-47-86", "47*86?", "4042") == get_task("mult").problem((47, 86))


def test_unknown_task_and_too_many_questions_are_clear() -> None:
    with pytest.raises(ValueError, match="task.name='nope'"):
        get_task("nope")
    with pytest.raises(ValueError, match="could only make"):
        get_task("add4", max_operand=2).problems(100, seed=0)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_fork_depth_shares_a_prefix_and_keeps_the_strategies_apart(name: str) -> None:
    task = get_task(name, marked=False, fork_depth=9)
    for p in task.problems(50, seed=2):
        texts = [task.render(p, s) for s in task.strategies]
        assert len({t[:9] for t in texts}) == 1
        assert [task.classify(p, t) for t in texts] == list(task.strategies)
        assert task.classify(p, "~" + texts[0][1:]) is None, "a broken shared prefix follows no strategy"
    with pytest.raises(ValueError, match="fork_depth=-1"):
        get_task(name, fork_depth=-1)


# -- pathstar -------------------------------------------------------------------------------------------
STAR = "h=7;k=c+2,m=h+1,c=h+3,q=m+4;k?"  # arms h-c-k (the goal's) and h-m-q


def star(question: str = STAR, **options: object):  # noqa: ANN201
    task = get_task("pathstar", arm_length=2, **options)
    return task, task.parse("q", question, "12")


def test_pathstar_traces_exactly() -> None:
    task, p = star()
    assert task.question_text(p.operands) == STAR and task.solve(p.operands) == 12
    assert [task.render(p, s) for s in task.strategies] == ["h=7,c=h+3=10,k=c+2=12#12", "k=c+2=h+5=12#12"]
    marked, q = star(marked=True)
    assert [marked.render(q, s) for s in marked.strategies] == ["Fh=7,c=h+3=10,k=c+2=12#12", "Bk=c+2=h+5=12#12"]


@pytest.mark.parametrize("text, mode, correct", [
    ("h=7,c=h+3=10,k=c+2=12#12", "forward", True),
    ("h=7,c=h+3=11,k=c+2=13#13", "forward", False),   # slips keep the structure
    ("h=7,m=h+1=8,q=m+4=12#12", "forward", True),     # the wrong arm is still a forward walk (here by luck right)
    ("h=7,m=h+1=8,q=m+4=12#11", "forward", False),
    ("h=7,h=h+3=10,h=h+2=12#12", "forward", True),    # letters miscopied (what the 0.45M model writes): a slip
    ("h=7,c=h+3=10,q=c+2=12#12", "forward", True),    # jumps arms by name only: the same slip
    ("h=7,c=h+3=10#10", None, False),                 # stops halfway
    ("h=7,c=h+3=10,k=c+2=12,q=k+1=13#13", None, False),  # walks past the goal
    ("c=7,c=h+3=10,k=c+2=12#12", "forward", True),    # the opening letter miscopied too: still a forward walk
    ("k=c+2=h+5=12#12", "reverse", True),
    ("k=c+2=h+6=13#13", "reverse", False),
    ("k=m+2=h+5=12#12", "reverse", True),             # m is not k's parent: a letter miscopied
    ("k=c+2=12#12", None, True),                      # stops halfway back
    ("q=m+4=h+5=12#12", "reverse", True),             # written back from the other arm's end: a slip
    ("k=c+2=h+5=12,h=7#12", None, True),              # a blend of both forms
    ("k=c+2,h=7#12", None, True),
])
def test_pathstar_classify_and_check(text: str, mode: str | None, correct: bool) -> None:
    task, p = star()
    assert task.classify(p, text) == mode
    assert task.check(p, text) == correct


def test_pathstar_canonical_form_ignores_letters_and_edge_order() -> None:
    """The same star relabelled and listed in another order is the same question; another goal, value or
    constant is another."""
    task, p = star()
    same = ["a=7;z=a+1,b=a+3,d=b+2,y=z+4;d?", "h=7;q=m+4,c=h+3,m=h+1,k=c+2;k?"]
    other = ["h=7;k=c+2,m=h+1,c=h+3,q=m+4;q?", "h=8;k=c+2,m=h+1,c=h+3,q=m+4;k?", "h=7;k=c+3,m=h+1,c=h+3,q=m+4;k?"]
    assert {task.canonical(star(q)[1].operands) for q in same} == {task.canonical(p.operands)}
    assert all(task.canonical(star(q)[1].operands) != task.canonical(p.operands) for q in other)


def test_pathstar_split_holds_out_every_relabelling() -> None:
    task = get_task("pathstar")
    s = synthetic.synthetic_splits(task, 2000, 300, seed=0, n_val=100)
    canon = lambda rows: {task.canonical(task.parse(r["question_id"], r["question"], r["answer"]).operands)  # noqa: E731
                          for r in rows}
    assert not canon(s["train"]) & (canon(s["eval"]) | canon(s["val"]))
    assert len({r["question"] for r in s["train"]}) == 2000


def test_pathstar_listed_edges_are_the_papers_format() -> None:
    """edges: listed (their gen_math_graph.py): the goal's arm first, each arm from the start outwards; the same
    draws as shuffled otherwise, so the same stars (canonical forms) in another listing; a bad value names it."""
    listed, shuffled = get_task("pathstar", arm_length=3, edges="listed"), get_task("pathstar", arm_length=3)
    for p in listed.problems(30, seed=4):
        edges = PathStar._edges(p.operands)
        path = [(c, par) for c, par, _ in listed._path(p.operands)]
        assert [(c, par) for c, par, _ in edges[:3]] == path, p.question  # the goal's arm, in walking order
        assert edges[3][1] == p.operands[0], "the other arm also starts at the start"
        assert [listed.classify(p, listed.render(p, s)) for s in listed.strategies] == ["forward", "reverse"]
    assert [listed.canonical(p.operands) for p in listed.problems(30, seed=4)] == [
        shuffled.canonical(p.operands) for p in shuffled.problems(30, seed=4)]
    with pytest.raises(ValueError, match="task.options.edges='sorted'"):
        get_task("pathstar", edges="sorted")


def test_pathstar_openings_are_what_prefix_forcing_writes() -> None:
    """Unmarked, forward opens with the start's letter and reverse with the goal's (never the arm's first node,
    which would answer the fork for the model); marked, each strategy's letter; add4 unmarked has none."""
    task, p = star()
    assert [task.opening(p, s) for s in task.strategies] == ["h", "k"]
    assert all(task.render(p, s).startswith(task.opening(p, s)) for s in task.strategies)
    marked, q = star(marked=True)
    assert [marked.opening(q, s) for s in marked.strategies] == ["F", "B"]
    deep, r = star(fork_depth=3)
    assert [deep.opening(r, s) for s in deep.strategies] == ["h=7h", "h=7k"]
    with pytest.raises(ValueError, match="no opening of their own"):
        add4 = get_task("add4")
        add4.opening(add4.problem((1, 2, 3, 4)), "l2r")
    with pytest.raises(ValueError, match="arm_length"):
        get_task("pathstar", arms=5, arm_length=6)
