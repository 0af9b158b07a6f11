"""The ``openai`` backend: any OpenAI-compatible server through the official client's **completions** endpoint.

Two dialects, chosen once by a probe when the sampler starts:

- ``token-ids`` (vLLM, SGLang): the prompt is the token ids themselves, so a forking tag reaches the model as
  the one special token it was trained on. ``n`` samples per request; vLLM's extensions in ``extra_body``:
  ``stop_token_ids``, ``return_token_ids`` (the generated ids come back and are decoded here, exactly as the
  ``hf`` backend decodes), ``top_k=-1`` and ``repetition_penalty=1`` so that the checkpoint's
  ``generation_config`` cannot change sampling. ``tag_logprobs`` asks for one token with vLLM's
  ``logprob_token_ids`` (the exact log-probability of every tag), else the top-20 logprobs (a tag outside them
  gets -inf, with a warning).
- ``text`` (``transformers serve``, which rejects token-id prompts and unknown fields): each prompt is sent as
  its text, only after checking that it re-tokenizes to the very same ids here and, per request, that the server
  counted as many prompt tokens; one request per sample (it ignores ``n``); the sampling settings and stop ids
  travel in its ``generation_config`` field. It returns no logprobs, so ``tag_logprobs`` is a UserError.

At start the sampler checks that the server serves this model directory: the tags re-tokenized by the server
must give this tokenizer's ids. Requests run ``concurrency`` at a time in a thread pool; the client retries with
exponential back-off (``max_retries``) and abandons a request after ``timeout_s``. Seeds: see
:class:`~ssft.generation.sampler.SeedStream` (one per request, derived from the call's base seed and the request's
index, so results do not depend on the order requests finish in). Every server failure (HTTP error, malformed
JSON, no choices, timeout, refused connection) is one UserError line naming the URL (credentials redacted) and
the server's own reason.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ssft.errors import UserError
from ssft.generation.sampler import Sample, SeedStream, check_request, finish

log = logging.getLogger(__name__)

CONCURRENCY = 8        # requests in flight at once
TIMEOUT_S = 300.0      # seconds before a request is abandoned (and retried)
MAX_RETRIES = 3        # the client's retries with exponential back-off (connection errors, 408/409/429/5xx)
TOP_LOGPROBS = 20      # the most logprobs OpenAI's API (and vLLM's default --max-logprobs) returns per position
TOKEN_ID = re.compile(r"token_id:(\d+)$")  # how vLLM names a token under return_tokens_as_token_ids
T = TypeVar("T")


def redact(url: str) -> str:
    """A URL fit for messages: credentials (``user:password@``) and the query string removed.

    >>> redact("https://me:secret@host:8000/v1?key=abc")
    'https://***@host:8000/v1'
    """
    return re.sub(r"//[^/@]+@", "//***@", url.split("?", 1)[0])


def _reason(error: Exception) -> str:
    """The server's own words for a failed request."""
    import openai

    if isinstance(error, openai.APIStatusError):
        body = error.body
        if isinstance(body, dict):
            body = body.get("message") or body.get("detail") or body.get("error") or body
        return f"HTTP {error.status_code}: {body if body else error.response.text[:300]}"
    if isinstance(error, openai.APITimeoutError):
        return "no answer before the timeout"
    if isinstance(error, openai.APIConnectionError):
        return f"cannot connect ({error.__cause__ or error})"
    return f"malformed response ({type(error).__name__}: {error})"


def _seeded(temperature: float | None, seed: int) -> dict[str, int]:
    """The seed field of a request: none for greedy decoding, which needs none (and a seeded request costs vLLM
    a generator of its own)."""
    return {} if temperature is None else {"seed": seed}


def _tokenizer_bytes(model_dir: Path) -> bytes | None:
    f = model_dir / "tokenizer.json"
    return f.read_bytes() if f.exists() else None


