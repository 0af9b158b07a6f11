"""The report stage: every method's metrics side by side in ``results/summary.md`` and ``summary.json``, the
headline comparison first and its rows marked, then which tag each pass@1 row samples. The stage prints one
line (the headline); the table itself is printed once, where the pipeline ends (`make run`), or read in the
file. Plain text that reads the same in a terminal and rendered: no bold markers."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from ssft import atomic
from ssft.config import Config
from ssft.eval.evaluate import METRICS_FILE
from ssft.train import methods

# What SSFT claims (method.md): better majority votes and more distinct correct modes from the tags, at no
# cost in single-sample accuracy. Marked in the table, compared in the first line.
# pass@1_val_tag: SSFT's single sample from the tag chosen on validation questions, SFT's from its one prompt.
HEADLINE = ("cons@N", "pass@1_val_tag", "coverage", "pass@N")
HEADLINE_MARK = " ◀"  # after a headline row's name
# The rows every method's MLflow training run carries too (the evaluate child run has every metric): what
# Compare and the run page show, the headline first.
COMPARED = (*HEADLINE, "pass@1", "pass@1_tag1", "pass@1_best_tag", "cons@N_ties", "dead_tags", "purity", "nmi")
# Mode diversity: how many distinct modes, how cleanly a tag keeps one. Without a single correct answer they
# describe a model that has learnt nothing, so they are not compared then.
DIVERSITY = ("coverage", "purity", "nmi")
# Rows of the summary table, in reading order: accuracy and voting, then diversity of modes.
ROWS = ("pass@1", "pass@1_val_tag", "pass@1_tag1", "pass@1_best_tag", "dead_tags", "cons@N", "cons@N_ties",
        "cons@N_split", "pass@N", "coverage", "purity", "nmi", "blended", "distinct_answers", "teacher_classifier_acc",
        "pass@1_greedy", "pass@1_val_tag_greedy", "pass@1_tag1_greedy", "pass@1_best_tag_greedy", "cons@N_greedy",
        "cons@N_ties_greedy", "pass@N_greedy", "coverage_greedy", "purity_greedy", "nmi_greedy", "blended_greedy")
# Tag-free inference (the model picks its own tag; tagged methods only): accuracy, votes, how it chooses.
SELF_ROWS = ("pass@1_self", "pass@1_self_greedy_tag", "cons@N_self", "pass@N_self", "coverage_self",
             "tag_entropy_self", "argmax_best_tag")
# Rows of the temperature sweep (eval.temperatures), each as <metric>_t<T>: accuracy against diversity.
SWEEP_ROWS = ("pass@1", "cons@N", "coverage")


def collect(results_dir: Path, columns: Sequence[str] | Mapping[str, str]) -> dict[str, dict]:
    """Column -> metrics; ``columns``: method names (results/<method>), or column label -> its directory under
    ``results_dir`` (the RL-trained models: ``{"ssft+gfpo": "gfpo/ssft"}``)."""
    named = dict(columns) if isinstance(columns, Mapping) else {m: m for m in columns}
    out = {}
    for label, sub in named.items():
        f = Path(results_dir) / sub / METRICS_FILE
        if not f.exists():
            base, _, rl = label.partition("+")
            how = (f"ssft evaluate --method {base} --models models/gfpo --results {Path(results_dir) / 'gfpo'}" if rl
                   else f"ssft evaluate --method {label}")
            raise FileNotFoundError(f"{f}: missing; run `{how}` first (dvc repro runs every stage)")
        out[label] = json.loads(f.read_text())
    return out


def rl_line(table: dict[str, dict]) -> str:
    """One line on the RL stage: each RL model's tag-free single sample against its base model's best single
    sample (pass@1_val_tag), and GFPO against GRPO, the paper's comparison."""
    parts = []
    for label, m in table.items():
        base, _, rl = label.partition("+")
        if not rl or base not in table:
            continue
        ours = m.get("pass@1_self", m["pass@1"])
        ref = table[base].get("pass@1_val_tag", table[base]["pass@1"])
        parts.append(f"{label} pass@1{'_self' if 'pass@1_self' in m else ''} {ours:.3f} vs {base} "
                     f"pass@1_val_tag {ref:.3f} ({ours - ref:+.3f})")
    return ("RL stage: " + "; ".join(parts) + ".\n\n") if parts else ""


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
    extra = sorted({k for k in keys if k.startswith(("cons@", "pass@")) and k not in ROWS
                    and "_ties" not in k and "_split" not in k
                    and "_self" not in k and temperature_of(k) is None}, key=_k_order)
    sweep = sorted((k for k in keys if temperature_of(k) is not None and k.rsplit("_t", 1)[0] in SWEEP_ROWS),
                   key=lambda k: (temperature_of(k), SWEEP_ROWS.index(k.rsplit("_t", 1)[0])))
    lines = ["| metric | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for key in [*ROWS, *extra, *SELF_ROWS, *sweep]:
        if any(key in table[m] for m in methods):
            base, sfx = (key.split("_", 1) + [""])[0], ("_" + key.split("_", 1)[1]) if "_" in key else ""
            cells = [("n/a" if base in DIVERSITY and nothing_correct(table[m], sfx) else f"{table[m][key]:.3f}")
                     if key in table[m] else "–" for m in methods]
            name = f"{key}{HEADLINE_MARK}" if key in HEADLINE else key
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def nothing_correct(metrics: dict, suffix: str = "") -> bool:
    """Every answer of a set (the sampled one; ``_greedy``, ``_self``, ``_t0.3``: another) wrong, pass@1 and
    pass@N zero: its coverage and purity then mean nothing."""
    return metrics.get(f"pass@1{suffix}", 1.0) == 0.0 and metrics.get(f"pass@N{suffix}", 0.0) == 0.0


def headline(table: dict[str, dict]) -> str:
    """One line: ssft against each other method on the headline metrics, with the difference; diversity is
    compared only between methods that answered something correctly."""
    if "ssft" not in table or len(table) < 2:
        return ""
    parts = []
    for key in HEADLINE:
        if key not in table["ssft"]:
            continue
        if key in DIVERSITY and nothing_correct(table["ssft"]):
            parts.append(f"{key} n/a (ssft answered nothing correctly)")
            continue
        ours = table["ssft"][key]
        others = ", ".join(f"{m} {table[m][key]:.3f} ({ours - table[m][key]:+.3f})" for m in table
                           if m != "ssft" and key in table[m] and not (key in DIVERSITY and nothing_correct(table[m])))
        parts.append(f"{key} {ours:.3f} vs {others or 'no method with a correct answer'}")
    return "Headline, ssft vs baselines: " + "; ".join(parts) + ".\n\n"


def tag_notes(table: dict[str, dict]) -> str:
    """Beside the table: which tag each pass@1 row samples, per method, and why ``pass@1_tag1`` (the paper's
    protocol) can trail ``pass@1_val_tag`` (the headline's)."""
    lines = ["Which tag each pass@1 row samples:",
             "- `pass@1`: every sample of every tag (no tag chosen).",
             "- `pass@1_val_tag` (headline): the tag with the best accuracy on the validation questions, chosen "
             "before the evaluation questions are seen.",
             "- `pass@1_tag1`: always `<think1>`, the paper's protocol.",
             "- `pass@1_best_tag`: the tag training matched to the most distinct traces (the paper's Eq. 4).",
             "- an untagged method (sft) has one prompt, so all four rows are the same samples."]
    chosen = [f"{m} val_tag {int(v['val_tag'])}" + (f", best_tag {int(v['best_tag'])}" if "best_tag" in v else "")
              for m, v in table.items() if v.get("val_tag")]  # 0: an untagged method's one prompt
    if chosen:
        lines.append(f"- chosen here: {'; '.join(chosen)}.")
    for m, v in table.items():
        tag1, val = v.get("pass@1_tag1"), v.get("pass@1_val_tag")
        if tag1 is None or val is None or not v.get("val_tag") or val - tag1 < 0.01:
            continue
        t = int(v["val_tag"])
        lines.append(
            f"- {m}: `pass@1_tag1` {tag1:.3f} trails `pass@1_val_tag` {val:.3f}. Matching decides which tag learns "
            f"which mode, so tag 1 is an arbitrary one: here it is right on {v.get('acc_tag1', tag1):.3f} of its "
            f"samples against tag {t}'s {v.get(f'acc_tag{t}', val):.3f}, and its generations run "
            f"{v.get('len_tag1', 0):.0f} tokens against {v.get(f'len_tag{t}', 0):.0f} (a tag that drifts to "
            "generations of no known mode). The validation tag avoids such a tag; the paper's row does not.")
    return "\n".join(lines) + "\n"


def terminal_line(results_dir: Path, table: dict[str, dict]) -> str:
    """What the report stage prints: where the table is, and the headline (the table is printed once, by whoever
    shows the pipeline's end)."""
    line = headline(table).strip() or f"methods {', '.join(table)}"
    return f"{Path(results_dir) / 'summary.md'}: {line}"


def write_report(results_dir: Path, methods: Sequence[str] | Mapping[str, str]) -> str:
    """summary.md (headline, table, which tag each pass@1 row samples) and summary.json; returns the one line
    the stage prints."""
    table = collect(results_dir, methods)
    text = "# SSFT vs baselines\n\n" + headline(table) + rl_line(table) + "Sampled metrics at eval.temperature; " \
           f"`_greedy` = one greedy generation per tag; headline rows marked{HEADLINE_MARK}.\n\n" + markdown(table)
    if any(nothing_correct(v) for v in table.values()):
        text += "\nn/a: coverage, purity and nmi of a method that answered nothing correctly (pass@1 = pass@N = 0).\n"
    text += "\n" + tag_notes(table)
    atomic.write_text(Path(results_dir) / "summary.md", text)
    atomic.write_text(Path(results_dir) / "summary.json", json.dumps(table, indent=2, sort_keys=True))
    return terminal_line(results_dir, table)


def columns(cfg: Config) -> dict[str, str]:
    """The report's columns and where their results are: each trained method (``results/<method>``), then each
    RL-trained one (``results/gfpo/<method>``, labelled ssft+gfpo or sft+grpo), then each prefix-forced one
    (``results/forced/<method>``, labelled sft+forced)."""
    out = {m: m for m in cfg.train.methods}
    out |= {f"{m}+forced": f"forced/{m}" for m in cfg.eval.prefix_forced}
    for m in cfg.gfpo.methods:
        out[methods.rl_label(m, methods.rl_scope(cfg.gfpo.scope, methods.get(m)))] = f"gfpo/{m}"
    return out
