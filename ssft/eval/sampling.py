"""Tag-prompted parallel generation: many prompts x many samples per ``generate`` call, left-padded.

A request is (prompt ids, number of samples). Greedy decoding is one sample per prompt; sampling draws
``n`` per prompt through ``num_return_sequences`` so the prompt is encoded once. Generation stops at every
end-of-sequence id of the checkpoint (:func:`stop_ids`: Qwen2.5 ends on ``<|im_end|>`` and ``<|endoftext|>``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class Sample:
    text: str     # decoded generation, special tokens removed, cut at end-of-sequence
    length: int   # generated tokens, end-of-sequence included


def stop_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Every end-of-sequence id: the tokenizer's, then those of the model's ``generation_config``."""
    gen = model.generation_config.eos_token_id if model.generation_config is not None else None
    ids = [tokenizer.eos_token_id, *(gen if isinstance(gen, (list, tuple)) else [gen])]
    return list(dict.fromkeys(i for i in ids if i is not None))


def cut(ids: Sequence[int], stops: Sequence[int]) -> int:
    """Length of a generation up to and including its first stop id (all of it if none occurs).

    >>> cut([5, 7, 2, 9, 1], stops=[1, 2])
    3
    """
    return next((k + 1 for k, i in enumerate(ids) if i in stops), len(ids))


@torch.no_grad()
def generate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Sequence[int]], n: int,
             temperature: float | None, top_p: float = 1.0, max_new_tokens: int = 64,
             batch_size: int = 256) -> list[list[Sample]]:
    """``n`` samples per prompt (``temperature=None``: greedy, then n must be 1)."""
    if temperature is None and n != 1:
        raise ValueError("greedy decoding is deterministic: ask for n=1")
    model.eval()
    per_call = max(1, batch_size // n)
    stops = stop_ids(model, tokenizer)
    out: list[list[Sample]] = []
    for start in range(0, len(prompts), per_call):
        chunk = prompts[start: start + per_call]
        width = max(len(p) for p in chunk)
        ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for k, p in enumerate(chunk):
            ids[k, width - len(p):], mask[k, width - len(p):] = torch.tensor(list(p)), 1
        kwargs = {"do_sample": False} if temperature is None else {
            "do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
        seqs = model.generate(  # type: ignore[operator]  # causal LMs have GenerationMixin; PreTrainedModel does not
            input_ids=ids.to(model.device), attention_mask=mask.to(model.device), max_new_tokens=max_new_tokens,
            num_return_sequences=n, pad_token_id=tokenizer.pad_token_id, eos_token_id=stops, **kwargs)
        new = seqs[:, width:].tolist()
        for k in range(len(chunk)):
            out.append([_sample(tokenizer, new[k * n + s], stops) for s in range(n)])
    return out


def _sample(tokenizer: PreTrainedTokenizerBase, ids: list[int], stops: Sequence[int]) -> Sample:
    end = cut(ids, stops)
    text = tokenizer.decode(ids[:end], skip_special_tokens=True)
    assert isinstance(text, str)  # one sequence decodes to one string
    return Sample(text, end)
