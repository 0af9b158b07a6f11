"""FSDP2 on the CPU: `ssft train --method ssft` launched with configs/accelerate/fsdp.yaml on 2 gloo ranks trains
exactly as DDP (torchrun, 2 ranks) does, and what lives between forward and backward is measured.

accelerate 1.15 never selects FSDP on the CPU (it trains such a launch as DDP, silently); bench/fsdp_train.py
opens that one gate and reports, per rank, the wrapping, the head's shard and what the forward saved for
backward (its docstring says how). Both runs go through it, so both print the same report.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT, TINY, tool_env
from safetensors.torch import load_file

from ssft.data import traces
from ssft.data.sources import synthetic
from ssft.data.tasks import get_task

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
SSFT_ARGS = ["train", "--method", "ssft"]


def _launch(launcher: list[str], work: Path, data: Path, params: Path) -> dict:
    res = subprocess.run([*launcher, str(ROOT / "bench" / "fsdp_train.py"), "--params", str(params), *SSFT_ARGS,
                          "--traces", str(data), "--models", str(work / "m"), "--checkpoints", str(work / "ck")],
                         cwd=ROOT, env=tool_env(OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    reports = [json.loads(line)["fsdp_report"] for line in res.stdout.splitlines() if line.startswith('{"fsdp_report')]
    return {"reports": sorted(reports, key=lambda r: r["rank"]), "stats": json.loads(
        (work / "m" / "ssft" / "train_stats.json").read_text()), "weights": load_file(work / "m" / "ssft" /
                                                                                    "model.safetensors")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """The same training twice: FSDP (accelerate launch, the shipped config) and DDP (torchrun), 2 CPU ranks."""
    tmp = tmp_path_factory.mktemp("fsdp")
    splits = synthetic.synthetic_splits(get_task("add4", marked=True), 32, 8, 0)
    for split, rows in splits.items():
        traces.write(rows, tmp / "data" / f"{split}.parquet")
    # 32 questions / (4 per rank x 2 ranks): 4 steps an epoch, 2 epochs; a checkpoint (FSDP's full state) at 4
    train = {**TINY["train"], "max_steps": 8, "logging_steps": 1, "save_steps": 4}
    (tmp / "params.yaml").write_text(yaml.safe_dump({**TINY, "train": train, "tracking": {"enabled": False}}))
    fsdp = [str(BIN / "accelerate"), "launch", "--config_file", str(ROOT / "configs/accelerate/fsdp.yaml"),
            "--num_processes", "2", "--main_process_port", "0"]
    return {"fsdp": _launch(fsdp, tmp / "fsdp", tmp / "data", tmp / "params.yaml"),
            "ddp": _launch([str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2"], tmp / "ddp",
                           tmp / "data", tmp / "params.yaml")}


def _curve(stats: dict, key: str) -> list[float]:
    return [h[key] for h in stats["log_history"] if key in h]


def test_fsdp_on_two_cpu_ranks_trains_as_ddp_does(runs: dict[str, dict]) -> None:
    fsdp, ddp = runs["fsdp"], runs["ddp"]
    assert [r["fsdp"] for r in fsdp["reports"]] == [True, True], fsdp["reports"]
    assert all(r["cpu_fsdp_gate_opened"] for r in fsdp["reports"]), \
        "accelerate chose FSDP on the CPU by itself: README's note and bench/fsdp_train.py's gate are outdated"
    assert [r["fsdp"] for r in ddp["reports"]] == [False, False]
    head = fsdp["reports"][0]["head"]
    # FSDP2 shards every parameter on dim 0: each rank holds its rows of the head, and its gradient is that shard
    assert fsdp["reports"][0]["model"] == "FSDPLlamaForCausalLM"
    assert sum(r["head_local"][0] for r in fsdp["reports"]) == head[0]
    assert all(r["grad_local"] == r["head_local"] != head for r in fsdp["reports"])
    assert all(r["grad_local"] == head for r in ddp["reports"])

    a, b = fsdp["stats"], ddp["stats"]
    assert a["steps"] == b["steps"] == 8
    for key in ("loss", "grad_norm"):
        assert len(_curve(a, key)) == 8 and _curve(a, key) == pytest.approx(_curve(b, key), rel=1e-5), key
    assert [e["questions"] for e in a["epochs"]] == [e["questions"] for e in b["epochs"]] == [32, 32]
    for ea, eb in zip(a["epochs"], b["epochs"]):
        assert ea["tag_source_counts"] == eb["tag_source_counts"]
        for key in ("churn", "assignment_entropy", "mean_matched_cost"):  # churn: None in the first epoch
            assert ea[key] == eb[key] or ea[key] == pytest.approx(eb[key], rel=1e-5, abs=1e-7), key
    assert a["tag_source_totals"] == b["tag_source_totals"]

    # the gathered full state dict is an ordinary checkpoint: the same tensors under the same names
    assert sorted(fsdp["weights"]) == sorted(ddp["weights"])
    for name, w in ddp["weights"].items():
        torch.testing.assert_close(fsdp["weights"][name], w, rtol=1e-5, atol=1e-6, msg=name)


def test_under_fsdp_no_vocabulary_sized_float32_tensor_waits_for_backward(runs: dict[str, dict]) -> None:
    """Neither full-vocabulary logits nor an unsharded float32 head gradient is alive between forward and
    backward on any FSDP rank (DDP: the fused loss holds the (V, H) gradient, which DDP's buckets hold anyway)."""
    assert [r["alive_f32_vocab"] for r in runs["fsdp"]["reports"]] == [[], []], runs["fsdp"]["reports"]
