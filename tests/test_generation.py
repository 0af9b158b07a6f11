"""ssft.generation: the hf sampler on a tiny model (batching, seeds, tag log-probabilities against a plain forward),
and the openai sampler's requests and failures against a hand-made HTTP server (fault injection only: the real
server tests are in test_serve.py). The fault server answers the start-up checks as vLLM does, then fails the way
it is told: HTTP 500, malformed JSON, no choices, too slow, or a tokenizer that gives the tags other ids."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import chat_checkpoint
from transformers import AutoModelForCausalLM

from ssft.config import ModelConfig
from ssft.errors import UserError
from ssft.generation import factory
from ssft.generation.hf import HfSampler, stop_ids
from ssft.generation.openai import OpenAISampler, redact
from ssft.generation.sampler import SeedStream, finish
from ssft.train import models
from ssft.train.forking import PromptLayout, prompt_ids

QUESTIONS = [f"{a}+{b}+{a * 7 + b * 13}?" for a in range(3) for b in range(3)]  # of unequal lengths


def text_model() -> tuple[object, object, PromptLayout]:
    """A random tiny Llama with the project's char tokenizer and 4 tags, (model, tokenizer, layout). Its
    (tied) embeddings are scaled up and those of the special tokens down, so greedy decoding writes printable
    characters that depend on the question and the tag instead of padding (no training needed)."""
    cfg = ModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
    model, tok = models.build(cfg, 4, seed=0)
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb.mul_(8)
        emb[tok.all_special_ids] *= 0.05
    return model.eval(), tok, models.prompt_layout(cfg, tok, 4)


@pytest.fixture(scope="module")
def tiny() -> tuple[object, object, PromptLayout]:
    return text_model()


def _prompts(tok, layout: PromptLayout) -> list[list[int]]:  # noqa: ANN001
    return [prompt_ids(tok, layout, q, t) for q in QUESTIONS for t in (1, 2, 3, 4)]


# -- the shared decoding ---------------------------------------------------------------------------------
def test_a_sample_is_cut_at_its_first_stop_which_counts_but_is_not_text(tiny) -> None:  # noqa: ANN001
    _, tok, _ = tiny
    a, b, eos, pad = tok.convert_tokens_to_ids("a"), tok.convert_tokens_to_ids("b"), tok.eos_token_id, tok.pad_token_id
    assert finish(tok, [a, b, eos, pad, a], [eos]) == finish(tok, [a, b, eos], [eos])
    s = finish(tok, [a, b, eos, pad, a], [eos])
    assert (s.text, s.length, s.token_ids) == ("ab", 3, (a, b, eos))
    assert finish(tok, [a, b, a], [eos]).length == 3  # no stop: the whole budget
    assert finish(tok, [b, a], [a]).text == "b"  # a stop that is no special token is cut off too


# -- hf ----------------------------------------------------------------------------------------------------
def test_hf_batches_give_what_one_prompt_at_a_time_gives(tiny) -> None:  # noqa: ANN001
    model, tok, layout = tiny
    prompts = _prompts(tok, layout)
    batched = HfSampler(model, tok, batch_size=8).generate(prompts, 1, None, max_new_tokens=12)
    alone = HfSampler(model, tok, batch_size=1).generate(prompts, 1, None, max_new_tokens=12)
    assert batched == alone
    assert len({s.text for (s,) in batched}) >= 5  # varied answers: the comparison means something


def test_hf_seed_restarts_the_stream_and_none_continues_it(tiny) -> None:  # noqa: ANN001
    model, tok, layout = tiny
    sampler, prompts = HfSampler(model, tok, batch_size=64), _prompts(tok, layout)[:4]
    first = sampler.generate(prompts, 2, 1.0, max_new_tokens=8, seed=3)
    follow = sampler.generate(prompts, 2, 1.0, max_new_tokens=8)
    assert sampler.generate(prompts, 2, 1.0, max_new_tokens=8, seed=3) == first
    assert follow != first  # the stream went on
    assert [len(r) for r in first] == [2] * 4
    with pytest.raises(ValueError, match="n=1"):
        sampler.generate(prompts, 2, None)


def test_hf_tag_logprobs_match_a_plain_forward_of_each_prompt(tiny) -> None:  # noqa: ANN001
    """Batched prompts of unequal length give what each gives alone: the next position is each one's own."""
    model, tok, layout = tiny
    heads = [prompt_ids(tok, layout, q, 1)[:-1] for q in QUESTIONS]  # each prompt ends where the tag goes
    tags = [tok.convert_tokens_to_ids(t) for t in layout.tags]
    got = HfSampler(model, tok, batch_size=4).tag_logprobs(heads, tags)
    with torch.no_grad():
        want = [torch.log_softmax(model(torch.tensor([h])).logits[0, -1], -1)[tags].numpy() for h in heads]
    assert got.shape == (len(QUESTIONS), 4)
    np.testing.assert_allclose(got, np.array(want), atol=1e-5)
    assert len({len(h) for h in heads}) > 1  # prompts of unequal length: padding was exercised


