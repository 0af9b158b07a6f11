"""Tables and figures of a run: tag x source/mode counts, heatmaps, length histograms, pass@k / cons@k vs k.
Pure functions of metrics and details rows (matplotlib, headless)."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from ssft.eval.metrics import main_sampled
from ssft.eval.report import at_k, temperature_of


def counts_table(counts: dict[str, dict[str, int]]) -> dict[str, list]:
    cols = sorted({c for row in counts.values() for c in row})
    tags = sorted(counts, key=int)
    return {"tag": tags, **{c: [counts[t].get(c, 0) for t in tags] for c in cols}}


def tag_mode_table(details: list[dict]) -> dict[str, list]:
    counts: dict[str, Counter] = defaultdict(Counter)
    for r in main_sampled(details):
        counts[str(r["tag"] or 0)][r["mode"] or "none"] += 1
    return counts_table({t: dict(c) for t, c in counts.items()})


def save_figures(figs: dict[str, Any], out_dir: Path) -> list[Path]:
    """Each figure as ``<out_dir>/<name>.png``, written atomically; the paths, in order."""
    import io

    from ssft import atomic

    paths = []
    for name, fig in figs.items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        atomic.write_bytes(out_dir / f"{name}.png", buf.getvalue())
        paths.append(out_dir / f"{name}.png")
    return paths


def heatmap(counts: dict[str, dict[str, int]], title: str, xlabel: str) -> Any:
    """A tag x source (or mode) matrix of counts as its own figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = counts_table(counts)
    cols = [c for c in table if c != "tag"]
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * max(len(cols), 1), 0.8 + 0.5 * max(len(table["tag"]), 1)))
    draw_counts(ax, table, title, xlabel)
    fig.tight_layout()
    plt.close(fig)
    return fig


def draw_counts(ax: Any, table: dict[str, list], title: str, xlabel: str = "", fontsize: int = 8) -> None:
    """A :func:`counts_table` on ``ax``: tags down, sources across, each count written in its cell."""
    import numpy as np

    cols = [c for c in table if c != "tag"]
    data = np.array([table[c] for c in cols]).T if cols and table["tag"] else np.zeros((len(table["tag"]), 0))
    ax.imshow(data, cmap="Blues", aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right", fontsize=fontsize)
    ax.set_yticks(range(len(table["tag"])), [f"tag {t}" if t != "0" else "shared" for t in table["tag"]],
                  fontsize=fontsize)
    for (i, j), v in np.ndenumerate(data):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=fontsize - 1)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=9)


def eval_figures(metrics: dict[str, float], details: list[dict], n_tags: int) -> dict[str, Any]:
    """Tag x strategy heatmap, per-tag length histogram, pass@k and cons@k versus k."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sampled = main_sampled(details)
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
        points = at_k(metrics, family, n_tags)
        if points:
            ax.plot(list(points), list(points.values()), marker="o", label=f"{family}@k")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k")
    ax.legend()
    fig.tight_layout()
    plt.close(fig)
    figs["pass_cons_vs_k"] = fig
    return figs


# The report's key metrics: accuracy, voting and mode diversity (coverage and distinct answers divided by N).
KEY_METRICS = ("pass@1", "pass@1_best_tag", "cons@N", "pass@N", "coverage", "purity", "nmi")


def draw_at_k(ax: Any, curves: dict[str, dict[int, float]], title: str,
              spreads: dict[str, dict[int, float]] | None = None, fontsize: int = 8) -> None:
    """pass@k or cons@k against k on ``ax``, a line per method (k -> value), with a band of one ``spreads``
    either side when given (a study's standard deviation over seeds)."""
    for m, points in curves.items():
        if not points:
            continue
        ks, values = list(points), list(points.values())
        line, = ax.plot(ks, values, marker="o", label=m)
        if spreads is not None:
            std = [spreads[m][k] for k in ks]
            ax.fill_between(ks, [v - d for v, d in zip(values, std)], [v + d for v, d in zip(values, std)],
                            color=line.get_color(), alpha=0.15)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=fontsize)


