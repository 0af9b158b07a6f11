"""MLflow tracking against a real local store: runs, curves, assignment statistics, plots, registry aliases."""

import json
import os
from pathlib import Path

import mlflow
import pytest
import yaml
from conftest import TINY

from ssft.cli import main
from ssft.tracking import Tracker


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("tracked")
    os.environ["MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"] = "0.2"  # the tiny training lasts a few seconds
    uri = f"sqlite:///{root / 'mlflow.db'}"
    train = {**TINY["train"], "max_steps": 16}  # two epochs: churn needs a second look at each question
    (root / "params.yaml").write_text(yaml.safe_dump({**TINY, "train": train, "tracking": {"uri": uri}}))
    base = ["--params", str(root / "params.yaml")]
    paths = ["--traces", str(root / "data"), "--models", str(root / "models")]
    assert main([*base, "traces", "--out", str(root / "data")]) == 0
    for method in ("ssft", "sft"):
        assert main([*base, "train", "--method", method, *paths, "--checkpoints", str(root / "ck")]) == 0
        assert main([*base, "evaluate", "--method", method, *paths, "--results", str(root / "results")]) == 0
    os.environ.pop("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL")
    return root, uri


def test_one_run_per_method_with_params_curves_stats_and_eval(tracked: tuple[Path, str]) -> None:
    root, uri = tracked
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("ssft-add4")
    assert exp.artifact_location == (root / "mlruns" / "artifacts").as_uri()
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development", "opens in the model-training view"
    every = client.search_runs([exp.experiment_id])
    runs = {r.data.tags["method"]: r for r in every if "mlflow.parentRunId" not in r.data.tags}
    children = {r.data.tags["method"]: r for r in every if "mlflow.parentRunId" in r.data.tags}
    assert set(runs) == set(children) == {"ssft", "sft"}
    run, child = runs["ssft"], children["ssft"]
    assert run.info.status == child.info.status == "FINISHED"
    assert child.data.tags["mlflow.parentRunId"] == run.info.run_id and child.info.run_name == "evaluate"
    assert run.info.end_time <= child.info.start_time, "the training run lasts as long as training, not evaluation"
    assert {"git_commit", "dvc_data_md5", "pipeline_run_id", "model_sha"} <= set(run.data.tags)
    assert "trained by `dvc repro` / the `ssft` CLI" in run.data.tags["mlflow.note.content"]
    assert run.data.params["train.max_steps"] == "16" and run.data.params["method"] == "ssft"
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == 8
    assert any(k.startswith("system/cpu_utilization") for k in run.data.metrics), sorted(run.data.metrics)
    assert client.get_metric_history(run.info.run_id, "train/tokens_per_s")[0].value > 0
    stamps = [m.timestamp for k in ("train/loss", "eval/cons_at_N", "match/churn")
              for m in client.get_metric_history(run.info.run_id, k)]
    assert min(stamps) > 1_700_000_000_000, "real timestamps, not 1970"
    assert {"match/churn", "match/rate_tag1", "match/assignment_entropy", "match/mean_matched_cost"} <= set(
        run.data.metrics)
    epochs = json.loads((root / "models" / "ssft" / "train_stats.json").read_text())["epochs"]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "match/assignment_entropy")] == [
        e["step"] for e in epochs], "epoch statistics are logged at the training step the epoch ended"
    metrics = json.loads((root / "results" / "ssft" / "metrics.json").read_text())
    for r in (run, child):
        assert r.data.metrics["eval/cons_at_N"] == pytest.approx(metrics["cons@N"])
    assert child.data.metrics["eval/coverage_greedy"] == pytest.approx(metrics["coverage_greedy"]), "every metric"
    arts = {a.path for d in ("match", "eval") for a in client.list_artifacts(run.info.run_id, d)}
    assert {f"match/tag_source_epoch{e:03d}.{ext}" for e in (0, 1) for ext in ("json", "png")} <= arts, arts
    assert {"eval/tag_strategy_heatmap.png", "eval/length_histogram.png", "eval/pass_cons_vs_k.png"} <= {
        a.path for a in client.list_artifacts(child.info.run_id, "eval")}
    assert {"eval/metrics.json", "eval/details.jsonl"} <= {
        a.path for a in client.list_artifacts(child.info.run_id, "eval")}
    (dataset,) = run.inputs.dataset_inputs
    assert dataset.dataset.name == "traces" and dataset.dataset.digest


