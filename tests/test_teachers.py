"""Teacher trace generation against real backends: an OpenAI-compatible HTTP server started here that generates
with transformers on a tiny chat checkpoint, and the ``hf`` backend on that checkpoint. Covers the cache
(resume after SIGKILL, a truncated last line, a growing ``n``), the fallback when a server returns fewer choices
than asked, and that the API key reaches the server but nothing else."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from conftest import bpe_tokenizer, chat_checkpoint, qwen2_checkpoint
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from ssft.config import TeacherConfig
from ssft.data.sources import teachers
from ssft.errors import UserError

CORPUS = [f"What is {a} + {b}? First add {a} and {b}, the answer is {a + b}." for a in range(12) for b in range(12)]
QUESTIONS = [{"question_id": f"q{k}", "question": f"What is {k} + {k + 1}?", "answer": str(2 * k + 1)}
             for k in range(8)]
SECRET = "sk-test-4f1d9c2a7be3"  # reaches the server as a bearer token, and must be nowhere else


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return chat_checkpoint(tmp_path_factory.mktemp("teacher") / "ckpt", CORPUS)


def reply(handler: BaseHTTPRequestHandler, status: int, data: bytes) -> None:
    """Send ``data`` as a JSON response."""
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


class ChatServer:
    """A real OpenAI-compatible chat-completions server (``POST /v1/chat/completions``) over a local checkpoint:
    each request is generated with transformers at its own n/temperature/top_p/max_tokens. It records every
    request (model, question, n, Authorization and OpenAI-Organization headers) the moment it arrives;
    ``delay_s`` makes each request slow (outside the model lock, so requests overlap); a model named in
    ``max_choices`` returns at most that many choices."""

    def __init__(self, ckpt: Path, delay_s: float = 0.0, max_choices: dict[str, int] | None = None) -> None:
        self.tok = PreTrainedTokenizerFast.from_pretrained(ckpt)
        self.model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32).eval()
        self.stops = list(self.model.generation_config.eos_token_id)
        self.delay_s, self.max_choices = delay_s, max_choices or {}
        self.requests: list[dict] = []
        self.lock, self.record_lock = threading.Lock(), threading.Lock()  # the model; the request list
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                if self.path != "/v1/chat/completions":
                    self.send_error(404)
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.record_lock:
                    server.requests.append({"model": body["model"], "question": body["messages"][-1]["content"],
                                            "n": body.get("n", 1), "auth": self.headers.get("Authorization"),
                                            "run": self.headers.get("OpenAI-Organization")})
                time.sleep(server.delay_s)
                reply(self, 200, json.dumps(server.complete(body)).encode())

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def complete(self, body: dict) -> dict:
        n = min(body.get("n", 1), self.max_choices.get(body["model"], 1 << 30))
        text = self.tok.apply_chat_template(body["messages"], add_generation_prompt=True, tokenize=False)
        ids = self.tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with self.lock, torch.no_grad():
            out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                                      temperature=body.get("temperature", 1.0), top_p=body.get("top_p", 1.0), top_k=0,
                                      max_new_tokens=body.get("max_tokens", 16), num_return_sequences=n,
                                      eos_token_id=self.stops, pad_token_id=self.tok.pad_token_id)
        choices, used = [], 0
        for k, row in enumerate(out[:, ids.shape[1]:].tolist()):
            end = next((j for j, i in enumerate(row) if i in self.stops), len(row))
            used += min(end + 1, len(row))
            choices.append({"index": k, "message": {"role": "assistant", "content": self.tok.decode(row[:end])},
                            "finish_reason": "stop" if end < len(row) else "length"})
        return {"id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion", "created": int(time.time()),
                "model": body["model"], "choices": choices,
                "usage": {"prompt_tokens": ids.shape[1] * n, "completion_tokens": used,
                          "total_tokens": ids.shape[1] * n + used}}

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(checkpoint: Path) -> Iterator[ChatServer]:
    s = ChatServer(checkpoint, max_choices={"tiny-one-choice": 1})
    yield s
    s.close()


def teacher(url: str, **kw: object) -> TeacherConfig:
    base = {"name": "alpha", "backend": "openai", "model": "tiny", "base_url": url, "n": 2, "temperature": 1.0,
            "max_tokens": 12, "concurrency": 2, "timeout_s": 30.0, "max_retries": 0}
    return TeacherConfig(**{**base, **kw})


def cache_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def per_pair(rows: list[dict]) -> dict[tuple[str, str], list[str]]:
    """Traces per (question_id, source), in row order."""
    out: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        out.setdefault((r["question_id"], r["source"]), []).append(r["trace"])
    return out


# -- 1. the openai backend: rows, sources, the fallback, a growing n, the key --------------------------------
def test_openai_rows_key_and_growing_n(server: ChatServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # every library's debug lines too (openai, httpx): none may hold the key
    monkeypatch.setenv("SSFT_TEST_KEY", SECRET)
    qs = QUESTIONS[:3]
    alpha = teacher(server.url, n=3, api_key_env="SSFT_TEST_KEY")
    beta = teacher(server.url, name="beta", model="tiny-one-choice", n=2, api_key_env=None)
    rows = teachers.generate(qs, [alpha, beta], tmp_path / "cache", seed=0, progress_every_s=0.01)

    assert [(r["question_id"], r["source"]) for r in rows] == [
        (q["question_id"], t.name) for q in qs for t in (alpha, beta) for _ in range(t.n)]
    assert all(r["mode"] is None and r["answer"] == q["answer"] and r["question"] == q["question"]
               for q in qs for r in rows if r["question_id"] == q["question_id"])
    assert any(r["trace"] for r in rows)
    # alpha: one request per question for all 3 samples, with the key from the variable it names
    alpha_reqs = [r for r in server.requests if r["model"] == "tiny"]
    assert sorted((r["question"], r["n"]) for r in alpha_reqs) == sorted((q["question"], 3) for q in qs)
    assert {r["auth"] for r in alpha_reqs} == {f"Bearer {SECRET}"}
    # beta's server returns one choice whatever n asks: exactly 2 one-choice requests per question (the first
    # asked n=2, later ones n=1 once the teacher has seen the server cap it), key "EMPTY" for api_key_env null
    beta_reqs = [r for r in server.requests if r["model"] == "tiny-one-choice"]
    assert Counter(r["question"] for r in beta_reqs) == {q["question"]: 2 for q in qs}
    assert max(r["n"] for r in beta_reqs) == 2 and {r["auth"] for r in beta_reqs} == {"Bearer EMPTY"}
    # progress lines, per teacher: done/total, rates, ETA
    lines = [r.getMessage() for r in caplog.records if r.name == "ssft.data.sources.teachers"]
    assert any(m.startswith("finished teacher alpha: 9/9 traces") and "traces/s" in m and "tokens/s" in m
               and "ETA" in m for m in lines), lines
    assert any(m.startswith("finished teacher beta: 6/6 traces") for m in lines)

    # n grows 3 -> 4: the same cache file (n is not in its name), only the 4th sample is requested
    server.requests.clear()
    more = teachers.generate(qs, [dataclasses.replace(alpha, n=4, concurrency=3), beta], tmp_path / "cache", seed=0)
    assert sorted((r["question"], r["n"]) for r in server.requests) == sorted((q["question"], 1) for q in qs)
    assert len(more) == 3 * (4 + 2)
    assert [(r["question_id"], r["source"]) for r in more] == [
        (q["question_id"], name) for q in qs for name, n in (("alpha", 4), ("beta", 2)) for _ in range(n)]
    assert all(per_pair(more)[k][:len(v)] == v for k, v in per_pair(rows).items())  # cached samples come back as is

    # the key is in no log line, no cache file and no row
    files = list((tmp_path / "cache").iterdir())
    assert len(files) == 2 and all(SECRET not in f.read_text() for f in files)
    assert SECRET not in caplog.text and SECRET not in json.dumps(more)


def test_cache_name_hashes_only_output_settings() -> None:
    t = teacher("http://h/v1")
    same = [dataclasses.replace(t, **kw) for kw in ({"n": 9}, {"concurrency": 1}, {"timeout_s": 1.0},
                                                    {"max_retries": 9}, {"batch_size": 1}, {"api_key_env": "K"})]
    other = [dataclasses.replace(t, **kw) for kw in ({"model": "m2"}, {"base_url": "http://g/v1"},
                                                     {"temperature": 0.5}, {"top_p": 0.9}, {"max_tokens": 7})]
    assert {teachers.cache_path(Path("c"), x) for x in same} == {teachers.cache_path(Path("c"), t)}
    assert len({teachers.cache_path(Path("c"), x) for x in [t, *other]}) == 1 + len(other)
    assert teachers.cache_path(Path("c"), dataclasses.replace(t, name="a/b c")).name.startswith("a_b_c-")


# -- 2. SIGKILL mid-run, then resume: nothing repeated, nothing lost ---------------------------------------
DRIVER = """
import json, logging, sys
from pathlib import Path
from ssft.config import TeacherConfig
from ssft.data.sources.teachers import generate
logging.basicConfig(level=logging.INFO)
a = json.loads(Path(sys.argv[1]).read_text())
rows = generate(a["questions"], [TeacherConfig(**a["teacher"])], Path(a["cache"]), a["seed"], 0.2)
Path(a["out"]).write_text(json.dumps(rows))
"""


def test_sigkill_then_resume(server: ChatServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             caplog: pytest.LogCaptureFixture) -> None:
    # The openai client sends $OPENAI_ORG_ID as the OpenAI-Organization header: it labels each request with its
    # run, so a request of the killed run that the server records late is never counted as the second run's.
    monkeypatch.setenv("OPENAI_ORG_ID", "run2")
    server.delay_s = 0.4  # slow enough to kill mid-run: 8 questions, 2 in flight -> ~1.6 s of requests
    t = teacher(server.url, n=2, concurrency=2)
    cache = teachers.cache_path(tmp_path / "cache", t)
    (tmp_path / "args.json").write_text(json.dumps({
        "questions": QUESTIONS, "teacher": dataclasses.asdict(t), "cache": str(tmp_path / "cache"), "seed": 0,
        "out": str(tmp_path / "rows.json")}))
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(tmp_path / "args.json")], stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "OPENAI_ORG_ID": "run1"})
    deadline = time.monotonic() + 120
    while not (cache.exists() and cache.read_bytes().count(b"\n") >= 1):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "no trace was cached within 120 s"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    total = len(QUESTIONS) * t.n
    at_kill = [json.loads(line) for line in cache.read_bytes().split(b"\n") if line.strip()]
    assert 0 < len(at_kill) < total

    # a kill mid-write leaves half a line: keep all but the last line, then half of it
    lines = cache.read_bytes().splitlines(keepends=True)
    cache.write_bytes(b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    kept = Counter(json.loads(line)["question_id"] for line in lines[:-1])

    rows = teachers.generate(QUESTIONS, [t], tmp_path / "cache", seed=0)
    run1 = [r for r in server.requests if r["run"] == "run1"]
    run2 = [r for r in server.requests if r["run"] == "run2"]
    assert len(run1) + len(run2) == len(server.requests)
    in_flight = sum(r["n"] for r in run1) - len(at_kill)
    assert 0 <= in_flight <= t.concurrency * t.n  # the killed run lost only what was in flight
    # requested in all == needed + lost in flight + the one trace whose cache line was cut in half
    assert sum(r["n"] for r in run1 + run2) == total + in_flight + 1
    # the second run asked exactly for what the cache lacked: one request per unfinished question
    assert sorted((r["question"], r["n"]) for r in run2) == sorted(
        (q["question"], t.n - kept[q["question_id"]]) for q in QUESTIONS if kept[q["question_id"]] < t.n)
    assert "cut off a truncated last line" in caplog.text
    final = cache_lines(cache)  # every line parses: the half line is gone
    keys = [(x["question_id"], x["sample"]) for x in final]
    assert len(keys) == len(set(keys)) == total
    assert [(r["question_id"], r["trace"]) for r in rows] == [
        (q["question_id"], x["trace"]) for q in QUESTIONS for s in range(t.n)
        for x in final if (x["question_id"], x["sample"]) == (q["question_id"], s)]


# -- 3. the hf backend on the tiny checkpoint --------------------------------------------------------------
def test_hf_backend_samples_decodes_and_reproduces(checkpoint: Path, tmp_path: Path) -> None:
    t = TeacherConfig(name="local", backend="hf", model=str(checkpoint), n=2, temperature=1.0, max_tokens=12,
                      batch_size=2)
    qs = QUESTIONS[:2]
    rows = teachers.generate(qs, [t], tmp_path / "c1", seed=3)
    assert [(r["question_id"], r["source"]) for r in rows] == [("q0", "local")] * 2 + [("q1", "local")] * 2
    specials = ("<|im_end|>", "<|endoftext|>", "<|im_start|>")
    assert all(not any(s in r["trace"] for s in specials) for r in rows)
    assert any(r["trace"] for r in rows)
    assert all(x["tokens"] <= 12 for x in cache_lines(teachers.cache_path(tmp_path / "c1", t)))
    again = teachers.generate(qs, [t], tmp_path / "c2", seed=3)
    other = teachers.generate(qs, [t], tmp_path / "c3", seed=4)
    assert [r["trace"] for r in again] == [r["trace"] for r in rows]
    assert [r["trace"] for r in other] != [r["trace"] for r in rows]
    model, tok, stops = teachers.load_hf(str(checkpoint))
    assert stops == [tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")]


def test_hf_prompts_and_left_padding(checkpoint: Path, tmp_path: Path) -> None:
    """The chat template with a generation prompt, else the plain question; greedy samples of a padded batch
    equal those generated one question at a time (left padding, masked)."""
    _, tok, _ = teachers.load_hf(str(checkpoint))
    chatml = "<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n"
    assert teachers._hf_prompt(tok, "Hi?") == tok(chatml, add_special_tokens=False)["input_ids"]
    plain = bpe_tokenizer(CORPUS, chat=False)
    assert teachers._hf_prompt(plain, "What is 1 + 2?") == plain("What is 1 + 2?")["input_ids"]
    # A loud pad embedding: were the padding attended to, greedy outputs of the padded batch would change.
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    with torch.no_grad():
        model.get_input_embeddings().weight[tok.pad_token_id] = 50.0
    model.save_pretrained(tmp_path / "ck")
    tok.save_pretrained(tmp_path / "ck")
    qs = [{"question_id": "short", "question": "1 + 2?", "answer": "3"},
          {"question_id": "long", "question": "What is 10 + 11? Add the tens, then the ones.", "answer": "21"}]
    for ck in (checkpoint, tmp_path / "ck"):  # the plain one catches right padding, the loud one a missing mask
        greedy = TeacherConfig(name="g", backend="hf", model=str(ck), n=2, temperature=0.0, max_tokens=10)
        batched = teachers.generate(qs, [dataclasses.replace(greedy, batch_size=2)], tmp_path / "b", seed=0)
        alone = teachers.generate(qs, [dataclasses.replace(greedy, batch_size=1)], tmp_path / "a", seed=1)
        assert [r["trace"] for r in batched] == [r["trace"] for r in alone], ck
        assert batched[0]["trace"] == batched[1]["trace"] != batched[2]["trace"] == batched[3]["trace"]


def test_hf_stops_at_every_generation_config_eos(tmp_path: Path) -> None:
    """With every token an eos id of the generation_config, each sample ends at its first token: an empty
    trace of one generated token, kept as a row."""
    tok = bpe_tokenizer(CORPUS)
    qwen2_checkpoint(tmp_path / "ck", tok, eos_ids=list(range(len(tok))))
    t = TeacherConfig(name="stopper", backend="hf", model=str(tmp_path / "ck"), n=2, temperature=1.0, max_tokens=8)
    rows = teachers.generate(QUESTIONS[:2], [t], tmp_path / "c", seed=0)
    assert [r["trace"] for r in rows] == [""] * 4
    assert [x["tokens"] for x in cache_lines(teachers.cache_path(tmp_path / "c", t))] == [1] * 4


# -- 4. bad input fails before any work, naming the field and the fix -------------------------------------
def test_unset_key_variable_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOME_UNSET_VAR", raising=False)
    bad = teacher("http://127.0.0.1:9/v1", api_key_env="SOME_UNSET_VAR")
    with pytest.raises(ValueError, match=r"data.teachers\[0\].api_key_env: environment variable SOME_UNSET_VAR "
                                         r"is not set \(or empty\); export SOME_UNSET_VAR=<key>"):
        teachers.generate(QUESTIONS[:1], [bad], tmp_path / "cache", seed=0)
    assert not (tmp_path / "cache").exists()


def test_truncated_line_elsewhere_is_an_error_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"question_id": "q0", "sample": 0, "trace": "a"}\n{"question_id": "q0", "sa\n')
    with pytest.raises(ValueError, match=r"t.jsonl:2: not a cache line .* delete that line"):
        teachers.read_cache(path)


class FaultChat:
    """A chat-completions server that fails as told: ``fault`` is the HTTP status and body to send (FastAPI's
    ``{"detail": ...}``), "badjson", "empty" / "null" choices, or "slow" (answers after ``slow_s``)."""

    def __init__(self) -> None:
        self.fault: object = None
        self.slow_s, self.hits = 0.0, 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                self.rfile.read(int(self.headers["Content-Length"]))
                server.hits += 1
                status, body = 200, {"id": "x", "object": "chat.completion", "created": 0, "model": "tiny",
                                     "choices": [{"index": 0, "message": {"role": "assistant", "content": "#3"},
                                                  "finish_reason": "stop"}]}
                if isinstance(server.fault, tuple):
                    status, body = server.fault
                elif server.fault in ("empty", "null"):
                    body["choices"] = [] if server.fault == "empty" else None
                elif server.fault == "slow":
                    time.sleep(server.slow_s)
                reply(self, status, b'{"choices": [' if server.fault == "badjson" else json.dumps(body).encode())

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.port = self.httpd.server_address[1]


@pytest.fixture(scope="module")
def fault_chat() -> Iterator[FaultChat]:
    s = FaultChat()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


@pytest.mark.parametrize("fault, retries, reason", [
    ((500, {"detail": "model not loaded"}), 1, r"HTTP 500: model not loaded after 1 retries"),
    ((404, {"detail": "Not Found"}), 1, r"HTTP 404: Not Found"),  # not retried: no "after"
    ("badjson", 0, r"malformed response \(JSONDecodeError"),
    ("empty", 0, r"the server returned no choices"),
    ("null", 0, r"the server returned no choices"),
    ("slow", 1, r"no answer before the timeout after 1 retries"),
    ("refused", 0, r"cannot connect \(.*refused"),
])
def test_every_server_failure_is_one_line_naming_teacher_url_reason_and_fix(
        fault_chat: FaultChat, tmp_path: Path, fault: object, retries: int, reason: str) -> None:
    fault_chat.fault, fault_chat.slow_s, fault_chat.hits = fault, 1.0, 0
    port = 9 if fault == "refused" else fault_chat.port  # port 9: nothing listens
    t = teacher(f"http://me:{SECRET}@127.0.0.1:{port}/v1?key={SECRET}", n=1, concurrency=1, max_retries=retries,
                timeout_s=0.3)
    with pytest.raises(UserError) as err:
        teachers.generate(QUESTIONS[:1], [t], tmp_path / "cache", seed=0, progress_every_s=0)
    line = str(err.value)
    assert "\n" not in line and SECRET not in line, line
    assert re.search(rf"^teacher alpha: question 'q0': http://\*\*\*@127.0.0.1:{port}/v1 failed: {reason}", line), line
    assert line.endswith("check that the server at its base_url is up and serves model 'tiny'"), line
    if "after" not in reason:
        assert " retries" not in line
    if fault != "refused":
        assert fault_chat.hits == (1 + retries if "after" in reason else 1), "retried exactly as said"


def test_a_stuck_request_is_reported_while_it_waits(fault_chat: FaultChat, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ssft.data.sources.teachers")
    fault_chat.fault, fault_chat.slow_s = "slow", 1.5
    t = teacher(f"http://127.0.0.1:{fault_chat.port}/v1", n=1, concurrency=1, timeout_s=10.0)
    teachers.generate(QUESTIONS[:1], [t], tmp_path / "cache", seed=0, progress_every_s=0.4)
    assert re.search(r"0/1 traces .*; 1 request\(s\) in flight, question 'q0' waiting [01] s", caplog.text)


def test_a_question_rewritten_under_its_id_is_asked_again(server: ChatServer, tmp_path: Path) -> None:
    t = teacher(server.url, n=1)
    teachers.generate(QUESTIONS[:2], [t], tmp_path / "cache", seed=0)
    assert len(server.requests) == 2
    rewritten = [{**q, "question": q["question"].replace("What is", "Compute")} for q in QUESTIONS[:2]]
    teachers.generate(rewritten, [t], tmp_path / "cache", seed=0)
    assert sorted(r["question"] for r in server.requests[2:]) == sorted(q["question"] for q in rewritten), "asked"
    teachers.generate(rewritten, [t], tmp_path / "cache", seed=0)
    assert len(server.requests) == 4, "and now cached"
