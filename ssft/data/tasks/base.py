"""What a synthetic reasoning task is: questions, one trace per strategy, an answer checker and a mode classifier.

A task renders, for each question, one correct trace per strategy (the M "modes" SSFT should keep apart).
Traces are plain text ending in ``#<answer>``; ``classify`` parses a generated trace back to the strategy
whose *structure* it follows (which operands are combined in which order), so arithmetic slips still count
as the strategy, while a trace that follows none, or switches strategy midway, is ``None``.
"""

from __future__ import annotations

import random
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from ssft.errors import UserError

ANSWER_RE = re.compile(r"#(-?\d+)\s*$")
STEP_RE = re.compile(r"^(\d+)([+*-])(\d+)(?:([+*-])(\d+))*=(-?\d+)$")


@dataclass(frozen=True)
class Problem:
    """One question: its id, the prompt text, the reference answer and the operands it was built from."""

    question_id: str
    question: str
    answer: str
    operands: tuple[int, ...]


@dataclass(frozen=True)
class Step:
    """One written step ``x op y (op z ...) = result`` of a trace, as parsed (results may be wrong)."""

    operands: tuple[int, ...]
    ops: str
    result: int


def extract_answer(text: str) -> str | None:
    """The integer after the final ``#``, normalised (no leading zeros, no sign on zero); None when absent."""
    m = ANSWER_RE.search(text.strip())
    return str(int(m.group(1))) if m else None


def parse_steps(body: str) -> list[Step] | None:
    """Split ``a+b=c,c+d=e`` into steps; None if any piece is not a well-formed step."""
    steps = []
    for piece in body.split(","):
        m = STEP_RE.match(piece)
        if not m:
            return None
        nums = [int(x) for x in re.findall(r"\d+", piece.split("=")[0])]
        ops = "".join(re.findall(r"[+*-]", piece.split("=")[0]))
        steps.append(Step(tuple(nums), ops, int(piece.split("=")[1])))
    return steps


