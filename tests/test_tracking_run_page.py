"""What a training run's page in the MLflow UI (3.17) is built from, checked on a real local store."""

from pathlib import Path

import mlflow
from conftest import tiny_cfg

from ssft.tracking.callback import MlflowTrainingCallback
from ssft.tracking.runs import flat_params


def test_epoch_heatmaps_are_figures_beside_their_tables_not_an_image_series(tmp_path: Path) -> None:
    """Issue 18: the run page showed the tag x source image series as a wall of ``key=value`` text. MLflow's image
    card heads each run's images with every param of the run (mlflow/mlflow#23512; the switch that hides them
    is kept in the browser only), and a training run has its whole config as params. So each epoch's heatmap
    is a plain figure beside its table: no image series (no ``images/`` artifacts, no ``mlflow.loggedImages``
    tag, which is what makes the UI build image cards)."""
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    eid = client.create_experiment("run-page", artifact_location=(tmp_path / "artifacts").as_uri())
    rid = client.create_run(eid).info.run_id
    params = flat_params(tiny_cfg())
    client.log_batch(rid, params=[mlflow.entities.Param(k, v) for k, v in list(params.items())[:90]])
    callback = MlflowTrainingCallback(client, rid)
    for epoch, step in ((0, 8), (1, 16)):
        callback.log_epoch({"match/epoch": epoch, "match/step": step, "match/churn": 0.5,
                            "match/tag_source_counts": {"1": {"l2r": 3, "r2l": 1}, "2": {"l2r": 0, "r2l": 4}}})

    run = client.get_run(rid)
    assert len(run.data.params) >= 50, "a training run's params: what an image card would print above its images"
    assert "mlflow.loggedImages" not in run.data.tags
    assert not client.list_artifacts(rid, "images"), "no image series"
    files = {a.path for a in client.list_artifacts(rid, "match")}
    assert {f"match/tag_source_epoch{e:03d}.{ext}" for e in (0, 1) for ext in ("json", "png")} <= files, files
    png = Path(client.download_artifacts(rid, "match/tag_source_epoch001.png", str(tmp_path / "dl")))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [m.step for m in client.get_metric_history(rid, "match/churn")] == [8, 16]
