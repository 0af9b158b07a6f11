"""Reliability and security (issue 19): out-of-range settings, held-out contamination, the teacher cache,
locks, secrets in URLs, backend failures, full disks, truncated checkpoints, killed parents. Each test
reproduces a case that once went wrong."""

from __future__ import annotations

import math
import signal
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
    assert Health.seen == ["Basic " + base64.b64encode(f"user:{KEY}".encode()).decode()] * 2  # /health, the API


def test_a_server_that_asks_for_a_login_is_one_line_naming_the_variables(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """`make up`'s MLflow (the basic-auth app, a real one here) refuses a stage without its login: one line
    before any work, instead of a traceback from the first logged param."""
    import os
    import socket
    import time
    import urllib.request

    from conftest import tool_env

    from ssft.config import ConfigError
    from ssft.tracking.runs import probe

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (tmp_path / "auth.ini").write_text(f"[mlflow]\ndefault_permission = NO_PERMISSIONS\ndatabase_uri = sqlite:///"
                                       f"{tmp_path}/users.db\nadmin_username = ssft\n")
    env = tool_env(MLFLOW_AUTH_CONFIG_PATH=str(tmp_path / "auth.ini"), MLFLOW_AUTH_ADMIN_PASSWORD=KEY,
                   MLFLOW_FLASK_SERVER_SECRET_KEY="k" * 32, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    server = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "mlflow"), "server", "--app-name",
                               "basic-auth", "--backend-store-uri", f"sqlite:///{tmp_path}/mlflow.db", "--host",
                               "127.0.0.1", "--port", str(port), "--workers", "1"], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uri = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(uri + "/health", timeout=2).close()
                break
            except OSError:
                time.sleep(0.5)
        monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
        monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
        with pytest.raises(ConfigError, match=r"refused no login \(HTTP 401\); set MLFLOW_TRACKING_USERNAME"):
            probe(uri)
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "ssft")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
        with pytest.raises(ConfigError, match="refused user 'ssft'"):
            probe(uri)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", KEY)
        probe(uri)
        probe(f"http://ssft:{KEY}@127.0.0.1:{port}")
    finally:
        server.terminate()
        server.wait(30)


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


# -- a full disk: one line naming where, exit 2, no .tmp left behind -----------------------------------------
def _unshare_works() -> bool:
    import shutil

    return bool(shutil.which("unshare")) and subprocess.run(["unshare", "-rm", "true"],
                                                            capture_output=True).returncode == 0


FULL = [pytest.param("tmpfs", marks=pytest.mark.skipif(not _unshare_works(), reason="no user+mount namespaces")),
        "fsize"]


def _ssft_on_a_full_disk(args: list[str], disk: Path, how: str, size: int) -> tuple[int, str, list[str]]:
    """``ssft ARGS`` writing into ``disk`` that fills after ``size`` bytes: a tmpfs of that size mounted there (in a
    user+mount namespace: a real ENOSPC), or a file size limit (RLIMIT_FSIZE: EFBIG, which the disk's owner sees
    as its quota). Returns (exit status, stderr, the .tmp files and directories left under ``disk``)."""
    import resource

    disk.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "ssft.cli", *args]
    if how == "tmpfs":  # the mount goes with the namespace: list what is left inside it
        script = ('mount -t tmpfs -o size="$1" tmpfs "$2" || exit 99; d="$2"; shift 2; "$@"; rc=$?; '
                  'echo LEFT:; find "$d" -name "*.tmp"; exit $rc')
        proc = subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", str(size), str(disk), *cmd],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode != 99, proc.stderr
        return proc.returncode, proc.stderr, proc.stdout.split("LEFT:")[-1].split()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (size, size)))
    return proc.returncode, proc.stderr, [str(p) for p in disk.rglob("*.tmp")]


def _one_line(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    return errors[0]


@pytest.mark.parametrize("how", FULL)
def test_a_full_disk_while_writing_traces_names_the_path_and_leaves_no_tmp(tmp_path: Path, how: str) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({**TINY, "tracking": {"enabled": False}}))
    disk = tmp_path / "disk"
    rc, err, left = _ssft_on_a_full_disk(["--params", str(params), "traces", "--out", str(disk / "traces")], disk,
                                         how, 4000)
    line = _one_line(err)
    assert rc == 2, err
    assert str(disk / "traces") in line and "free space or choose another output directory" in line, line
    assert not left, f"left behind: {left}"


@pytest.mark.slow
@pytest.mark.parametrize("how, size", [("tmpfs", 40_000), ("tmpfs", 120_000),
                                       ("fsize", 120_000)], ids=["tmpfs-weights", "tmpfs-optimizer", "fsize"])