def test_factory_names_every_backend_and_refuses_others(tiny) -> None:  # noqa: ANN001
    model, tok, _ = tiny
    assert factory.BACKENDS == ("hf", "openai", "vllm")
    assert isinstance(factory.make("hf", Path("."), tok, lambda: model), HfSampler)
    with pytest.raises(UserError, match="eval.server"):
        factory.make("openai", Path("."), tok, lambda: model)
    with pytest.raises(UserError, match="not a generation backend"):
        factory.make("tgi", Path("."), tok, lambda: model)
    with pytest.raises(UserError, match="vLLM, which is not installed"):  # a CPU machine: a clear line
        factory.make("vllm", Path("."), tok, lambda: model)


def test_a_model_directory_stops_where_its_loaded_model_stops(tmp_path: Path) -> None:
    """The servers' backends read the stop ids from the directory; hf from the loaded model: the same ids."""
    d = chat_checkpoint(tmp_path / "chat", [f"What is {a} + 2? It is {a + 2}." for a in range(20)])  # 2 eos ids
    tok = models.load_tokenizer(d)
    model = AutoModelForCausalLM.from_pretrained(d)
    assert factory.checkpoint_stops(d, tok) == stop_ids(model, tok) == tok.convert_tokens_to_ids(
        ["<|im_end|>", "<|endoftext|>"])
    (d / "generation_config.json").unlink()
    assert factory.checkpoint_stops(d, tok) == [tok.eos_token_id]


def test_seed_stream_is_deterministic_and_request_seeds_differ() -> None:
    a, b = SeedStream(), SeedStream()
    assert [a.base(7), a.base(None)] == [b.base(7), b.base(None)]
    base = a.base(1)
    assert len({SeedStream.request_seed(base, k) for k in range(1000)}) == 1000
    assert all(0 <= SeedStream.request_seed(base, k) < 2**31 for k in range(10))


