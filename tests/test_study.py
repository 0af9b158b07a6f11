"""A miniature study (2 settings x 2 seeds) through `ssft study`: the report's numbers are the per-cell metrics'
mean and spread, and a rerun reuses the finished cells."""

import json
import statistics
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from ssft import config, study
from ssft.cli import main

MINI = {
    "description": "miniature",
    "base": {"traces.train_questions": 32, "traces.eval_questions": 8, "traces.val_questions": 4,
             "model.hidden_size": 32, "model.num_layers": 2, "model.num_heads": 2, "model.intermediate_size": 64,
             "train.max_steps": 8, "train.questions_per_step": 4, "train.warmup_steps": 2, "train.save_steps": 100,
             "eval.samples": 8, "eval.ks": [8], "eval.max_new_tokens": 40, "tracking.enabled": False,
             "tracking.system_metrics": False, "gfpo.methods": []},
    "seeds": [0, 1],
    "settings": [{"name": "a", "params": {"train.methods": ["ssft", "sft"], "eval.temperatures": [1.0],
                                          "eval.ks": [1, 2, 8]}},
                 {"name": "b", "params": {"ssft.cost_tokens": 4, "train.methods": ["ssft", "sft"]}}],
}


@pytest.mark.slow
def test_a_miniature_study_aggregates_its_cells_and_reuses_them(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (tmp_path / "mini.yaml").write_text(yaml.safe_dump(
        {**MINI, "contrasts": [["b", "a"]], "base": {**MINI["base"], "tracking.enabled": True, "tracking.uri": uri,
                                                     "tracking.artifacts": str(tmp_path / "artifacts")}}))
    args = ["--params", str(ROOT / "params.yaml"), "study", str(tmp_path / "mini.yaml"),
            "--report", str(tmp_path / "results" / "study.md"), "--workdir", str(tmp_path / "cells")]
    assert main(args) == 0
    report = (tmp_path / "results" / "study.md").read_text()
    assert "## a" in report and "## b" in report and "ssft − sft (paired):" in report
    assert "(2 seeds x 8 questions; per seed " in report  # each seed's difference beside the interval
    assert (tmp_path / "results" / "study" / "metrics_by_setting.png").exists()
    agg = json.loads((tmp_path / "results" / "study.json").read_text())
    for setting in ("a", "b"):
        cells = [tmp_path / "cells" / "mini" / setting / f"seed{s}" for s in (0, 1)]
        for method in ("ssft", "sft"):
            per_seed = [json.loads((c / "results" / method / "metrics.json").read_text()) for c in cells]
            for key in ("pass@1", "cons@N", "coverage"):
                values = [m[key] for m in per_seed]
                assert agg[setting][method][key] == pytest.approx(
                    [statistics.mean(values), statistics.stdev(values), 2]), (setting, method, key)
    assert "## At a glance" in report and "| a | " in report
    assert "## Contrasts" in report and "b − a, ssft (paired by seed and question):" in report
    assert "pass@k / cons@k against k" in report and "| 8 |" in report
    assert "Temperature sweep" in report and "| sft | 1 |" in report and "| ssft | greedy |" in report
    assert "SSFT matching per epoch" in report and "Tag x strategy, epoch 0 (seed0" in report
    assert "Where the matching is decided (`ssft costs`, seed0, 8 held-out questions" in report
    assert "## Reading" in report and "- Majority vote, cons@N:" in report
    for fig in ("pass_cons_vs_k", "diversity_vs_accuracy"):
        assert (tmp_path / "results" / "study" / f"{fig}.png").exists(), fig
    values = [json.loads((tmp_path / "cells" / "mini" / "a" / f"seed{s}" / "results" / "sft" / "metrics.json")
                         .read_text())["coverage_t1"] for s in (0, 1)]
    assert agg["a"]["sft"]["coverage_t1"] == pytest.approx([statistics.mean(values), statistics.stdev(values), 2])
    b0 = yaml.safe_load((tmp_path / "cells" / "mini" / "b" / "seed0" / "params.yaml").read_text())
    assert (b0["ssft"]["cost_tokens"], b0["seed"], b0["train"]["methods"]) == (4, 0, ["ssft", "sft"])
    # MLflow: one parent run for the study, a child per cell, each method's training run under its cell
    import mlflow

    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("ssft-study-mini").experiment_id])
    (parent,) = [r for r in runs if r.info.run_name == "study-mini"]
    cell_runs = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert set(cell_runs) == {"a/seed0", "a/seed1", "b/seed0", "b/seed1"}
    trained = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == cell_runs["b/seed1"].info.run_id]
    assert {r.data.tags["method"] for r in trained} == {"ssft", "sft"}
    assert cell_runs["a/seed0"].data.metrics["ssft/cons_at_N"] == pytest.approx(json.loads(
        (tmp_path / "cells" / "mini" / "a" / "seed0" / "results" / "ssft" / "metrics.json").read_text())["cons@N"])
    assert {"study.md", "study.json"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    stamp = (tmp_path / "cells" / "mini" / "a" / "seed1" / "results" / "ssft" / "metrics.json").stat().st_mtime_ns
    assert main(args) == 0, "rerun"
    assert (tmp_path / "cells" / "mini" / "a" / "seed1" / "results" / "ssft" / "metrics.json").stat().st_mtime_ns \
        == stamp, "a finished cell is reused"


def test_a_bad_study_file_names_the_file_and_setting(tmp_path: Path) -> None:
    bad = {**MINI, "settings": [{"name": "x", "params": {"train.max_step": 5}}]}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ValueError, match=r"(?s)bad.yaml: setting 'x': .*train.max_step: unknown setting"):
        study.load(tmp_path / "bad.yaml", ROOT / "params.yaml")
    bad = {**MINI, "settings": [{"name": "x", "params": {}, "seed": [1]}]}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ValueError, match=r"bad.yaml: setting 'x': unknown key\(s\) \['seed'\]; a setting has name"):
        study.load(tmp_path / "bad.yaml", ROOT / "params.yaml")
    with pytest.raises(ValueError, match="no such study file; the shipped ones: ablations, cpu, gpu"):
        study.load(tmp_path / "nope.yaml")


