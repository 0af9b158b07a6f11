"""Answer checkers: extract the normalised final answer of a trace or generation and judge it against the gold.

A checker does two jobs with one rule: ``extract`` gives the string that majority votes count (so two
samples with equivalent answers must extract to the same string), and ``correct`` says whether a text's
final answer equals the gold answer. ``get_checker(data.checker)`` picks one:

- ``int``: the integer after a trailing ``#`` (the synthetic tasks' ``...#012`` -> ``12``);
- ``math``: math-verify on the final ``\\boxed{...}`` (with the boxes math-verify joins to it, so
  ``\\boxed{1} and \\boxed{2}`` is the list 1, 2) or, without one, on the whole text: LaTeX and numeric
  equivalence, so ``\\frac{1}{2}``, ``1/2`` and ``0.5`` are one answer; a percent in the box, a decimal
  comma (``1,22``) and answers math-verify cannot read (``12:00``) are handled as described at ``_readings``;
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
import re
import threading
from dataclasses import dataclass
from functools import lru_cache
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
# A percent sign written inside the box: math-verify's LaTeX parser fails on it (latex2sympy's percent rule
# raises inside \boxed{}), so it is cut off here and put back as math-verify's own percent value.
_PERCENT = re.compile(r"\s*(?:\\?%|\\text\{\s*\\?%\s*\}|\\text\{\s*percent(?:age)?\s*\}|percent(?:age)?|pct)\s*$")
# A clock time with a.m./p.m.: math-verify reads ':' as a ratio (3:00 p.m. becomes 3/0 times symbols). A bare
# 10:30 stays the ratio 1/3, as math-verify reads it; a bare 12:00 (12/0) falls back to text below.
_CLOCK = re.compile(r"\d{1,2}:\d{2}\s*(?:\\text\{\s*)?[ap]\.?\s*m\.?\s*\}?", re.IGNORECASE)
# A number with a decimal comma or thousands spaces (1,22; 1000,99; 1 000): math-verify's number rule reads it
# as one number, its LaTeX rule as a set or a product; both readings are kept.
_SEPARATED_NUMBER = re.compile(r"-?(?:\d+,\d+|\d{1,3}(?: \d{3})+(?:\.\d+)?)")
# A whole gold wrapped in one pair of math delimiters: $..$, $$..$$, \(..\), \[..\].
_DELIMITED = re.compile(r"\$\$([^$]*)\$\$|\$([^$]*)\$|\\\(((?:(?!\\\)).)*)\\\)|\\\[((?:(?!\\\]).)*)\\\]", re.DOTALL)
_READINGS_CACHE = 65536  # distinct final answers kept parsed: evaluation scores each generation against its gold


def _timeout_s() -> int | None:
    """math-verify's timeouts use ``signal.alarm``, which raises outside the main thread: there we pass
    None (no timeout), so a checker works in worker threads but a pathological expression can hang one."""
    return MATH_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


def _parse(latex: str, *, numbers_only: bool = False) -> list[Any]:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    targets = [ExprExtractionConfig()] if numbers_only else [LatexExtractionConfig(), ExprExtractionConfig()]
    try:
        # no_fallback: an answer sympy cannot read yields nothing, instead of a raw fragment of the text.
        return parse(latex, extraction_config=targets, fallback_mode="no_fallback", parsing_timeout=_timeout_s())
    except Exception:  # math-verify catches its own errors; this is the last guard for "never raise"
        log.debug("math-verify failed to parse %r", latex[:200], exc_info=True)
        return []


def final_answer(text: str) -> str | None:
    """The final answer's LaTeX: the last complete ``\\boxed{}`` together with the boxes math-verify joins to
    it (its own rule: boxes under 10 characters apart, or under 70 with ``,``/``;``/and/or between, e.g.
    ``\\boxed{1} and \\boxed{2}`` -> ``1,2``); None without a complete box."""
    from latex2sympy2_extended.math_normalization import extract_boxed_content

    end = _last_box_end(text)
    return None if end is None else extract_boxed_content(text[:end], mode="last").strip()


def _last_box_end(text: str) -> int | None:
    """The index just past the last complete ``\\boxed{...}``, so an unclosed box after it is left out."""
    end = None
    start = text.find(BOXED)
    while start != -1:
        content = _balanced(text, start + len(BOXED))
        if content is not None:
            end = start + len(BOXED) + len(content) + 1
        start = text.find(BOXED, start + 1)
    return end


@lru_cache(maxsize=_READINGS_CACHE)
def _readings(answer: str, joined: bool = False) -> tuple[Any, ...]:
    """Every way to read one final answer, best first: math-verify's values, then the answer's normalised
    text (so identical text agrees even when math-verify cannot read it). ``joined``: the answer is several
    boxes joined by commas, so ``1,2`` is a list and never the decimal 1.2."""
    import sympy
    from latex2sympy2_extended.latex2sympy2 import convert_to_pct

    body = _PERCENT.sub("", answer)
    if _CLOCK.fullmatch(body):
        return (_as_text(body),)
    values = [v for v in _parse(f"${BOXED}{body}}}$") if _is_value(v)]
    if not joined and _SEPARATED_NUMBER.fullmatch(body):
        values = _parse(body, numbers_only=True) + values
    if body != answer:  # a percent: 20% equals 20 (MATH's convention) and 0.2 (math-verify's percent value)
        values = [r for v in values for r in ((v, convert_to_pct(v)) if isinstance(v, sympy.Number) else (v,))]
    return (*values, _as_text(body)) if body else tuple(values)


def _is_value(value: Any) -> bool:
    """False for what a misread leaves behind: ``zoo``/``nan`` (``12:00`` read as 12/0)."""
    import sympy

    return not (isinstance(value, sympy.Basic) and value.has(sympy.zoo, sympy.nan))


def _as_text(answer: str) -> str:
    """The answer as text, normalised by math-verify's LaTeX cleanup, without whitespace: ``\\mathrm{e}`` and
    ``\\text{e}`` are one text, ``12 : 00`` and ``12:00`` too."""
    from latex2sympy2_extended.latex2sympy2 import NormalizationConfig, normalize_latex

    # units=False: math-verify's unit stripping would cut \mathrm{e} and "p.m." out of the text.
    config = NormalizationConfig(basic_latex=True, units=False, malformed_operators=True, nits=True, boxed="none")
    return "".join(normalize_latex(answer, config).split())


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
    """math-verify: the final ``\\boxed{}`` answer (the whole text when there is none), LaTeX and numeric
    equivalence, sets and intervals as math-verify supports them; text it cannot read compares as text."""

    name: str = "math"

    def _answer(self, text: str) -> tuple[Any, ...]:
        answer = final_answer(text)
        if answer is None:  # no box: math-verify finds the answer in the text ("the answer is 1/2")
            return tuple(v for v in _parse(text) if _is_value(v))
        return _readings(answer, joined=answer != (last_boxed(text) or "").strip())

    def extract(self, text: str) -> str | None:
        readings = self._answer(text)
        return _canonical(readings[0]) if readings else None

    def correct(self, text: str, gold: str) -> bool:
        from math_verify import verify

        want = self._answer(gold_text(str(gold)))
        got = self._answer(text)
        if not want or not got:
            return False
        try:
            # verify() is not symmetric: the gold goes first (assignments like "x = 3" are simplified there);
            # it is true when any reading of the gold equals any reading of the text.
            return bool(verify(list(want), list(got), timeout_seconds=_timeout_s()))
        except Exception:
            log.debug("math-verify failed to compare %r with %r", str(gold)[:200], text[:200], exc_info=True)
            return False


def gold_text(gold: str) -> str:
    """A gold answer as the checker reads a text: ``12``, ``$12$`` or ``\\(12\\)`` becomes ``\\boxed{12}``;
    a gold with a box, or with text around its ``$...$`` (``$125$ miles``), stays as written."""
    gold = gold.strip()
    if BOXED in gold:
        return gold
    m = _DELIMITED.fullmatch(gold)
    inner = next((g for g in m.groups() if g is not None), "") if m else gold
    return gold if "$" in inner else f"{BOXED}{inner.strip()}}}"


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