def comparison_figures(table: dict[str, dict[str, float]], details: dict[str, list[dict]],
                       n_tags: int) -> dict[str, Any]:
    """The methods side by side: key metrics as grouped bars (coverage as a share of N), pass@k and cons@k
    against k, and each method's tag x mode matrix of sampled generations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    methods = list(table)
    figs: dict[str, Any] = {}
    keys = [k for k in KEY_METRICS if any(k in table[m] for m in methods)]
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(keys), 3.2))
    width = 0.8 / max(len(methods), 1)
    for i, m in enumerate(methods):
        values = [table[m].get(k, np.nan) / (n_tags if k == "coverage" else 1) for k in keys]
        ax.bar(np.arange(len(keys)) + (i - (len(methods) - 1) / 2) * width, values, width, label=m)
    ax.set_xticks(range(len(keys)), [f"{k}/N" if k == "coverage" else k for k in keys], rotation=20)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, ncol=len(methods))
    ax.set_title("key metrics per method", fontsize=9)
    fig.tight_layout()
    plt.close(fig)
    figs["metrics"] = fig
    fig, axes = plt.subplots(1, 2, figsize=(8, 3), sharey=True)
    for ax, family in zip(axes, ("pass", "cons")):
        draw_at_k(ax, {m: at_k(table[m], family, n_tags) for m in methods}, f"{family}@k", fontsize=8)
    fig.tight_layout()
    plt.close(fig)
    figs["pass_cons_vs_k"] = fig
    tables = {m: tag_mode_table(details.get(m, [])) for m in methods}
    fig, axes = plt.subplots(1, len(methods), figsize=(3.2 * len(methods), 2.8), squeeze=False)
    for ax, m in zip(axes[0], methods):
        draw_counts(ax, tables[m], m, fontsize=7)
    fig.suptitle("tag x mode (sampled generations)", fontsize=9)
    fig.tight_layout()
    plt.close(fig)
    figs["tag_mode"] = fig
    return figs


STUDY_METRICS = ("pass@1", "pass@1_val_tag", "cons@N", "pass@N", "purity", "nmi")


def study_figures(agg: dict[str, dict[str, dict[str, tuple]]], n_tags: dict[str, int],
                  curves: dict[str, dict[str, dict[str, list[tuple]]]] | None = None) -> dict[str, Any]:
    """The study's figures from its aggregate (setting -> method -> metric -> (mean, std, n)): key metrics per
    setting; pass@k and cons@k against k where a setting sampled past N; accuracy against diversity where it
    swept the temperature; the learning curves (setting -> method -> metric -> [(step, mean, std, n)]) where
    it kept them."""
    figs = {"metrics_by_setting": _metrics_by_setting(agg)}
    if curves:
        figs["learning_curves"] = _learning_curves(curves)
    deep = [s for s in agg if any(len(at_k(ms, "pass", n_tags.get(s, 1))) >= 3 for ms in agg[s].values())]
    if deep:
        figs["pass_cons_vs_k"] = _study_at_k(agg, deep, n_tags)
    swept = [s for s in agg if any(temperature_of(k) is not None for ms in agg[s].values() for k in ms)]
    if swept:
        figs["diversity_vs_accuracy"] = _diversity_vs_accuracy(agg, swept)
    return figs


def _metrics_by_setting(agg: dict[str, dict[str, dict[str, tuple]]]) -> Any:
    """One panel per setting: the key metrics per method, bars at the mean over seeds, whiskers one standard
    deviation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    settings = list(agg)
    fig, axes = plt.subplots(len(settings), 1, figsize=(8, 2.6 * len(settings)), squeeze=False)
    for ax, setting in zip(axes[:, 0], settings):
        methods = list(agg[setting])
        keys = [k for k in STUDY_METRICS if any(k in agg[setting][m] for m in methods)]
        width = 0.8 / max(len(methods), 1)
        for i, m in enumerate(methods):
            stats = [agg[setting][m].get(k, (np.nan, 0.0, 0)) for k in keys]
            ax.bar(np.arange(len(keys)) + (i - (len(methods) - 1) / 2) * width, [s[0] for s in stats], width,
                   yerr=[s[1] for s in stats], capsize=2, label=m)
        ax.set_xticks(range(len(keys)), keys, fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_title(setting, fontsize=9)
        ax.legend(fontsize=7, ncol=len(methods), loc="lower right")
    fig.tight_layout()
    plt.close(fig)
    return fig


def _study_at_k(agg: dict[str, dict[str, dict[str, tuple]]], settings: list[str], n_tags: dict[str, int]) -> Any:
    """A row per setting: pass@k and cons@k against k per method, mean over seeds with one-std bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(settings), 2, figsize=(8, 2.8 * len(settings)), squeeze=False)
    for row, setting in zip(axes, settings):
        for ax, family in zip(row, ("pass", "cons")):
            curves = {m: at_k(ms, family, n_tags.get(setting, 1)) for m, ms in agg[setting].items()}
            draw_at_k(ax, {m: {k: v[0] for k, v in c.items()} for m, c in curves.items()},
                      f"{setting}: {family}@k", {m: {k: v[1] for k, v in c.items()} for m, c in curves.items()},
                      fontsize=7)
    fig.tight_layout()
    plt.close(fig)
    return fig


def _diversity_vs_accuracy(agg: dict[str, dict[str, dict[str, tuple]]], settings: list[str]) -> Any:
    """A row per setting: coverage and cons@N against mean accuracy (pass@1), one line per method through its
    greedy set and every sampled temperature (labelled)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(settings), 2, figsize=(9, 3.4 * len(settings)), squeeze=False)
    for row, setting in zip(axes, settings):
        for ax, metric in zip(row, ("coverage", "cons@N")):
            for m, ms in agg[setting].items():
                temps = sorted({t for k in ms if (t := temperature_of(k)) is not None})
                sets = [("greedy", "_greedy"), *((f"{t:g}", f"_t{t:g}") for t in temps)]
                points = [(label, ms[f"pass@1{sfx}"][0], ms[f"{metric}{sfx}"][0]) for label, sfx in sets
                          if f"pass@1{sfx}" in ms and f"{metric}{sfx}" in ms]
                ax.plot([p[1] for p in points], [p[2] for p in points], marker="o", label=m)
                for label, x, y in points:
                    ax.annotate(label, (x, y), fontsize=6, xytext=(2, 2), textcoords="offset points")
            ax.set_xlabel("mean accuracy (pass@1)")
            ax.set_ylabel(metric)
            ax.set_title(f"{setting}: {metric} against accuracy", fontsize=9)
            ax.legend(fontsize=7)
    fig.tight_layout()
    plt.close(fig)
    return fig


