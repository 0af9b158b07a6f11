"""Reliability and security (issue 19): out-of-range settings, held-out contamination, the teacher cache,
locks, secrets in URLs, backend failures, full disks, truncated checkpoints, killed parents. Each test
reproduces a case that once went wrong."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from conftest import TINY

from ssft import config


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
