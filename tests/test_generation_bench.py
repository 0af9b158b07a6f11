"""`make bench-generation` runs (tiny, on the CPU) and ends with its ratios, consistent with the rates it printed."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # a transformers serve start and its warm-up: ~40 s on 2 busy cores
def test_generation_bench_ends_with_its_ratios() -> None:
    """2 questions x 4 tags, 8 new tokens, one round."""
    res = subprocess.run([sys.executable, "bench/bench_generation.py", "--questions", "2", "--reps", "1",
                          "--max-new-tokens", "8"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.strip().splitlines()
    rates = {m.group(1): float(m.group(2)) for x in lines if (m := re.match(r"\s*(\w+): +(\d+\.\d+) generated", x))}
    assert sorted(rates) == ["hf", "openai", "plain"] and all(r > 0 for r in rates.values()), lines
    m = re.fullmatch(r"openai/hf=(\d+\.\d+) openai/plain=(\d+\.\d+)", lines[-1])
    assert m, lines[-1]
    assert float(m.group(1)) == pytest.approx(rates["openai"] / rates["hf"], rel=0.01)
    assert float(m.group(2)) == pytest.approx(rates["openai"] / rates["plain"], rel=0.01)
