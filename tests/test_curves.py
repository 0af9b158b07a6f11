"""Learning curves: snapshots every eval.every_steps, each evaluated as the model of the step it names."""

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from ssft.eval import curves
from ssft.eval.evaluate import evaluate
from ssft.train import snapshots
from ssft.train.trainer import run_stage
from tests.conftest import tiny_cfg


def weights(d: Path) -> dict:
    return load_file(str(d / "model.safetensors"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    from ssft.data import traces
    from ssft.data.sources import synthetic
    from ssft.data.tasks import get_task

    tmp = tmp_path_factory.mktemp("curve")
    cfg = tiny_cfg(**{"train.max_steps": 10, "train.save_steps": 100, "eval.every_steps": 4,
                      "eval.curve_samples": 4, "eval.curve_questions": 6})
    for split, rows in synthetic.synthetic_splits(get_task("add4", marked=True), cfg.traces.train_questions,
                                                  cfg.traces.eval_questions, cfg.seed, n_val=4).items():
        traces.write(rows, tmp / "data" / f"{split}.parquet")
    run_stage(cfg, "ssft", tmp / "data" / "train.parquet", tmp / "models" / "ssft", tmp / "ck" / "ssft")
    return cfg, tmp


def test_snapshots_hold_the_weights_of_their_step_and_are_model_directories(trained: tuple) -> None:
    cfg, tmp = trained
    found = snapshots.listed(tmp / "ck" / "ssft")
    assert [s for s, _ in found] == [4, 8]
    final = weights(tmp / "models" / "ssft")
    w4, w8 = (weights(d) for _, d in found)
    assert any((w4[k] != w8[k]).any() for k in w4) and any((w8[k] != final[k]).any() for k in w8)
    for _, d in found:  # tokenizer and tags beside the weights: evaluation loads it like the saved model
        assert {"tags.json", "tokenizer.json", "model.safetensors"} <= {p.name for p in d.iterdir()}
        assert not (d / "train_stats.json").exists(), "the whole run's statistics (Eq. 4's best tag) leak into it"


def test_the_curve_evaluates_the_model_of_each_step_it_names(trained: tuple) -> None:
    """Each row equals evaluating that step's snapshot directly (same cheap settings), rows differ between
    steps, and the saved model closes the curve at its own step."""
    cfg, tmp = trained
    out = tmp / "results" / "curves" / "ssft.jsonl"
    rows = curves.evaluate_curve(cfg, tmp / "models" / "ssft", tmp / "ck" / "ssft", tmp / "data" / "eval.parquet",
                                 out, tmp / "data" / "train.parquet", tmp / "data" / "val.parquet")
    assert [r["step"] for r in rows] == [4, 8, 10] and curves.read(out) == json.loads(json.dumps(rows))
    assert rows[0]["n_questions"] == 6 and rows[0]["n_generations"] == 6 * 4
    subset = curves.first_questions(tmp / "data" / "eval.parquet", 6, tmp / "subset.parquet")
    for row, (step, model) in zip(rows, curves.points(tmp / "models" / "ssft", tmp / "ck" / "ssft")):
        direct = evaluate(curves.cheap(cfg), model, subset, tmp / f"direct-{step}", tmp / "data" / "train.parquet",
                          tmp / "data" / "val.parquet")
        assert {k: v for k, v in row.items() if k != "step"} == direct, f"step {step}"
    details = [(tmp / f"direct-{s}" / "details.jsonl").read_text() for s in (4, 8, 10)]
    assert len(set(details)) == 3, "the steps' generations are the same: one model evaluated three times"


def test_the_curve_lands_on_the_training_run_at_its_steps(trained: tuple, tmp_path: Path) -> None:
    """MLflow: curve/<metric> on the model's run, one point per snapshot at its training step (a real store)."""
    import mlflow

    from ssft import config
    from ssft.tracking import Tracker
    from tests.conftest import TINY

    _, tmp = trained
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(config.from_dict({**TINY, "tracking": {"uri": uri}}), tmp_path)
    rows = [{"step": 4, "cons@N": 0.25, "coverage": 1.0}, {"step": 8, "cons@N": 0.5, "coverage": 2.0}]
    tracker.log_curve("ssft", tmp / "models" / "ssft", rows)
    client = mlflow.MlflowClient(uri)
    rid = tracker.attach("ssft", tmp / "models" / "ssft")
    history = client.get_metric_history(rid, "curve/cons_at_N")
    assert [(m.step, m.value) for m in history] == [(4, 0.25), (8, 0.5)]
    assert [m.step for m in client.get_metric_history(rid, "curve/coverage")] == [4, 8]
