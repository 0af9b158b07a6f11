"""The ``hf`` backend: batched, left-padded ``model.generate`` on an already loaded model (CPU or one GPU).

Many prompts x ``n`` samples per ``generate`` call: ``batch_size`` sequences per call, so ``batch_size // n``
prompts, each encoded once and sampled ``n`` times through ``num_return_sequences``. The random stream is
torch's global generator: a ``seed`` reseeds it, None continues it (the draws of a call depend on the calls
before it, in order). Loading lives with the caller (``ssft.train.models``); this module only runs the model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ssft.generation.sampler import Sample, check_request, default_stops, finish


def stop_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Every end-of-sequence id of a loaded checkpoint (tokenizer first, then its ``generation_config``)."""
    return default_stops(tokenizer, model.generation_config)


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask), both (B, T): each prompt right-aligned, so every next token is at column T."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for k, p in enumerate(prompts):
        ids[k, width - len(p):], mask[k, width - len(p):] = torch.tensor(list(p), dtype=torch.long), 1
    return ids, mask


class HfSampler:
    """:class:`~ssft.generation.sampler.Sampler` over a loaded causal LM and its tokenizer."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, batch_size: int = 256) -> None:
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.stops = stop_ids(model, tokenizer)
        # A checkpoint without a pad token pads with its first stop id: masked out, never attended to.
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stops[0]

    @torch.no_grad()
    def generate(self, prompts: Sequence[Sequence[int]], n: int, temperature: float | None, top_p: float = 1.0,
                 max_new_tokens: int = 64, stop_ids: Sequence[int] | None = None,
                 seed: int | None = None) -> list[list[Sample]]:
        check_request(n, temperature)
        if seed is not None:
            torch.manual_seed(seed)
        self.model.eval()
        stops = list(stop_ids) if stop_ids is not None else self.stops
        per_call = max(1, self.batch_size // n)
        kwargs = {"do_sample": False} if temperature is None else {
            "do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
        out: list[list[Sample]] = []
        for start in range(0, len(prompts), per_call):
            ids, mask = left_pad(prompts[start: start + per_call], self.pad_id)
            seqs = self.model.generate(  # type: ignore[operator]  # causal LMs have GenerationMixin
                input_ids=ids.to(self.model.device), attention_mask=mask.to(self.model.device),
                max_new_tokens=max_new_tokens, num_return_sequences=n, pad_token_id=self.pad_id,
                eos_token_id=stops, **kwargs)
            new = seqs[:, ids.shape[1]:].tolist()
            out.extend([finish(self.tokenizer, new[k * n + s], stops) for s in range(n)] for k in range(len(ids)))
        return out

    @torch.no_grad()
    def tag_logprobs(self, prompts: Sequence[Sequence[int]], tag_ids: Sequence[int]) -> np.ndarray:
        self.model.eval()
        rows = []
        for start in range(0, len(prompts), self.batch_size):
            ids, mask = left_pad(prompts[start: start + self.batch_size], self.pad_id)
            # Left padding shifts the positions a plain forward would give: count them from each first token.
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = self.model(input_ids=ids.to(self.model.device), attention_mask=mask.to(self.model.device),
                                position_ids=positions.to(self.model.device)).logits[:, -1]  # (B, V)
            rows.append(torch.log_softmax(logits.float(), -1)[:, list(tag_ids)].cpu())
        return torch.cat(rows).numpy().astype(np.float64) if rows else np.zeros((0, len(tag_ids)))
