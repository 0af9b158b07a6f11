"""The model registry: the SSFT model (tokenizer and tag list included) as a new version of ``ssft-<task>``,
with aliases ``candidate`` (newest) and ``champion`` (best cons@N so far)."""

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
                                         metadata={"forking_tags": meta["tags"], "method": meta["method"]},
                                         registered_model_name=name, await_registration_for=60)
    mlflow.log_artifact(str(Path(model_dir) / models.TAGS_FILE), "model_extras")
    version = int(info.registered_model_version)
    lineage = {"base_model": cfg.model.checkpoint or "tiny", "data_source": cfg.data.source,
               "dvc_data_md5": dvc_data_hash(root), "checker": cfg.data.checker, "dataset": cfg.dataset_name}
    for key, value in lineage.items():  # what the version was trained from, readable in the registry UI
        client.set_model_version_tag(name, str(version), key, value)
    return {"name": name, "version": version}


def promote(client: MlflowClient, name: str, version: int, cons: float, info: dict[str, Any]) -> dict[str, Any]:
    """Alias ``candidate`` -> ``version``; ``champion`` too when its cons@N beats the current champion's (or
    there is none). ``info`` (name, version, run id) is returned with the outcome added."""
    client.set_model_version_tag(name, str(version), metric_name("cons@N"), str(cons))
    if "run_id" in info:
        client.set_model_version_tag(name, str(version), "run_id", info["run_id"])
    client.set_registered_model_alias(name, "candidate", str(version))
    try:
        champ = client.get_model_version_by_alias(name, "champion")
        champ_cons = float(champ.tags.get(metric_name("cons@N"), "-inf"))
    except mlflow.exceptions.MlflowException:
        champ, champ_cons = None, float("-inf")
    promoted = cons > champ_cons
    if promoted:
        client.set_registered_model_alias(name, "champion", str(version))
    champion = version if promoted or champ is None else int(champ.version)
    log.info("registered %s v%d (cons@N %.3f); champion: v%d", name, version, cons, champion)
    return {"registered": True, **info, "cons@N": cons, "champion": champion, "promoted": promoted}
