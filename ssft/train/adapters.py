"""LoRA through peft: only low-rank adapters and the forking tokens' embedding rows train; after training
the adapters are merged back, so the saved model directory is an ordinary checkpoint for evaluation,
the registry and any inference server. ``model.lora_rank: 0`` (the default) is full fine-tuning.
"""

from __future__ import annotations

import logging

from transformers import PreTrainedModel

from ssft.config import ModelConfig
from ssft.errors import UserError

log = logging.getLogger(__name__)


def add_lora(model: PreTrainedModel, cfg: ModelConfig, tag_ids: list[int]) -> PreTrainedModel:
    """Wrap ``model`` in LoRA adapters of rank ``cfg.lora_rank``; the rows of ``tag_ids`` in the input
    embedding (and a head tied to it) train in full, since new tags start from an untrained row."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise UserError("model.lora_rank > 0 needs peft: pip install 'ssft[gpu]' (or peft), "
                         "or set model.lora_rank: 0 for full fine-tuning") from None
    targets = cfg.lora_targets if cfg.lora_targets == "all-linear" else [
        t.strip() for t in cfg.lora_targets.split(",") if t.strip()]
    lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, target_modules=targets, task_type="CAUSAL_LM",
                      trainable_token_indices=sorted(set(tag_ids)))
    wrapped = get_peft_model(model, lora)
    trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    total = sum(p.numel() for p in wrapped.parameters())
    log.info("LoRA rank %d on %s: %.2fM of %.2fM parameters train", cfg.lora_rank, cfg.lora_targets,
             trainable / 1e6, total / 1e6)
    return wrapped  # type: ignore[return-value]  # a PeftModel forwards the rest to the model it wraps


def merged(model: PreTrainedModel) -> PreTrainedModel:
    """The plain model with any LoRA adapters (and trained tag rows) folded into its weights."""
    merge = getattr(model, "merge_and_unload", None)
    return merge() if merge is not None else model
