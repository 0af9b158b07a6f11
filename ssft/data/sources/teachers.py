"""Trace generation from teacher models, for ``data.source: generate``.

The ``traces`` stage (``ssft traces``, run by ``dvc repro`` or the Prefect flow) calls :func:`generate` with the
questions and ``data.teachers``; every teacher answers every question ``n`` times. Two backends:

- ``hf``: a local checkpoint run with transformers: batched, left-padded, sampled at the teacher's
  temperature/top_p/max_tokens, ``n`` samples per question through ``num_return_sequences``, stopping at
  every eos id of the checkpoint's ``generation_config``; torch is seeded from ``seed``.
- ``openai``: the chat-completions protocol, spoken to any compatible server (vLLM, SGLang, a hosted API) by
  the official ``openai`` client with its own retries and exponential back-off; ``concurrency`` requests in
  flight; one request per question asks ``n=<missing samples>`` choices (one request per sample when the
  server returns fewer). The API key is read from the environment variable NAMED by ``api_key_env`` and is
  never logged, cached or returned.

Every finished trace is appended to a JSONL cache the moment it arrives (one line, written and fsynced): one
file per teacher, named by a short hash of the settings that change outputs; each line carries a hash of the
prompt it answered, so a question rewritten under the same id is asked again, not answered from the cache.
A run killed at any point, even with SIGKILL, restarts without repeating or losing a finished trace: the cache
is read back, a truncated last line is cut off, and only the missing (question, sample) pairs are requested, so
``n`` may also grow between runs. Progress goes to the ``ssft.data.sources.teachers`` logger every
``progress_every_s`` and at the end, with how long the oldest request in flight has waited. Every server failure
(HTTP error, malformed JSON, no choices, timeout, refused connection) is one UserError line naming the teacher,
the question, the URL (credentials redacted), the server's own reason and the fix.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ssft.errors import UserError
from ssft.generation.openai import _reason, redact

if TYPE_CHECKING:  # config reads BACKENDS from here, so this module must not import config when it runs
    from ssft.config import TeacherConfig

log = logging.getLogger(__name__)

# The settings that change what a teacher writes: a change starts a new cache file. n, concurrency, timeouts,
# retries and batch size only change how many traces are asked for or how fast they come.
BACKENDS = ("hf", "openai")  # hf: a local checkpoint (transformers); openai: an OpenAI-compatible chat server
OUTPUT_SETTINGS = ("backend", "model", "base_url", "temperature", "top_p", "max_tokens")
Work = list[tuple[dict, list[int]]]                       # (question, sample indices still missing)
Sink = Callable[[str, list[int], list[str], list[int]], None]  # (question_id, samples, traces, token counts)


# -- inputs -----------------------------------------------------------------------------------------------
def _check_questions(questions: Sequence[dict]) -> None:
    seen: set[str] = set()
    for k, q in enumerate(questions):
        missing = [f for f in ("question_id", "question", "answer") if f not in q]
        if missing:
            raise UserError(f"questions[{k}]: missing field(s) {missing}; every question needs question_id, "
                             "question and answer")
        qid = str(q["question_id"])
        if qid in seen:
            raise UserError(f"questions[{k}]: question_id {qid!r} appears twice; give every question its own id "
                             "(the cache is keyed by it)")
        seen.add(qid)


def api_key(teacher: TeacherConfig, where: str = "teacher") -> str:
    """The key for an ``openai`` teacher: the value of the variable NAMED by ``api_key_env`` ("EMPTY" when
    None, what vLLM and SGLang accept). The error names the variable, never a value."""
    name = teacher.api_key_env
    if name is None:
        return "EMPTY"
    value = os.environ.get(name)
    if not value:
        raise UserError(f"{where}.api_key_env: environment variable {name} is not set (or empty); export "
                         f"{name}=<key>, or set api_key_env: null for a server that needs no key")
    return value


# -- the cache --------------------------------------------------------------------------------------------
def messages(question: str) -> list[dict[str, str]]:
    """The chat messages a teacher is sent for ``question`` (openai as they are; hf through its template)."""
    return [{"role": "user", "content": question}]


def prompt_hash(question: str) -> str:
    """Short hash of the prompt actually sent: what a cached trace answered."""
    return hashlib.sha256(json.dumps(messages(question), sort_keys=True).encode()).hexdigest()[:16]


def settings_hash(teacher: TeacherConfig) -> str:
    """Short hash of :data:`OUTPUT_SETTINGS`: traces cached under other settings are never reused."""
    settings = {k: getattr(teacher, k) for k in OUTPUT_SETTINGS}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]


def cache_path(cache_dir: Path, teacher: TeacherConfig) -> Path:
    """``<cache_dir>/<teacher name>-<settings hash>.jsonl`` (the name made safe for a file name)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", teacher.name) or "teacher"
    return Path(cache_dir) / f"{safe}-{settings_hash(teacher)}.jsonl"


