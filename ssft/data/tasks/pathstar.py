"""``pathstar``: a star of chains, walked to its goal forwards or written back from it (after the path-star
task of *Why Do Reasoning Models Lose Coverage?*, arXiv 2605.17026, whose graphs are 2 arms x 10 nodes).

    question  h=7;k=c+2,m=h+1,c=h+3,q=m+4;k?        the start's value, the edges (shuffled), the goal
    forward   h=7,c=h+3=10,k=c+2=12#12             from the start down the goal's arm, a value per node
    reverse   k=c+2=h+5=12#12                      from the goal back to the start, one substitution a step

Every node but the start is its parent plus a constant; the goal ends one of ``arms`` chains of
``arm_length`` nodes. The two modes are of unequal difficulty, as in the paper: the forward walk must pick the
goal's arm at the centre (its first step looks ``arm_length`` edges ahead), the reverse one only follows each
node's single parent. A generation's mode is the form it is written in: a forward walk down the wrong arm, or
with letters miscopied, is still the forward strategy (a wrong answer, or a slip, like an arithmetic one); a
walk of the wrong length follows no strategy. Unmarked, each strategy opens with its own token: the start's
letter, or the goal's (what prefix-forced decoding forces).

Letters are shuffled per question, so the same star relabelled, or its edges listed in another order, is the
same question (:meth:`PathStar.canonical`). ``edges``: ``shuffled`` lists the edges in a random order (each
node must be looked up by its letter: the 0.45M demo model does not learn it); ``listed`` is the paper's own
format (their ``gen_math_graph.py``): the goal's arm first, every arm from the start outwards, so the forward
walk reads the first arm in order and the difficulty left is the reverse substitution.

Operands encode the question exactly: the start's letter and value, the goal's letter, then (child, parent,
constant) per listed edge, letters as 0..25.
"""

from __future__ import annotations

import random
import re
import string

from ssft.data.tasks.base import Problem, Task
from ssft.errors import UserError

LETTERS = string.ascii_lowercase
QUESTION_RE = re.compile(r"^([a-z])=(\d+);([a-z]=[a-z]\+\d+(?:,[a-z]=[a-z]\+\d+)*);([a-z])\?$")
FORWARD_RE = re.compile(r"^([a-z])=\d+((?:,[a-z]=[a-z]\+\d+=\d+)*)$")
REVERSE_RE = re.compile(r"^([a-z])((?:=[a-z]\+\d+)+)=\d+$")

# how the question lists the edges: anywhere (the model must look each node up by its letter), or as the
# paper's generator does (gen_math_graph.py: the target's arm first, each arm in chain order, letters shuffled)
EDGE_ORDERS = ("shuffled", "listed")
Edge = tuple[int, int, int]  # (child, parent, constant), letters as indices into LETTERS


