"""Next-token NLL that never holds the full-vocabulary logits: for training and for matching costs.

The model runs as usual, through whatever wraps it (DDP, accelerate's autocast, FSDP), but for the call its
output projection ``lm_head`` computes cross-entropy instead of logits, and only at the positions that
carry a label (training) or are scored (the L cost tokens), a chunk of rows at a time. Peak memory grows
with chunk x vocab instead of batch x sequence x vocab, and only one chunk of logits is ever float32.

    nll_sum(model, ids, mask, targets)      summed NLL of the targets, with gradient (training)
    token_nll(model, ids, mask, targets)    NLL of each target, no gradient (matching costs)

``Targets`` names the positions: hidden state ``b * T + t`` predicts token ``tokens[k]``.
Kernels: ``torch`` (chunked; the default and the reference CPU tests check) or liger-kernel's fused linear
cross-entropy (``liger``, CUDA, optional extra ``gpu``). Models that post-process their logits (Gemma's
soft-capping, Cohere's logit scale, Granite's logits_scaling: any model whose output is not what its head
returned) take the plain path: full logits, then the same selection. peft's trainable tag rows on a tied head
are seen through; any other head that is not a plain ``nn.Linear`` (a quantized layer) runs its own forward
on the selected rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)
LOGITS_PER_CHUNK = 2**25  # float32 logits held at once (128 MB): rows per chunk = this // vocab


def right_pad(rows: Sequence[Sequence[int]], labels: Sequence[Sequence[int]], pad_id: int
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, attention mask, labels), each (B, T): the rows left-aligned, padding unlabelled (-100)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    lab = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for k, (r, lb) in enumerate(zip(rows, labels)):
        ids[k, : len(r)], lab[k, : len(r)], mask[k, : len(r)] = torch.tensor(r), torch.tensor(lb), 1
    return ids, mask, lab


@dataclass(frozen=True)
class Targets:
    """Which hidden states are scored and against what: ``positions`` index the (B*T) flattened states."""

    positions: torch.Tensor  # (K,) long
    tokens: torch.Tensor     # (K,) long

    @classmethod
    def from_labels(cls, labels: torch.Tensor) -> Targets:
        """Labels (B, T) aligned with input_ids, -100 where nothing is trained: the state at t predicts t+1.

        >>> Targets.from_labels(torch.tensor([[-100, -100, 9, 5], [-100, 4, 2, -100]]))
        Targets(positions=tensor([1, 2, 4, 5]), tokens=tensor([9, 5, 4, 2]))
        """
        nxt = torch.full_like(labels, -100)
        nxt[:, :-1] = labels[:, 1:]
        flat = nxt.flatten()
        positions = (flat != -100).nonzero().squeeze(1)
        return cls(positions, flat[positions])

    def to(self, device: torch.device | str) -> Targets:
        return Targets(self.positions.to(device, non_blocking=True), self.tokens.to(device, non_blocking=True))

    def __len__(self) -> int:
        return len(self.tokens)


class _LinearCrossEntropy(torch.autograd.Function):
    """Sum over rows of -log softmax(h W^T + b)[token]. Both gradients are computed chunk by chunk during
    the forward (as liger-kernel does), so the backward holds no logits: it only scales them."""

    @staticmethod
    def forward(ctx, h, w, b, tokens, rows):  # noqa: ANN001, ANN205
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        grad_h = torch.empty_like(h) if need_h else None
        grad_w = torch.zeros(w.shape, dtype=torch.float32, device=w.device) if need_w else None
        grad_b = torch.zeros(w.shape[0], dtype=torch.float32, device=w.device) if need_b else None
        for s in range(0, h.shape[0], rows):
            hc, tc = h[s: s + rows], tokens[s: s + rows]
            logits = _logits(hc, w, b)                                              # (C, V) float32
            lse = torch.logsumexp(logits, dim=-1)                                   # (C,)
            total += (lse - logits.gather(1, tc[:, None]).squeeze(1)).sum()
            if not (need_h or need_w or need_b):
                continue
            g = torch.exp(logits.sub_(lse[:, None]), out=logits)                  # softmax, in place
            g[torch.arange(len(tc), device=g.device), tc] -= 1.0                    # d nll / d logits
            if grad_b is not None:
                grad_b += g.sum(0)
            g = g.to(h.dtype)
            if grad_h is not None:
                grad_h[s: s + rows] = g @ w
            if grad_w is not None:
                grad_w += (g.T @ hc).float()
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.dtypes = (w.dtype, None if b is None else b.dtype)
        return total

    @staticmethod
    def backward(ctx, grad_total):  # noqa: ANN001, ANN205
        grad_h, grad_w, grad_b = ctx.saved_tensors
        w_dtype, b_dtype = ctx.dtypes
        scale = lambda g, dtype: None if g is None else (g * grad_total).to(dtype)
        return scale(grad_h, grad_h.dtype if grad_h is not None else None), scale(grad_w, w_dtype), \
            scale(grad_b, b_dtype), None, None


class _RecomputedLinearCrossEntropy(torch.autograd.Function):
    """The same sum, for a sharded head (FSDP2): the forward keeps only each row's log-sum-exp, and the backward
    recomputes each chunk's logits for the gradients. Holding a whole (V, H) float32 weight gradient from forward
    to backward, as :class:`_LinearCrossEntropy` does, would put an unsharded head on every rank; this costs
    one more head matmul instead."""

    @staticmethod
    def forward(ctx, h, w, b, tokens, rows):  # noqa: ANN001, ANN205
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        lse = torch.empty(h.shape[0], dtype=torch.float32, device=h.device)                 # (K,)
        for s in range(0, h.shape[0], rows):
            logits = _logits(h[s: s + rows], w, b)                                      # (C, V) float32
            lse[s: s + rows] = torch.logsumexp(logits, dim=-1)
            total += (lse[s: s + rows] - logits.gather(1, tokens[s: s + rows, None]).squeeze(1)).sum()
        ctx.save_for_backward(h, w, b, tokens, lse)
        ctx.rows = rows
        return total

    @staticmethod
    def backward(ctx, grad_total):  # noqa: ANN001, ANN205
        h, w, b, tokens, lse = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.empty_like(h) if need_h else None
        grad_w = torch.zeros(w.shape, dtype=torch.float32, device=w.device) if need_w else None
        grad_b = torch.zeros(w.shape[0], dtype=torch.float32, device=w.device) if need_b else None
        for s in range(0, h.shape[0], ctx.rows):
            hc, tc = h[s: s + ctx.rows], tokens[s: s + ctx.rows]
            g = torch.exp(_logits(hc, w, b) - lse[s: s + ctx.rows, None])                # softmax
            g[torch.arange(len(tc), device=g.device), tc] -= 1.0
            g = g * grad_total                                                          # d loss / d logits
            if grad_b is not None:
                grad_b += g.sum(0)
            g = g.to(h.dtype)
            if grad_h is not None:
                grad_h[s: s + ctx.rows] = g @ w
            if grad_w is not None:
                grad_w += (g.T @ hc).float()
        return (grad_h, None if grad_w is None else grad_w.to(w.dtype),
                None if grad_b is None else grad_b.to(b.dtype), None, None)


def _sharded(head: nn.Module) -> bool:
    """Is ``head`` an FSDP2-wrapped module (its weight a shard outside its forward)?"""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # a torch without distributed
        return False
    return isinstance(head, FSDPModule)


def _logits(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    out = (h @ w.T).float()
    return out if b is None else out + b.float()


def _rows_per_chunk(vocab: int) -> int:
    return max(1, LOGITS_PER_CHUNK // vocab)


def _per_token(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, tokens: torch.Tensor) -> torch.Tensor:
    """(K,) float32 NLL of each row, no gradient."""
    rows = _rows_per_chunk(w.shape[0])
    with torch.no_grad():
        return torch.cat([F.cross_entropy(_logits(h[s: s + rows], w, b), tokens[s: s + rows], reduction="none")
                          for s in range(0, h.shape[0], rows)]) if len(tokens) else h.new_zeros(0, dtype=torch.float32)


def _selected_rows(head_forward: Callable[[torch.Tensor], torch.Tensor], h: torch.Tensor, tokens: torch.Tensor,
                   reduce: bool, rows: int) -> torch.Tensor:
    """Any head, through its own forward, on the selected rows only (chunked; autograd keeps their logits)."""
    parts = [F.cross_entropy(head_forward(h[s: s + rows]).float(), tokens[s: s + rows],
                             reduction="sum" if reduce else "none") for s in range(0, h.shape[0], rows)]
    if not parts:
        return h.new_zeros((), dtype=torch.float32) if reduce else h.new_zeros(0, dtype=torch.float32)
    return torch.stack(parts).sum() if reduce else torch.cat(parts)


def _liger_sum(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, tokens: torch.Tensor) -> torch.Tensor:
    from liger_kernel.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss

    # Accumulate the weight gradient in float32 across chunks (liger's default is the weight's dtype, bf16 here).
    return LigerFusedLinearCrossEntropyLoss(reduction="sum", accum_dtype=torch.float32)(w, h, tokens, b)


def _compute_dtype(h: torch.Tensor) -> torch.dtype:
    """What the replaced ``lm_head`` would have run in: autocast's dtype inside autocast, else the input's."""
    dev = h.device.type
    return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else h.dtype


def _post_processes_logits(core: nn.Module) -> bool:
    cfg = getattr(core, "config", None)
    text_config = getattr(cfg, "get_text_config", None)
    cfg = text_config() if text_config is not None else cfg
    return bool(getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "logit_scale", None))


@contextmanager
def _head_replaced(core: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """Swap ``lm_head.forward`` for one call. The module and its parameters stay where they are, so state
    dicts, DDP's gradient hooks and FSDP's unsharding around the head all work as usual."""
    # An HF model's method; nn.Module types it as Tensor | Module
    head = core.get_output_embeddings()  # type: ignore[operator]
    previous = head.__dict__.get("forward")  # e.g. an accelerate offload hook
    head.forward = forward
    try:
        yield
    finally:
        if previous is None:
            del head.forward
        else:
            head.forward = previous


def _linear_weights(head: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """The weight and bias ``head`` multiplies by (differentiably), or None for a head we cannot see through."""
    if type(head) is nn.Linear or (_sharded(head) and type(head).__bases__[-1] is nn.Linear):  # FSDP2's FSDPLinear
        linear = cast(nn.Linear, head)
        return linear.weight, linear.bias
    head = getattr(head, "token_adapter", head)  # peft's TrainableTokensWrapper -> its TrainableTokensLayer
    base = getattr(head, "base_layer", None)
    merged_weights = getattr(head, "get_merged_weights", None)
    if type(base) is nn.Linear and merged_weights is not None:  # peft's trainable tag rows on a tied head
        if head.disable_adapters or head.merged or not head.active_adapters:
            return base.weight, base.bias
        return merged_weights(head.active_adapters), base.bias
    return None


def _plain(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, targets: Targets, reduce: bool,
           **model_kwargs: object) -> torch.Tensor:
    """The reference path for models that transform their logits: full logits, then the same selection."""
    logits = model(input_ids=ids, attention_mask=mask, **model_kwargs).logits
    sel = logits.reshape(-1, logits.shape[-1]).index_select(0, targets.positions).float()
    return F.cross_entropy(sel, targets.tokens, reduction="sum" if reduce else "none")


def _run(model: nn.Module, core: nn.Module, ids: torch.Tensor, mask: torch.Tensor, targets: Targets,
         reduce: bool, kernel: str, **model_kwargs: object) -> torch.Tensor:
    if _post_processes_logits(core) or core.__dict__.get("_ssft_plain_logits"):
        return _plain(model, ids, mask, targets, reduce, **model_kwargs)
    # An HF model's method; nn.Module types it as Tensor | Module
    head = core.get_output_embeddings()  # type: ignore[operator]
    produced: list[torch.Tensor] = []

    def forward(hidden: torch.Tensor) -> torch.Tensor:                      # (B, T, H)
        h = hidden.reshape(-1, hidden.shape[-1]).index_select(0, targets.positions)             # (K, H)
        weights = _linear_weights(head)  # read inside the call: FSDP has unsharded it, peft's rows are current
        if weights is None:  # e.g. a quantized head: its own forward, on the selected rows only
            # An HF model's method; nn.Module types it as Tensor | Module
            vocab = core.get_input_embeddings().weight.shape[0]  # type: ignore[operator]
            out = _selected_rows(type(head).forward.__get__(head), h, targets.tokens, reduce, _rows_per_chunk(vocab))
        else:
            dtype = _compute_dtype(hidden)
            h, w = h.to(dtype), weights[0].to(dtype)
            b = None if weights[1] is None else weights[1].to(dtype)
            if not reduce:
                out = _per_token(h, w, b, targets.tokens)
            elif kernel == "liger":
                out = _liger_sum(h, w, b, targets.tokens)
            else:
                fused = _RecomputedLinearCrossEntropy if _sharded(head) else _LinearCrossEntropy
                out = fused.apply(h, w, b, targets.tokens, _rows_per_chunk(w.shape[0]))
        produced.append(out)
        return out

    with _head_replaced(core, forward):
        result = model(input_ids=ids, attention_mask=mask, **model_kwargs).logits
    if produced and result is produced[0]:
        return result
    # The model changed what its head returned (Granite divides by logits_scaling, Falcon-H1 multiplies by
    # lm_head_multiplier): our sums would be scaled too. From now on this model takes the plain path.
    log.warning("%s transforms its head's output; the loss falls back to full logits (more memory)",
                type(core).__name__)
    core.__dict__["_ssft_plain_logits"] = True
    return _plain(model, ids, mask, targets, reduce, **model_kwargs)


def nll_sum(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, targets: Targets, core: nn.Module | None = None,
            kernel: str = "torch", **model_kwargs: object) -> torch.Tensor:
    """Summed next-token NLL (float32 scalar, differentiable) of ``targets`` in rows ``ids`` (B, T).

    ``model`` is what is called (possibly DDP/autocast-wrapped); ``core`` the unwrapped model that owns the
    head (default: ``model``)."""
    return _run(model, core or model, ids, mask, targets, True, kernel, **model_kwargs)


def token_nll(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, targets: Targets, core: nn.Module | None = None,
              **model_kwargs: object) -> torch.Tensor:
    """(K,) float32 NLL of each target, no gradient; ``model_kwargs`` go to the model (cache, positions)."""
    with torch.no_grad():
        return _run(model, core or model, ids, mask, targets, False, "torch", **model_kwargs)