def read_cache(path: Path, prompts: dict[str, str] | None = None) -> dict[tuple[str, int], str]:
    """Finished traces by (question_id, sample). A last line without its newline is what a kill mid-write
    leaves: it is cut off the file (so appends start on a clean line) and its trace is generated again.
    ``prompts`` (question_id -> :func:`prompt_hash`): a line that answered another prompt, or no recorded one, is
    not used (the question was rewritten under its id, or the line predates prompt hashes)."""
    if not path.exists():
        return {}
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        log.warning("%s: cut off a truncated last line (%d bytes) left by an interrupted run; that trace is "
                    "generated again", path, len(data) - end)
        with open(path, "r+b") as f:
            f.truncate(end)
            os.fsync(f.fileno())
    done: dict[tuple[str, int], str] = {}
    stale = 0
    for lineno, line in enumerate(data[:end].splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            key, trace = (str(rec["question_id"]), int(rec["sample"])), rec["trace"]
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"{path}:{lineno}: not a cache line ({type(e).__name__}: {e}); delete that line, or "
                             "the file to generate this teacher's traces again") from None
        if prompts is not None and rec.get("prompt") != prompts.get(key[0]):
            stale += 1
            continue
        done.setdefault(key, trace)  # the first finished copy wins, as the rows returned before did
    if stale:
        log.warning("%s: %d cached trace(s) answered another prompt than their question's now (rewritten under "
                    "the same id?); they are generated again", path, stale)
    return done


