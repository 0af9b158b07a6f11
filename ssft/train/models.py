"""Models: a tiny Llama-style causal LM from config (offline default) or a local pretrained checkpoint,
with the forking tokens added, plus save/load of a trained model directory.

A model directory holds the HF model and tokenizer (``save_pretrained``) and ``tags.json`` (the tag list,
N, the method and the prompt layout), so evaluation rebuilds exactly the prompts training used.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from ssft.atomic import replace_dir, temp_path
from ssft.config import ModelConfig
from ssft.train.forking import SHARED_TAG, add_tags, build_char_tokenizer, tag_tokens, uses_chat_template

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
TAGS_FILE = "tags.json"


def master_dtype(cfg: ModelConfig) -> torch.dtype:
    """The dtype weights and optimizer state live in: float32, the master copy that mixed precision
    (model.dtype = compute dtype, autocast) updates; model.dtype itself only with the pure_dtype opt-in."""
    return DTYPES[cfg.dtype] if cfg.pure_dtype else torch.float32


def tiny_model(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase, seed: int) -> LlamaForCausalLM:
    """A randomly initialised Llama of ``cfg``'s size; the same seed gives the same init for every method."""
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size, max_position_embeddings=cfg.max_length,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, attn_implementation=cfg.attn_implementation,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).to(master_dtype(cfg))


def init_tag_embeddings(model: PreTrainedModel, tag_ids: list[int], n_old: int, how: str) -> None:
    """Give new tag rows a sensible start: the mean of the pre-existing rows (or leave them random).

    Padding rows of pretrained checkpoints hold arbitrary values, so "whatever is there" is never used.
    """
    if how != "mean":
        return
    with torch.no_grad():
        for emb in {id(e): e for e in (model.get_input_embeddings(), model.get_output_embeddings()) if e}.values():
            emb.weight[tag_ids] = emb.weight[:n_old].mean(dim=0, keepdim=True).to(emb.weight.dtype)


def pretrained_model(cfg: ModelConfig, n_tags: int) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a local checkpoint (never the hub) and add the forking tokens to it."""
    path = Path(cfg.checkpoint)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"model.checkpoint={cfg.checkpoint!r}: no config.json there; "
                                "point it at a local HF checkpoint directory")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    n_old = len(tokenizer)
    tag_ids = add_tags(tokenizer, n_tags)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=master_dtype(cfg),
                                                 attn_implementation=cfg.attn_implementation)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    init_tag_embeddings(model, [tokenizer.convert_tokens_to_ids(SHARED_TAG)] + tag_ids, n_old, cfg.tag_init)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def build(cfg: ModelConfig, n_tags: int, seed: int) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model a training run starts from: pretrained if ``cfg.checkpoint`` is set, else tiny."""
    if cfg.checkpoint:
        return pretrained_model(cfg, n_tags)
    tokenizer = build_char_tokenizer(n_tags)
    return tiny_model(cfg, tokenizer, seed), tokenizer


def save(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out: Path, meta: dict[str, Any],
         extra: dict[str, str] | None = None, dtype: str = "float32") -> None:
    """Write a model directory atomically: a sibling ``.tmp`` is filled, then renamed into place.

    The weights are written in ``dtype`` (the model is converted in place: call this last). ``extra`` maps
    file names to text written beside the model (e.g. the training statistics)."""
    out = Path(out)
    tmp = temp_path(out)
    shutil.rmtree(tmp, ignore_errors=True)
    model.to(DTYPES[dtype]).save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    n_tags = meta["num_tags"]
    tags = {"tags": tag_tokens(n_tags), "shared_tag": SHARED_TAG, "chat_template": uses_chat_template(tokenizer),
            **meta}
    (tmp / TAGS_FILE).write_text(json.dumps(tags, indent=2))
    for name, text in (extra or {}).items():
        (tmp / name).write_text(text)
    replace_dir(tmp, out)


def load(path: Path, dtype: str = "float32") -> tuple[PreTrainedModel, PreTrainedTokenizerBase, dict[str, Any]]:
    """Reload a trained model directory. The tokenizer comes back through PreTrainedTokenizerFast, never
    AutoTokenizer, which with a Qwen2 config silently swaps the saved pre-tokenizer."""
    path = Path(path)
    meta_file = path / TAGS_FILE
    if not meta_file.exists():
        raise FileNotFoundError(f"{path}: no {TAGS_FILE}; not a model directory written by `ssft train`")
    meta = json.loads(meta_file.read_text())
    tokenizer = PreTrainedTokenizerFast.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=DTYPES[dtype])
    return model, tokenizer, meta
