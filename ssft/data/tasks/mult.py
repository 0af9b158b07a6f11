"""``mult``: 2-digit x 2-digit multiplication, four ways (harder: a tiny model does not saturate fast).

    question  47*86?
    split_multiplier    47*6=282,47*80=3760,282+3760=4042#4042
    split_multiplicand  40*86=3440,7*86=602,3440+602=4042#4042
    distributive        40*80=3200,40*6=240,7*80=560,7*6=42,3200+240+560+42=4042#4042
    round_subtract      47*90=4230,47*4=188,4230-188=4042#4042

The strategies use different sub-skills (2x1-digit products, tens x tens, a 4-term sum, subtraction with
borrow), so a capacity-limited model makes mode-specific errors and voting across modes can help.
With ``marked`` each trace opens with its own letter (A, B, C, D).
"""

from __future__ import annotations

import random

from ssft.data.tasks.base import Task, parse_steps, steps_match

R = [("r", i) for i in range(4)]


class Mult(Task):
    name = "mult"
    strategies = ("split_multiplier", "split_multiplicand", "distributive", "round_subtract")
    markers = ("A", "B", "C", "D")

    def sample_operands(self, rng: random.Random) -> tuple[int, ...]:
        # Neither operand a multiple of 10, so every strategy has two non-trivial parts.
        pick = lambda: rng.choice([x for x in range(11, 100) if x % 10])
        return (pick(), pick())

    def question_text(self, operands: tuple[int, ...]) -> str:
        return f"{operands[0]}*{operands[1]}?"

    def solve(self, operands: tuple[int, ...]) -> int:
        return operands[0] * operands[1]

    def _patterns(self, operands: tuple[int, ...]) -> dict[str, list[tuple[tuple[int | tuple[str, int], ...], str]]]:
        a, b = operands
        a1, a0, b1, b0 = a - a % 10, a % 10, b - b % 10, b % 10
        up = b1 + 10
        return {
            "split_multiplier": [((a, b0), "*"), ((a, b1), "*"), ((R[0], R[1]), "+")],
            "split_multiplicand": [((a1, b), "*"), ((a0, b), "*"), ((R[0], R[1]), "+")],
            "distributive": [((a1, b1), "*"), ((a1, b0), "*"), ((a0, b1), "*"), ((a0, b0), "*"),
                             ((R[0], R[1], R[2], R[3]), "+++")],
            "round_subtract": [((a, up), "*"), ((a, up - b), "*"), ((R[0], R[1]), "-")],
        }

    def render_body(self, operands: tuple[int, ...], strategy: str) -> str:
        pieces: list[str] = []
        results: list[int] = []
        for nums, ops in self._patterns(operands)[strategy]:
            vals = [results[o[1]] if isinstance(o, tuple) else o for o in nums]
            value = vals[0]
            for op, v in zip(ops, vals[1:]):
                value = value * v if op == "*" else value + v if op == "+" else value - v
            results.append(value)
            expr = str(vals[0]) + "".join(op + str(v) for op, v in zip(ops, vals[1:]))
            pieces.append(f"{expr}={value}")
        return ",".join(pieces)

    def body_follows(self, operands: tuple[int, ...], strategy: str, body: str) -> bool:
        return steps_match(parse_steps(body), self._patterns(operands)[strategy])
