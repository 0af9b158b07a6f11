"""Checkpoint hygiene on tiny local 'pretrained' checkpoints built here (nothing is downloaded): the
checkpoint's own tokenizer, trained tag rows kept, tags from ``model.tag_format`` through to evaluation, a
plain layout without a chat template, every eos id of ``generation_config``, one MLflow run per torchrun job."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CHATML, qwen2_checkpoint
from conftest import bpe_tokenizer as kit_tokenizer
from tokenizers import pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from ssft.config import ModelConfig
from ssft.data.traces import QuestionTraces
from ssft.generation.hf import HfSampler, stop_ids
from ssft.generation.sampler import cut
from ssft.train import models
from ssft.train.forking import PromptLayout, prompt_ids, prompt_text, question_ids
from ssft.train.trainer import tokenize

SENTENCES = ["the cat sat on the mat", "what is two plus two", "four is the answer, isn't it", "1 + 2 = 3 #3"]
QUESTION = "what is two plus two"


def bpe_tokenizer(pre_tokenizer: pre_tokenizers.PreTokenizer = None, chat: bool = True,
                  think: bool = False) -> PreTrainedTokenizerFast:
    return kit_tokenizer(SENTENCES, pre_tokenizer, chat, think)


# -- 1. the checkpoint's own tokenizer ---------------------------------------------------------------------
@pytest.mark.parametrize("pre", [pre_tokenizers.ByteLevel(add_prefix_space=True), pre_tokenizers.Whitespace()],
                         ids=["bytelevel-prefix-space", "whitespace"])
def test_checkpoint_tokenizer_is_kept_as_saved(tmp_path: Path, pre: pre_tokenizers.PreTokenizer) -> None:
    tok = bpe_tokenizer(pre)
    qwen2_checkpoint(tmp_path / "base", tok)
    text = "the cat sat on two mats, isn't it"
    before = tok.encode(text, add_special_tokens=False)
    # What the test guards against: for a qwen2 config AutoTokenizer rebuilds the pre-tokenizer.
    assert AutoTokenizer.from_pretrained(tmp_path / "base").encode(text, add_special_tokens=False) != before

    _, loaded = models.pretrained_model(ModelConfig(checkpoint=str(tmp_path / "base")), 4)
    assert loaded.encode(text, add_special_tokens=False) == before
    assert (loaded.chat_template, loaded.eos_token, loaded.pad_token, loaded.bos_token) == (
        CHATML, "<|im_end|>", "<|endoftext|>", None)
    assert [loaded.convert_tokens_to_ids(t) for t in ("<|im_start|>", "<|im_end|>")] == [
        tok.convert_tokens_to_ids(t) for t in ("<|im_start|>", "<|im_end|>")]


# -- 2. tags already in the vocabulary keep their trained rows ----------------------------------------------
def test_tags_already_in_the_vocabulary_keep_their_rows(tmp_path: Path) -> None:
    tok = bpe_tokenizer(think=True)
    think = tok.convert_tokens_to_ids("<think>")
    model = qwen2_checkpoint(tmp_path / "base", tok, pad_rows=8)  # new tags land on padding rows, as in Qwen
    trained = torch.linspace(-1, 1, 32)
    with torch.no_grad():
        model.get_input_embeddings().weight[think] = trained
        model.get_output_embeddings().weight[think] = -trained
    model.save_pretrained(tmp_path / "base")
    n_old = len(tok)
    rows_in = model.get_input_embeddings().weight[:n_old].detach().clone()

    got, gtok = models.pretrained_model(ModelConfig(checkpoint=str(tmp_path / "base"), tag_init="mean"), 4)
    emb_in, emb_out = got.get_input_embeddings().weight, got.get_output_embeddings().weight
    assert gtok.convert_tokens_to_ids("<think>") == think
    torch.testing.assert_close(emb_in[think], trained, msg="the trained <think> input row was overwritten")
    torch.testing.assert_close(emb_out[think], -trained, msg="the trained <think> output row was overwritten")
    new = [gtok.convert_tokens_to_ids(f"<think{i}>") for i in range(1, 5)]
    assert min(new) >= n_old and emb_in.shape[0] == n_old + 8  # padding rows used, no resize
    for i in new:
        torch.testing.assert_close(emb_in[i], rows_in.mean(0))  # mean of the real vocabulary, not the padding
    torch.testing.assert_close(emb_in[:n_old], rows_in)  # nothing else moved


# -- 3. tags from model.tag_format, at training and at evaluation --------------------------------------------
def test_custom_tag_format_reaches_training_save_and_evaluation(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import tiny_cfg

    from ssft.data import traces
    from ssft.data.sources import synthetic
    from ssft.data.tasks import get_task
    from ssft.eval import evaluate as evaluate_mod
    from ssft.generation.sampler import Sample

    cfg = tiny_cfg(**{"model.tag_format": "<fork{i}>", "eval.samples": 4, "eval.ks": [4]})
    model, tok = models.build(cfg.model, 4, seed=0)
    layout = models.prompt_layout(cfg.model, tok, 4)
    assert layout == PromptLayout(("<fork1>", "<fork2>", "<fork3>", "<fork4>"), "<fork>", chat=False)
    assert len(tok.encode("<think1>", add_special_tokens=False)) > 1  # no hard-coded <thinkI> left over
    with pytest.raises(ValueError, match="'<think>' encodes to"):
        tokenize([], tok, 4, [])  # the default layout does not match this tokenizer: loud, not silent

    rows = synthetic.synthetic_splits(get_task("add4", marked=True), 4, 2, 0)
    traces.write(rows["eval"], tmp_path / "eval.parquet")
    questions, _ = traces.load(tmp_path / "eval.parquet", 4)
    examples = tokenize(questions, tok, 4, list(get_task("add4").strategies), layout=layout)
    assert tok.decode(examples[0].prompts[3]).endswith("<fork3>")
    models.save(model, tok, tmp_path / "m", {"method": "ssft", "num_tags": 4}, layout=layout)
    assert json.loads((tmp_path / "m" / "tags.json").read_text())["shared_tag"] == "<fork>"

    seen: list[list[int]] = []

    class Recorder:  # the prompts evaluation asks for, each answered "#0"
        def generate(self, prompts, n, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            seen.extend(list(p) for p in prompts)
            return [[Sample("#0", 2, (0, 0))] * n for _ in prompts]

        def tag_logprobs(self, prompts, tag_ids):  # noqa: ANN001, ANN202  # tag-free sets: a uniform choice
            return np.zeros((len(prompts), len(tag_ids)))

    monkeypatch.setattr(evaluate_mod.factory, "make", lambda *args, **kwargs: Recorder())
    evaluate_mod.evaluate(cfg, tmp_path / "m", tmp_path / "eval.parquet", tmp_path / "results")
    trained = [list(ex.prompts[t]) for ex in examples for t in range(1, 5)]
    assert seen[:len(trained)] == trained  # the greedy set: byte-identical to the training prompts


def test_custom_tag_format_in_the_chat_layout(tmp_path: Path) -> None:
    qwen2_checkpoint(tmp_path / "base", bpe_tokenizer())
    cfg = ModelConfig(checkpoint=str(tmp_path / "base"), tag_format="<mode_{i}>")
    _, tok = models.build(cfg, 3, seed=0)
    layout = models.prompt_layout(cfg, tok, 3)
    assert prompt_text(tok, layout, QUESTION, 2).endswith("<|im_start|>assistant\n<mode_2>\n")
    assert prompt_text(tok, layout, QUESTION, None).endswith("<|im_start|>assistant\n<mode_>\n")
    ids, head = prompt_ids(tok, layout, QUESTION, 2), question_ids(tok, layout, QUESTION)
    assert ids[:len(head)] == head and ids[len(head)] == tok.convert_tokens_to_ids("<mode_2>")  # one token


# -- 4. no chat template ---------------------------------------------------------------------------------
def test_checkpoint_without_chat_template_or_bos_gets_the_plain_layout(tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    qwen2_checkpoint(tmp_path / "base", bpe_tokenizer(chat=False))
    caplog.set_level(logging.INFO, logger="ssft.train.models")
    cfg = ModelConfig(checkpoint=str(tmp_path / "base"), max_length=256)
    _, tok = models.build(cfg, 4, seed=0)
    layout = models.prompt_layout(cfg, tok, 4)
    assert tok.bos_token is None and not layout.chat
    q = QuestionTraces("q", QUESTION, "4", ("two plus two #4", "four #4"), ("a", "b"), ("a", "b"))
    (ex,) = tokenize([q], tok, 4, ["a", "b"], layout=layout)
    texts = [prompt_text(tok, layout, QUESTION, t) for t in (None, 1, 2, 3, 4)]
    assert texts[2] == f"{QUESTION}<think2>" and texts[0] == f"{QUESTION}<think>"
    assert not any("None" in t for t in texts + [tok.decode(p) for p in ex.prompts]), texts
    plain = [r for r in caplog.records if "no chat template" in r.getMessage()]
    assert len(plain) == 1, [r.getMessage() for r in caplog.records]  # once, not once per prompt


def test_checkpoint_without_eos_is_a_clear_error(tmp_path: Path) -> None:
    tok = bpe_tokenizer()
    tok.eos_token = None
    qwen2_checkpoint(tmp_path / "base", tok)
    with pytest.raises(ValueError, match="model.checkpoint=.*no eos_token"):
        models.build(ModelConfig(checkpoint=str(tmp_path / "base")), 4, seed=0)


# -- 5. every eos id of generation_config ------------------------------------------------------------------
@pytest.mark.parametrize("ids, stops, end", [([5, 7, 2, 9, 1], [1, 2], 3), ([5, 7, 2, 9, 1], [1], 5),
                                             ([4, 4, 4], [1, 2], 3), ([2], [1, 2], 1), ([], [1], 0)])
def test_cut_at_the_first_of_any_stop_id(ids: list[int], stops: list[int], end: int) -> None:
    assert cut(ids, stops) == end


def test_generation_stops_on_every_eos_id_of_the_generation_config(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    tok = bpe_tokenizer()
    eos, other_eos = tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")
    base = qwen2_checkpoint(tmp_path / "base", tok, eos_ids=[eos, other_eos])
    a, b, c, d, e = (tok.convert_tokens_to_ids(ch) for ch in "abcde")
    # A 'counter' model: no attention or MLP output, so the last hidden state is the norm of the input
    # embedding, and the lm_head row of each next token is that very vector (the largest logit by far):
    # a -> b -> c -> <|endoftext|> (the generation config's second eos), and d -> e -> d -> ... forever.
    with torch.no_grad():
        layer = base.model.layers[0]
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
        base.lm_head.weight.zero_()
        for cur, nxt in [(a, b), (b, c), (c, other_eos), (d, e), (e, d)]:
            base.lm_head.weight[nxt] = base.model.norm(base.model.embed_tokens.weight[cur])
    base.save_pretrained(tmp_path / "base")

    model, tok = models.pretrained_model(ModelConfig(checkpoint=str(tmp_path / "base")), 4)
    assert stop_ids(model, tok) == [eos, other_eos]
    head = tok.encode("the cat", add_special_tokens=False)
    widths, hf_generate = [], model.generate

    def spy(**kwargs):  # noqa: ANN003, ANN202
        seqs = hf_generate(**kwargs)
        widths.append(seqs.shape[1])
        return seqs

    monkeypatch.setattr(model, "generate", spy)
    ((stops,),) = HfSampler(model, tok).generate([head + [a]], n=1, temperature=None, max_new_tokens=8)
    assert widths == [len(head) + 1 + 3]  # HF generate itself stopped at <|endoftext|>, not after 8 tokens
    (stops2,), (runs,) = HfSampler(model, tok).generate([head + [a], head + [d]], n=1, temperature=None,
                                                        max_new_tokens=8)
    assert (stops.text, stops.length) == (stops2.text, stops2.length) == ("bc", 3)  # b, c, <|endoftext|>: cut
    assert (runs.text, runs.length) == ("edededed", 8)  # no eos: the whole budget

# -- 6. one MLflow run per torchrun job: tests/test_trainer.py::test_two_process_ddp_*