def test_the_shipped_studies_load() -> None:
    cpu, ablations = (study.cells(study.load(ROOT / "studies" / f"{name}.yaml")) for name in ("cpu", "ablations"))
    assert (len(cpu), len(ablations)) == (23, 20)
    assert [c.seed for c in ablations if c.setting.name == "fork4-L2"] == [0, 1]        # a setting's own seeds
    assert [c.seed for c in cpu if c.setting.name == "add4-unmarked"] == [0, 1, 2, 3, 4]  # the main setting: 5
    assert [c.seed for c in cpu if c.setting.name == "pathstar"] == [0, 1, 2]  # the study's
    for name, cells in (("cpu", cpu), ("ablations", ablations)):
        for c in cells:  # every cell's params are valid (gfpo.methods must be trained methods, ...)
            config.from_dict(_cell_params(study.load(ROOT / "studies" / f"{name}.yaml"), c))
    assert len(study.cells(study.load(ROOT / "studies" / "gpu.yaml"))) == 10


def test_aggregate_is_mean_and_sample_spread_over_seeds() -> None:
    s = study.Setting("a", {})
    results = {study.Cell(s, 0): {"ssft": {"pass@1": 0.5, "cons@N": 1.0}, "sft": {"pass@1": 0.2}},
               study.Cell(s, 1): {"ssft": {"pass@1": 0.7, "cons@N": 1.0}, "sft": {"pass@1": 0.4}}}
    agg = study.aggregate(results)
    assert agg["a"]["ssft"]["pass@1"] == pytest.approx((0.6, 0.1414214, 2))
    assert agg["a"]["ssft"]["cons@N"] == (1.0, 0.0, 2)
    assert agg["a"]["sft"]["pass@1"] == pytest.approx((0.3, 0.1414214, 2))
    assert "cons@N" not in agg["a"]["sft"]