class OpenAISampler:
    """:class:`~ssft.generation.sampler.Sampler` over a server at ``server`` (e.g. ``http://127.0.0.1:8000/v1``)
    that serves ``model_dir``, whose ``tokenizer`` encodes the prompts and decodes the samples. ``tags``: the
    tag strings whose ids the server must agree on (the tokenizer's end-of-sequence token when empty)."""

    def __init__(self, server: str, model_dir: Path, tokenizer: Any, stops: Sequence[int], tags: Sequence[str] = (),
                 concurrency: int = CONCURRENCY, timeout_s: float = TIMEOUT_S, max_retries: int = MAX_RETRIES,
                 api_key: str = "EMPTY") -> None:
        from openai import OpenAI

        self.url, self.tokenizer, self.stops = server.rstrip("/"), tokenizer, list(stops)
        self.concurrency, self.timeout_s, self.max_retries = concurrency, timeout_s, max_retries
        self.client = OpenAI(base_url=self.url, api_key=api_key, timeout=timeout_s, max_retries=max_retries)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stops[0]
        self.seeds = SeedStream()
        self._logprob_mode = "logprob_token_ids"  # until the server shows it ignores them
        self.model_dir = Path(model_dir)
        self.model = self._served_model(self.model_dir)
        self.dialect = self._probe(list(tags) or [tokenizer.eos_token])
        log.info("generation through %s (model %r, %s prompts)", redact(self.url), self.model, self.dialect)

    # -- one request, its failures as one line ------------------------------------------------------------
    def _fail(self, what: str, reason: str) -> UserError:
        return UserError(f"{redact(self.url)}: {what} failed: {reason}; check that the server is up and serves "
                         f"this model (e.g. `vllm serve <model dir>`), or fix eval.server")

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        import openai

        try:
            return fn()
        except (openai.OpenAIError, ValueError) as e:  # the client already retried what can be retried
            raise self._fail(what, _reason(e)) from None

    def _complete(self, what: str, want: int, **kwargs: Any) -> Any:
        """A completion with at least ``want`` choices."""
        resp = self._call(what, lambda: self.client.completions.create(model=self.model, **kwargs))
        choices = getattr(resp, "choices", None)
        if not isinstance(choices, list) or not choices:
            raise self._fail(what, f"the server returned no choices ({str(resp)[:200]!r})")
        if len(choices) < want:
            raise self._fail(what, f"the server returned {len(choices)} of the {want} choices asked for")
        return resp

    def _map(self, fn: Callable[[int], T], count: int) -> list[T]:
        """``[fn(0), ..., fn(count - 1)]``, ``concurrency`` at a time; the first failure cancels the rest."""
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="openai-sampler") as pool:
            futures = [pool.submit(fn, k) for k in range(count)]
            try:
                return [f.result() for f in futures]
            finally:
                for f in futures:
                    f.cancel()

    # -- start: which model, which dialect, the same tag ids ----------------------------------------------
    def _served_model(self, model_dir: Path) -> str:
        ids = [m.id for m in self._call("listing the served models", lambda: list(self.client.models.list()))]
        if len(ids) == 1:
            return ids[0]
        wanted = {str(model_dir), str(model_dir.resolve()), model_dir.name}
        match = [i for i in ids if i in wanted or i.rstrip("/").rsplit("/", 1)[-1] == model_dir.name]
        if len(match) != 1:
            raise UserError(f"{redact(self.url)} serves {ids}, none of them clearly {model_dir}; serve that "
                            f"directory alone (`vllm serve {model_dir}`) or point eval.server at its server")
        return match[0]

    def _probe(self, tags: list[str]) -> str:
        """'token-ids' or 'text', after checking the server tokenizes ``tags`` to this tokenizer's ids."""
        import openai

        want = [self.tokenizer.convert_tokens_to_ids(t) for t in tags]
        text = "".join(tags)
        try:
            resp = self.client.completions.create(
                model=self.model, prompt=list(want), max_tokens=1, temperature=0.0,
                extra_body={"return_token_ids": True, "stop_token_ids": self.stops})
        except openai.BadRequestError as e:  # 400
            return self._probe_text(want, text, _reason(e))
        except openai.UnprocessableEntityError as e:  # 422: a server that refuses vLLM's fields
            return self._probe_text(want, text, _reason(e))
        except (openai.OpenAIError, ValueError) as e:
            raise self._fail("the start-up probe", _reason(e)) from None
        if not getattr(resp, "choices", None):
            raise self._fail("the start-up probe", f"the server returned no choices ({str(resp)[:200]!r})")
        resp = self._complete("the tag check", 1, prompt=text, max_tokens=1, temperature=0.0,
                              extra_body={"return_token_ids": True, "add_special_tokens": False})
        got = (resp.choices[0].model_extra or {}).get("prompt_token_ids")
        if got is None:  # a server without return_token_ids: the count is what can be checked
            got = want if resp.usage is not None and resp.usage.prompt_tokens == len(want) else None
            log.warning("%s returns no prompt token ids: the tags were checked by their count only", redact(self.url))
        if list(got or []) != want:
            raise self._mismatch(tags, want, got)
        return "token-ids"

    def _probe_text(self, want: list[int], text: str, refusal: str) -> str:
        """A server refusing token-id prompts (transformers serve): text prompts, if it counts the tags right."""
        resp = self._complete("the start-up probe", 1, prompt=text, max_tokens=1,
                              extra_body={"generation_config": self._generation_config(None, 1.0, 1)})
        count = resp.usage.prompt_tokens if resp.usage is not None else None
        if count != len(want):
            raise self._mismatch([text], want, count)
        served = Path(self.model)  # transformers serve names a local model by its path: compare the tokenizers
        if served.is_dir() and _tokenizer_bytes(served) != _tokenizer_bytes(self.model_dir):
            raise UserError(f"{redact(self.url)} serves {served}, whose tokenizer is not that of {self.model_dir}; "
                            f"serve the trained model directory itself (`transformers serve {self.model_dir}`)")
        log.warning("%s refuses token-id prompts (%s): sending each prompt as its text, checked to re-tokenize "
                    "to the same ids", redact(self.url), refusal)
        return "text"

    def _mismatch(self, tags: Sequence[str], want: list[int], got: object) -> UserError:
        return UserError(f"{redact(self.url)} does not serve this model directory: it tokenizes {''.join(tags)!r} "
                         f"to {got}, this tokenizer to {want}; serve the trained model directory itself "
                         "(`vllm serve models/<method>`), not the base checkpoint")

    # -- generate -------------------------------------------------------------------------------------------
    def generate(self, prompts: Sequence[Sequence[int]], n: int, temperature: float | None, top_p: float = 1.0,
                 max_new_tokens: int = 64, stop_ids: Sequence[int] | None = None,
                 seed: int | None = None) -> list[list[Sample]]:
        check_request(n, temperature)
        base, stops = self.seeds.base(seed), list(stop_ids) if stop_ids is not None else self.stops
        if self.dialect == "text":
            texts = [self._as_text(k, p) for k, p in enumerate(prompts)]
            flat = self._map(lambda j: self._text_sample(prompts[j // n], texts[j // n], temperature, top_p,
                                                         max_new_tokens, stops, self.seeds.request_seed(base, j)),
                             len(prompts) * n)
            return [flat[k * n:(k + 1) * n] for k in range(len(prompts))]
        return self._map(lambda k: self._token_samples(prompts[k], n, temperature, top_p, max_new_tokens, stops,
                                                       self.seeds.request_seed(base, k)), len(prompts))

    def _token_samples(self, prompt: Sequence[int], n: int, temperature: float | None, top_p: float,
                       max_new_tokens: int, stops: list[int], seed: int) -> list[Sample]:
        greedy = temperature is None
        resp = self._complete(
            "a completion", n, prompt=list(prompt), n=n, max_tokens=max_new_tokens, **_seeded(temperature, seed),
            temperature=0.0 if greedy else temperature, top_p=1.0 if greedy else top_p,
            extra_body={"stop_token_ids": stops, "return_token_ids": True, "skip_special_tokens": True,
                        "top_k": -1, "min_p": 0.0, "repetition_penalty": 1.0})
        return [self._sample(c, stops) for c in sorted(resp.choices, key=lambda c: c.index)[:n]]

    def _sample(self, choice: Any, stops: list[int]) -> Sample:
        ids = (choice.model_extra or {}).get("token_ids")
        if ids is None:  # a server without vLLM's return_token_ids: its text, re-encoded here
            ids = self.tokenizer.encode(choice.text or "", add_special_tokens=False)
            ids += stops[:1] if choice.finish_reason == "stop" else []
        return finish(self.tokenizer, ids, stops)

    def _as_text(self, k: int, prompt: Sequence[int]) -> str:
        text = self.tokenizer.decode(list(prompt), skip_special_tokens=False)
        if self.tokenizer(text)["input_ids"] != list(prompt):  # what the server will do with it
            raise UserError(f"prompt {k} does not survive as text ({text[:80]!r} re-tokenizes to other ids), and "
                            f"{redact(self.url)} takes no token-id prompts; serve the model with vLLM or SGLang, "
                            "or use eval.backend: hf")
        return text

    def _generation_config(self, temperature: float | None, top_p: float, max_new_tokens: int,
                           stops: Sequence[int] | None = None) -> str:
        """transformers serve's own request field: the whole GenerationConfig, the checkpoint's replaced."""
        sampling = {"do_sample": False} if temperature is None else {
            "do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
        return json.dumps({**sampling, "max_new_tokens": max_new_tokens, "pad_token_id": self.pad_id,
                           "eos_token_id": list(stops if stops is not None else self.stops)})

    def _text_sample(self, prompt: Sequence[int], text: str, temperature: float | None, top_p: float,
                     max_new_tokens: int, stops: list[int], seed: int) -> Sample:
        resp = self._complete("a completion", 1, prompt=text, max_tokens=max_new_tokens, **_seeded(temperature, seed),
                              extra_body={"generation_config": self._generation_config(temperature, top_p,
                                                                                       max_new_tokens, stops)})
        usage = resp.usage
        if usage is None or usage.prompt_tokens != len(prompt):
            raise self._fail("a completion", f"the server counted {usage and usage.prompt_tokens} prompt tokens, "
                                             f"not {len(prompt)}: it tokenized the prompt differently")
        # Only text comes back (a stop id that is no special token still in it): its ids are re-encoded here and
        # decoded as every backend decodes; the length is the server's count of generated tokens.
        ids = self.tokenizer.encode(resp.choices[0].text or "", add_special_tokens=False)
        done = finish(self.tokenizer, ids, stops)
        return Sample(done.text, usage.completion_tokens or 0, done.token_ids)

    # -- tag log-probabilities -----------------------------------------------------------------------------
    def tag_logprobs(self, prompts: Sequence[Sequence[int]], tag_ids: Sequence[int]) -> np.ndarray:
        if self.dialect == "text":
            raise UserError(f"{redact(self.url)} returns no logprobs (transformers serve cannot); serve the model "
                            "with vLLM for tag log-probabilities, use eval.backend: hf, or skip tag-free "
                            "inference with eval.self_tag: false")
        tags = [int(t) for t in tag_ids]
        rows = self._map(lambda k: self._tag_row(prompts[k], tags), len(prompts))
        if rows and self._logprob_mode == "logprob_token_ids" and np.isinf(np.array(rows)).any():
            self._logprob_mode = "top_logprobs"
            log.warning("%s ignores logprob_token_ids (an older vLLM); tag logprobs from the top-%d instead",
                        redact(self.url), TOP_LOGPROBS)
            rows = self._map(lambda k: self._tag_row(prompts[k], tags), len(prompts))
        out = np.array(rows, dtype=np.float64).reshape(len(prompts), len(tags))
        if np.isinf(out).any():
            log.warning("%d of %d tag logprobs were outside the server's top-%d: set to -inf", int(np.isinf(out).sum()),
                        out.size, TOP_LOGPROBS)
        return out

    def _tag_row(self, prompt: Sequence[int], tags: list[int]) -> list[float]:
        exact = self._logprob_mode == "logprob_token_ids"
        extra: dict[str, Any] = {"return_tokens_as_token_ids": True, "top_k": -1}
        if exact:
            extra["logprob_token_ids"] = tags
        resp = self._complete("a tag logprob request", 1, prompt=list(prompt), max_tokens=1, temperature=0.0,
                              logprobs=1 if exact else TOP_LOGPROBS, extra_body=extra)
        logprobs = resp.choices[0].logprobs
        top = (logprobs.top_logprobs or [None])[0] if logprobs is not None else None
        if not top:
            raise self._fail("a tag logprob request", "the server returned no logprobs")
        by_id = {int(m.group(1)): float(v) for key, v in top.items() if (m := TOKEN_ID.match(key))}
        return [by_id.get(t, -np.inf) for t in tags]