# -- openai, against a fault-injection server --------------------------------------------------------------
class FaultServer:
    """``/v1/models`` and ``/v1/completions`` as vLLM answers them (token ids in and out, ``prompt_token_ids``
    of a text prompt by ``tokenizer``), then the ``fault`` set on it: "500", "badjson", "empty", "slow",
    "other-ids" (the tags come back as other ids) or None. Records every completion request body."""

    def __init__(self, tokenizer) -> None:  # noqa: ANN001
        self.tok, self.fault, self.bodies, self.lock = tokenizer, None, [], threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://user:pw@127.0.0.1:{self.httpd.server_address[1]}/v1"

    def completion(self, body: dict) -> dict:
        prompt = body["prompt"]
        if isinstance(prompt, str):  # the tag check: how this server tokenizes the tags
            ids = self.tok.encode(prompt, add_special_tokens=False)
            if self.fault == "other-ids":
                ids = [i + 1 for i in ids]
            return {"choices": [{"index": 0, "text": "", "prompt_token_ids": ids, "token_ids": []}],
                    "usage": {"prompt_tokens": len(ids), "completion_tokens": 0}}
        if body.get("logprobs"):
            if self.fault == "old-vllm":  # logprob_token_ids ignored: the top-k of a vocabulary of ids 0..99
                top = {f"token_id:{t}": -float(t + 1) for t in range(body["logprobs"])}
            else:
                top = {f"token_id:{t}": -float(k + 1) for k, t in enumerate(body.get("logprob_token_ids", []))}
            return {"choices": [{"index": 0, "text": "", "logprobs": {"top_logprobs": [top]}}]}
        # n choices, each "echoes" the prompt's last id, then stops on the first stop id
        stop, n = body.get("stop_token_ids", [self.tok.eos_token_id])[0], body.get("n", 1)
        return {"choices": [{"index": k, "text": "?", "token_ids": [prompt[-1], stop]} for k in range(n)],
                "usage": {"prompt_tokens": len(prompt), "completion_tokens": 2 * n}}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, code: int, payload: bytes) -> None:
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up on a slow answer
                    pass

            def do_GET(self) -> None:  # noqa: N802
                self._send(200, json.dumps({"object": "list", "data": [{"id": "tiny", "object": "model"}]}).encode())

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                generating = isinstance(body["prompt"], list) and body.get("max_tokens", 0) > 1
                with server.lock:
                    server.bodies.append(body)
                fault = server.fault if generating or server.fault == "other-ids" else None
                if fault == "500":
                    return self._send(500, json.dumps({"object": "error", "message": "CUDA out of memory",
                                                       "code": 500}).encode())
                if fault == "badjson":
                    return self._send(200, b'{"choices": [')
                if fault == "empty":
                    return self._send(200, json.dumps({"choices": [], "usage": {}}).encode())
                if fault == "slow":
                    time.sleep(3)
                self._send(200, json.dumps(server.completion(body)).encode())

        return Handler

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fault_server(tiny) -> Iterator[FaultServer]:  # noqa: ANN001
    server = FaultServer(tiny[1])
    yield server
    server.close()


def _openai(server: FaultServer, tiny, **kwargs: object) -> OpenAISampler:  # noqa: ANN001
    _, tok, layout = tiny
    return OpenAISampler(server.url, Path("tiny"), tok, [tok.eos_token_id], layout.all_tags, max_retries=0,
                         **kwargs)  # type: ignore[arg-type]


def test_openai_sends_token_ids_n_stops_and_a_seed_per_request(fault_server: FaultServer, tiny) -> None:  # noqa: ANN001
    _, tok, layout = tiny
    sampler = _openai(fault_server, tiny, concurrency=3)
    assert sampler.dialect == "token-ids" and sampler.model == "tiny"
    prompts = _prompts(tok, layout)[:6]
    fault_server.bodies.clear()
    out = sampler.generate(prompts, 2, 0.7, top_p=0.9, max_new_tokens=5, stop_ids=[7, 8], seed=11)
    bodies = sorted(fault_server.bodies, key=lambda b: b["prompt"])  # arrival order is the pool's
    assert sorted(b["prompt"] for b in bodies) == sorted(prompts)  # token ids, never text
    assert {(b["n"], b["temperature"], b["top_p"], b["max_tokens"]) for b in bodies} == {(2, 0.7, 0.9, 5)}
    assert all(b["stop_token_ids"] == [7, 8] and b["return_token_ids"] and b["top_k"] == -1 for b in bodies)
    seeds = {tuple(b["prompt"]): b["seed"] for b in bodies}
    assert len(set(seeds.values())) == len(prompts)  # one seed per request
    assert [[s.token_ids for s in row] for row in out] == [[(p[-1], 7)] * 2 for p in prompts]  # in prompt order
    assert out[0][0].text == tok.decode([prompts[0][-1]], skip_special_tokens=True) and out[0][0].length == 2
    fault_server.bodies.clear()
    sampler.generate(prompts, 2, 0.7, top_p=0.9, max_new_tokens=5, stop_ids=[7, 8], seed=11)
    assert {tuple(b["prompt"]): b["seed"] for b in fault_server.bodies} == seeds  # same seed, same requests
    greedy = sampler.generate(prompts[:1], 1, None, max_new_tokens=5)
    assert fault_server.bodies[-1]["temperature"] == 0.0 and "seed" not in fault_server.bodies[-1]
    assert len(greedy[0]) == 1