def tag_distribution_figure(stats: dict) -> Any:
    """GFPO: the model's mean P(tag | question) over the RL questions, before and after the RL steps."""
    import matplotlib.pyplot as plt
    import numpy as np

    before, after = stats["tag_distribution_before"], stats["tag_distribution_after"]
    tags = np.arange(1, len(before) + 1)
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(tags - 0.2, before, width=0.4, label="before")
    ax.bar(tags + 0.2, after, width=0.4, label=f"after {len(stats['steps'])} steps")
    ax.set_xticks(tags, [f"<think{t}>" for t in tags])
    ax.set_ylabel("mean P(tag | question)")
    ax.set_title(f"{stats['method']}: the tag the model picks ({stats['scope']})")
    ax.legend()
    fig.tight_layout()
    return fig


CURVE_METRICS = ("cons@N", "pass@1_val_tag", "coverage")


def _learning_curves(curves: dict[str, dict[str, dict[str, list[tuple]]]]) -> Any:
    """A row per setting, a panel per metric: each method's mean over seeds against the training step, the band
    one standard deviation (a curve still rising at the last step is a budget, not a verdict)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(curves), len(CURVE_METRICS), figsize=(4 * len(CURVE_METRICS), 2.8 * len(curves)),
                             squeeze=False)
    for row, (setting, methods) in zip(axes, curves.items()):
        for ax, metric in zip(row, CURVE_METRICS):
            for m, series in methods.items():
                points = series.get(metric, [])
                if not points:
                    continue
                steps, means, stds = ([p[i] for p in points] for i in range(3))
                ax.plot(steps, means, marker=".", label=m)
                ax.fill_between(steps, [a - b for a, b in zip(means, stds)], [a + b for a, b in zip(means, stds)],
                                alpha=0.2)
            ax.set_title(f"{setting}: {metric}", fontsize=9)
            ax.set_xlabel("training step", fontsize=8)
            ax.set_ylim(0, 1.05 if metric != "coverage" else None)
        row[0].legend(fontsize=7)
    fig.tight_layout()
    plt.close(fig)
    return fig