class CacheWriter:
    """Appends finished traces to the cache: one line per trace, one ``os.write`` per line (a kill leaves at
    most one partial line, at the end) and an fsync per arriving batch. Thread-safe: it is the backends' sink."""

    def __init__(self, path: Path, done: dict[tuple[str, int], str], progress: Progress,
                 prompts: dict[str, str]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.done, self.progress, self.prompts, self.lock = done, progress, prompts, threading.Lock()

    def __call__(self, question_id: str, samples: list[int], texts: list[str], tokens: list[int]) -> None:
        with self.lock:
            for s, text, n_tok in zip(samples, texts, tokens, strict=True):
                line = json.dumps({"question_id": question_id, "sample": s, "trace": text, "tokens": n_tok,
                                   "prompt": self.prompts[question_id]}, ensure_ascii=False) + "\n"
                _write_all(self.fd, line.encode())
                self.done[(question_id, s)] = text
            os.fsync(self.fd)
            self.progress.add(len(samples), sum(tokens), sum(1 for t in texts if not t))

    def close(self) -> None:
        os.close(self.fd)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


# -- progress ---------------------------------------------------------------------------------------------
class Progress:
    """One log line per ``every_s`` (from a timer thread, so a long batch still reports) and one at the end:
    done/total traces, traces/s and generated tokens/s of this run, ETA."""

    def __init__(self, name: str, total: int, cached: int, every_s: float) -> None:
        self.name, self.total, self.cached, self.every_s = name, total, cached, every_s
        self.new = self.tokens = self.empty = 0
        self.start = time.monotonic()
        self.inflight: dict[int, tuple[str, float]] = {}  # request -> (question id, when it was sent)
        self.lock, self.stop = threading.Lock(), threading.Event()
        self.thread = threading.Thread(target=self._tick, name=f"progress-{name}", daemon=True)

    def __enter__(self) -> Progress:
        if self.every_s > 0:
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()
        log.info("%s%s", "finished " if exc[0] is None else "stopped ", self.line())

    def add(self, traces: int, tokens: int, empty: int) -> None:
        with self.lock:
            self.new, self.tokens, self.empty = self.new + traces, self.tokens + tokens, self.empty + empty

    @contextmanager
    def waiting(self, qid: str) -> Iterator[None]:
        """A request in flight: the progress line says how long the oldest has waited (a stuck server shows)."""
        key = threading.get_ident()  # a request thread has one request in flight at a time
        with self.lock:
            self.inflight[key] = (qid, time.monotonic())
        try:
            yield
        finally:
            with self.lock:
                del self.inflight[key]

    def line(self) -> str:
        with self.lock:
            new, tokens, empty = self.new, self.tokens, self.empty
            oldest = min(self.inflight.values(), key=lambda v: v[1], default=None)
            inflight = len(self.inflight)
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate, left = new / elapsed, self.total - self.cached - new
        eta = "0:00:00" if left <= 0 else "?" if rate == 0 else _clock(left / rate)
        wait = (f"; {inflight} request(s) in flight, question {oldest[0]!r} waiting "
                f"{time.monotonic() - oldest[1]:.0f} s" if oldest else "")
        return (f"teacher {self.name}: {self.cached + new}/{self.total} traces ({self.cached} cached, {empty} empty), "
                f"{rate:.2f} traces/s, {tokens / elapsed:.1f} tokens/s, {elapsed:.1f} s, ETA {eta}{wait}")

    def _tick(self) -> None:
        while not self.stop.wait(self.every_s):
            log.info("%s", self.line())


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


# -- backend: an OpenAI-compatible server -----------------------------------------------------------------
def _retried(error: Exception, max_retries: int) -> bool:
    """Whether the client retried ``error`` (it retries refused connections, timeouts, 408/409/429 and 5xx)."""
    import openai

    if isinstance(error, openai.APIStatusError):
        return max_retries > 0 and (error.status_code in (408, 409, 429) or error.status_code >= 500)
    return max_retries > 0 and isinstance(error, openai.APIConnectionError)


def _failure(teacher: TeacherConfig, qid: str, reason: str) -> UserError:
    """One line: the teacher, the question, the server (credentials redacted), its own reason, the fix."""
    return UserError(f"teacher {teacher.name}: question {qid!r}: {redact(teacher.base_url or '')} failed: {reason}; "
                     f"check that the server at its base_url is up and serves model {teacher.model!r}")


def _run_openai(teacher: TeacherConfig, key: str, work: Work, sink: Sink, progress: Progress) -> None:
    import openai

    client = openai.OpenAI(base_url=teacher.base_url, api_key=key, timeout=teacher.timeout_s,
                           max_retries=teacher.max_retries)
    one_per_request = threading.Event()  # set once the server has returned fewer choices than asked

    def request(qid: str, ask: int, question: str) -> tuple[list, int]:
        """Up to ``ask`` choices, by index, and the completion tokens the server counted (0: it sends no usage)."""
        try:
            with progress.waiting(qid):
                resp = client.chat.completions.create(
                    model=teacher.model, messages=messages(question), n=ask,  # type: ignore[arg-type]
                    temperature=teacher.temperature, top_p=teacher.top_p, max_tokens=teacher.max_tokens)
        except (openai.OpenAIError, ValueError) as e:  # the client has already retried what it retries
            after = f" after {teacher.max_retries} retries" if _retried(e, teacher.max_retries) else ""
            raise _failure(teacher, qid, _reason(e) + after) from None
        choices = getattr(resp, "choices", None)
        if not isinstance(choices, list) or not choices:
            raise _failure(teacher, qid, f"the server returned no choices ({str(resp)[:200]!r})")
        usage = getattr(resp, "usage", None)
        return sorted(choices, key=lambda c: c.index or 0)[:ask], (getattr(usage, "completion_tokens", 0) or 0)

    def answer(question: dict, samples: list[int]) -> None:
        qid, left = str(question["question_id"]), list(samples)
        while left:
            ask = 1 if one_per_request.is_set() else len(left)
            choices, done = request(qid, ask, question["question"])
            if len(choices) < ask and not one_per_request.is_set():
                one_per_request.set()
                log.warning("teacher %s: the server returned %d of %d choices; asking one sample per request from "
                            "now on", teacher.name, len(choices), ask)
            tokens = [done // len(choices) + (k < done % len(choices)) for k in range(len(choices))]
            sink(qid, left[:len(choices)], [getattr(c.message, "content", None) or "" for c in choices], tokens)
            left = left[len(choices):]

    pool = ThreadPoolExecutor(max_workers=teacher.concurrency, thread_name_prefix=f"teacher-{teacher.name}")
    try:
        futures = [pool.submit(answer, q, samples) for q, samples in work]
        finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for f in futures:  # in question order, so the error names the first failed question
            if f in finished and f.exception() is not None:
                f.result()  # a failure (or Ctrl-C) ends the teacher ...
    finally:
        # ... queued questions never start; requests in flight finish and their traces are cached.
        pool.shutdown(wait=True, cancel_futures=True)


# -- backend: a local checkpoint with transformers --------------------------------------------------------
def load_hf(path: str) -> tuple[Any, Any, list[int]]:
    """(model, tokenizer, stop ids) of a local checkpoint. ``tokenizer.json`` is read with
    PreTrainedTokenizerFast: AutoTokenizer rebuilds e.g. a qwen2 checkpoint's pre-tokenizer, changing ids."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

    from ssft.generation.hf import stop_ids

    if not Path(path, "config.json").exists():
        raise UserError(f"teacher model {path!r}: not a local checkpoint directory (no config.json); set an hf "
                         "teacher's model to a directory written by save_pretrained")
    if Path(path, "tokenizer.json").exists():
        tok = PreTrainedTokenizerFast.from_pretrained(path, local_files_only=True)
    else:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    cuda = torch.cuda.is_available()
    # GPU: the checkpoint's own dtype; CPU: float32, as bf16 matmuls are slow there.
    dtype = {} if cuda else {"dtype": torch.float32}
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, **dtype)
    # Transformers' @wraps(Module.to) hides self from mypy
    model.to("cuda" if cuda else "cpu").eval()  # type: ignore[arg-type]
    return model, tok, stop_ids(model, tok)


def _hf_prompt(tok: Any, question: str) -> list[int]:
    if tok.chat_template:
        text = tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                       tokenize=False)
        return tok(text, add_special_tokens=False)["input_ids"]  # the template already holds any bos text
    return tok(question)["input_ids"]


def _run_hf(teacher: TeacherConfig, work: Work, sink: Sink, seed: int) -> None:
    """``batch_size`` questions per ``generate`` call (ssft.generation's hf sampler), each sampled ``n`` times at the
    teacher's settings (temperature 0: once, greedy, copied ``n`` times); torch is seeded once, from ``seed``."""
    from ssft.generation.hf import HfSampler

    model, tok, stops = load_hf(teacher.model)
    if not tok.chat_template:
        log.info("teacher %s: %s has no chat template; prompting with the plain question text", teacher.name,
                 teacher.model)
    greedy = teacher.temperature == 0  # n greedy samples are n copies of one
    first = True
    # num_return_sequences is one number per generate() call: batch questions missing the same count.
    by_missing: dict[int, Work] = defaultdict(list)
    for question, samples in work:
        by_missing[len(samples)].append((question, samples))
    for n, items in sorted(by_missing.items()):
        per_prompt = 1 if greedy else n
        sampler = HfSampler(model, tok, batch_size=teacher.batch_size * per_prompt)
        for start in range(0, len(items), teacher.batch_size):
            chunk = items[start:start + teacher.batch_size]
            outs = sampler.generate([_hf_prompt(tok, q["question"]) for q, _ in chunk], per_prompt,
                                    None if greedy else teacher.temperature, teacher.top_p, teacher.max_tokens,
                                    stops, seed=seed if first else None)
            first = False
            for (question, samples), out in zip(chunk, outs, strict=True):
                out = out * n if greedy else out
                sink(str(question["question_id"]), samples, [o.text for o in out], [o.length for o in out])


# -- the stage's entry point ------------------------------------------------------------------------------
def _run_teacher(teacher: TeacherConfig, key: str | None, questions: Sequence[dict], cache_dir: Path, seed: int,
                 progress_every_s: float) -> dict[tuple[str, int], str]:
    path = cache_path(cache_dir, teacher)
    prompts = {str(q["question_id"]): prompt_hash(q["question"]) for q in questions}
    done = read_cache(path, prompts)
    work = [(q, missing) for q in questions
            if (missing := [s for s in range(teacher.n) if (str(q["question_id"]), s) not in done])]
    total = len(questions) * teacher.n
    todo = sum(len(s) for _, s in work)
    log.info("teacher %s (%s %s): %d/%d traces cached in %s, %d to generate", teacher.name, teacher.backend,
             teacher.model, total - todo, total, path, todo)
    if not work:
        return done
    with Progress(teacher.name, total, total - todo, progress_every_s) as progress:
        sink = CacheWriter(path, done, progress, prompts)
        try:
            if teacher.backend == "hf":
                _run_hf(teacher, work, sink, seed)
            else:
                _run_openai(teacher, key or "EMPTY", work, sink, progress)
        finally:
            sink.close()
    return done


def generate(questions: Sequence[dict], teachers: Sequence[TeacherConfig], cache_dir: Path, seed: int,
             progress_every_s: float = 10.0) -> list[dict]:
    """questions: dicts with question_id, question, answer. Returns one row per finished (question, teacher,
    sample): {"question_id", "question", "answer", "trace", "source": teacher.name, "mode": None}, in
    (question, teacher, sample) order. Empty traces are kept (the traces stage drops and counts them).

    Teachers run one after another; finished traces are read from and appended to ``cache_dir``, so calling
    it again after a kill generates only what is missing. Raises ValueError for bad input (before any work)."""
    _check_questions(questions)
    # Every key is looked up first, so a missing variable fails the run before any generation.
    keys = {t.name: api_key(t, f"data.teachers[{k}]") for k, t in enumerate(teachers) if t.backend == "openai"}
    done = {t.name: _run_teacher(t, keys.get(t.name), questions, Path(cache_dir), seed, progress_every_s)
            for t in teachers}
    return [{"question_id": q["question_id"], "question": q["question"], "answer": q["answer"],
             "trace": done[t.name][(str(q["question_id"]), s)], "source": t.name, "mode": None}
            for q in questions for t in teachers for s in range(t.n)
            if (str(q["question_id"]), s) in done[t.name]]
