"""Evaluation: the files and keys the issue names, generation counts, and metrics recomputable from details."""

import json
from pathlib import Path

import pytest
from conftest import tiny_cfg

from ssft.eval import metrics
from ssft.eval.evaluate import _as_generations, evaluate
from ssft.eval.report import write_report
from ssft.train.trainer import run_stage

KEYS = {"pass@1", "pass@1_best_tag", "cons@N", "cons@N_ties", "pass@N", "coverage", "purity", "nmi", "blended",
        "cons@8", "pass@8", "mean_acc"}


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ssft.data import traces
    from ssft.data.sources import synthetic
    from ssft.data.tasks import get_task

    root = tmp_path_factory.mktemp("eval")
    cfg = tiny_cfg(**{"eval.ks": [2, 8]})
    for split, rows in synthetic.synthetic_splits(get_task("add4", marked=True), 32, 8, 0).items():
        traces.write(rows, root / "data" / f"{split}.parquet")
    for method in ("ssft", "sft"):
        run_stage(cfg, method, root / "data" / "train.parquet", root / "models" / method, root / "ckpt" / method)
        evaluate(cfg, root / "models" / method, root / "data" / "eval.parquet", root / "results" / method)
    return root


@pytest.mark.parametrize("method, greedy_per_q", [("ssft", 4), ("sft", 1)])
def test_outputs_and_keys(evaluated: Path, method: str, greedy_per_q: int) -> None:
    m = json.loads((evaluated / "results" / method / "metrics.json").read_text())
    assert KEYS <= set(m) and {k + "_greedy" for k in ("pass@1", "cons@N", "coverage", "purity", "nmi")} <= set(m)
    assert all(isinstance(v, (int, float)) for v in m.values())
    rows = [json.loads(line) for line in (evaluated / "results" / method / "details.jsonl").read_text().splitlines()]
    greedy = [r for r in rows if r["temperature"] == 0]
    sampled = [r for r in rows if r["temperature"] > 0]
    assert len(greedy) == 8 * greedy_per_q and len(sampled) == 8 * 8
    assert {"question_id", "tag", "sample", "temperature", "text", "answer", "correct", "mode"} <= set(rows[0])
    if method == "sft":
        assert {r["tag"] for r in rows} == {None} and m["coverage_greedy"] <= 1
    else:
        assert {r["tag"] for r in greedy} == {1, 2, 3, 4}
        assert m.get("acc_tag1") is not None


@pytest.mark.parametrize("method", ["ssft", "sft"])
def test_metrics_recompute_from_details(evaluated: Path, method: str) -> None:
    m = json.loads((evaluated / "results" / method / "metrics.json").read_text())
    rows = [json.loads(line) for line in (evaluated / "results" / method / "details.jsonl").read_text().splitlines()]
    sampled = _as_generations([r for r in rows if r["temperature"] > 0], 4)
    again = metrics.compute_metrics(sampled, 4, [2, 8], m["best_tag"] or None)
    assert {k: m[k] for k in again} == again


def test_report_puts_methods_side_by_side(evaluated: Path) -> None:
    text = write_report(evaluated / "results", ["ssft", "sft"])
    assert "| metric | ssft | sft |" in text and "| coverage_greedy |" in text and "| **cons@N** |" in text
    table = json.loads((evaluated / "results" / "summary.json").read_text())
    diff = table["ssft"]["cons@N"] - table["sft"]["cons@N"]
    assert f"cons@N **{table['ssft']['cons@N']:.3f}** vs sft {table['sft']['cons@N']:.3f} ({diff:+.3f})" in text
    assert json.loads((evaluated / "results" / "summary.json").read_text()).keys() == {"ssft", "sft"}
    with pytest.raises(FileNotFoundError, match="ssft evaluate --method random"):
        write_report(evaluated / "results", ["random"])


def test_training_questions_are_never_evaluated(evaluated: Path) -> None:
    """An eval file that overlaps the training traces (here: the train file itself) is refused, naming both."""
    from conftest import tiny_cfg

    data, model = evaluated / "data", evaluated / "models" / "ssft"
    with pytest.raises(ValueError, match=r"train.parquet: 32 of 32 evaluation questions are also in .*train.parquet"):
        evaluate(tiny_cfg(), model, data / "train.parquet", evaluated / "r2", data / "train.parquet")
    (evaluated / "r3.tmp").mkdir()
    (evaluated / "r3.tmp" / "stray.txt").write_text("from a killed run")
    evaluate(tiny_cfg(**{"eval.samples": 4, "eval.ks": [4]}), model, data / "eval.parquet", evaluated / "r3",
             data / "train.parquet")
    assert sorted(p.name for p in (evaluated / "r3").iterdir()) == ["details.jsonl", "metrics.json"]


def test_a_model_directory_without_weights_names_itself_and_the_fix(evaluated: Path, tmp_path: Path) -> None:
    import shutil

    from ssft.train import models

    broken = tmp_path / "ssft"
    shutil.copytree(evaluated / "models" / "ssft", broken)
    for f in broken.glob("*.safetensors"):
        f.unlink()
    with pytest.raises(FileNotFoundError, match=r"ssft: no weights \(\*.safetensors\).*run `ssft train`"):
        models.load(broken)


def test_report_rows_are_in_a_fixed_order_whatever_the_hash_seed(tmp_path: Path) -> None:
    """cons@k and pass@k of the same k used to swap places between runs (set order)."""
    import subprocess
    import sys

    code = ("from ssft.eval.report import markdown; "
            "print(markdown({'a': {'pass@8': 1.0, 'cons@8': 0.5, 'pass@16': 1.0, 'cons@16': 0.7, 'pass@1': 0.2}}))")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**__import__("os").environ, "PYTHONHASHSEED": str(seed)}).stdout for seed in range(6)}
    assert len(outs) == 1
    rows = [line.split(" | ")[0].strip("| ") for line in outs.pop().strip().splitlines()[2:]]
    assert rows == ["**pass@1**", "cons@8", "pass@8", "cons@16", "pass@16"], "headline rows in bold"


def test_sample_answers_with_every_tag_and_set_goes_anywhere(evaluated: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    import yaml
    from conftest import TINY

    from ssft.cli import main

    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(TINY))
    model = str(evaluated / "models" / "ssft")
    assert main(["--params", str(p), "sample", "3+4+5+6?", "--model", model, "--set", "train.lr=5e-5"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(" -> ")[0] for line in lines] == [f"'<s>3+4+5+6?<think{t}>'" for t in (1, 2, 3, 4)]
    assert main(["--params", str(p), "sample", "3+4+5+6?", "--model", model, "--tags", "2,4"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2
    assert main(["--params", str(p), "sample", "3+4+5+6?", "--model", model, "--tags", "9"]) == 2
    sft = str(evaluated / "models" / "sft")
    assert main(["--params", str(p), "--set", "seed=1", "sample", "3+4+5+6?", "--model", sft]) == 0
    assert capsys.readouterr().out.strip().splitlines()[0].startswith("'<s>3+4+5+6?<think>'")
