"""The model registry: the SSFT model (tokenizer and tag list included) as a new version of ``ssft-<task>``,
with aliases ``candidate`` (newest) and ``champion`` (best cons@N so far)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import mlflow
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, DataType, Schema

from ssft.tracking.runs import PIP_REQUIREMENTS, Tracker, dvc_data_hash, metric_name, registered_name

log = logging.getLogger(__name__)
# A prompt in (the question framed with a forking tag, as `ssft sample` prints it), the generated text out.
SIGNATURE = ModelSignature(inputs=Schema([ColSpec(DataType.string)]), outputs=Schema([ColSpec(DataType.string)]))


def input_example(tokenizer: Any, meta: dict[str, Any], question: str) -> str:
    """What a caller sends the registered model: ``question`` in the trained prompt layout, with tag 1."""
    from ssft.train.forking import PromptLayout, prompt_text

    return prompt_text(tokenizer, PromptLayout.from_meta(meta), question, 1 if meta["method"] != "sft" else None)


def register(tracker: Tracker, model_dir: Path, metrics: dict[str, float], question: str) -> dict[str, Any]:
    """Log the SSFT model (tokenizer and tag list included) and register a new version of ssft-<task>.

    Alias ``candidate`` always moves to the new version; ``champion`` moves to it when its cons@N beats
    the current champion's (or there is none).
    """
    if not tracker.cfg.tracking.register:
        return {"registered": False}
    from ssft.train import models

    rid = tracker.attach("ssft", model_dir)
    model, tokenizer, meta = models.load(model_dir)
    name = registered_name(tracker.cfg)
    example = input_example(tokenizer, meta, question)
    with tracker.child_run(rid, "register"):  # the training run keeps its duration
        info = mlflow.transformers.log_model({"model": model, "tokenizer": tokenizer}, name="model",
                                             task="text-generation", pip_requirements=PIP_REQUIREMENTS,
                                             input_example=example, signature=SIGNATURE,
                                             metadata={"forking_tags": meta["tags"], "method": meta["method"]},
                                             registered_model_name=name, await_registration_for=60)
        mlflow.log_artifact(str(Path(model_dir) / models.TAGS_FILE), "model_extras")
    version = int(info.registered_model_version)
    cons = float(metrics["cons@N"])
    tracker.client.set_model_version_tag(name, str(version), metric_name("cons@N"), str(cons))
    tracker.client.set_model_version_tag(name, str(version), "run_id", rid)
    lineage = {"base_model": tracker.cfg.model.checkpoint or "tiny", "data_source": tracker.cfg.data.source,
               "dvc_data_md5": dvc_data_hash(tracker.root), "checker": tracker.cfg.data.checker,
               "dataset": tracker.cfg.dataset_name}
    for key, value in lineage.items():  # what the version was trained from, readable in the registry UI
        tracker.client.set_model_version_tag(name, str(version), key, value)
    tracker.client.set_registered_model_alias(name, "candidate", str(version))
    try:
        champ = tracker.client.get_model_version_by_alias(name, "champion")
        champ_cons = float(champ.tags.get(metric_name("cons@N"), "-inf"))
    except mlflow.exceptions.MlflowException:
        champ, champ_cons = None, float("-inf")
    promoted = cons > champ_cons
    if promoted:
        tracker.client.set_registered_model_alias(name, "champion", str(version))
    champion = version if promoted or champ is None else int(champ.version)
    log.info("registered %s v%d (cons@N %.3f); champion: v%d", name, version, cons, champion)
    return {"registered": True, "name": name, "version": version, "cons@N": cons, "champion": champion,
            "promoted": promoted, "run_id": rid}