def test_learning_curves_average_seeds_at_the_steps_they_share(tmp_path: Path) -> None:
    """Two seeds' curves: means and spreads per step, only steps both evaluated (seed 1 was cut at 500), one
    table row per step, the figure drawn from the same numbers."""
    for seed, points in ((0, [(250, 0.2), (500, 0.4), (750, 0.6)]), (1, [(250, 0.4), (500, 0.6)])):
        f = tmp_path / f"seed{seed}" / "results" / "curves" / "ssft.jsonl"
        f.parent.mkdir(parents=True)
        f.write_text("".join(json.dumps({"step": s, "cons@N": c, "coverage": 2 * c}) + "\n" for s, c in points))
    runs = study.curve_runs([tmp_path / "seed0", tmp_path / "seed1"])
    curves = study.curve_spread(runs)
    assert [p[:2] for p in curves["ssft"]["cons@N"]] == [(250, pytest.approx(0.3)), (500, pytest.approx(0.5))]
    assert curves["ssft"]["coverage"][1][1:] == (pytest.approx(1.0), pytest.approx(0.2828427), 2)
    lines = study._curve_lines(runs)
    assert "| 250 | 0.300 ± 0.141 |" in lines and "| 500 | 0.500 ± 0.141 |" in lines and len(lines) == 9
    assert lines[-1] == "- ssft: still rising at the last step (+0.200 from step 250 to 500; per seed +0.200, " \
        "+0.200): not converged at this budget", lines[-1]
    assert study.still_rising([0.01, -0.005], [1, 2]).startswith("flat at the end")
    assert study.still_rising([0.2, -0.05], [1, 2]).startswith("unclear"), "a seed that fell"
    assert study.still_rising([0.12, 0.13], [1, 2]).startswith("still rising"), "big level spread, same gains"


def _details(path: Path, correct_by_q: dict[str, list[bool]]) -> None:
    """Sampled rows with 2 tags x 2 samples per question; answer "1" when correct, else "2"."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"question_id": q, "tag": k % 2 + 1, "sample": k // 2, "set": "sampled", "temperature": 0.7,
             "answer": "1" if c else "2", "correct": c, "mode": None, "length": 3}
            for q, cs in correct_by_q.items() for k, c in enumerate(cs)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_paired_differences_are_per_seed_then_over_seeds(tmp_path: Path) -> None:
    """pass@1 per question: ssft 1.0, 0.5 (seed 0) and 0.75 (seed 1); sft 0.5, 0.5 and 0.25: differences
    0.5, 0 (seed 0: 0.25) and 0.5 (seed 1): the mean over seeds is 0.375, not the pooled 1/3."""
    cells = [tmp_path / "seed0", tmp_path / "seed1"]
    _details(cells[0] / "results" / "ssft" / "details.jsonl", {"q1": [True] * 4, "q2": [True, False] * 2})
    _details(cells[0] / "results" / "sft" / "details.jsonl", {"q1": [True, False] * 2, "q2": [False, True] * 2})
    _details(cells[1] / "results" / "ssft" / "details.jsonl", {"q3": [True, True, True, False]})
    _details(cells[1] / "results" / "sft" / "details.jsonl", {"q3": [True, False, False, False]})
    d = study.paired(cells, "ssft", "sft", 2)["pass@1"]
    assert (d.mean, d.per_seed, d.pairs) == (pytest.approx(0.375), (0.25, 0.5), 3)
    assert d.low <= 0.25 and d.high >= 0.5, d  # a seed drawn twice is in the resamples


def test_paired_pass_at_k_is_per_question_and_named_by_k(tmp_path: Path) -> None:
    """ssft has 1 correct of 4 samples, sft none: pass@2 (= pass@N at N = 2) 1 - C(3,2)/C(4,2) = 0.5 and pass@4 1.0
    ahead of sft's 0; pass@8 needs more samples than the question has, so it is not there."""
    cell = tmp_path / "seed0"
    _details(cell / "results" / "ssft" / "details.jsonl", {"q1": [False, True, False, False]})
    _details(cell / "results" / "sft" / "details.jsonl", {"q1": [False] * 4})
    d = study.paired([cell], "ssft", "sft", 2, ks=(1, 2, 4, 8))
    assert list(d) == ["pass@1", "cons@N", "cons@N_split", "coverage", "pass@2", "pass@4"]
    assert (d["pass@1"].mean, d["pass@2"].mean, d["pass@4"].mean) == (0.25, pytest.approx(0.5), 1.0)


