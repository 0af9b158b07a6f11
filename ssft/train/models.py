"""Models: a tiny Llama-style causal LM from config (offline default) or a local pretrained checkpoint,
with the forking tokens added, plus save/load of a trained model directory.

A model directory holds the HF model and tokenizer (``save_pretrained``) and ``tags.json`` (the tag list,
N, the method and the prompt layout), so evaluation rebuilds exactly the prompts training used.
"""

from __future__ import annotations

import json
import logging
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
from ssft.errors import UserError
from ssft.train import precision
from ssft.train.forking import PromptLayout, add_tags, build_char_tokenizer, tag_ids

log = logging.getLogger(__name__)

# The files of a model directory besides the weights and tokenizer.
TAGS_FILE = "tags.json"          # the tags, prompt layout and training facts (method, dtype, sources)
STATS_FILE = "train_stats.json"  # the training statistics (assignment history, loss, context drops)


def master_dtype(cfg: ModelConfig) -> torch.dtype:
    """The dtype weights and optimizer state live in (``ssft.train.precision``)."""
    return precision.torch_dtype(precision.decide(cfg, torch.cuda.is_available()).master)


def tiny_model(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase, seed: int) -> LlamaForCausalLM:
    """A randomly initialised Llama of ``cfg``'s size; the same seed gives the same init for every method."""
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size, max_position_embeddings=cfg.max_length or 4096,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        # A PreTrainedConfig kwarg LlamaConfig's signature omits
        attn_implementation=cfg.attn_implementation,  # type: ignore[call-arg]
    )
    torch.manual_seed(seed)
    # Transformers' @wraps(Module.to) hides self from mypy
    return LlamaForCausalLM(config).to(master_dtype(cfg))  # type: ignore[arg-type]


def init_tag_embeddings(model: PreTrainedModel, new_ids: list[int], n_old: int, how: str) -> None:
    """Give the rows of newly added tags a sensible start: the mean of the pre-existing rows (or leave them).

    Only ``new_ids`` are touched: a tag the checkpoint already had keeps its trained row. Padding rows of
    pretrained checkpoints hold arbitrary values, so "whatever is there" is never used for ``mean``.
    """
    if how != "mean" or not new_ids:
        return
    with torch.no_grad():
        for emb in {id(e): e for e in (model.get_input_embeddings(), model.get_output_embeddings()) if e}.values():
            w = emb.weight
            assert isinstance(w, torch.Tensor)
            w[new_ids] = w[:n_old].mean(dim=0, keepdim=True).to(w.dtype)


def load_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    """A checkpoint's tokenizer exactly as saved (pre-tokenizer, chat template, special tokens, eos/pad).

    ``tokenizer.json`` goes through PreTrainedTokenizerFast: AutoTokenizer would build e.g. Qwen2Tokenizer for
    any ``qwen2`` config and rebuild its pre-tokenizer, so ids would change. AutoTokenizer only reads
    checkpoints that ship slow vocabulary files alone."""
    if (Path(path) / "tokenizer.json").exists():
        return PreTrainedTokenizerFast.from_pretrained(path, local_files_only=True)
    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def prompt_layout(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase, n_tags: int) -> PromptLayout:
    """The training-time prompt layout of a tokenizer from :func:`build`: ``cfg.tag_format``, chat or plain."""
    return PromptLayout.for_tokenizer(tokenizer, cfg.tag_format, n_tags)


