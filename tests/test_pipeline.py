"""The pipeline for real: the CLI in-process, and `dvc repro` in a temporary git repository."""

import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import TINY, copy_project, tool_env

from ssft.cli import main


def test_cli_reports_bad_params_and_exits_2(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump({**TINY, "train": {**TINY["train"], "max_steps": -1}}))
    assert main(["--params", str(p), "traces", "--out", str(tmp_path / "d")]) == 2
    assert "train.max_steps: -1 is invalid" in caplog.text
    assert not (tmp_path / "d").exists()
    assert main(["--params", str(p), "--set", "train.max_steps=2", "traces", "--out", str(tmp_path / "d")]) == 0
    assert (tmp_path / "d" / "train.parquet").exists() and (tmp_path / "d" / "stats.json").exists()


def run(cmd: list[str], cwd: Path) -> str:
    res = subprocess.run(cmd, cwd=cwd, env=tool_env(), capture_output=True, text=True)
    assert res.returncode == 0, f"{cmd} failed:\n{res.stdout}\n{res.stderr}"
    return res.stdout


@pytest.mark.slow
def test_dvc_repro_runs_the_pipeline_and_is_then_up_to_date(tmp_path: Path) -> None:
    repo = copy_project(tmp_path / "repo", {"tracking": {"enabled": False}})  # MLflow: test_flow, test_stack
    run(["dvc", "repro"], repo)
    summary = (repo / "results" / "summary.md").read_text()
    assert "| metric | ssft | sft | random |" in summary
    for method in ("ssft", "sft", "random"):
        assert (repo / "models" / method / "tags.json").exists()
        assert (repo / "results" / method / "details.jsonl").exists()
    assert "up to date" in run(["dvc", "repro"], repo)
    assert "cons@N" in run(["dvc", "metrics", "show"], repo)
    assert not (repo / "mlruns").exists()


def dvc_stages() -> dict[str, dict]:
    """dvc.yaml's stages as written (a foreach stage: its ``do`` body)."""
    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "dvc.yaml").read_text())["stages"]
    return {name: body.get("do", body) for name, body in raw.items()}


def _paths(entries: list) -> list[str]:
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries]


def unnamed_outputs(stages: dict[str, dict]) -> list[str]:
    """Outputs (outs, metrics, plots) whose path, or a directory above it, the stage's ``cmd`` does not name."""
    bad = []
    for name, body in stages.items():
        words = body["cmd"].split()
        for out in _paths(body.get("outs", []) + body.get("metrics", []) + body.get("plots", [])):
            if not any(out == w or out.startswith(w.rstrip("/") + "/") for w in words):
                bad.append(f"{name}: {out} is not named in `{body['cmd']}`")
    return bad


def test_every_stage_command_names_its_outputs() -> None:
    assert unnamed_outputs(dvc_stages()) == []
    planted = {"train": {"cmd": "ssft train --method x", "outs": ["models/x"]}}
    assert unnamed_outputs(planted), "a cmd that does not name its output is caught"


def test_stage_deps_and_params_are_the_lists_of_ssft_stages() -> None:
    """dvc.yaml, the trainer's checkpoint fingerprint and the study's cell key read one list (ssft.stages)."""
    from ssft import stages

    found = dvc_stages()
    # dvc.yaml stage -> its list in ssft.stages (the RL models are evaluated like the others)
    lists = {**{name: name for name in stages.STAGES}, "evaluate-gfpo": "evaluate"}
    assert set(found) - {"report", "register", "register-gfpo"} == set(lists), \
        "a dvc.yaml stage without its list in ssft.stages"
    for name, key in lists.items():
        inputs = stages.STAGES[key]
        code = {d for d in _paths(found[name]["deps"]) if d.startswith("ssft/")}
        assert code == set(inputs.code), f"{name}: dvc.yaml deps {sorted(code)} != ssft.stages {inputs.code}"
        assert set(found[name]["params"]) == set(inputs.params), name


def test_report_deps_follow_train_methods() -> None:
    root = Path(__file__).resolve().parents[1]
    params = yaml.safe_load((root / "params.yaml").read_text())
    dirs = [*params["train"]["methods"], *(f"gfpo/{m}" for m in params["gfpo"]["methods"])]
    deps = {d for d in dvc_stages()["report"]["deps"] if d.startswith("results/")}
    assert deps == {f"results/{m}/{f}" for m in dirs for f in ("metrics.json", "details.jsonl")}