def test_the_reading_groups_each_call_by_its_verdict() -> None:
    """The code-written reading: ahead and behind only where the interval excludes 0 and no seed disagrees; at
    each k the baseline with the best mean pass@k is the one ssft is held against."""
    D = study.Difference
    diffs = {"s1": {"sft": {"cons@N": D(0.2, 0.1, 0.3, 600, (0.2, 0.1, 0.3)),
                            "pass@8": D(0.05, 0.01, 0.09, 600, (0.05, 0.04, 0.06))},
                    "random": {"cons@N": D(0.1, 0.05, 0.2, 600, (0.2, -0.1, 0.2)),
                               "pass@8": D(0.01, -0.01, 0.03, 600, (0.01, 0.0, 0.02))}},
             "s2": {"sft": {"cons@N": D(-0.2, -0.3, -0.1, 600, (-0.2, -0.1, -0.3))}}}
    agg = {"s1": {"ssft": {"nmi": (0.95, 0.0, 3)}, "sft": {"pass@8": (0.90, 0.0, 3)},
                  "random": {"pass@8": (0.95, 0.0, 3)}},
           "s2": {"ssft": {"nmi": (0.3, 0.0, 3)}, "sft": {}}}
    contrasts = {("s1", "s2"): {"ssft": {"cons@N": D(0.4, 0.2, 0.6, 600, (0.4, 0.3, 0.5))}}}
    lines = study._reading_lines(agg, diffs, contrasts, {}, {"s1": 4, "s2": 4})
    assert "  - ssft ahead: s1 (sft +0.200 [+0.100, +0.300])" in lines, lines
    assert "  - no clear difference: s1 (random +0.100 [+0.050, +0.200])" in lines, "a seed says the opposite"
    assert "  - ssft behind: s2 (sft -0.200 [-0.300, -0.100])" in lines
    assert "  - s1: k=8 random +0.010 [-0.010, +0.030] no clear difference" in lines, "random has the best pass@8"
    assert "- ssft's tags name the strategies (nmi >= 0.9): s1 (0.95); not quite or not at all: s2 (0.30)" in lines
    assert "- s1 − s2: ssft cons@N +0.400 [+0.200, +0.600] higher" in lines


def test_a_contrast_pairs_two_settings_by_seed_then_question(tmp_path: Path) -> None:
    """Setting a − setting b for one method: seed 0 with seed 0 (+0.5), seed 1 with seed 1 (+0.25), whatever
    order the cells are listed in (paired by position, seed 0 would meet seed 1: +1.0 and -0.25)."""
    a = [tmp_path / "a" / "seed0", tmp_path / "a" / "seed1"]
    b = [tmp_path / "b" / "seed1", tmp_path / "b" / "seed0"]
    _details(a[0] / "results" / "ssft" / "details.jsonl", {"q1": [True] * 4})
    _details(b[1] / "results" / "ssft" / "details.jsonl", {"q1": [True, False] * 2})
    _details(a[1] / "results" / "ssft" / "details.jsonl", {"q1": [True, False, False, False]})
    _details(b[0] / "results" / "ssft" / "details.jsonl", {"q1": [False] * 4})
    d = study.contrast(a, b, "ssft", (2, 2))["pass@1"]
    assert d.per_seed == (0.5, 0.25) and d.mean == pytest.approx(0.375)
    assert study.contrast(a, b, "sft", (2, 2)) == {}  # no sft generations: nothing to say


def test_contrasts_name_two_settings_of_the_study(tmp_path: Path) -> None:
    for bad in (["a"], ["a", "zz"], ["a", "a"], "a"):
        (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**MINI, "contrasts": [bad]}))
        with pytest.raises(ValueError, match=r"bad.yaml: contrasts: .* a pair of two of its settings"):
            study.load(tmp_path / "bad.yaml", ROOT / "params.yaml")
    (tmp_path / "ok.yaml").write_text(yaml.safe_dump({**MINI, "contrasts": [["b", "a"]]}))
    spec = study.load(tmp_path / "ok.yaml", ROOT / "params.yaml")
    assert spec.contrasts == (("b", "a"),)
    assert study.only(spec, ["b"]).contrasts == () and study.only(spec, ["a", "b"]).contrasts == (("b", "a"),)


