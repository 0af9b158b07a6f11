"""ssft.env.git_commit in a temporary git repository: only tracked source makes a commit ``-dirty``."""

import subprocess
from pathlib import Path

import pytest

from ssft.env import dvc_managed, git_commit

LOCK = """schema: '2.0'
stages:
  evaluate@ssft:
    cmd: ssft evaluate --method ssft
    deps:
    - path: ssft/eval
      md5: 1
    outs:
    - path: results/ssft/metrics.json
      md5: 2
  traces:
    cmd: ssft traces --out data/traces
    outs:
    - path: data/traces
      md5: 3.dir
"""


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A committed checkout with source, dvc.lock, a .dvc file, DVC outputs kept in git and a study file."""
    files = {"ssft/eval/evaluate.py": "x = 1\n", "params.yaml": "seed: 0\n", "dvc.lock": LOCK,
             "data/raw.dvc": "outs:\n- md5: 4\n", "results/ssft/metrics.json": "{}\n", "results/study.md": "# s\n"}
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "init")
    return tmp_path


def test_a_clean_checkout_is_its_commit(repo: Path) -> None:
    assert git_commit(repo) == _git(repo, "rev-parse", "HEAD")


@pytest.mark.parametrize("path", ["dvc.lock", "results/ssft/metrics.json", "results/study.md", "data/raw.dvc"])
def test_what_dvc_writes_does_not_make_it_dirty(repo: Path, path: str) -> None:
    """An earlier stage's `dvc commit` rewrote dvc.lock (and outputs kept in git): the code is unchanged."""
    (repo / path).write_text("rewritten by a stage\n")
    assert git_commit(repo) == _git(repo, "rev-parse", "HEAD")


@pytest.mark.parametrize("path", ["ssft/eval/evaluate.py", "params.yaml"])
def test_changed_source_makes_it_dirty(repo: Path, path: str) -> None:
    (repo / "dvc.lock").write_text(LOCK + "# and a stage ran\n")
    (repo / path).write_text("changed\n")
    assert git_commit(repo) == _git(repo, "rev-parse", "HEAD") + "-dirty"


def test_untracked_files_do_not_make_it_dirty(repo: Path) -> None:
    (repo / "scratch.py").write_text("y = 2\n")
    assert not git_commit(repo).endswith("-dirty")


def test_outside_git_it_is_none(tmp_path: Path) -> None:
    assert git_commit(tmp_path) == "none"


def test_dvc_managed_reads_the_output_folders_from_dvc_lock(repo: Path, tmp_path: Path) -> None:
    assert dvc_managed(repo) == ["dvc.lock", "**/*.dvc", "data/**", "results/**"]
    assert dvc_managed(tmp_path / "nolock") == ["dvc.lock", "**/*.dvc"]


def test_the_cli_pins_the_cpu_kernels_before_torch_loads() -> None:
    """torch's CPU kernels and MKL pick a code path per CPU (AVX-512 here, AVX2 elsewhere) and round
    differently; the CLI pins both to AVX2 so every x86 CPU computes the same numbers."""
    import os
    import sys

    from ssft import env

    code = ("import os; from ssft import env; env.apply(); import torch; "
            "print(torch.backends.cpu.get_cpu_capability(), os.environ['MKL_CBWR'])")
    clean = {k: v for k, v in os.environ.items() if k not in env.REPRODUCIBLE}
    out = subprocess.run([sys.executable, "-c", code], env=clean, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["AVX2", "AVX2"]
