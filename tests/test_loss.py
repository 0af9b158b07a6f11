"""The chunked loss against plain full-logit cross-entropy: same sums, same per-token values, same
gradients for every parameter, across chunk boundaries, with tied and untied heads and a biased head."""

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from ssft.train import loss as loss_mod
from ssft.train.loss import Targets, _LinearCrossEntropy, _RecomputedLinearCrossEntropy, nll_sum, token_nll

LABELS = torch.tensor([[-100, -100, 9, 5, 3], [-100, 4, 2, -100, -100]])


def test_targets_from_labels_exactly() -> None:
    t = Targets.from_labels(LABELS)
    # Row 0 (T = 5): states 1, 2, 3 predict 9, 5, 3; row 1: states 0, 1 (flat 5, 6) predict 4, 2.
    assert t.positions.tolist() == [1, 2, 3, 5, 6] and t.tokens.tolist() == [9, 5, 3, 4, 2]


def _model(tied: bool) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=37, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                      intermediate_size=32, tie_word_embeddings=tied, attn_implementation="eager")
    return LlamaForCausalLM(cfg)


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 37, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[2, 6:] = 0
    labels = ids.clone()
    labels[:, :3] = -100
    labels[2, 6:] = -100
    return ids, mask, labels


def _reference(model: LlamaForCausalLM, ids, mask, labels) -> torch.Tensor:  # noqa: ANN001
    logits = model(input_ids=ids, attention_mask=mask).logits.float()
    return F.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=-100, reduction="none")


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("logits_per_chunk", [2**25, 37 * 4])  # one chunk; chunks of 4 rows
def test_nll_sum_and_gradients_equal_full_logits(tied: bool, logits_per_chunk: int,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loss_mod, "LOGITS_PER_CHUNK", logits_per_chunk)
    ids, mask, labels = _batch()
    ref_model, model = _model(tied), _model(tied)
    ref = _reference(ref_model, ids, mask, labels).sum()
    ref.backward()
    got = nll_sum(model, ids, mask, Targets.from_labels(labels))
    got.backward()
    assert got.item() == pytest.approx(ref.item(), rel=1e-6)
    for (name, a), b in zip(ref_model.named_parameters(), model.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-6, msg=f"gradient of {name}")
    assert model(input_ids=ids).logits.shape == (3, 9, 37), "the head is restored after the call"


def test_token_nll_equals_per_token_reference() -> None:
    ids, mask, labels = _batch()
    model = _model(True)
    ref = _reference(model, ids, mask, labels)
    keep = labels[:, 1:] != -100
    got = token_nll(model, ids, mask, Targets.from_labels(labels))
    torch.testing.assert_close(got, ref[keep].detach(), rtol=1e-5, atol=1e-6)
    assert not got.requires_grad


@pytest.mark.parametrize("fused", [_LinearCrossEntropy, _RecomputedLinearCrossEntropy])
def test_biased_head_and_scaled_gradient(fused: type) -> None:
    """Each autograd function alone (the FSDP one recomputes the logits in backward), with a bias and a
    non-unit upstream gradient, against autograd."""
    g = torch.Generator().manual_seed(2)
    h, w, b = (torch.randn(*s, generator=g, requires_grad=True) for s in [(7, 5), (11, 5), (11,)])
    tokens = torch.randint(0, 11, (7,), generator=g)
    ref = F.cross_entropy(h @ w.T + b, tokens, reduction="sum") * 3.0
    ref_grads = torch.autograd.grad(ref, (h, w, b))
    got = fused.apply(h, w, b, tokens, 3) * 3.0
    got_grads = torch.autograd.grad(got, (h, w, b))
    assert got.item() == pytest.approx(ref.item(), rel=1e-6)
    for a, c in zip(ref_grads, got_grads):
        torch.testing.assert_close(c, a, rtol=1e-5, atol=1e-6)


def test_under_bf16_autocast_matches_the_autocast_reference() -> None:
    ids, mask, labels = _batch()
    ref_model, model = _model(True), _model(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = _reference(ref_model, ids, mask, labels).sum()
        got = nll_sum(model, ids, mask, Targets.from_labels(labels))
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(ref.item(), rel=1e-2)
    ref.backward()
    got.backward()
    for (name, a), b in zip(ref_model.named_parameters(), model.parameters()):
        assert b.grad.dtype == torch.float32, name  # float32 master weights get float32 gradients
        err = (b.grad - a.grad).norm() / a.grad.norm()
        assert err < 2e-2, f"{name}: relative gradient error {err:.3g} under autocast"


def test_the_head_is_restored_after_an_error() -> None:
    model = _model(True)
    with pytest.raises(IndexError):
        nll_sum(model, *_batch()[:2], Targets(torch.tensor([999]), torch.tensor([0])))
    assert "forward" not in model.get_output_embeddings().__dict__


class _Head(torch.nn.Linear):
    """A head with its own forward (as peft's wrappers have): the loss must call it, not read .weight."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 2.0


def test_a_wrapped_head_runs_its_own_forward() -> None:
    ids, mask, labels = _batch()
    ref_model, model = _model(False), _model(False)
    for m in (ref_model, model):
        head = _Head(16, 37, bias=False)
        head.weight = m.lm_head.weight
        m.lm_head = head
    ref = _reference(ref_model, ids, mask, labels).sum()
    got = nll_sum(model, ids, mask, Targets.from_labels(labels))
    assert got.item() == pytest.approx(ref.item(), rel=1e-6)
    ref.backward()
    got.backward()
    torch.testing.assert_close(model.lm_head.weight.grad, ref_model.lm_head.weight.grad, rtol=1e-5, atol=1e-6)


def test_a_model_that_rescales_its_logits_falls_back_to_full_logits() -> None:
    """Granite divides the head's output by logits_scaling: the fused sum would be divided too."""
    from transformers import GraniteConfig, GraniteForCausalLM

    torch.manual_seed(0)
    model = GraniteForCausalLM(GraniteConfig(vocab_size=37, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                             num_key_value_heads=2, intermediate_size=32, logits_scaling=8.0))
    ids, mask, labels = _batch()
    ref = _reference(model, ids, mask, labels)
    targets = Targets.from_labels(labels)
    assert nll_sum(model, ids, mask, targets).item() == pytest.approx(ref.sum().item(), rel=1e-6)
    torch.testing.assert_close(token_nll(model, ids, mask, targets), ref[labels[:, 1:] != -100].detach())


def test_peft_trainable_tag_rows_on_a_tied_head_take_the_fused_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """LoRA with trainable tag rows wraps a tied head; its merged weight is used, so no logits are kept."""
    peft = pytest.importorskip("peft")
    ids, mask, labels = _batch()
    models = []
    for _ in range(2):
        m = peft.get_peft_model(_model(True), peft.LoraConfig(r=2, target_modules="all-linear",
                                                              trainable_token_indices=[3, 5]))
        with torch.no_grad():  # move the tag rows off their init so a head that ignored them would differ
            for n, p in m.named_parameters():
                if "trainable_tokens_delta" in n:
                    p.add_(0.5)
        models.append(m)
    ref = _reference(models[0], ids, mask, labels).sum()
    ref.backward()
    monkeypatch.setattr(loss_mod, "_selected_rows", None)  # the slow path must not be taken
    got = nll_sum(models[1], ids, mask, Targets.from_labels(labels))
    got.backward()
    assert got.item() == pytest.approx(ref.item(), rel=1e-6)
    for (name, a), b in zip(models[0].named_parameters(), models[1].parameters()):
        if a.requires_grad:
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-6, msg=name)
