"""The real local stack, as a user runs it: scripts/up.sh starts a Prefect server, an MLflow server and the
deployment server; `prefect deployment run ssft/smoke --watch` runs the pipeline; MLflow's client sees the
runs, metrics and registered model; scripts/down.sh leaves no process behind."""

import os
import socket
import subprocess
from pathlib import Path

import mlflow
import pytest
from conftest import copy_project, tool_env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def request(port: int, path: str, headers: dict[str, str], body: bytes | None = b"{}") -> int:
    """Status of a raw HTTP request to the local Prefect API (urllib would follow nothing, add nothing)."""
    import urllib.error
    import urllib.request

    req = urllib.request.Request(f"http://127.0.0.1:{port}/api{path}", data=body, headers=headers,
                                 method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def assert_only_this_checkout_gets_in(port: int, auth: str) -> None:
    """What a hostile web page (or a DNS-rebound one) can send is refused: it has no password, and with one it
    still has no CSRF token; the checkout's own client (password from $PREFECT_HOME/auth) gets in."""
    import base64

    page = {"Origin": "http://evil.example", "Host": "evil.example", "Content-Type": "application/json"}
    basic = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()}
    assert request(port, "/flow_runs/filter", page) in (401, 403)
    assert request(port, "/deployments/filter", {**page, "Host": f"127.0.0.1:{port}"}) in (401, 403)
    assert request(port, "/flow_runs/filter", {**page, **basic}) == 403, "no CSRF token: refused"
    codes = {path: request(port, path, {"Host": "evil.example"}, body=None)
             for path in ("/admin/version", "/csrf-token?client=x")}
    assert set(codes.values()) == {401}, f"no password: refused {codes}"
    assert request(port, "/health", basic, body=None) == 200


def status(url: str, headers: dict[str, str]) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def basic_auth(user: str, password: str) -> dict[str, str]:
    import base64

    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def assert_mlflow_asks_for_the_login(port: int, password: str) -> None:
    """The MLflow server takes no request without this checkout's login (user ssft), a wrong password neither;
    ``/health`` answers anyone (up.sh waits on it)."""
    api = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=1"
    assert status(api, {}) == 401, "no login: refused"  # was: 200, anyone on the machine got in
    assert status(api, basic_auth("ssft", password + "x")) == 401
    assert status(api, basic_auth("ssft", password)) == 200
    assert status(f"http://127.0.0.1:{port}/health", {}) == 200


