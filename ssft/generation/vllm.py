"""The ``vllm`` backend (GPU only): vLLM's offline ``LLM`` engine on a model directory.

vLLM pins its own torch build, which does not resolve with this project's exact torch pin (so there is no
``[vllm]`` extra): install it into an environment of its own, then this project without dependencies.

``generation_config="vllm"`` keeps vLLM's neutral sampling defaults instead of the checkpoint's
``generation_config.json`` (a Qwen checkpoint's top_k=20, repetition_penalty=1.05 ...): every setting a sample
depends on comes from this project, explicitly, as for the other backends. Prompts go in as token ids
(``TokensPrompt``), each with ``n`` samples and a seed derived from (the call's base seed, prompt index), so one
prompt's samples do not depend on the batch it is in; generated ids are decoded here (:func:`finish`).
vLLM is imported when the sampler is built, never when this module is.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ssft.errors import UserError
from ssft.generation.openai import TOP_LOGPROBS
from ssft.generation.sampler import Sample, SeedStream, check_request, finish


def require_vllm() -> Any:
    try:
        import vllm
    except ImportError:
        raise UserError("eval.backend: vllm needs vLLM, which is not installed; on a CUDA machine run `pip install "
                        "vllm` then `pip install --no-deps -e .` in a fresh environment, or use eval.backend: hf (or "
                        "openai with a served model)") from None
    return vllm


class VllmSampler:
    """:class:`~ssft.generation.sampler.Sampler` on vLLM's offline engine; ``engine_args`` go to ``vllm.LLM``."""

    def __init__(self, model_dir: Path, tokenizer: Any, stops: Sequence[int], **engine_args: Any) -> None:
        vllm = require_vllm()
        self.vllm, self.tokenizer, self.stops = vllm, tokenizer, list(stops)
        self.llm = vllm.LLM(model=str(model_dir), tokenizer=str(model_dir), generation_config="vllm",
                            max_logprobs=TOP_LOGPROBS, **engine_args)
        self.seeds = SeedStream()

    def _params(self, **kwargs: Any) -> Any:
        # Neutral values set explicitly: nothing left for a default to decide.
        return self.vllm.SamplingParams(top_k=-1, min_p=0.0, repetition_penalty=1.0, skip_special_tokens=True,
                                        **kwargs)

    def _prompts(self, prompts: Sequence[Sequence[int]]) -> list[Any]:
        from vllm.inputs import TokensPrompt

        return [TokensPrompt(prompt_token_ids=list(p)) for p in prompts]

    def generate(self, prompts: Sequence[Sequence[int]], n: int, temperature: float | None, top_p: float = 1.0,
                 max_new_tokens: int = 64, stop_ids: Sequence[int] | None = None,
                 seed: int | None = None) -> list[list[Sample]]:
        check_request(n, temperature)
        base, stops = self.seeds.base(seed), list(stop_ids) if stop_ids is not None else self.stops
        greedy = temperature is None
        params = [self._params(n=n, temperature=0.0 if greedy else temperature, top_p=1.0 if greedy else top_p,
                               max_tokens=max_new_tokens, stop_token_ids=stops, seed=self.seeds.request_seed(base, k))
                  for k in range(len(prompts))]
        outs = self.llm.generate(self._prompts(prompts), params, use_tqdm=False)
        return [[finish(self.tokenizer, list(o.token_ids), stops) for o in sorted(out.outputs, key=lambda o: o.index)]
                for out in outs]

    def tag_logprobs(self, prompts: Sequence[Sequence[int]], tag_ids: Sequence[int]) -> np.ndarray:
        tags = [int(t) for t in tag_ids]
        # logprob_token_ids: the exact log-probability of each tag at the first generated position.
        params = self._params(max_tokens=1, temperature=0.0, logprobs=1, logprob_token_ids=tags)
        outs = self.llm.generate(self._prompts(prompts), params, use_tqdm=False)
        rows = []
        for out in outs:
            first = out.outputs[0].logprobs[0]  # {token id: Logprob}
            rows.append([first[t].logprob if t in first else -np.inf for t in tags])
        return np.array(rows, dtype=np.float64).reshape(len(prompts), len(tags))
