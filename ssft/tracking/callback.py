"""The training run's Trainer callback: loss, learning rate, tokens/s per logging step, and each closed
epoch's assignment statistics. Its own module because it subclasses transformers' ``TrainerCallback``, whose
import pulls in the Trainer stack (torch, peft: ~3 s): only the train stage needs it, never evaluate, report or
register, which import :mod:`ssft.tracking.runs`."""

from __future__ import annotations

import mlflow
from mlflow.tracking import MlflowClient
from mlflow.utils.time import get_current_time_millis as now_ms  # a metric's timestamp: when it was logged
from transformers import TrainerCallback

from ssft.tracking.figures import counts_table, heatmap


class MlflowTrainingCallback(TrainerCallback):
    """Everything the trainer logs: loss, learning rate, tokens/s per logging step; each closed epoch's
    assignment statistics (``match/*`` records, at the training step the epoch ended) as metrics, and its tag x
    source counts as a table and a heatmap, ``match/tag_source_epoch<NNN>.json`` / ``.png``."""

    STEP_KEYS = ("loss", "learning_rate", "tokens_per_s", "grad_norm", "matched_cost", "host_ms")

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client, self.run_id = client, run_id

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
        if not state.is_world_process_zero or not logs:
            return
        if "match/epoch" in logs:
            self.log_epoch(logs)
            return
        metrics = [mlflow.entities.Metric(f"train/{k}", float(logs[k]), now_ms(), state.global_step)
                   for k in self.STEP_KEYS if isinstance(logs.get(k), (int, float))]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def log_epoch(self, logs: dict) -> None:
        e, step = int(logs["match/epoch"]), int(logs["match/step"])
        scalars = {k: v for k, v in logs.items() if k.startswith("match/") and k not in ("match/epoch", "match/step")
                   and isinstance(v, (int, float))}
        self.client.log_batch(self.run_id, metrics=[mlflow.entities.Metric(k, float(v), now_ms(), step)
                                                    for k, v in scalars.items()])
        counts, name = logs["match/tag_source_counts"], f"match/tag_source_epoch{e:03d}"
        self.client.log_table(self.run_id, counts_table(counts), f"{name}.json")
        # A figure beside the table, not an image series (log_image with a key): MLflow >= 3.12 heads a run's image
        # card with every param of the run (over 100 here), which buries the heatmap on the run page; the card's
        # "Show run parameters" switch lives only in the browser (mlflow/mlflow#23512).
        fig = heatmap(counts, f"tag x source matches, epoch {e}", "source")
        self.client.log_figure(self.run_id, fig, f"{name}.png")
