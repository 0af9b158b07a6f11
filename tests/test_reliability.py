"""Reliability and security (issue 19): out-of-range settings, held-out contamination, the teacher cache,
locks, secrets in URLs, backend failures, full disks, truncated checkpoints, killed parents. Each test
reproduces a case that once went wrong."""

from __future__ import annotations

import math
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from conftest import TINY

from ssft import config
from ssft.errors import UserError


# -- settings: every numeric range, all errors at once -------------------------------------------------------
def test_every_out_of_range_number_is_one_error_each() -> None:
    raw = {**TINY, "eval": {**TINY["eval"], "temperature": math.inf, "batch_size": -1, "max_new_tokens": 0,
                            "temperatures": [0.5, math.nan], "top_p": math.nan},
           "train": {**TINY["train"], "warmup_steps": -5, "weight_decay": math.nan, "max_grad_norm": -1.0,
                     "lr": math.inf},
           "data": {"teachers": [{"name": "t", "model": "m", "base_url": "http://h/v1", "timeout_s": 0,
                                  "max_retries": -1, "top_p": math.inf}]}}
    with pytest.raises(config.ConfigError) as err:
        config.from_dict(raw)
    lines = str(err.value).splitlines()[1:]
    expected = ["eval.temperature: inf", "eval.batch_size: -1", "eval.max_new_tokens: 0",
                "eval.temperatures: [0.5, nan]", "eval.top_p: nan", "train.warmup_steps: -5", "train.weight_decay: nan",
                "train.max_grad_norm: -1.0",
                "train.lr: inf", "data.teachers[0].timeout_s: 0.0", "data.teachers[0].max_retries: -1",
                "data.teachers[0].top_p: inf"]
    for want in expected:
        hits = [line for line in lines if line.startswith(f"  - {want} is invalid; use ")]
        assert len(hits) == 1, f"{want}: {len(hits)} errors in\n{err.value}"
    assert len(lines) == len(expected), f"one error per bad field:\n{err.value}"


def test_an_empty_section_can_be_overridden(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({k: v for k, v in TINY.items() if k != "train"}) + "train:\n")
    assert config.load(params, {"train.max_steps": 7}).train.max_steps == 7


# -- no trained question is evaluated: by id, normalised text and canonical form --------------------------
def _split(path: Path, questions: dict[str, str]) -> Path:
    from ssft.data import traces

    traces.write([{"question_id": qid, "question": q, "answer": "18", "trace": "x #18", "source": "l2r"}
                  for qid, q in questions.items()], path)
    return path


@pytest.mark.parametrize("eval_question, what, source", [
    ("3+4+5+6?", "question text", "synthetic"),      # the same question under a new id
    (" 3 + 4+5+6?\n", "question text", "synthetic"),  # whitespace only
    ("\uff13+4+5+6?", "question text", "import"),    # a full-width digit: the same after NFKC
    ("6+5+4+3?", "canonical form", "synthetic"),     # reordered: the same operands, the same traces
])
def test_a_trained_question_under_another_id_or_spelling_is_refused(tmp_path: Path, eval_question: str,
                                                                     what: str, source: str) -> None:
    from conftest import tiny_cfg

    from ssft.data import traces
    from ssft.eval.evaluate import _check_held_out

    train = _split(tmp_path / "train.parquet", {"add4-3-4-5-6": "3+4+5+6?", "add4-1-1-1-1": "1+1+1+1?"})
    ev = _split(tmp_path / "eval.parquet", {"new-id-7": eval_question, "add4-2-2-2-9": "2+2+2+9?"})
    cfg = tiny_cfg(**({"data.source": "import", "data.path": str(train)} if source == "import" else {}))
    with pytest.raises(UserError, match=rf"1 of 2 evaluation questions .*same {what}: e.g. 'new-id-7' "
                                               r"and training's 'add4-3-4-5-6'"):
        _check_held_out(cfg, traces.load_questions(ev), ev, train, traces.read_rows(train))