def pretrained_model(cfg: ModelConfig, n_tags: int) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a local checkpoint (never the hub) and add the forking tokens it lacks."""
    assert cfg.checkpoint, "build() loads a pretrained model only when model.checkpoint is set"
    path = Path(cfg.checkpoint)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"model.checkpoint={cfg.checkpoint!r}: no config.json there; "
                                "point it at a local HF checkpoint directory")
    tokenizer = load_tokenizer(path)
    if tokenizer.eos_token is None:
        raise UserError(f"model.checkpoint={cfg.checkpoint!r}: its tokenizer has no eos_token, so traces "
                         "cannot end; set eos_token in its tokenizer_config.json")
    layout = prompt_layout(cfg, tokenizer, n_tags)
    if not layout.chat:
        log.info("%s has no chat template: prompts use the plain layout {bos}{question}{tag}", path)
    n_old = len(tokenizer)
    new = [t for t in layout.all_tags if t not in tokenizer.get_vocab()]
    add_tags(tokenizer, layout.all_tags)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=master_dtype(cfg),
                                                 attn_implementation=cfg.attn_implementation)
    rows = model.get_input_embeddings().weight
    assert isinstance(rows, torch.Tensor)
    if len(tokenizer) > rows.shape[0]:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    new_ids = tokenizer.convert_tokens_to_ids(new)
    assert isinstance(new_ids, list)  # a list of tokens gives a list of ids
    init_tag_embeddings(model, new_ids, n_old, cfg.tag_init)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def build(cfg: ModelConfig, n_tags: int, seed: int) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model a training run starts from: pretrained if ``cfg.checkpoint`` is set, else tiny.
    Its prompts use :func:`prompt_layout` (``cfg.tag_format``)."""
    if cfg.checkpoint:
        return pretrained_model(cfg, n_tags)
    tokenizer = build_char_tokenizer(PromptLayout.from_format(cfg.tag_format, n_tags, chat=False).all_tags)
    return tiny_model(cfg, tokenizer, seed), tokenizer


def save(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out: Path, meta: dict[str, Any],
         extra: dict[str, str] | None = None, dtype: str = "float32", layout: PromptLayout | None = None,
         state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """Write a model directory atomically: a sibling ``.tmp`` is filled, then renamed into place.

    The weights are written in ``dtype`` (the model is converted in place: call this last), taken from
    ``state_dict`` when given (a full state dict gathered from FSDP shards). ``extra`` maps
    file names to text written beside the model (e.g. the training statistics). ``tags.json`` records
    ``layout`` (None: the default ``model.tag_format``) for evaluation to rebuild the training prompts."""
    out = Path(out)
    tmp = temp_path(out)
    shutil.rmtree(tmp, ignore_errors=True)
    if state_dict is None:  # the model is converted in place
        # Transformers' @wraps(Module.to) hides self from mypy
        model.to(precision.torch_dtype(dtype)).save_pretrained(tmp)  # type: ignore[arg-type]
    else:  # gathered from FSDP shards: the model's own tensors are shards, so save these instead
        model.save_pretrained(tmp, state_dict={k: v.to(precision.torch_dtype(dtype)) for k, v in state_dict.items()})
    tokenizer.save_pretrained(tmp)
    if layout is None:
        layout = PromptLayout.for_tokenizer(tokenizer, ModelConfig().tag_format, meta["num_tags"])
    tag_ids(tokenizer, layout.all_tags)  # raises unless every recorded tag is one token of this tokenizer
    tags = {**layout.meta(), **meta}
    (tmp / TAGS_FILE).write_text(json.dumps(tags, indent=2))
    for name, text in (extra or {}).items():
        (tmp / name).write_text(text)
    replace_dir(tmp, out)


def load(path: Path, dtype: str | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, dict[str, Any]]:
    """Reload a trained model directory, in ``dtype`` (None: the dtype it was trained in on a GPU, float32 on
    the CPU: ``precision.for_inference``). The tokenizer comes back through PreTrainedTokenizerFast, never
    AutoTokenizer, which with a Qwen2 config silently swaps the saved pre-tokenizer."""
    path = Path(path)
    meta_file = path / TAGS_FILE
    if not meta_file.exists():
        raise FileNotFoundError(f"{path}: no {TAGS_FILE}; not a model directory written by `ssft train`")
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise FileNotFoundError(f"{path}: no weights (*.safetensors); the model directory is incomplete: "
                                "run `ssft train` (or `dvc repro train`) again")
    meta = json.loads(meta_file.read_text())
    tokenizer = PreTrainedTokenizerFast.from_pretrained(path)
    dtype = dtype or precision.for_inference(meta.get("dtype"), torch.cuda.is_available())
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=precision.torch_dtype(dtype))
    return model, tokenizer, meta
