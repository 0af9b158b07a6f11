"""``add4``: add four small numbers, four ways (the fast default demo task).

    question  3+2+5+2?
    l2r       3+2=5,5+5=10,10+2=12#12          left to right
    r2l       2+5=7,7+2=9,9+3=12#12            right to left
    pair      3+2=5,5+2=7,5+7=12#12            (a+b) + (c+d)
    sort      5,3,2,2;5+3=8,8+2=10,10+2=12#12  sort descending, then left to right

With ``marked`` each trace opens with its own letter (L, R, P, S), so every mode is visible from its
first token; unmarked, l2r and pair share their first step and only fork at the second.
"""

from __future__ import annotations

import random

from ssft.data.tasks.base import Task, parse_steps, steps_match
from ssft.errors import UserError

R0, R1 = ("r", 0), ("r", 1)


def _chain(nums: list[int]) -> list[tuple[tuple[object, ...], str]]:
    """Running-sum pattern over ``nums``: n0+n1, r0+n2, r1+n3."""
    return [((nums[0], nums[1]), "+"), ((R0, nums[2]), "+"), ((R1, nums[3]), "+")]


def _write(pairs: list[tuple[int, int]]) -> str:
    return ",".join(f"{x}+{y}={x + y}" for x, y in pairs)


class Add4(Task):
    name = "add4"
    strategies = ("l2r", "r2l", "pair", "sort")
    markers = ("L", "R", "P", "S")

    def __init__(self, marked: bool = False, max_operand: int = 9, fork_depth: int = 0) -> None:
        super().__init__(marked, fork_depth)
        if not 2 <= max_operand <= 99:
            raise UserError(f"task.max_operand={max_operand}: use 2..99")
        self.max_operand = max_operand

    def sample_operands(self, rng: random.Random) -> tuple[int, ...]:
        return tuple(rng.randint(1, self.max_operand) for _ in range(4))

    def question_text(self, operands: tuple[int, ...]) -> str:
        return "+".join(map(str, operands)) + "?"

    def solve(self, operands: tuple[int, ...]) -> int:
        return sum(operands)

    def render_body(self, operands: tuple[int, ...], strategy: str) -> str:
        a, b, c, d = operands
        if strategy == "l2r":
            return _write([(a, b), (a + b, c), (a + b + c, d)])
        if strategy == "r2l":
            return _write([(d, c), (d + c, b), (d + c + b, a)])
        if strategy == "pair":
            return _write([(a, b), (c, d), (a + b, c + d)])
        s = sorted(operands, reverse=True)
        return ",".join(map(str, s)) + ";" + _write([(s[0], s[1]), (s[0] + s[1], s[2]), (sum(s[:3]), s[3])])

    def body_follows(self, operands: tuple[int, ...], strategy: str, body: str) -> bool:
        a, b, c, d = operands
        if strategy == "sort":
            listing, _, rest = body.partition(";")
            s = sorted(operands, reverse=True)
            return listing == ",".join(map(str, s)) and steps_match(parse_steps(rest), _chain(s))
        if ";" in body:
            return False
        steps = parse_steps(body)
        if strategy == "l2r":
            return steps_match(steps, _chain([a, b, c, d]))
        if strategy == "r2l":
            return steps_match(steps, _chain([d, c, b, a]))
        return steps_match(steps, [((a, b), "+"), ((c, d), "+"), ((R0, R1), "+")])