def test_a_full_disk_during_a_checkpoint_write_is_one_line_exit_2(tmp_path: Path, trace_dir: Path, how: str,
                                                                   size: int) -> None:
    if how == "tmpfs" and not _unshare_works():
        pytest.skip("no user+mount namespaces")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({**TINY, "tracking": {"enabled": False}}))
    # 40 KB: the weights (80 KB) do not fit (safetensors: SafetensorError, exit 1); 120 KB: they do, the optimizer
    # state does not (torch.save: RuntimeError "basic_ios::clear: iostream error", exit 1)
    disk = tmp_path / "disk"
    rc, err, _ = _ssft_on_a_full_disk(["--params", str(params), "train", "--method", "ssft", "--traces",
                                       str(trace_dir), "--models", str(tmp_path / "models"), "--checkpoints",
                                       str(disk)], disk, how, size)
    line = _one_line(err)
    assert rc == 2, err
    assert str(disk) in line and "free space or choose another output directory" in line, line


# -- model.max_length: 0 is the model's own positions, never an unbounded allocation ------------------------
def test_no_max_length_caps_the_context_at_the_models_positions(tmp_path: Path, trace_dir: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    from conftest import tiny_cfg

    from ssft.data import traces
    from ssft.train.trainer import run_stage

    rows = traces.read_rows(trace_dir / "train.parquet")
    long = {"question_id": "long", "question": "1+2+3+4?", "answer": "10", "mode": None}
    rows += [{**long, "trace": "1+2=3 " * 800 + "#10", "source": "l2r"},  # 4803 characters: over 4096 positions
             {**long, "trace": "1+2=3 3+3=6 6+4=10 #10", "source": "pair"},
             {**long, "trace": "4+3=7 7+2=9 9+1=10 #10", "source": "r2l"}]
    traces.write(rows, tmp_path / "train.parquet")
    cfg = tiny_cfg(**{"model.max_length": 0, "train.max_steps": 2, "train.save_steps": 2})
    # was: no limit, the 4803-token trace trained (a 400 KB one tried to allocate 160 GB)
    stats = run_stage(cfg, "sft", tmp_path / "train.parquet", tmp_path / "model", tmp_path / "ckpt")
    assert stats["context"]["limit"] == 4096 and stats["context"]["over_context"] == {"l2r": 1}
    assert stats["context"]["dropped_traces"] == 1 and stats["context"]["dropped_questions"] == 0
    assert "1 trace(s) over the model's max_position_embeddings=4096 tokens dropped" in caplog.text


# -- a trace file that cannot be read says where and why -------------------------------------------------------
ROW = '{"question": "1+2?", "answer": "3", "teacher": "t", "text": "1+2=3 #3"}'


@pytest.mark.parametrize("name, text, where", [
    ("bad.jsonl", f'{ROW}\n{ROW}\n{ROW[:-20]} "text" "x"}}\n{ROW}\n',
     r"line 3, column 60: Expecting ':' delimiter; fix that line"),
    ("bad.json", '[\n  ' + ROW + ',\n  ' + ROW + '\n  ' + ROW + '\n]\n',
     r"line 4, column 3: Expecting ',' delimiter; fix the JSON there"),
    ("latin1.jsonl", f'{ROW}\n{ROW[:-2]}\xe9"}}\n', r"line 2: not UTF-8 text \(byte 70: b'\\xe9'\); save it as UTF-8"),
])
def test_a_broken_json_file_names_the_file_and_the_line(tmp_path: Path, name: str, text: str, where: str) -> None:
    from ssft.data.sources import importer
    from ssft.data.traces import TraceDataError

    path = tmp_path / name
    path.write_bytes(text.encode("latin-1") if name.startswith("latin1") else text.encode())
    with pytest.raises(TraceDataError, match=rf"^{path}: {where}"):  # was: "position 46", no line
        importer.read_traces(path, {})


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_an_empty_file_says_it_is_empty(tmp_path: Path, suffix: str) -> None:
    from ssft.data.sources import importer
    from ssft.data.traces import TraceDataError

    path = tmp_path / f"traces{suffix}"
    path.touch()
    with pytest.raises(TraceDataError, match=rf"^{path}: empty file \(0 bytes\); "):  # was: "cannot be read as json: "
        importer.read_traces(path, {})


# -- python -m flows.watch with no Prefect server: one line ------------------------------------------------------
def test_watch_without_a_prefect_server_is_one_line(tmp_path: Path) -> None:
    import socket

    from conftest import ROOT, tool_env

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api"
    proc = subprocess.run([sys.executable, "-m", "flows.watch", "ssft/full"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=tool_env(PREFECT_API_URL=url, PREFECT_HOME=str(tmp_path)))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr  # was: httpx.ConnectError, exit 1
    assert proc.stderr.strip().splitlines() == [
        f"flows.watch: no Prefect server answers at {url} (ConnectError: All connection attempts failed); start the "
        "local stack with `make up`, then `source scripts/env.sh` in this shell"], proc.stderr


# -- a killed `ssft study` takes its running stage with it -----------------------------------------------------
def _in(workdir: Path) -> list[int]:
    """The processes running in ``workdir`` (a study's stages run in their cell's directory)."""
    import os

    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/cwd").startswith(str(workdir)):
                pids.append(int(pid))
        except OSError:  # gone, or not ours to read
            pass
    return pids


LONG_TRAINING = {"traces.train_questions": 32, "traces.eval_questions": 8, "model.hidden_size": 32,
                 "model.num_layers": 2, "model.num_heads": 2, "model.intermediate_size": 64,
                 "train.max_steps": 100_000, "train.save_steps": 1000, "train.questions_per_step": 4,
                 "tracking.enabled": False, "gfpo.methods": []}


def _kill_once_training(parent: subprocess.Popen, workdir: Path, sig: str) -> None:
    """Wait until ``parent``'s training stage steps, kill ``parent`` alone with ``sig``; nothing may be left
    running in ``workdir``."""
    import os
    import signal
    import time

    try:
        assert parent.stderr is not None
        for line in parent.stderr:  # the training stage has started stepping
            if "step " in line and "ETA" in line:
                break
        else:
            pytest.fail(f"{parent.args[:4]} ended before training: exit {parent.wait()}")
        assert _in(workdir), "the stage runs in its directory"
        os.kill(parent.pid, getattr(signal, sig))
        parent.wait(timeout=30)
        deadline = time.monotonic() + 30
        while _in(workdir) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = _in(workdir)
        assert not left, f"stage processes outlived their parent: {left}"  # was: ssft train went on alone
    finally:
        parent.kill()
        for pid in _in(workdir):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="reads /proc")
@pytest.mark.parametrize("sig", ["SIGTERM", pytest.param("SIGKILL", marks=pytest.mark.slow)])
def test_a_killed_study_leaves_no_stage_running(tmp_path: Path, sig: str) -> None:
    from conftest import ROOT, tool_env

    settings = [{"name": "a", "params": {"train.methods": ["sft"]}}]
    (tmp_path / "long.yaml").write_text(yaml.safe_dump({"description": "a training that outlives the test",
                                                        "base": LONG_TRAINING, "seeds": [0], "settings": settings}))
    cells = tmp_path / "cells"
    study = subprocess.Popen([sys.executable, "-m", "ssft.cli", "--params", str(ROOT / "params.yaml"), "study",
                              str(tmp_path / "long.yaml"), "--report", str(tmp_path / "study.md"), "--workdir",
                              str(cells)], cwd=tmp_path, env=tool_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    _kill_once_training(study, cells, sig)


def _hup_default() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


@pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="reads /proc")
@pytest.mark.parametrize(("sig", "shell"), [  # DVC runs a stage through $SHELL, /bin/sh where it is unset (CI)
    ("SIGTERM", "/bin/sh"), pytest.param("SIGTERM", "/bin/bash", marks=pytest.mark.slow),
    pytest.param("SIGKILL", "/bin/sh", marks=pytest.mark.slow)])
def test_a_killed_dvc_repro_leaves_no_stage_running(tmp_path: Path, sig: str, shell: str) -> None:
    from conftest import ROOT, tool_env

    sets = " ".join(f"--set {k}={v}" for k, v in LONG_TRAINING.items() if not isinstance(v, list))
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"train": {
        "cmd": f"{sys.executable} -m ssft.cli --params {ROOT / 'params.yaml'} {sets} train --method sft "
               "--traces data/traces --models models --checkpoints checkpoints",
        "deps": ["data/traces"], "outs": ["models/sft"]}}}))
    assert subprocess.run([sys.executable, "-m", "ssft.cli", "--params", str(ROOT / "params.yaml"),
                           *sets.split(), "traces", "--out", "data/traces"], cwd=tmp_path, env=tool_env(),
                          capture_output=True).returncode == 0
    assert subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=tmp_path, env=tool_env()).returncode == 0
    # The terminal's Ctrl-C reaches DVC's whole group; a `kill` of DVC alone (a CI timeout) did not reach the stage.
    # dash (Debian's /bin/sh) does not exec the stage: the shell stays between DVC and the stage, and lingers.
    # SIGHUP at its default: an ignored one (CI started under `nohup`) is inherited and means "outlive DVC"
    repro = subprocess.Popen(["dvc", "repro"], cwd=tmp_path, env=tool_env(SHELL=shell), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, preexec_fn=_hup_default)
    _kill_once_training(repro, tmp_path, sig)


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize(("nohup", "expected"), [(False, 15), (True, 0)])
def test_a_dvc_stage_under_nohup_may_outlive_dvc(nohup: bool, expected: int) -> None:
    """Under DVC a stage asks for SIGTERM when DVC dies, unless ``nohup`` asked for the opposite."""
    from conftest import tool_env

    probe = ("import ctypes, signal\n"
             f"signal.signal(signal.SIGHUP, signal.{'SIG_IGN' if nohup else 'SIG_DFL'})\n"  # never the runner's
             "from ssft import lifeline\nlifeline.die_with_dvc()\n"
             "v = ctypes.c_int()\nctypes.CDLL(None).prctl(2, ctypes.byref(v))  # PR_GET_PDEATHSIG\nprint(v.value)")
    out = subprocess.run([sys.executable, "-c", probe], env=tool_env(DVC_STAGE="train@sft"), capture_output=True,
                         text=True, check=True).stdout
    assert int(out) == expected