class PathStar(Task):
    name = "pathstar"
    strategies = ("forward", "reverse")
    markers = ("F", "B")

    def __init__(self, marked: bool = False, arms: int = 2, arm_length: int = 3, max_constant: int = 9,
                 fork_depth: int = 0, edges: str = "shuffled") -> None:
        super().__init__(marked, fork_depth)
        if edges not in EDGE_ORDERS:
            raise UserError(f"task.options.edges={edges!r}: use one of {', '.join(EDGE_ORDERS)}")
        if arms < 2 or arm_length < 1 or 1 + arms * arm_length > len(LETTERS):
            raise UserError(f"task.options: arms={arms}, arm_length={arm_length}: use arms >= 2, arm_length >= 1 "
                            f"and at most {len(LETTERS) - 1} nodes besides the start (one letter each)")
        if not 1 <= max_constant <= 99:
            raise UserError(f"task.options.max_constant={max_constant}: use 1..99")
        self.arms, self.arm_length, self.max_constant, self.edges = arms, arm_length, max_constant, edges

    # -- the graph behind the operands ---------------------------------------------------------
    @staticmethod
    def _edges(operands: tuple[int, ...]) -> list[Edge]:
        flat = operands[3:]
        return [(flat[i], flat[i + 1], flat[i + 2]) for i in range(0, len(flat), 3)]

    def _path(self, operands: tuple[int, ...]) -> list[Edge]:
        """The edges from the start to the goal, in walking order."""
        parent_of = {child: (parent, c) for child, parent, c in self._edges(operands)}
        path, node = [], operands[2]
        while node in parent_of:
            parent, c = parent_of[node]
            path.append((node, parent, c))
            node = parent
        return path[::-1]

    def _arms(self, operands: tuple[int, ...]) -> list[list[Edge]]:
        """Each arm's edges from the start outwards."""
        children: dict[int, list[Edge]] = {}
        for e in self._edges(operands):
            children.setdefault(e[1], []).append(e)
        arms = []
        for first in children.get(operands[0], []):
            arm, node = [first], first[0]
            while node in children:
                arm.append(children[node][0])
                node = arm[-1][0]
            arms.append(arm)
        return arms

    # -- Task --------------------------------------------------------------------------------
    def sample_operands(self, rng: random.Random) -> tuple[int, ...]:
        nodes = rng.sample(range(len(LETTERS)), 1 + self.arms * self.arm_length)
        start, rest = nodes[0], nodes[1:]
        edges = []
        for a in range(self.arms):
            chain = [start, *rest[a * self.arm_length:(a + 1) * self.arm_length]]
            edges += [(chain[i + 1], chain[i], rng.randint(1, self.max_constant)) for i in range(self.arm_length)]
        arm = rng.randrange(self.arms)
        goal = rest[arm * self.arm_length + self.arm_length - 1]
        n = self.arm_length  # listed: the goal's arm first, each arm from the start outwards (the paper's order)
        listed = edges[arm * n:(arm + 1) * n] + edges[:arm * n] + edges[(arm + 1) * n:]
        rng.shuffle(edges)  # drawn either way: the same seed gives the same stars in both listings
        if self.edges == "listed":
            edges = listed
        return (start, rng.randint(1, self.max_constant), goal, *(x for e in edges for x in e))

    def question_text(self, operands: tuple[int, ...]) -> str:
        start, value, goal = operands[:3]
        edges = ",".join(f"{LETTERS[c]}={LETTERS[p]}+{k}" for c, p, k in self._edges(operands))
        return f"{LETTERS[start]}={value};{edges};{LETTERS[goal]}?"

    def parse(self, question_id: str, question: str, answer: str) -> Problem:
        m = QUESTION_RE.match(question)
        if not m:
            raise UserError(f"question {question_id!r}: {question!r} is not a pathstar question "
                            "(start=value;child=parent+constant,...;goal?)")
        edges = [re.match(r"([a-z])=([a-z])\+(\d+)", e).groups() for e in m.group(3).split(",")]  # type: ignore[union-attr]
        flat = [x for c, p, k in edges for x in (LETTERS.index(c), LETTERS.index(p), int(k))]
        operands = (LETTERS.index(m.group(1)), int(m.group(2)), LETTERS.index(m.group(4)), *flat)
        return Problem(question_id, question, str(answer), operands)

    def solve(self, operands: tuple[int, ...]) -> int:
        return operands[1] + sum(c for _, _, c in self._path(operands))

    def canonical(self, operands: tuple[int, ...]) -> str:
        """The star up to its letters and edge order: the start's value, the goal arm's constants from the start
        out, and the other arms' constants as a multiset."""
        goal_arm = tuple(c for _, _, c in self._path(operands))
        others = sorted(tuple(c for _, _, c in arm) for arm in self._arms(operands)
                        if arm[-1][0] != operands[2])
        return f"{self.name}:{operands[1]}:{goal_arm}|{others}"

    def render_body(self, operands: tuple[int, ...], strategy: str) -> str:
        start, value, goal = operands[:3]
        path = self._path(operands)
        if strategy == "forward":
            steps, total = [f"{LETTERS[start]}={value}"], value
            for child, parent, c in path:
                total += c
                steps.append(f"{LETTERS[child]}={LETTERS[parent]}+{c}={total}")
            return ",".join(steps)
        pieces, acc = [LETTERS[goal]], 0
        for _, parent, c in reversed(path):
            acc += c
            pieces.append(f"{LETTERS[parent]}+{acc}")
        return "=".join(pieces) + f"={value + acc}"

    def body_follows(self, operands: tuple[int, ...], strategy: str, body: str) -> bool:
        """The strategy's form: forward, ``node=value`` then one ``node=parent+c=value`` step per node of an
        arm; reverse, ``node`` then one ``=parent+c`` substitution per edge back to the start. No letter is
        checked, the opening's included: a name miscopied is a slip, like a wrong number. The 0.45M model writes
        ``i=8,o=s+8=16,w=v+8=24`` for the forward walk from ``e``: checked letter by letter, or by its opening
        letter, 96-99% of even the fixed oracle's generations followed no strategy (coverage measured copying);
        by form, 99.9% of them follow the strategy of their tag. The mode is the way the solution is written;
        the answer says whether it is right."""
        steps = len(self._path(operands))  # every arm is as long as the goal's
        if strategy == "forward":
            m = FORWARD_RE.match(body)
            return m is not None and m.group(2).count(",") == steps
        m = REVERSE_RE.match(body)
        return m is not None and m.group(2).count("=") == steps

    def opening(self, problem: Problem, strategy: str) -> str:
        if self.marked:
            return super().opening(problem, strategy)
        first = problem.operands[0 if strategy == "forward" else 2]
        return self.shared_prefix(problem.operands) + LETTERS[first]