def test_compare_compares_what_was_measured(tracked: tuple[Path, str]) -> None:
    """Issue 18.1-2: data counts are params (not 17 data/* metrics heading every metric view), the training run
    carries the compared rows only (not 58 single-value bars), figures lie at the top of the artifacts (Compare's
    Artifacts tab lists only top-level files the runs share), and the printed link opens the chart view of just
    these runs on the headline bars and the loss curves, every other chart folded away."""
    from ssft.eval.report import COMPARED
    from ssft.tracking.names import metric_name
    from ssft.tracking.runs import COMPARE_CHARTS, SHARED_VIEW_TAG, compare_view

    root, uri = tracked
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("ssft-add4")
    runs = {r.data.tags["method"]: r for r in client.search_runs([exp.experiment_id])
            if "mlflow.parentRunId" not in r.data.tags}
    for r in runs.values():
        assert not [k for k in r.data.metrics if k.startswith("data/")], sorted(r.data.metrics)
        assert r.data.params["dataset.kept.l2r"] == "32" and r.data.params["dataset.questions"] == "32"
        evals = {k for k in r.data.metrics if k.startswith("eval/")}
        assert evals == {f"eval/{metric_name(k)}" for k in COMPARED}, evals
    cfg_tracker = Tracker(config_of(uri), root)
    plots = [root / "plots" / f"{n}.png" for n in ("metrics", "tag_mode")]
    for p in plots:
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"\x89PNG fake")
    cfg_tracker.log_comparison(["ssft", "sft"], root / "models", plots)
    top = [{a.path for a in client.list_artifacts(r.info.run_id) if not a.is_dir} for r in runs.values()]
    common = set.intersection(*top)
    assert {"comparison_metrics.png", "comparison_tag_mode.png", "eval_pass_cons_vs_k.png",
            "eval_tag_strategy_heatmap.png"} <= common, top
    ids = [runs["ssft"].info.run_id, runs["sft"].info.run_id]
    link = compare_view(client, "http://ui", exp.experiment_id, ids, "ssft-test")
    assert link == f"http://ui/#/experiments/{exp.experiment_id}/runs?viewStateShareKey=ssft-test&compareRunsMode=CHART"
    state = json.loads(client.get_experiment(exp.experiment_id).tags[f"{SHARED_VIEW_TAG}ssft-test"])
    assert state["searchFilter"] == f"attributes.run_id IN ('{ids[0]}', '{ids[1]}')"
    assert len(client.search_runs([exp.experiment_id], state["searchFilter"])) == 2, "MLflow reads the filter"
    first, *rest = state["compareRunSections"]
    assert first["display"] and not any(s["display"] for s in rest) and state["isAccordionReordered"]
    charts = [(c["type"], c["metricKey"]) for c in state["compareRunCharts"]]
    assert charts[:5] == [("BAR", "eval/cons_at_N"), ("BAR", "eval/pass_at_1_val_tag"), ("BAR", "eval/coverage"),
                          ("BAR", "eval/pass_at_N"), ("LINE", "train/loss")] == list(COMPARE_CHARTS[:5])
    assert all(k in runs["ssft"].data.metrics for _, k in charts), "every chart has data"


def config_of(uri: str, **tracking: object):  # noqa: ANN201
    from ssft import config

    return config.from_dict({**TINY, "tracking": {"uri": uri, **tracking}})


