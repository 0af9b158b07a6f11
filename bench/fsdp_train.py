"""`ssft train` exactly as the CLI runs it, plus one JSON report line per rank on what FSDP did to the head.

    accelerate launch --config_file configs/accelerate/fsdp.yaml --num_processes K bench/fsdp_train.py \\
        --params params.yaml train --method ssft --traces ... --models ... --checkpoints ...
    torchrun --nproc_per_node K bench/fsdp_train.py ...      # DDP (or a plain python run): the same report

The line, printed by every rank after training: ``{"fsdp_report": {...}}`` with
    fsdp               the Trainer ran under FSDP (``is_fsdp_enabled``) and the model class (FSDP2: FSDP<Model>)
    head, head_local   the output projection's global shape and this rank's part of it (the shard under FSDP)
    alive_f32_vocab    shapes of the float32 tensors with a vocabulary-sized dimension that a training forward
                       saved for its backward and that are still allocated once the forward returned (parameters
                       and the unsharded weights FSDP2 frees after the forward do not count): full-vocabulary
                       logits (K, V), an unsharded float32 head gradient (V, H). [] is the goal under FSDP.
    alive_f32_vocab_mb their size (MB, the largest over the steps); saved_mb: everything saved and alive
    grad_local         the head gradient's local shape when the optimizer steps (the shard's under FSDP)
    peak_mb            CUDA allocator peak, or the process's max RSS on the CPU

On the CPU, accelerate 1.15 never trains with FSDP: ``AcceleratorState`` turns the distributed type into FSDP
only for GPU-like types, and a CPU run (the Trainer passes ``cpu=True`` when there is no CUDA) is MULTI_CPU,
which silently trains as DDP with ``is_fsdp_enabled`` False. torch's FSDP2 (``fully_shard``) itself runs on the
CPU with gloo, so when the launch asks for FSDP (``ACCELERATE_USE_FSDP=true``) and there is no CUDA, this script
opens that one gate (distributed type FSDP, the plugin accelerate built from the config); everything after it
(wrapping, sharding, the full state dict on save) is accelerate's, transformers' and this project's own code.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from collections.abc import Iterable
from typing import Any

import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

REPORT: dict[str, Any] = {"rank": int(os.environ.get("RANK", "0")), "fsdp": False, "model": None, "head": None,
                          "head_local": None, "alive_f32_vocab": [], "alive_f32_vocab_mb": 0.0, "saved_mb": 0.0,
                          "grad_local": None, "cpu_fsdp_gate_opened": False}


def open_cpu_fsdp_gate() -> None:
    """FSDP on the CPU: after accelerate's state is built as MULTI_CPU, make it FSDP with the plugin it was given."""
    import accelerate.state as st
    from accelerate.utils import DistributedType

    init = st.AcceleratorState.__init__

    def patched(self, *args, fsdp_plugin=None, **kwargs):  # noqa: ANN001, ANN202
        first = not st.AcceleratorState._shared_state
        init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if first and fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin
            st.PartialState._shared_state["distributed_type"] = DistributedType.FSDP
            REPORT["cpu_fsdp_gate_opened"] = True

    st.AcceleratorState.__init__ = patched


def _local_shape(t: torch.Tensor | None) -> list[int] | None:
    if t is None:
        return None
    return list(t.to_local().shape if hasattr(t, "to_local") else t.shape)


def _storage(t: torch.Tensor) -> int:
    return (t.to_local() if hasattr(t, "to_local") else t).untyped_storage().data_ptr()


def _mb(tensors: Iterable[torch.Tensor]) -> float:
    return round(sum(t.untyped_storage().nbytes() for t in tensors) / 2**20, 3)


def instrument() -> None:
    """Record, in every training forward, what is saved for backward; and the head gradient at each step."""
    from ssft.train.trainer import SSFTTrainer

    compute_loss = SSFTTrainer.compute_loss
    head_param: list[torch.nn.Parameter] = []

    def wrapped(self, model, inputs, *args, **kwargs):  # noqa: ANN001, ANN202
        core = self.accelerator.unwrap_model(model)
        weight = core.get_output_embeddings().weight
        full = tuple(weight.shape)  # a DTensor's shape is the global one
        REPORT.update(fsdp=bool(self.is_fsdp_enabled), model=type(core).__name__, head=list(full),
                      head_local=_local_shape(weight))
        head_param[:] = [weight]
        saved: list[torch.Tensor] = []

        def pack(t: torch.Tensor) -> torch.Tensor:
            saved.append(t)
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = compute_loss(self, model, inputs, *args, **kwargs)
        # After the forward FSDP2 has freed the unsharded parameters (storage resized to 0); parameters are not
        # extra memory. What is left waits for the backward.
        params = {_storage(p) for p in model.parameters()}
        alive = {_storage(t): t for t in saved if t.untyped_storage().nbytes() and _storage(t) not in params}
        vocab = {k: t for k, t in alive.items() if t.dtype == torch.float32 and full[0] in t.shape}
        REPORT["saved_mb"] = max(REPORT["saved_mb"], _mb(alive.values()))
        REPORT["alive_f32_vocab_mb"] = max(REPORT["alive_f32_vocab_mb"], _mb(vocab.values()))
        shapes = {*map(tuple, REPORT["alive_f32_vocab"]), *(tuple(t.shape) for t in vocab.values())}
        REPORT["alive_f32_vocab"] = sorted(shapes)
        return out

    def before_step(optimizer, args, kwargs):  # noqa: ANN001, ANN202
        if head_param:
            REPORT["grad_local"] = _local_shape(head_param[0].grad)

    SSFTTrainer.compute_loss = wrapped
    register_optimizer_step_pre_hook(before_step)


def peak_mb() -> float:
    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


def main(argv: list[str]) -> int:
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true" and not torch.cuda.is_available():
        open_cpu_fsdp_gate()
    instrument()
    from ssft.cli import main as cli

    rc = cli(argv)
    sys.stdout.flush()  # one write() per line: the ranks share the launcher's stdout
    os.write(sys.stdout.fileno(), (json.dumps({"fsdp_report": {**REPORT, "peak_mb": peak_mb()}}) + "\n").encode())
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
