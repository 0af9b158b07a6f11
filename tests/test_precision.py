"""Mixed precision: model.dtype bfloat16 trains float32 master weights under bf16 autocast, so a small
learning rate still moves every weight by about what Adam promises; pure bf16 (the opt-in) does not."""

from pathlib import Path

import pytest
import torch
from conftest import tiny_cfg

from ssft.train import models, precision
from ssft.train.trainer import run_stage

STEPS, LR = 10, 1e-5


def mixed_precision(cfg: object) -> precision.TrainerFlags:
    return precision.decide(cfg.model, torch.cuda.is_available()).trainer_flags()  # type: ignore[attr-defined]


def _saved_dtype(model_dir: Path) -> torch.dtype:
    from safetensors import safe_open

    with safe_open(str(next(model_dir.glob("*.safetensors"))), "pt") as f:
        return f.get_tensor(next(iter(f.keys()))).dtype


def _update(tmp: Path, trace_dir: Path, **over: object) -> tuple[torch.Tensor, torch.dtype]:
    """|trained - init| of every weight after STEPS constant-lr Adam steps (no decay, no warm-up)."""
    cfg = tiny_cfg(**{"train.lr": LR, "train.max_steps": STEPS, "train.warmup_steps": 0, "train.scheduler": "constant",
                      "train.weight_decay": 0.0, "train.save_steps": 100, **over})
    init, _ = models.build(tiny_cfg().model, 4, seed=0)
    run_stage(cfg, "sft", trace_dir / "train.parquet", tmp / "model", tmp / "ckpt")
    trained, _, _ = models.load(tmp / "model")
    a = torch.cat([p.detach().float().flatten() for p in init.parameters()])
    b = torch.cat([p.detach().float().flatten() for p in trained.parameters()])
    return (b - a).abs(), _saved_dtype(tmp / "model")


def test_bf16_mixed_precision_moves_weights_like_float32(tmp_path: Path, trace_dir: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from ssft.train import loss

    assert mixed_precision(tiny_cfg(**{"model.dtype": "bfloat16"})) == {"bf16": True, "fp16": False}
    assert precision.decide(tiny_cfg(**{"model.dtype": "bfloat16"}).model, cuda=False) == precision.Precision(
        master="float32", compute="bfloat16")
    fp32, _ = _update(tmp_path / "fp32", trace_dir)
    seen: set[torch.dtype] = set()
    compute_dtype = loss._compute_dtype
    monkeypatch.setattr(loss, "_compute_dtype", lambda h: seen.add(compute_dtype(h)) or compute_dtype(h))
    bf16, saved = _update(tmp_path / "bf16", trace_dir, **{"model.dtype": "bfloat16"})
    assert seen == {torch.bfloat16}, f"the loss ran in {seen}: autocast was not on"
    # Adam moves a weight by ~lr per step while its gradient keeps its sign: median |update| ~ 0.9 x STEPS x LR.
    assert float((bf16 > 0).float().mean()) == 1.0, "some weights never moved"
    assert 0.7 <= float(bf16.median()) / (STEPS * LR) <= 1.05
    assert float((bf16 - fp32).abs().mean() / fp32.mean()) < 0.1, "bf16 updates differ from float32 ones"
    assert saved == torch.float32, "trained weights are saved in float32 by default"
    assert models.load(tmp_path / "bf16" / "model")[2]["dtype"] == "bfloat16", "tags.json records the trained dtype"


def test_pure_bf16_is_an_opt_in_that_loses_small_updates(tmp_path: Path, trace_dir: Path) -> None:
    """The control: without float32 master weights most of each update is rounded away."""
    assert mixed_precision(tiny_cfg(**{"model.dtype": "bfloat16", "model.pure_dtype": True})) == {
        "bf16": False, "fp16": False}
    pure, _ = _update(tmp_path, trace_dir, **{"model.dtype": "bfloat16", "model.pure_dtype": True})
    assert float(pure.median()) / (STEPS * LR) < 0.5


def test_save_dtype(tmp_path: Path, trace_dir: Path) -> None:
    _, saved = _update(tmp_path, trace_dir, **{"model.save_dtype": "bfloat16", "train.max_steps": 1})
    assert saved == torch.bfloat16


def test_float16_needs_a_gpu() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="model.dtype=float16 needs a CUDA GPU"):
        mixed_precision(tiny_cfg(**{"model.dtype": "float16"}))
