"""The benchmarks run (CPU, tiny sizes): `make bench` ends with its ratio line, and the prepared GPU scripts,
which CI cannot run on a GPU, at least run end to end on the CPU and print what they promise."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> list[str]:
    res = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout.strip().splitlines()


def test_cpu_bench_ends_with_ratio_and_agreement() -> None:
    last = _run("bench/bench_step.py", "--questions", "2", "--reps", "1")[-1]
    m = re.fullmatch(r"ssft_step/sft_step=(\d+\.\d+) agreement=(\d\.\d+)", last)
    assert m, last
    assert float(m.group(2)) == 1.0, "float32 scoring must pick the reference assignment"


@pytest.mark.slow  # three fresh processes
def test_memory_bench_measures_each_case_in_its_own_process() -> None:
    lines = _run("bench/bench_memory.py", "--trace-tokens", "16", "--vocab", "1000", "--hidden", "32")
    rows = [json.loads(x) for x in lines if x.startswith("{")]
    assert [r["case"] for r in rows] == ["plain", "project_sft", "project_ssft"]
    assert all(r["peak_mb"] > 0 for r in rows), rows  # the model, AdamW and a step: seen, unlike by tracemalloc
    m = re.fullmatch(r"sft/plain@16=(\d\.\d+) ssft/plain@16=(\d\.\d+) ssft_extra_over_sft@16=(-?\d+\.\d)%", lines[-1])
    assert m, lines[-1]


@pytest.mark.slow
def test_gpu_scripts_run_on_the_cpu(tmp_path: Path) -> None:
    rows = [json.loads(x) for x in _run("bench/gpu_step.py", "--shape", "tiny", "--trace-tokens", "16", "--steps", "1",
                                        "--device", "cpu") if x.startswith("{")]
    cases = [(r["case"], r.get("cost_tokens")) for r in rows if "step_s" in r]
    assert cases == [("plain_sft", None), ("plain_sft_amp", None), ("project_sft", None), ("project_ssft", 12),
                     ("project_ssft", 256), ("project_ssft", 0)]
    assert rows[-1]["case"] == "agreement_bf16_vs_fp32" and 0 <= rows[-1]["agreement"] <= 1
    cli = [json.loads(x) for x in _run("bench/gpu_cli.py", "--shapes", "tiny", "--methods", "ssft", "--max-steps",
                                       "2", "--work", str(tmp_path)) if x.startswith("{")]
    assert [(r["case"], r["dtype"], r["steps"]) for r in cli] == [("cli", "bfloat16", 2), ("cli", "float32", 2)]
    assert all(0 <= r["pass@1"] <= 1 for r in cli)