@pytest.mark.slow
def test_up_smoke_deployment_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = copy_project(tmp_path / "repo")
    env = tool_env(PREFECT_PORT=str(free_port()), MLFLOW_PORT=str(free_port()))
    for key in ("PREFECT_API_URL", "PREFECT_HOME", "MLFLOW_TRACKING_URI"):
        env.pop(key, None)
    up = subprocess.run(["scripts/up.sh"], cwd=repo, env=env, capture_output=True, text=True, timeout=400)
    run_dir = repo / ".prefect" / "run"
    pids = {f.stem: int(f.read_text()) for f in run_dir.glob("*.pid")}
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert set(pids) == {"prefect", "mlflow", "serve"}
        assert_only_this_checkout_gets_in(int(env["PREFECT_PORT"]), (repo / ".prefect" / "auth").read_text().strip())
        again = subprocess.run(["scripts/up.sh"], cwd=repo, env=env, capture_output=True, text=True, timeout=60)
        assert again.returncode == 0 and "starting" not in again.stdout, "re-running up is harmless"
        run = subprocess.run(["bash", "-c", ". scripts/env.sh && python -m flows.watch ssft/smoke"],
                             cwd=repo, env=env, capture_output=True, text=True, timeout=700)
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
        # the terminal shows the stages' own progress lines, then the final state
        import re

        assert re.search(r"step \d+/\d+ +loss [\d.]+", run.stdout), run.stdout[-2000:]
        *_, completed, last = run.stdout.strip().splitlines()
        assert completed.endswith(": Completed") and last.startswith("Headline, ssft vs baselines: cons@N "), last
        assert run.stdout.count("| metric |") == 1, "the table is printed once, at the end"
        ui = f"http://127.0.0.1:{env['MLFLOW_PORT']}"
        password = (repo / ".prefect" / "mlflow-auth").read_text().strip()
        assert_mlflow_asks_for_the_login(int(env["MLFLOW_PORT"]), password)
        assert (repo / ".prefect" / "mlflow-auth").stat().st_mode & 0o077 == 0, "the password is the user's alone"
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "ssft")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        client = mlflow.MlflowClient(ui)
        exp = client.get_experiment_by_name("ssft-smoke")
        runs = [r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" not in r.data.tags]
        assert {r.data.tags["method"] for r in runs} == {"ssft", "sft", "random"}
        assert all("eval/cons_at_N" in r.data.metrics and "train/loss" in r.data.metrics for r in runs)
        # the run links back to its Prefect flow run; the terminal ends with links into MLflow that answer
        note = runs[0].data.tags["mlflow.note.content"]
        assert f"(http://127.0.0.1:{env['PREFECT_PORT']}/flow-runs/flow-run/" in note, note
        assert f"MLflow runs view: {ui}/#/experiments/{exp.experiment_id}/runs" in run.stdout, run.stdout[-3000:]
        assert f"MLflow comparison (ssft, sft, random: cons@N, pass@1, coverage, pass@N, train/loss): " \
               f"{ui}/#/experiments/{exp.experiment_id}/runs?viewStateShareKey=ssft-" in run.stdout
        assert f"MLflow Compare page (params, metrics, common artifacts): {ui}/#/compare-runs?runs=" in run.stdout
        import urllib.request

        figure = re.search(rf"\(({re.escape(ui)}/get-artifact\?path=comparison_metrics.png&run_uuid=\w+)\)",
                           run.stdout)
        assert figure, run.stdout[-3000:]
        login = basic_auth("ssft", password)  # what the browser asks for
        with urllib.request.urlopen(urllib.request.Request(figure.group(1), headers=login), timeout=30) as r:
            assert r.status == 200 and r.read(8) == b"\x89PNG\r\n\x1a\n", "the figure the Prefect artifact shows"
        assert not client.search_registered_models("name = 'ssft-smoke'"), "the smoke run stays out of the registry"
        keys = subprocess.run(["bash", "-c", ". scripts/env.sh && prefect artifact ls"], cwd=repo,
                              env={**env, "COLUMNS": "300"}, capture_output=True, text=True, timeout=60).stdout
        assert "ssft-smoke-summary" in keys and "ssft-summary" not in keys, keys
        assert not list((repo / ".prefect" / "workspaces").glob("*")), "the scratch workspace is cleaned up"
        # a misspelled flow parameter: the run fails and the terminal's last line says which key and the fix
        bad = subprocess.run(["bash", "-c", ". scripts/env.sh && python -m flows.watch ssft/smoke --param "
                              "train.max_step=5"], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
        last = bad.stdout.strip().splitlines()[-1]
        assert bad.returncode == 1 and ": Failed: " in last and "train.max_step" in last, bad.stdout[-2000:]
    finally:
        down = subprocess.run(["scripts/down.sh"], cwd=repo, env=env, capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    assert not [name for name, pid in pids.items() if alive(pid)], "down leaves no process behind"
    leftovers = subprocess.run(["pgrep", "-f", str(repo)], capture_output=True, text=True).stdout.split()
    assert not leftovers, f"processes still running from {repo}: {leftovers}"


def test_deployment_run_without_a_server_is_one_line(tmp_path: Path) -> None:
    repo = copy_project(tmp_path / "repo")
    env = tool_env(PREFECT_PORT=str(free_port()))
    for key in ("PREFECT_API_URL", "PREFECT_HOME"):
        env.pop(key, None)
    res = subprocess.run(["bash", "-c", ". scripts/env.sh && prefect deployment run ssft/full --watch"], cwd=repo,
                         env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [
        f"prefect: no Prefect server answers at http://127.0.0.1:{env['PREFECT_PORT']}/api; start the local stack "
        "with `make up`"]
