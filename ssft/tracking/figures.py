"""Tables and figures of a run: tag x source/mode counts, heatmaps, length histograms, pass@k / cons@k vs k.
Pure functions of metrics and details rows (matplotlib, headless)."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any


def counts_table(counts: dict[str, dict[str, int]]) -> dict[str, list]:
    cols = sorted({c for row in counts.values() for c in row})
    tags = sorted(counts, key=int)
    return {"tag": tags, **{c: [counts[t].get(c, 0) for t in tags] for c in cols}}


def tag_mode_table(details: list[dict]) -> dict[str, list]:
    counts: dict[str, Counter] = defaultdict(Counter)
    for r in details:
        if r["temperature"] > 0:
            counts[str(r["tag"] or 0)][r["mode"] or "none"] += 1
    return counts_table({t: dict(c) for t, c in counts.items()})


def heatmap(counts: dict[str, dict[str, int]], title: str, xlabel: str) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    table = counts_table(counts)
    cols = [c for c in table if c != "tag"]
    data = np.array([table[c] for c in cols]).T if cols else np.zeros((len(table["tag"]), 0))
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * max(len(cols), 1), 0.8 + 0.5 * max(len(table["tag"]), 1)))
    ax.imshow(data, cmap="Blues", aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
    ax.set_yticks(range(len(table["tag"])), [f"tag {t}" if t != "0" else "shared" for t in table["tag"]])
    for (i, j), v in np.ndenumerate(data):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    plt.close(fig)
    return fig


def eval_figures(metrics: dict[str, float], details: list[dict], n_tags: int) -> dict[str, Any]:
    """Tag x strategy heatmap, per-tag length histogram, pass@k and cons@k versus k."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sampled = [r for r in details if r["temperature"] > 0]
    modes: dict[str, Counter] = defaultdict(Counter)
    lengths: dict[str, list[int]] = defaultdict(list)
    for r in sampled:
        tag = str(r["tag"] or 0)
        modes[tag][r["mode"] or "none"] += 1
        lengths[tag].append(r["length"])
    figs = {"tag_strategy_heatmap": heatmap({t: dict(c) for t, c in modes.items()},
                                            "tag x strategy (sampled generations)", "strategy")}
    fig, ax = plt.subplots(figsize=(5, 3))
    for tag in sorted(lengths, key=int):
        ax.hist(lengths[tag], bins=20, alpha=0.5, label=f"tag {tag}" if tag != "0" else "shared")
    ax.set_xlabel("generated tokens")
    ax.legend(fontsize=7)
    fig.tight_layout()
    plt.close(fig)
    figs["length_histogram"] = fig
    fig, ax = plt.subplots(figsize=(5, 3))
    for family in ("pass", "cons"):
        points = {int(k.split("@")[1]): v for k, v in metrics.items()
                  if k.startswith(family + "@") and k.split("@")[1].isdigit()}
        if f"{family}@N" in metrics:
            points[n_tags] = metrics[f"{family}@N"]
        if points:
            ks = sorted(points)
            ax.plot(ks, [points[k] for k in ks], marker="o", label=f"{family}@k")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k")
    ax.legend()
    fig.tight_layout()
    plt.close(fig)
    figs["pass_cons_vs_k"] = fig
    return figs