class Task(ABC):
    """A family of questions with several strategies; subclasses fill in the arithmetic."""

    name: str
    strategies: tuple[str, ...]
    markers: tuple[str, ...]  # one constant opening per strategy, used when ``marked`` is on

    def __init__(self, marked: bool = False, fork_depth: int = 0) -> None:
        """``fork_depth``: how many leading trace characters (tokens for the character tokenizer) every
        strategy shares before they diverge; 0 = they differ from the first one."""
        if not 0 <= fork_depth <= 64:
            raise UserError(f"task.options.fork_depth={fork_depth}: use 0..64")
        self.marked = marked
        self.fork_depth = fork_depth

    # -- what subclasses provide -------------------------------------------------------------
    @abstractmethod
    def sample_operands(self, rng: random.Random) -> tuple[int, ...]:
        """Draw the operands of one question."""

    @abstractmethod
    def question_text(self, operands: tuple[int, ...]) -> str: ...

    @abstractmethod
    def solve(self, operands: tuple[int, ...]) -> int: ...

    @abstractmethod
    def render_body(self, operands: tuple[int, ...], strategy: str) -> str:
        """The strategy's working, without marker and final answer."""

    @abstractmethod
    def body_follows(self, operands: tuple[int, ...], strategy: str, body: str) -> bool:
        """Whether ``body`` has the structure of ``strategy`` for these operands."""

    # -- shared behaviour --------------------------------------------------------------------
    def canonical(self, operands: tuple[int, ...]) -> str:
        """The problem up to what does not change it: here the operand multiset (both tasks are commutative;
        an order-sensitive task overrides this). Held-out questions are held out by this form, so a
        reordering of an evaluation question (whose sorted-order trace is the same text) never trains."""
        return f"{self.name}:" + ",".join(map(str, sorted(operands)))

    def parse(self, question_id: str, question: str, answer: str) -> Problem:
        """The Problem of a trace-file row (its question text holds the operands: here its integers)."""
        return problem_from(question_id, question, answer)

    def opening(self, problem: Problem, strategy: str) -> str:
        """What ``strategy``'s trace opens with before anything is worked out: the text prefix-forced decoding
        writes for the model (the shared prefix and the strategy's marker). Unmarked, these tasks' strategies
        share their first tokens (l2r and pair both start a+b), so there is nothing to force."""
        if not self.marked:
            raise UserError(f"task {self.name!r} unmarked: its strategies have no opening of their own to force; "
                            "set task.marked: true or leave eval.prefix_forced empty")
        return self.shared_prefix(problem.operands) + self.markers[self.strategies.index(strategy)]

    def problem(self, operands: tuple[int, ...]) -> Problem:
        qid = f"{self.name}-" + "-".join(map(str, operands))
        return Problem(qid, self.question_text(operands), str(self.solve(operands)), operands)

    def shared_prefix(self, operands: tuple[int, ...]) -> str:
        """What every strategy's trace opens with: the question restated, cut to ``fork_depth`` characters,
        so the strategies fork at that depth (the matching cost must look past it: ``ssft.cost_tokens``)."""
        q = self.question_text(operands)
        return (q * (self.fork_depth // len(q) + 1))[:self.fork_depth]

    def render(self, problem: Problem, strategy: str) -> str:
        """The full trace of ``strategy``: [shared prefix] [marker] working ``#answer``."""
        marker = self.markers[self.strategies.index(strategy)] if self.marked else ""
        prefix = self.shared_prefix(problem.operands)
        return f"{prefix}{marker}{self.render_body(problem.operands, strategy)}#{problem.answer}"

    def check(self, problem: Problem, text: str) -> bool:
        return extract_answer(text) == problem.answer

    def classify(self, problem: Problem, text: str) -> str | None:
        """The one strategy whose structure ``text`` follows, else None (none, several, or a blend)."""
        m = re.match(r"^(.*)#-?\d+\s*$", text.strip())
        if not m:
            return None
        body, prefix = m.group(1), self.shared_prefix(problem.operands)
        if not body.startswith(prefix):
            return None
        body = body[len(prefix):]
        hits = []
        for strategy, marker in zip(self.strategies, self.markers):
            if self.marked:
                if not body.startswith(marker):
                    continue
                candidate = body[len(marker):]
            else:
                candidate = body
            if self.body_follows(problem.operands, strategy, candidate):
                hits.append(strategy)
        return hits[0] if len(hits) == 1 else None

    def is_clean(self, problem: Problem) -> bool:
        """Every strategy's trace is distinct and classified as itself (so modes are well defined)."""
        traces = [self.render(problem, s) for s in self.strategies]
        return len(set(traces)) == len(traces) and all(
            self.classify(problem, t) == s for s, t in zip(self.strategies, traces)
        )

    def problems(self, n: int, seed: int, exclude: AbstractSet[str] = frozenset()) -> list[Problem]:
        """``n`` distinct clean problems, none of whose :meth:`canonical` forms is in ``exclude`` (held-out
        questions stay held out, reordered or not)."""
        rng = random.Random(seed)
        seen: set[str] = set()
        out: list[Problem] = []
        for _ in range(200 * n + 1000):
            operands = self.sample_operands(rng)
            p = self.problem(operands)
            if p.question_id in seen or self.canonical(operands) in exclude or not self.is_clean(p):
                continue
            seen.add(p.question_id)
            out.append(p)
            if len(out) == n:
                return out
        raise UserError(
            f"task {self.name!r} could only make {len(out)} of {n} distinct questions; "
            "lower traces.train_questions/eval_questions or widen the operand range"
        )


def steps_match(steps: list[Step] | None, pattern: Sequence[tuple[tuple[object, ...], str]]) -> bool:
    """Whether parsed steps follow ``pattern``: per step, the operands and the operator string.

    An operand in the pattern is an int (a question number) or ``("r", i)``: the result *written*
    in step i, so a wrong intermediate still counts as following the strategy.
    """
    if steps is None or len(steps) != len(pattern):
        return False
    for step, (operands, ops) in zip(steps, pattern):
        want = tuple(steps[o[1]].result if isinstance(o, tuple) else o for o in operands)
        if step.operands != want or step.ops != ops:
            return False
    return True


def problem_from(question_id: str, question: str, answer: str) -> Problem:
    """Rebuild a Problem from a trace-file row: the operands are the integers of the question text."""
    return Problem(question_id, question, str(answer), tuple(int(x) for x in re.findall(r"\d+", question)))