def test_registry_aliases_follow_cons_at_n(tracked: tuple[Path, str]) -> None:
    root, uri = tracked
    from ssft import config

    cfg = config.from_dict({**TINY, "tracking": {"uri": uri, "model_name": "ssft-test"}})
    tracker = Tracker(cfg, root)
    seen = [tracker.register(root / "models" / "ssft", {"cons@N": c}, "1+2+3+4?") for c in (0.5, 0.4, 0.6)]
    assert [s["version"] for s in seen] == [1, 2, 3]
    assert [s["champion"] for s in seen] == [1, 1, 3]
    client = mlflow.MlflowClient(uri)
    assert client.get_model_version_by_alias("ssft-test", "candidate").version == 3
    assert client.get_model_version_by_alias("ssft-test", "champion").version == 3
    mv = client.get_model_version_by_alias("ssft-test", "champion")
    assert mv.tags["cons_at_N"] == "0.6" and mv.tags["run_id"] == seen[0]["run_id"] == mv.run_id, "the training run"
    assert sorted(int(v.version) for v in client.search_model_versions(f"run_id = '{mv.run_id}'")) == [1, 2, 3], \
        "the training run's page lists them under Registered models"
    logged_by = mlflow.models.get_model_info(f"models:/ssft-test/{mv.version}").run_id
    assert client.get_run(logged_by).data.tags["mlflow.parentRunId"] == seen[0]["run_id"], "logged by its child"
    assert (mv.tags["base_model"], mv.tags["checker"], mv.tags["data_source"]) == ("tiny", "int", "synthetic")
    info = mlflow.models.get_model_info(f"models:/ssft-test/{mv.version}")
    assert info.signature.inputs.input_types() == [mlflow.types.DataType.string]
    example = mlflow.models.Model.load(f"models:/ssft-test/{mv.version}").load_input_example(
        mlflow.artifacts.download_artifacts(f"models:/ssft-test/{mv.version}"))
    assert "1+2+3+4?<think1>" in str(example), example
    training = client.get_run(seen[0]["run_id"])
    assert training.info.end_time < client.get_run(logged_by).info.start_time, "register has its own run"


def test_champion_must_beat_the_champion_and_the_sft_baseline(tracked: tuple[Path, str]) -> None:
    """Issue 18.10: an untrained model (cons@N 0) became champion. Now it must beat the champion and this
    pipeline run's sft; a version that does not is only the candidate, and the registry says why."""
    from ssft.tracking.registry import baseline_cons

    root, uri = tracked
    tracker = Tracker(config_of(uri, model_name="ssft-gate"), root)
    client = mlflow.MlflowClient(uri)
    ssft_run = tracker.attach("ssft", root / "models" / "ssft")
    sft = baseline_cons(client, ssft_run, "sft")
    sft_metrics = json.loads((root / "results" / "sft" / "metrics.json").read_text())
    assert sft == pytest.approx(sft_metrics["cons@N"])
    first = tracker.register(root / "models" / "ssft", {"cons@N": sft}, "1+2+3+4?")
    assert not first["promoted"] and first["champion"] is None
    assert first["reason"] == f"cons@N {sft:.3f} does not beat sft's {sft:.3f}"
    better = tracker.register(root / "models" / "ssft", {"cons@N": sft + 0.1}, "1+2+3+4?")
    assert better["promoted"] and better["champion"] == better["version"] == 2
    worse = tracker.register(root / "models" / "ssft", {"cons@N": sft + 0.05}, "1+2+3+4?")
    assert not worse["promoted"] and worse["champion"] == 2 and "does not beat champion v2" in worse["reason"]
    assert int(client.get_model_version_by_alias("ssft-gate", "candidate").version) == 3
    assert client.get_model_version("ssft-gate", "3").tags["champion_decision"] == worse["reason"]
    orphan = client.create_run(client.get_experiment_by_name("ssft-add4").experiment_id,
                               tags={"method": "ssft", "pipeline_run_id": "no-such-pipeline"}).info.run_id
    assert baseline_cons(client, orphan, "sft") is None, "no baseline: promotion is blocked, not waved through"