def test_openai_tag_logprobs_ask_for_the_tag_ids(fault_server: FaultServer, tiny) -> None:  # noqa: ANN001
    _, tok, layout = tiny
    sampler = _openai(fault_server, tiny)
    tags = [tok.convert_tokens_to_ids(t) for t in layout.tags]
    got = sampler.tag_logprobs([[5, 6], [7]], tags)
    assert fault_server.bodies[-1]["logprob_token_ids"] == tags and fault_server.bodies[-1]["max_tokens"] == 1
    np.testing.assert_array_equal(got, [[-1, -2, -3, -4]] * 2)


def test_openai_tag_logprobs_fall_back_to_the_top_k(fault_server: FaultServer, tiny,  # noqa: ANN001
                                                    caplog: pytest.LogCaptureFixture) -> None:
    sampler = _openai(fault_server, tiny)
    fault_server.fault = "old-vllm"
    got = sampler.tag_logprobs([[5, 6]], [3, 19, 20, 77])
    assert fault_server.bodies[-1]["logprobs"] == 20 and "logprob_token_ids" not in fault_server.bodies[-1]
    np.testing.assert_array_equal(got, [[-4, -20, -np.inf, -np.inf]])  # outside the top-20: -inf, and said so
    assert "ignores logprob_token_ids" in caplog.text and "2 of 4 tag logprobs were outside" in caplog.text


def test_eval_backend_and_server_are_checked_with_the_fix() -> None:
    from conftest import tiny_cfg

    from ssft.config import ConfigError

    assert tiny_cfg(**{"eval.backend": "openai", "eval.server": "http://127.0.0.1:8000/v1"}).eval.backend == "openai"
    for overrides, message in [({"eval.backend": "tgi"}, "eval.backend: 'tgi' is invalid; use one of hf, openai, vllm"),
                               ({"eval.backend": "openai"}, "eval.server: None is invalid; eval.backend=openai needs"),
                               ({"eval.server": "http://h/v1"}, "only eval.backend=openai talks to a server"),
                               ({"eval.backend": "openai", "eval.server": "h:8000"}, "use an http.s. base URL")]:
        with pytest.raises(ConfigError, match=message):
            tiny_cfg(**overrides)


@pytest.mark.parametrize("fault, reason", [("500", "HTTP 500: CUDA out of memory"), ("badjson", "malformed response"),
                                           ("empty", "returned no choices"), ("slow", "no answer before the timeout")])
def test_a_failing_server_is_one_line_naming_it_and_its_reason(fault_server: FaultServer, tiny, fault: str,  # noqa: ANN001
                                                               reason: str) -> None:
    _, tok, layout = tiny
    sampler = _openai(fault_server, tiny, timeout_s=1.0)
    fault_server.fault = fault
    with pytest.raises(UserError) as e:
        sampler.generate(_prompts(tok, layout)[:3], 1, None, max_new_tokens=4)
    line = str(e.value)
    assert reason in line and "\n" not in line, line
    assert redact(fault_server.url) in line and "pw" not in line  # the URL, its credentials redacted


def test_a_server_with_another_tokenizer_is_refused_at_start(fault_server: FaultServer, tiny) -> None:  # noqa: ANN001
    fault_server.fault = "other-ids"
    with pytest.raises(UserError, match="does not serve this model directory: it tokenizes '<think>"):
        _openai(fault_server, tiny)


def test_no_server_is_one_line_naming_the_url(tiny) -> None:  # noqa: ANN001
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    _, tok, layout = tiny
    with pytest.raises(UserError, match=rf"127.0.0.1:{port}/v1: listing the served models failed: cannot connect"):
        OpenAISampler(f"http://127.0.0.1:{port}/v1", Path("tiny"), tok, [tok.eos_token_id], layout.all_tags,
                      max_retries=0)
