"""configs/real.yaml (settings for a real chat checkpoint) and the warnings for settings that run but mislead:
warm-up as long as training, and generations cut off by eval.max_new_tokens."""

import copy
import logging
from pathlib import Path

import pytest
import yaml
from conftest import tiny_cfg

from ssft import config
from ssft.eval.evaluate import evaluate, warn_if_truncated

ROOT = Path(__file__).resolve().parents[1]


def _flatten(doc: dict, prefix: str = "") -> dict:
    """``{"train": {"lr": 1e-5}}`` -> ``{"train.lr": 1e-5}``: the overlay as the dotted keys it replaces."""
    out = {}
    for key, value in doc.items():
        dotted = f"{prefix}{key}"
        out.update(_flatten(value, dotted + ".") if isinstance(value, dict) and value else {dotted: value})
    return out


def _real() -> tuple[dict, dict]:
    """(params.yaml with configs/real.yaml's keys copied over it, the overlay's dotted keys)."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    overlay = _flatten(yaml.safe_load((ROOT / "configs" / "real.yaml").read_text()))
    merged = copy.deepcopy(raw)
    for dotted, value in overlay.items():
        config.set_dotted(merged, dotted, value)
    return merged, overlay


def test_the_real_overlay_replaces_existing_keys_only() -> None:
    """Every key of the overlay is one params.yaml has, so copying it over params.yaml replaces, never adds."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    _, overlay = _real()
    missing = [k for k in overlay if k not in _flatten(raw)]
    assert not missing, f"configs/real.yaml keys params.yaml does not have: {missing}"


def test_params_with_the_real_overlay_is_a_valid_config_for_a_chat_checkpoint() -> None:
    merged, _ = _real()
    cfg = config.from_dict(merged, "params.yaml + configs/real.yaml")
    assert cfg.train.lr <= 1e-4, "a pretrained checkpoint fine-tunes at ~1e-5, not the tiny model's 2e-3"
    assert cfg.eval.max_new_tokens >= 1000, "chat models reason for thousands of tokens"
    assert 0 < cfg.train.warmup_steps <= cfg.train.max_steps // 10, "warm-up is a small fraction of training"
    assert cfg.model.dtype == "bfloat16" and cfg.data.checker == "math"
    assert cfg.eval.samples % cfg.ssft.num_tags == 0 and max(cfg.eval.ks) <= cfg.eval.samples


def _params(tmp_path: Path, warmup: int, steps: int) -> Path:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["train"].update(warmup_steps=warmup, max_steps=steps)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("warmup, steps, warned", [(50, 30, True), (30, 30, True), (29, 30, False), (0, 1, False)])
def test_load_warns_when_warmup_is_not_shorter_than_training(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                             warmup: int, steps: int, warned: bool) -> None:
    with caplog.at_level(logging.WARNING, logger="ssft.config"):
        config.load(_params(tmp_path, warmup, steps))
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(lines) == int(warned), lines
    if warned:
        assert f"train.warmup_steps={warmup}" in lines[0] and f"train.max_steps={steps}" in lines[0]


@pytest.mark.parametrize("lengths, share", [([8, 8, 8, 3], "75%"), ([8, 3], None), ([9, 8], "100%"), ([], None)])
def test_warns_when_most_generations_hit_max_new_tokens(caplog: pytest.LogCaptureFixture, lengths: list[int],
                                                        share: str | None) -> None:
    with caplog.at_level(logging.WARNING, logger="ssft.eval.evaluate"):
        warn_if_truncated([{"length": n} for n in lengths], 8)
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    if share is None:
        assert lines == []
    else:
        assert len(lines) == 1 and lines[0].startswith(share) and "eval.max_new_tokens=8" in lines[0], lines


def test_evaluate_warns_when_its_generations_are_cut_off(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The stage itself: a barely trained model with a 2-token budget never finishes a generation."""
    from ssft.data import traces
    from ssft.data.sources import synthetic
    from ssft.data.tasks import get_task
    from ssft.train.trainer import run_stage

    cfg = tiny_cfg(**{"train.max_steps": 2, "train.warmup_steps": 1, "eval.max_new_tokens": 2, "eval.ks": [2]})
    for split, rows in synthetic.synthetic_splits(get_task("add4", marked=True), 8, 4, 0).items():
        traces.write(rows, tmp_path / f"{split}.parquet")
    run_stage(cfg, "sft", tmp_path / "train.parquet", tmp_path / "model", tmp_path / "ckpt")
    with caplog.at_level(logging.WARNING, logger="ssft.eval.evaluate"):
        evaluate(cfg, tmp_path / "model", tmp_path / "eval.parquet", tmp_path / "results")
    assert any("100% of generations hit eval.max_new_tokens=2" in r.getMessage() for r in caplog.records)
