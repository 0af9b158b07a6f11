"""The model registry: the SSFT model (tokenizer and tag list included) as a new version of ``ssft-<task>``,
linked to the run that trained it, with aliases ``candidate`` (newest) and ``champion`` (gated: its cons@N beats
the current champion's and the baselines' of the same pipeline run)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import mlflow
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, DataType, Schema

from ssft.config import Config
from ssft.tracking.names import dvc_data_hash, metric_name, registered_name

log = logging.getLogger(__name__)
PIP_REQUIREMENTS = ["torch==2.13.0", "transformers==5.24.0", "tokenizers==0.23.3"]  # of the logged model
# A prompt in (the question framed with a forking tag, as `ssft sample` prints it), the generated text out.
SIGNATURE = ModelSignature(inputs=Schema([ColSpec(DataType.string)]), outputs=Schema([ColSpec(DataType.string)]))


def input_example(tokenizer: Any, meta: dict[str, Any], question: str) -> str:
    """What a caller sends the registered model: ``question`` in the trained prompt layout, with tag 1."""
    from ssft.train import methods
    from ssft.train.forking import PromptLayout, prompt_text

    tag = 1 if methods.get(meta["method"]).tagged else None
    return prompt_text(tokenizer, PromptLayout.from_meta(meta), question, tag)


def register(client: MlflowClient, cfg: Config, root: Path, model_dir: Path, question: str) -> dict[str, Any]:
    """Log the model directory (tokenizer and tag list included) in the active run and register it as a new
    version of ``ssft-<data name>``, tagged with what it was trained from; its name and version."""
    from ssft.train import models

    model, tokenizer, meta = models.load(model_dir)
    name = registered_name(cfg)
    info = mlflow.transformers.log_model({"model": model, "tokenizer": tokenizer}, name="model",
                                         task="text-generation", pip_requirements=PIP_REQUIREMENTS,
                                         input_example=input_example(tokenizer, meta, question), signature=SIGNATURE,
                                         metadata={"forking_tags": meta["tags"], "method": meta["method"]})
    mlflow.log_artifact(str(Path(model_dir) / models.TAGS_FILE), "model_extras")
    # The version belongs to the training run (the active run is its `register` child): its run page lists it
    # under "Registered models", and the version's "Source run" opens the run with the curves.
    active = mlflow.active_run()
    training = active.data.tags.get("mlflow.parentRunId", active.info.run_id) if active else None
    try:
        client.create_registered_model(name)
    except mlflow.exceptions.MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = int(client.create_model_version(name, info.model_uri, run_id=training, model_id=info.model_id,
                                              await_creation_for=60).version)
    lineage = {"base_model": cfg.model.checkpoint or "tiny", "data_source": cfg.data.source,
               "dvc_data_md5": dvc_data_hash(root), "checker": cfg.data.checker, "dataset": cfg.dataset_name}
    for key, value in lineage.items():  # what the version was trained from, readable in the registry UI
        client.set_model_version_tag(name, str(version), key, value)
    return {"name": name, "version": version}


def baseline_cons(client: MlflowClient, run_id: str, method: str, stage: str | None = None) -> float | None:
    """cons@N of ``method``'s run in the pipeline run that trained ``run_id`` (the newest such run): its training
    run, or with ``stage`` (gfpo) its run of that stage; None when it has none, or it is not evaluated yet."""
    run = client.get_run(run_id)
    pipeline = run.data.tags.get("pipeline_run_id")
    if not pipeline:
        return None
    found = [r for r in client.search_runs(
        [run.info.experiment_id], f"tags.method = '{method}' and tags.pipeline_run_id = '{pipeline}'",
        order_by=["attributes.start_time DESC"]) if r.data.tags.get("stage") == stage]
    key = f"eval/{metric_name('cons@N')}"
    return next((r.data.metrics[key] for r in found if key in r.data.metrics), None)


def aliases(stage: str | None) -> tuple[str, str]:
    """(candidate, champion) aliases of a stage's versions: like is compared with like, so an RL-trained model
    (stage gfpo) has its own, ``candidate-gfpo`` and ``champion-gfpo``."""
    return ("candidate", "champion") if stage is None else (f"candidate-{stage}", f"champion-{stage}")


def promote(client: MlflowClient, name: str, version: int, cons: float, info: dict[str, Any],
            baselines: tuple[str, ...], stage: str | None = None) -> dict[str, Any]:
    """Alias ``candidate`` -> ``version``; ``champion`` too when its cons@N beats the current champion's (or
    there is none) and every baseline's of the same pipeline run (``info["run_id"]``: the training run). A
    baseline that is missing or not evaluated yet blocks the promotion: a champion is never crowned unchecked.
    ``info`` (name, version, run id) is returned with the outcome and its reason added."""
    client.set_model_version_tag(name, str(version), metric_name("cons@N"), str(cons))
    if "run_id" in info:
        client.set_model_version_tag(name, str(version), "run_id", info["run_id"])
    candidate, champion_alias = aliases(stage)
    client.set_model_version_tag(name, str(version), "stage", stage or "ssft")
    client.set_registered_model_alias(name, candidate, str(version))
    try:
        champ = client.get_model_version_by_alias(name, champion_alias)
        champ_cons = float(champ.tags.get(metric_name("cons@N"), "-inf"))
    except mlflow.exceptions.MlflowException:
        champ, champ_cons = None, float("-inf")
    reasons = [] if cons > champ_cons else [f"cons@N {cons:.3f} does not beat champion v{champ.version}'s "
                                            f"{champ_cons:.3f}" if champ else f"cons@N {cons:.3f}"]
    for method in baselines:
        ref = baseline_cons(client, info["run_id"], method, stage) if "run_id" in info else None
        if ref is None:
            reasons.append(f"no evaluated {method} run in this pipeline run to compare with")
        elif cons <= ref:
            reasons.append(f"cons@N {cons:.3f} does not beat {method}'s {ref:.3f}")
    promoted = not reasons
    if promoted:
        client.set_registered_model_alias(name, champion_alias, str(version))
    champion = version if promoted else (int(champ.version) if champ else None)
    beaten = "beats the champion" + (f" and {', '.join(baselines)}" if baselines else "")
    reason = beaten if promoted else "; ".join(reasons)
    client.set_model_version_tag(name, str(version), "champion_decision", reason)
    log.info("registered %s v%d (cons@N %.3f); %s; champion: %s", name, version, cons,
             "promoted" if promoted else f"not promoted ({reason})", f"v{champion}" if champion else "none")
    return {"registered": True, **info, "cons@N": cons, "champion": champion, "promoted": promoted, "reason": reason}