def test_a_prefix_forced_column_is_paired_with_its_own_generations(tmp_path: Path) -> None:
    """sft+forced lives in results/forced/sft: ssft − sft+forced compares with those generations, not sft's."""
    cell = tmp_path / "seed0"
    cell.mkdir()
    (cell / "params.yaml").write_text(yaml.safe_dump({"task": {"name": "pathstar", "marked": False},
                                                      "eval": {"prefix_forced": ["sft"]}}))
    _details(cell / "results" / "ssft" / "details.jsonl", {"q1": [True] * 4})
    _details(cell / "results" / "sft" / "details.jsonl", {"q1": [True] * 4})
    _details(cell / "results" / "forced" / "sft" / "details.jsonl", {"q1": [False] * 4})
    assert study.paired([cell], "ssft", "sft+forced", 2)["pass@1"].per_seed == (1.0,)
    assert study.paired([cell], "ssft", "sft", 2)["pass@1"].per_seed == (0.0,)


def test_a_failing_stage_names_the_cell_and_says_why(tmp_path: Path) -> None:
    bad = {**MINI, "seeds": [0], "settings": [{"name": "x", "params": {"train.methods": ["sft"],
                                                                       "model.checkpoint": str(tmp_path / "nope")}}]}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    spec = study.load(tmp_path / "bad.yaml", ROOT / "params.yaml")
    with pytest.raises(RuntimeError, match=r"x/seed0: ssft train --method sft failed \(exit 2\): .*nope"):
        study.run_cell(spec, study.cells(spec)[0], tmp_path / "cells")


def test_the_code_hash_follows_what_cells_compute_not_the_report(tmp_path: Path) -> None:
    import shutil

    shutil.copytree(ROOT / "ssft", tmp_path / "ssft", ignore=shutil.ignore_patterns("__pycache__"))
    before = study.code_hash(tmp_path)
    for report_side in ("study.py", "tracking/figures.py"):
        (tmp_path / "ssft" / report_side).write_text((tmp_path / "ssft" / report_side).read_text() + "\n# edit\n")
    assert study.code_hash(tmp_path) == before, "a report or logging edit reuses the cells"
    matching = tmp_path / "ssft" / "train" / "matching.py"
    matching.write_text(matching.read_text() + "\n# edit\n")
    assert study.code_hash(tmp_path) != before, "a training edit reruns them"


def _cell_params(spec: study.Study, cell: study.Cell) -> dict:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for dotted, value in study.overrides(spec, cell).items():
        config.set_dotted(raw, dotted, value)
    return raw


def test_single_sample_accuracy_without_a_given_tag(tmp_path: Path) -> None:
    """The RL comparison's per-question single sample: the model's own tag where it has tag-free rows, else
    its validation tag, else every sampled generation."""
    rows = [{"question_id": "q", "set": "sampled", "tag": 1, "correct": True},
            {"question_id": "q", "set": "sampled", "tag": 2, "correct": False},
            {"question_id": "q", "set": "greedy", "tag": 2, "correct": True}]
    f = tmp_path / "details.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert study.single_sample(f, {"val_tag": 2}) == {"q": 0.0}
    assert study.single_sample(f, {"val_tag": 0}) == {"q": 0.5}
    rows += [{"question_id": "q", "set": "self_sampled", "tag": 1, "correct": True}] * 3
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert study.single_sample(f, {"val_tag": 2}) == {"q": 1.0}


def test_the_rl_section_needs_an_rl_column(tmp_path: Path) -> None:
    """A prefix-forced column (sft+forced) is no RL stage: no section about one (it printed a heading alone)."""
    cell = tmp_path / "seed0"
    cell.mkdir()
    (cell / "params.yaml").write_text(yaml.safe_dump({"task": {"name": "pathstar", "marked": False},
                                                      "eval": {"prefix_forced": ["sft"]}}))
    assert study._rl_lines([cell], {"ssft": {}, "sft": {}, "sft+forced": {}}) == []


def test_a_study_can_run_some_of_its_settings() -> None:
    spec = study.load(ROOT / "studies" / "ablations.yaml")
    part = study.only(spec, ["gfpo-unmarked"])
    assert [c.setting.name for c in study.cells(part)] == ["gfpo-unmarked"] * 3
    assert study.cell_dir(Path("w"), part, study.cells(part)[0]) == study.cell_dir(
        Path("w"), spec, next(c for c in study.cells(spec) if c.setting.name == "gfpo-unmarked"))
    with pytest.raises(ValueError, match="no such setting"):
        study.only(spec, ["nope"])