def test_register_deps_are_the_champion_baselines() -> None:
    """register waits for the evaluations the champion rule compares with (tracking.baselines): a baseline
    missing from its deps would be decided on before (or without) its evaluation."""
    root = Path(__file__).resolve().parents[1]
    params = yaml.safe_load((root / "params.yaml").read_text())
    found = dvc_stages()
    for stage, sub, trained in (("register", "", params["train"]["methods"]),
                                ("register-gfpo", "gfpo/", params["gfpo"]["methods"])):
        deps = {d for d in found[stage]["deps"] if d.startswith("results/")}
        want = {f"results/{sub}{m}/metrics.json" for m in ["ssft", *params["tracking"]["baselines"]] if m in trained}
        assert deps == want, f"dvc.yaml {stage}: deps {sorted(deps)}, tracking.baselines needs {sorted(want)}"


def test_committed_dvc_lock_matches_the_code() -> None:
    """dvc.lock records the code, params and data the committed demo outputs came from: editing any of them
    without re-running the pipeline (`dvc repro`, then commit dvc.lock and results/) fails here. Outputs
    missing from a fresh clone are fine."""
    import json

    root = Path(__file__).resolve().parents[1]
    status = json.loads(run(["dvc", "status", "--json"], root) or "{}")
    drift = {}
    for stage, changes in status.items():
        for change in changes:
            if not isinstance(change, dict):  # e.g. "changed command", "always changed"
                drift.setdefault(stage, []).append(change)
                continue
            deps = {p: s for p, s in change.get("changed deps", {}).items() if s != "deleted"}  # outputs not pulled
            if deps or change.get("changed params") or change.get("changed command"):
                drift[stage] = {"deps": deps, "params": change.get("changed params")}
    assert not drift, f"dvc.lock is stale: run `dvc repro` and commit dvc.lock and results/: {drift}"


def test_one_error_boundary_user_errors_exit_2_bugs_keep_their_traceback(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    import errno

    from ssft import cli

    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(TINY))
    base = ["--params", str(p), "report", "--results", str(tmp_path / "r")]

    def bug(cfg, args):  # noqa: ANN001, ANN202 - a plain ValueError from deep inside is a bug, not bad input
        raise ValueError("an internal invariant broke")

    monkeypatch.setitem(cli.COMMANDS, "report", bug)
    with pytest.raises(ValueError, match="internal invariant"):
        main(base)

    def disk_full(cfg, args):  # noqa: ANN001, ANN202
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "r"))

    monkeypatch.setitem(cli.COMMANDS, "report", disk_full)
    assert main(base) == 2
    assert "No space left on device" in caplog.text and "free space or choose another output directory" in caplog.text
    monkeypatch.undo()
    assert main(base) == 2 and "run `ssft evaluate --method ssft` first" in caplog.text  # a user error: one line
    assert "Traceback" not in caplog.text


def test_a_second_writer_of_the_same_output_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """While one process writes data/traces (or a checkpoint or results directory), another one stops at once,
    naming the directory and the holder; the lock goes with the holder."""
    import os

    from ssft import atomic

    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "traces"
    with atomic.exclusive(out):
        assert main(["--params", str(p), "traces", "--out", str(out)]) == 2
    assert f"{out} is being written by another process (pid {os.getpid()})" in caplog.text
    assert not out.exists()
    assert main(["--params", str(p), "traces", "--out", str(out)]) == 0, "released with its holder"


@pytest.mark.parametrize("override, message", [
    ("train.lr.x=1", "train.lr.x: train.lr is a value, not a section"),
    ("train.lr=[1", r"--set 'train.lr=\[1': the value is not valid YAML"),
    ("task.options={foo: 1}", r"task.options={'foo': 1}: .*argument 'foo'; add4 takes \['max_operand', 'fork_depth'\]"),
])
def test_bad_overrides_and_options_are_one_line(tmp_path: Path, caplog: pytest.LogCaptureFixture, override: str,
                                                message: str) -> None:
    import re

    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(TINY))
    assert main(["--params", str(p), "--set", override, "traces", "--out", str(tmp_path / "d")]) == 2
    assert re.search(message, caplog.text), caplog.text
    assert not (tmp_path / "d").exists()
