"""Numerics, decided once. Precision: (config, device) -> the dtype weights live in, the dtype the model
computes in, and whether autocast bridges the two. Training, loading, saving and evaluation all ask here.

    float32                     master float32, compute float32, no autocast
    bfloat16 / float16          master float32, compute bf16/fp16 under autocast (mixed precision; fp16 with
                                the Trainer's loss scaler, CUDA only)
    ... + model.pure_dtype      master = compute = bf16/fp16, no autocast (half the memory; small updates lost)

The trained compute dtype is recorded in the model directory (``tags.json``: ``dtype``), so evaluation
reloads a model in the dtype it was trained in, whatever today's params say. The loss kernel
(:func:`resolve_kernel`) is the other numerics choice. torch is imported inside the functions:
``ssft.config`` reads :data:`DTYPES` and :data:`KERNELS` from here without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict

from ssft.errors import UserError

if TYPE_CHECKING:
    import torch

    from ssft.config import ModelConfig

DTYPES = ("float32", "bfloat16", "float16")
# Output projection + cross-entropy (ssft.train.loss): torch (chunked, exact) | liger (fused, CUDA) | auto
KERNELS = ("auto", "torch", "liger")


class TrainerFlags(TypedDict):
    bf16: bool
    fp16: bool


@dataclass(frozen=True)
class Precision:
    master: str     # weights and optimizer state
    compute: str    # matmuls (autocast's dtype when it differs from master)

    @property
    def autocast(self) -> bool:
        return self.compute != self.master

    def trainer_flags(self) -> TrainerFlags:
        """transformers' TrainingArguments flags: they turn on autocast (and fp16's loss scaler)."""
        return TrainerFlags(bf16=self.autocast and self.compute == "bfloat16",
                            fp16=self.autocast and self.compute == "float16")


def decide(cfg: ModelConfig, cuda: bool) -> Precision:
    """The training precision of ``model.dtype`` / ``model.pure_dtype`` on this device."""
    if cfg.dtype == "float16" and not cuda:
        raise UserError("model.dtype=float16 needs a CUDA GPU; use bfloat16 (mixed precision) or float32 on the CPU")
    return Precision(master=cfg.dtype if cfg.pure_dtype else "float32", compute=cfg.dtype)


def for_inference(trained: str | None, cuda: bool) -> str:
    """The dtype a trained model is loaded in to generate: the dtype it computed in during training on a GPU;
    float32 on the CPU (bf16 matmuls are slow there, and the tiny models are trained in float32)."""
    return (trained or "float32") if cuda else "float32"


def torch_dtype(name: str) -> torch.dtype:
    import torch

    if name not in DTYPES:
        raise UserError(f"dtype {name!r}: use one of {', '.join(DTYPES)}")
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_kernel(kernel: str, device_type: str) -> str:
    """``auto`` -> ``liger`` when liger-kernel is installed and the model is on CUDA, else ``torch``."""
    if kernel not in KERNELS:
        raise UserError(f"train.loss_kernel={kernel!r}: use one of {KERNELS}")
    try:
        import liger_kernel  # noqa: F401

        have_liger = True
    except ImportError:
        have_liger = False
    if kernel == "liger" and not (have_liger and device_type == "cuda"):
        raise UserError("train.loss_kernel=liger needs CUDA and liger-kernel (pip install '.[gpu]'); "
                         "use auto or torch")
    if kernel == "auto":
        return "liger" if have_liger and device_type == "cuda" else "torch"
    return kernel
