"""The report stage: every method's metrics side by side in ``results/summary.md`` and ``summary.json``, the
headline comparison first and its rows in bold."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ssft import atomic
from ssft.eval.evaluate import METRICS_FILE

# What SSFT claims (method.md): better majority votes and more distinct correct modes from the tags, at no
# cost in single-sample accuracy. Marked in the table, compared in the first line.
# pass@1_val_tag: SSFT's single sample from the tag chosen on validation questions, SFT's from its one prompt.
HEADLINE = ("cons@N", "pass@1_val_tag", "coverage", "pass@N")
# Rows of the summary table, in reading order: accuracy and voting, then diversity of modes.
ROWS = ("pass@1", "pass@1_val_tag", "pass@1_tag1", "pass@1_best_tag", "dead_tags", "cons@N", "cons@N_ties",
        "pass@N", "coverage", "purity", "nmi", "blended", "distinct_answers", "teacher_classifier_acc",
        "pass@1_greedy", "pass@1_val_tag_greedy", "pass@1_tag1_greedy", "pass@1_best_tag_greedy", "cons@N_greedy",
        "cons@N_ties_greedy", "pass@N_greedy", "coverage_greedy", "purity_greedy", "nmi_greedy", "blended_greedy")
# Rows of the temperature sweep (eval.temperatures), each as <metric>_t<T>: accuracy against diversity.
SWEEP_ROWS = ("pass@1", "cons@N", "coverage")


def collect(results_dir: Path, methods: list[str]) -> dict[str, dict]:
    out = {}
    for m in methods:
        f = Path(results_dir) / m / METRICS_FILE
        if not f.exists():
            raise FileNotFoundError(f"{f}: missing; run `ssft evaluate --method {m}` first")
        out[m] = json.loads(f.read_text())
    return out


def _k_order(key: str) -> tuple[bool, int, str]:
    """cons@k / pass@k rows: sampled before greedy, by k, then by name (a fixed order for equal k)."""
    return key.endswith("_greedy"), int(key.split("@")[1].split("_")[0]), key


def temperature_of(key: str) -> float | None:
    """The temperature of a sweep metric (``cons@N_t0.3`` -> 0.3), None for the others."""
    match = re.search(r"_t(\d+(?:\.\d+)?)$", key)
    return float(match.group(1)) if match else None


def at_k(metrics: dict, family: str, n_tags: int) -> dict:
    """k -> ``family``@k (pass or cons) of one method's metrics (any value type), k = N from ``<family>@N``."""
    points = {int(k.split("@")[1]): v for k, v in metrics.items() if re.fullmatch(rf"{family}@\d+", k)}
    if f"{family}@N" in metrics:
        points[n_tags] = metrics[f"{family}@N"]
    return dict(sorted(points.items()))


def markdown(table: dict[str, dict]) -> str:
    methods = list(table)
    keys = {k for m in methods for k in table[m]}
    extra = sorted({k for k in keys if k.startswith(("cons@", "pass@")) and k not in ROWS and "_ties" not in k
                    and temperature_of(k) is None}, key=_k_order)
    sweep = sorted((k for k in keys if temperature_of(k) is not None and k.rsplit("_t", 1)[0] in SWEEP_ROWS),
                   key=lambda k: (temperature_of(k), SWEEP_ROWS.index(k.rsplit("_t", 1)[0])))
    lines = ["| metric | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for key in [*ROWS, *extra, *sweep]:
        if any(key in table[m] for m in methods):
            cells = [f"{table[m][key]:.3f}" if key in table[m] else "–" for m in methods]
            name = f"**{key}**" if key in HEADLINE else key
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def headline(table: dict[str, dict]) -> str:
    """One line: ssft against each other method on the headline metrics, with the difference."""
    if "ssft" not in table or len(table) < 2:
        return ""
    parts = []
    for key in HEADLINE:
        if key in table["ssft"]:
            ours = table["ssft"][key]
            others = ", ".join(f"{m} {table[m][key]:.3f} ({ours - table[m][key]:+.3f})"
                               for m in table if m != "ssft" and key in table[m])
            parts.append(f"{key} **{ours:.3f}** vs {others}")
    return "**Headline, ssft vs baselines:** " + "; ".join(parts) + ".\n\n"


def write_report(results_dir: Path, methods: list[str]) -> str:
    table = collect(results_dir, methods)
    text = "# SSFT vs baselines\n\n" + headline(table) + "Sampled metrics at eval.temperature; `_greedy` = one " \
           "greedy generation per tag; headline rows in bold.\n\n" + markdown(table)
    atomic.write_text(Path(results_dir) / "summary.md", text)
    atomic.write_text(Path(results_dir) / "summary.json", json.dumps(table, indent=2, sort_keys=True))
    return text
