"""Tag-free generation: the model picks its own forking tag, then writes the rest.

The prompt ends where the tag goes (``forking.question_ids``). One forward pass there gives the model's
distribution over the N tags (P(tag | question), the logits restricted to the tag ids: a logit mask), then
each sample's prompt gets its tag and the sampler writes the reasoning and answer. Two ways to pick, as the
paper's evaluation code has them:

    greedy_tag    the argmax tag for every sample of a question (then sampled reasoning)
    sampled_tag   a tag drawn from the restricted distribution for each sample

Used by evaluation (``pass@1_self``, ``cons@N_self``), ``ssft sample --tags self`` and GFPO's rollouts, on
any :class:`~ssft.generation.sampler.Sampler` (``tag_logprobs`` + ``generate``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from transformers import PreTrainedTokenizerBase

from ssft.generation.sampler import Sample, Sampler
from ssft.train.forking import PromptLayout, prompt_ids, question_ids, tag_ids

MODES = ("greedy_tag", "sampled_tag")


def restricted(logprobs: np.ndarray) -> np.ndarray:
    """(Q, N) log P(tag | question) over the vocabulary -> (Q, N) probabilities over the N tags only."""
    z = logprobs - logprobs.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def pick(probs: np.ndarray, n: int, mode: str, rng: np.random.Generator) -> np.ndarray:
    """(Q, n) tags, 1-based, for each question's ``n`` samples; always one of the N tags."""
    if mode == "greedy_tag":
        return np.repeat(probs.argmax(axis=1)[:, None] + 1, n, axis=1)
    if mode == "sampled_tag":
        return np.stack([rng.choice(probs.shape[1], size=n, p=row) + 1 for row in probs])
    raise ValueError(f"mode {mode!r}: use one of {MODES}")


@dataclass(frozen=True)
class SelfTagged:
    probs: np.ndarray                 # (Q, N) the model's tag distribution per question
    tags: np.ndarray                  # (Q, n) the tag each sample was written under (1-based)
    samples: list[list[Sample]]       # (Q, n) what followed the tag


def tag_probs(sampler: Sampler, tokenizer: PreTrainedTokenizerBase, layout: PromptLayout,
              questions: Sequence[str]) -> np.ndarray:
    """(Q, N) the model's distribution over its N tags at the tag position of each question."""
    heads = [question_ids(tokenizer, layout, q) for q in questions]
    return restricted(sampler.tag_logprobs(heads, tag_ids(tokenizer, layout.tags)))


def generate(sampler: Sampler, tokenizer: PreTrainedTokenizerBase, layout: PromptLayout, questions: Sequence[str],
             n: int, mode: str, rng: np.random.Generator, temperature: float | None, top_p: float = 1.0,
             max_new_tokens: int = 64, seed: int | None = None) -> SelfTagged:
    """``n`` samples per question, each under a tag the model picked (``mode``), in (question, sample) order."""
    probs = tag_probs(sampler, tokenizer, layout, questions)
    tags = pick(probs, n, mode, rng)
    # One prompt per (question, tag) asks for as many samples as that tag was picked: a prompt is encoded once
    # (num_return_sequences, a server's n), and prompts with the same count share a call.
    groups: dict[int, list[tuple[int, int]]] = {}
    for k, row in enumerate(tags):
        for t, count in zip(*np.unique(row, return_counts=True)):
            groups.setdefault(int(count), []).append((k, int(t)))
    samples: list[list[Sample | None]] = [[None] * n for _ in questions]
    for count, keys in sorted(groups.items()):
        outs = sampler.generate([prompt_ids(tokenizer, layout, questions[k], t) for k, t in keys], count,
                                temperature, top_p, max_new_tokens, seed=seed)
        seed = None  # one seed per call sequence: later calls continue the stream
        for (k, t), got in zip(keys, outs):
            slots = [s for s in range(n) if tags[k, s] == t]
            for s, smp in zip(slots, got):
                samples[k][s] = smp
    return SelfTagged(probs, tags, [[smp for smp in row if smp is not None] for row in samples])