def test_a_reordered_question_of_imported_data_is_its_own_question(tmp_path: Path) -> None:
    from conftest import tiny_cfg

    from ssft.data import traces
    from ssft.eval.evaluate import _check_held_out

    train = _split(tmp_path / "train.parquet", {"a": "3+4+5+6?"})
    ev = _split(tmp_path / "eval.parquet", {"b": "6+5+4+3?"})
    cfg = tiny_cfg(**{"data.source": "import", "data.path": str(train)})
    _check_held_out(cfg, traces.load_questions(ev), ev, train, traces.read_rows(train))


# -- every output directory of `ssft train` is locked ---------------------------------------------------------
def _hold_lock(path: Path) -> subprocess.Popen:
    """Another process writing ``path`` (holding its lock until killed)."""
    code = ("import sys, time; from ssft import atomic; held = atomic.exclusive(sys.argv[1]); held.__enter__(); "
            "print('held', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_train_with_other_checkpoints_cannot_overwrite_the_model(
        tmp_path: Path, trace_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    from ssft.cli import main

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({**TINY, "tracking": {"enabled": False}}))
    holder = _hold_lock(tmp_path / "models" / "ssft")  # the first job: training into models/ssft
    try:
        rc = main(["--params", str(params), "train", "--method", "ssft", "--traces", str(trace_dir), "--models",
                   str(tmp_path / "models"), "--checkpoints", str(tmp_path / "other-checkpoints")])
    finally:
        holder.kill()
        holder.wait()
    assert rc == 2, "refused, not trained"
    assert f"{tmp_path / 'models' / 'ssft'} is being written by another process (pid {holder.pid})" in caplog.text
    assert not (tmp_path / "models" / "ssft").exists()


# -- secrets: no URL credential or query secret in an MLflow param; the probe asks the right host -------------
KEY = "sk-live-0d9e8f7a6b"


def test_no_url_secret_reaches_an_mlflow_param() -> None:
    from conftest import tiny_cfg

    from ssft.tracking.runs import flat_params

    teacher = {"name": "t", "model": "m", "base_url": f"http://u:{KEY}@host:8000/v1?key={KEY}"}
    cfg = tiny_cfg(**{"data.source": "generate", "data.path": "q.jsonl", "data.teachers": [teacher],
                      "tracking.uri": f"https://me:{KEY}@mlflow.example:5000/?token={KEY}"})
    params = flat_params(cfg)
    assert not [k for k, v in params.items() if KEY in v], "a secret reached an MLflow param"
    assert '"base_url": "http://***@host:8000/v1"' in params["data.teachers"]
    assert params["tracking.uri"] == "https://***@mlflow.example:5000/"


class Health(BaseHTTPRequestHandler):
    """An MLflow-like /health that records the Authorization header it was sent."""

    seen: list[str | None] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        Health.seen.append(self.headers.get("Authorization"))
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args: object) -> None:
        pass


def test_a_tracking_uri_with_credentials_is_probed_at_its_host() -> None:
    import base64

    from ssft.tracking.runs import probe

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        probe(f"http://user:{KEY}@127.0.0.1:{httpd.server_address[1]}")  # was: "not answering (Name or service...)"
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert Health.seen == ["Basic " + base64.b64encode(f"user:{KEY}".encode()).decode()]


# -- a truncated model.safetensors in the newest checkpoint: the previous complete one is resumed ------------
def test_truncated_weights_in_the_newest_checkpoint_fall_back_to_the_previous(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import torch
    from safetensors.torch import save_file

    from ssft.train.trainer import last_complete_checkpoint

    for step in (4, 8):
        ckpt = tmp_path / f"checkpoint-{step}"
        ckpt.mkdir()
        (ckpt / "trainer_state.json").write_text(f'{{"global_step": {step}}}')
        save_file({"w": torch.ones(64, 64)}, ckpt / "model.safetensors")
    weights = tmp_path / "checkpoint-8" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # the disk filled up while writing
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-4"
    assert "checkpoint-8: model.safetensors truncated" in caplog.text
