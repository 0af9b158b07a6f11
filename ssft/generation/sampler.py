"""What every generation backend offers: :class:`Sampler` (``generate``, ``tag_logprobs``) and :class:`Sample`.

Prompts are token ids, never text: a forking tag is one special token that a server could re-tokenize or strip
from text. Every backend decodes its generated ids the same way (:func:`finish`), so a sample's text does not
depend on which engine wrote it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class Sample:
    text: str                    # decoded generation, special tokens removed, cut before the first stop id
    length: int                  # generated tokens, the stop id included
    token_ids: tuple[int, ...]   # the generated ids, up to and including the first stop id


class Sampler(Protocol):
    """One way to run a model. ``seed``: a number restarts the sampler's random stream; None continues it (an
    evaluation seeds its first call and lets the later ones follow, so each set draws fresh randomness)."""

    def generate(self, prompts: Sequence[Sequence[int]], n: int, temperature: float | None, top_p: float = 1.0,
                 max_new_tokens: int = 64, stop_ids: Sequence[int] | None = None,
                 seed: int | None = None) -> list[list[Sample]]:
        """``n`` samples per prompt (``temperature`` None: greedy, then ``n`` must be 1); ``stop_ids`` None: the
        checkpoint's end-of-sequence ids (:func:`default_stops`)."""
        ...

    def tag_logprobs(self, prompts: Sequence[Sequence[int]], tag_ids: Sequence[int]) -> np.ndarray:
        """(prompts, tags) log P(tag | prompt) at the next position: each prompt ends where the tag goes."""
        ...


class SeedStream:
    """The random stream of a backend that takes a seed per request (a server, vLLM): a call's base seed is drawn
    from it (a ``seed`` restarts it), and request ``k`` of the call gets :meth:`request_seed` (base, k), so the
    results do not depend on the order requests finish in, nor on how an engine batches them."""

    def __init__(self) -> None:
        self._rng = random.Random(0)

    def base(self, seed: int | None) -> int:
        if seed is not None:
            self._rng = random.Random(seed)
        return self._rng.getrandbits(31)

    @staticmethod
    def request_seed(base: int, index: int) -> int:
        """31 bits: every server takes it."""
        return (base * 1_000_003 + index) % 2**31


def check_request(n: int, temperature: float | None) -> None:
    if temperature is None and n != 1:
        raise ValueError("greedy decoding is deterministic: ask for n=1")
    if n < 1:
        raise ValueError(f"n={n}: ask for at least one sample per prompt")


def default_stops(tokenizer: Any, generation_config: Any | None) -> list[int]:
    """Every end-of-sequence id: the tokenizer's, then those of the checkpoint's ``generation_config`` (Qwen2.5
    ends on ``<|im_end|>`` and ``<|endoftext|>``)."""
    gen = generation_config.eos_token_id if generation_config is not None else None
    ids = [tokenizer.eos_token_id, *(gen if isinstance(gen, (list, tuple)) else [gen])]
    return list(dict.fromkeys(i for i in ids if i is not None))


def cut(ids: Sequence[int], stops: Sequence[int]) -> int:
    """Length of a generation up to and including its first stop id (all of it if none occurs).

    >>> cut([5, 7, 2, 9, 1], stops=[1, 2])
    3
    """
    return next((k + 1 for k, i in enumerate(ids) if i in stops), len(ids))


def finish(tokenizer: Any, ids: Sequence[int], stops: Sequence[int]) -> Sample:
    """The :class:`Sample` of generated ``ids`` (anything after the first stop id, e.g. padding, is dropped).

    >>> from types import SimpleNamespace as NS
    >>> tok = NS(decode=lambda ids, skip_special_tokens: "".join(chr(96 + i) for i in ids))
    >>> finish(tok, [1, 2, 0, 0], stops=[0])
    Sample(text='ab', length=3, token_ids=(1, 2, 0))
    """
    end = cut(ids, stops)
    stopped = end > 0 and ids[end - 1] in stops
    text = tokenizer.decode(list(ids[:end - 1 if stopped else end]), skip_special_tokens=True)
    assert isinstance(text, str)  # one sequence decodes to one string
    return Sample(text, end, tuple(int(i) for i in ids[:end]))
