"""Pick a :class:`~ssft.generation.sampler.Sampler` by name: the one home of the backend names.

``hf`` runs a model the caller loads (``load_model`` is called only for it: the other backends never hold the
weights here); ``openai`` talks to ``server``; ``vllm`` starts vLLM's offline engine on ``model_dir``. Nothing
heavy is imported until a backend is built, so ``ssft.config`` can read :data:`BACKENDS`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ssft.errors import UserError
from ssft.generation.sampler import Sampler

BACKENDS = ("hf", "openai", "vllm")  # hf: transformers here; openai: a served model; vllm: vLLM's offline engine


def checkpoint_stops(model_dir: Path, tokenizer: Any) -> list[int]:
    """The end-of-sequence ids of a model directory without loading its weights (its generation_config.json)."""
    from transformers import AutoConfig, GenerationConfig

    from ssft.generation.sampler import default_stops

    if (Path(model_dir) / "generation_config.json").exists():
        gen = GenerationConfig.from_pretrained(model_dir, local_files_only=True)
    else:  # what from_pretrained gives a model saved without one: its config's eos
        gen = GenerationConfig.from_model_config(AutoConfig.from_pretrained(model_dir, local_files_only=True))
    return default_stops(tokenizer, gen)


def make(backend: str, model_dir: Path, tokenizer: Any, load_model: Callable[[], Any], *, server: str | None = None,
         batch_size: int = 256, tags: Sequence[str] = ()) -> Sampler:
    """The sampler of ``backend`` for ``model_dir``. ``tags``: the forking tags a server must tokenize as we do."""
    if backend == "hf":
        from ssft.generation.hf import HfSampler

        return HfSampler(load_model(), tokenizer, batch_size)
    if backend == "openai":
        from ssft.generation.openai import OpenAISampler

        if not server:
            raise UserError("eval.server: backend openai needs the server's base URL, e.g. http://127.0.0.1:8000/v1")
        return OpenAISampler(server, model_dir, tokenizer, checkpoint_stops(model_dir, tokenizer), tags)
    if backend == "vllm":
        from ssft.generation.vllm import VllmSampler, require_vllm

        require_vllm()  # first: without vLLM nothing else matters
        return VllmSampler(model_dir, tokenizer, checkpoint_stops(model_dir, tokenizer))
    raise UserError(f"eval.backend: {backend!r} is not a generation backend; use one of {', '.join(BACKENDS)}")
