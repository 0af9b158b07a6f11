"""Answer checkers: extract the normalised final answer of a trace or generation and judge it against the gold.

A checker does two jobs with one rule: ``extract`` gives the string that majority votes count (so two
samples with equivalent answers must extract to the same string), and ``correct`` says whether a text's
final answer equals the gold answer. ``get_checker(data.checker)`` picks one:

- ``int``: the integer after a trailing ``#`` (the synthetic tasks' ``...#012`` -> ``12``);
- ``math``: math-verify on the final ``\\boxed{...}`` (or, without one, the whole text): LaTeX and numeric
  equivalence, so ``\\frac{1}{2}``, ``1/2`` and ``0.5`` are one answer;
- ``exact``: the last ``\\boxed{...}``, else what follows a ``#`` on the last line, else the last line,
  compared as whitespace-collapsed strings;
- ``none``: keeps every trace when filtering (the traces stage tests ``checker.name == "none"``); it
  extracts and judges like ``exact`` for evaluation.

Checkers never raise on malformed text: no answer is ``None`` and never correct.

    >>> get_checker("math").correct(r"so $x = \\boxed{\\frac{1}{2}}$", "0.5")
    True
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Protocol

from ssft.data.tasks.base import extract_answer
from ssft.errors import UserError

log = logging.getLogger(__name__)

BOXED = "\\boxed{"
# math-verify's own per-call limits (seconds); they use SIGALRM, which only the main thread may set.
MATH_TIMEOUT_S = 5


class Checker(Protocol):
    @property
    def name(self) -> str:
        """The checker's name in params (``data.checker``)."""
        ...

    def extract(self, text: str) -> str | None:
        """The normalised final answer of ``text``; None when there is none."""
        ...

    def correct(self, text: str, gold: str) -> bool:
        """Whether ``text``'s final answer equals ``gold``."""
        ...


# -- shared string helpers ----------------------------------------------------------------------------
def _collapse(s: str) -> str:
    return " ".join(s.split())


def last_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}`` (braces balanced), e.g. ``\\boxed{\\frac{1}{2}}`` ->
    ``\\frac{1}{2}``; None when there is none. An unclosed box (a truncated generation) does not count."""
    found = None
    start = text.find(BOXED)
    while start != -1:
        content = _balanced(text, start + len(BOXED))
        if content is not None:
            found = content
        start = text.find(BOXED, start + 1)
    return found


def _balanced(text: str, i: int) -> str | None:
    """The text from ``i`` up to the ``}`` that closes the brace opened just before ``i``."""
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return None


# -- int ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class IntChecker:
    """The synthetic tasks' rule: the integer after a trailing ``#``, without leading zeros."""

    name: str = "int"

    def extract(self, text: str) -> str | None:
        return extract_answer(text)

    def correct(self, text: str, gold: str) -> bool:
        # The gold is "12" (or "#12"): read it with the same rule so "012" and "12" agree.
        want = extract_answer("#" + str(gold).strip().removeprefix("#"))
        return want is not None and self.extract(text) == want


# -- exact --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExactChecker:
    """String equality of the final answer: the last ``\\boxed{}``, else after ``#`` on the last line, else
    the last non-empty line; whitespace collapsed. ``none`` is this checker under another name."""

    name: str = "exact"

    def extract(self, text: str) -> str | None:
        boxed = last_boxed(text)
        if boxed is not None:
            return _collapse(boxed) or None
        lines = [line for line in text.splitlines() if line.strip()]
        if not lines:
            return None
        # Only a '#' on the last line marks the answer, so markdown headings earlier on don't.
        return _collapse(lines[-1].rpartition("#")[2]) or None

    def correct(self, text: str, gold: str) -> bool:
        want = self.extract(str(gold))
        return want is not None and self.extract(text) == want


# -- math ---------------------------------------------------------------------------------------------
def _timeout_s() -> int | None:
    """math-verify's timeouts use ``signal.alarm``, which raises outside the main thread: there we pass
    None (no timeout), so a checker works in worker threads but a pathological expression can hang one."""
    return MATH_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


def _parse(latex: str) -> list[Any]:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    try:
        # no_fallback: an answer sympy cannot read yields nothing, instead of a raw fragment of the text.
        return parse(latex, extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()],
                     fallback_mode="no_fallback", parsing_timeout=_timeout_s())
    except Exception:  # math-verify catches its own errors; this is the last guard for "never raise"
        log.debug("math-verify failed to parse %r", latex[:200], exc_info=True)
        return []


def _canonical(value: Any) -> str:
    """One string per value where it is cheap to tell: floats become exact decimals (``0.5`` -> ``1/2``,
    ``12.0`` -> ``12``) and ``x = 3`` becomes ``3``, as math-verify's own comparison treats them."""
    import sympy

    try:
        if isinstance(value, sympy.Eq) and isinstance(value.lhs, sympy.Symbol):
            value = value.rhs
        if isinstance(value, sympy.Basic) and value.atoms(sympy.Float):
            value = value.xreplace({f: sympy.Rational(str(f)) for f in value.atoms(sympy.Float)})
        return str(value)
    except Exception:  # an odd sympy object: its plain str is still a usable vote key
        return str(value)


@dataclass(frozen=True)
class MathChecker:
    """math-verify: the final ``\\boxed{}`` (the whole text when there is none), LaTeX and numeric
    equivalence, sets and intervals as math-verify supports them."""

    name: str = "math"

    def _answer(self, text: str) -> list[Any]:
        # Only the last box counts: math-verify alone would merge several boxes into one set.
        boxed = last_boxed(text)
        return _parse(f"${BOXED}{boxed}}}$" if boxed is not None else text)

    def extract(self, text: str) -> str | None:
        parsed = self._answer(text)
        return _canonical(parsed[0]) if parsed else None

    def correct(self, text: str, gold: str) -> bool:
        from math_verify import verify

        want = _parse(gold_latex(str(gold)))
        got = self._answer(text)
        if not want or not got:
            return False
        try:
            # verify() is not symmetric: the gold goes first (assignments like "x = 3" are simplified there).
            return bool(verify(want, got, timeout_seconds=_timeout_s()))
        except Exception:
            log.debug("math-verify failed to compare %r with %r", str(gold)[:200], text[:200], exc_info=True)
            return False


def gold_latex(gold: str) -> str:
    """A gold answer as math-verify reads it: a bare ``12`` or ``\\frac{1}{2}`` goes inside ``$...$``;
    ``$\\sqrt{2}$`` and ``\\boxed{3}`` are already delimited."""
    gold = gold.strip()
    return gold if "$" in gold or BOXED in gold else f"${gold}$"


# -- registry -----------------------------------------------------------------------------------------
CHECKERS: dict[str, Checker] = {
    "int": IntChecker(),
    "math": MathChecker(),
    "exact": ExactChecker(),
    "none": ExactChecker(name="none"),
}


def get_checker(name: str) -> Checker:
    """The checker ``data.checker`` names; ValueError naming the field otherwise."""
    try:
        return CHECKERS[name]
    except KeyError:
        raise UserError(f"data.checker: unknown checker {name!r}; use one of {', '.join(CHECKERS)}") from None