def test_tracking_off_writes_no_store(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**TINY, "tracking": {"enabled": False}}))
    base = ["--params", str(tmp_path / "params.yaml")]
    assert main([*base, "traces", "--out", str(tmp_path / "d")]) == 0
    assert main([*base, "register", "--results", str(tmp_path / "r"), "--out", str(tmp_path / "reg.json")]) != 0 \
        or json.loads((tmp_path / "reg.json").read_text()) == {"registered": False}
    assert not (tmp_path / "mlruns").exists()


def test_a_tracking_server_that_is_down_fails_in_seconds_with_one_line(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    """Nothing listens on the port (a stopped MLflow server): the stage stops before any work, in seconds."""
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://user:secret@127.0.0.1:{port}"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**TINY, "tracking": {"uri": uri}}))
    t0 = time.monotonic()
    code = main(["--params", str(tmp_path / "params.yaml"), "traces", "--out", str(tmp_path / "d")])
    assert code == 0, "the traces stage does not track"
    args = ["--params", str(tmp_path / "params.yaml"), "train", "--method", "ssft", "--traces", str(tmp_path / "d"),
            "--models", str(tmp_path / "m"), "--checkpoints", str(tmp_path / "ck")]
    t0 = time.monotonic()
    assert main(args) == 2
    assert time.monotonic() - t0 < 15
    assert f"MLflow at http://***@127.0.0.1:{port} is not answering" in caplog.text and "secret" not in caplog.text
    assert not (tmp_path / "ck").exists() and not (tmp_path / "m").exists()


def test_runs_are_named_after_what_ran_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Prefect flow run's id, a DVC experiment's name (`dvc exp run` sets DVC_EXP_NAME), else a manual run."""
    from ssft.tracking.runs import pipeline_run, run_label

    monkeypatch.delenv("SSFT_PIPELINE_RUN_ID", raising=False)
    monkeypatch.setenv("DVC_EXP_NAME", "sappy-gaby")
    assert (pipeline_run(), run_label(pipeline_run())) == ("dvc-exp:sappy-gaby", "sappy-gaby")
    monkeypatch.setenv("SSFT_PIPELINE_RUN_ID", "054b3e50-d575-4c38")
    assert (pipeline_run(), run_label(pipeline_run())) == ("054b3e50-d575-4c38", "054b3e50")
    monkeypatch.delenv("SSFT_PIPELINE_RUN_ID")
    monkeypatch.delenv("DVC_EXP_NAME")
    assert pipeline_run() == "manual" and run_label("manual") != "manual"


def test_champion_baselines_are_a_param(tracked: tuple[Path, str]) -> None:
    """Issue 18.10: which methods a champion must beat is ``tracking.baselines``, not a constant: with none it
    is compared with the champion only; with a method this pipeline run never evaluated it is blocked."""
    root, uri = tracked
    alone = Tracker(config_of(uri, model_name="ssft-alone", baselines=[]), root)
    first = alone.register(root / "models" / "ssft", {"cons@N": 0.01}, "1+2+3+4?")  # below sft: no matter
    assert first["promoted"] and first["reason"] == "beats the champion", first["reason"]
    strict = Tracker(config_of(uri, model_name="ssft-strict", baselines=["sft", "random"]), root)
    blocked = strict.register(root / "models" / "ssft", {"cons@N": 1.0}, "1+2+3+4?")
    assert not blocked["promoted"]
    assert blocked["reason"] == "no evaluated random run in this pipeline run to compare with"


def test_champion_baselines_must_be_trained_methods() -> None:
    from ssft import config
    from ssft.errors import UserError

    with pytest.raises(UserError, match=r"tracking\.baselines: .* of train\.methods"):
        config.from_dict({**TINY, "train": {**TINY["train"], "methods": ["ssft", "sft"]},
                          "tracking": {"baselines": ["random"]}})
    with pytest.raises(UserError, match=r"tracking\.baselines"):
        config.from_dict({**TINY, "tracking": {"baselines": ["ssft"]}})
