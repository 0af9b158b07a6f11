"""Forking tokens: single ids, one prompt layout for train and eval, tokenizers that survive a reload."""

import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, pre_tokenizers
from tokenizers import models as tk_models
from transformers import PreTrainedTokenizerFast

from ssft.config import ModelConfig
from ssft.data.traces import QuestionTraces
from ssft.generation.hf import HfSampler
from ssft.train import models
from ssft.train.forking import (
    PromptLayout,
    add_tags,
    build_char_tokenizer,
    completion_ids,
    prompt_ids,
    prompt_text,
    question_ids,
)
from ssft.train.trainer import tokenize

PLAIN4 = PromptLayout.from_format(ModelConfig().tag_format, 4, chat=False)  # the default layout, N = 4


@pytest.mark.parametrize("n", [1, 4, 6, 12])
def test_every_tag_is_one_token(n: int) -> None:
    layout = PromptLayout.from_format("<think{i}>", n, chat=False)
    tok = build_char_tokenizer(layout.all_tags)
    for t in layout.all_tags:
        assert len(tok.encode(t, add_special_tokens=False)) == 1, t
    assert len(set(add_tags(tok, layout.tags))) == n


def test_plain_layout_exactly() -> None:
    assert PLAIN4.tags == ("<think1>", "<think2>", "<think3>", "<think4>") and PLAIN4.shared_tag == "<think>"
    tok = build_char_tokenizer(PLAIN4.all_tags)
    assert prompt_text(tok, PLAIN4, "3+2?", 2) == "<s>3+2?<think2>"
    assert prompt_text(tok, PLAIN4, "3+2?", None) == "<s>3+2?<think>"
    ids = prompt_ids(tok, PLAIN4, "3+2?", 2)
    assert tok.convert_ids_to_tokens(ids) == ["<s>", "3", "+", "2", "?", "<think2>"]
    assert ids == [1, 7, 76, 6, 86, 102]  # char ids pinned: the tiny model's vocabulary never moves
    assert question_ids(tok, PLAIN4, "3+2?") == ids[:-1]
    assert tok.decode(completion_ids(tok, "L1#1"), skip_special_tokens=True) == "L1#1"


def test_train_and_eval_prompts_are_identical() -> None:
    """The prompt a trace is trained under is byte-identical to the one evaluation generates from."""
    tok = build_char_tokenizer(PLAIN4.all_tags)
    q = QuestionTraces("q", "3+2+5+2?", "12", ("L#12", "R#12"), ("l2r", "r2l"), ("l2r", "r2l"))
    (ex,) = tokenize([q], tok, 4, ["l2r", "r2l"])
    assert tokenize([q], tok, 4, ["l2r", "r2l"], layout=PLAIN4) == [ex]
    for tag in [None, 1, 2, 3, 4]:
        assert list(ex.prompts[tag or 0]) == prompt_ids(tok, PLAIN4, q.question, tag)
        assert tok.decode(ex.prompts[tag or 0]) == prompt_text(tok, PLAIN4, q.question, tag)


def test_tokenizer_survives_save_and_reload(tmp_path: Path) -> None:
    model, tok = models.build(ModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64), 4, 0)
    models.save(model, tok, tmp_path / "m", {"method": "ssft", "num_tags": 4})
    model2, tok2, meta = models.load(tmp_path / "m")
    assert meta["tags"] == list(PLAIN4.tags) and meta["method"] == "ssft"
    assert PromptLayout.from_meta(meta) == PLAIN4
    assert prompt_ids(tok2, PLAIN4, "12+3?", 3) == prompt_ids(tok, PLAIN4, "12+3?", 3)
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)
    assert not (tmp_path / "m.tmp").exists()


def _chat_checkpoint(path: Path) -> None:
    """A tiny local 'pretrained' checkpoint with a word-level tokenizer and a ChatML template."""
    words = ["<unk>", "<|im_start|>", "<|im_end|>", "user", "assistant", "\n", "1", "+", "2", "?", "#", "3"]
    tk = Tokenizer(tk_models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", eos_token="<|im_end|>",
                                  pad_token="<|im_end|>", additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
                         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    model = models.tiny_model(ModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64),
                              tok, seed=0)
    model.save_pretrained(path)
    tok.save_pretrained(path)


def test_local_pretrained_checkpoint_gets_tags_with_mean_init(tmp_path: Path) -> None:
    _chat_checkpoint(tmp_path / "base")
    cfg = ModelConfig(checkpoint=str(tmp_path / "base"), tag_init="mean")
    model, tok = models.build(cfg, 4, seed=0)
    emb = model.get_input_embeddings().weight
    layout = models.prompt_layout(cfg, tok, 4)
    assert layout.chat
    tag_ids = [tok.convert_tokens_to_ids(t) for t in layout.tags]
    assert emb.shape[0] >= len(tok)
    torch.testing.assert_close(emb[tag_ids[0]], emb[:12].mean(0))
    text = prompt_text(tok, layout, "1 + 2 ?", 3)
    assert text.endswith("<|im_start|>assistant\n<think3>\n"), text
    # The tag stays one token inside the chat layout, and prompt + completion tokenize as the whole does.
    ids = prompt_ids(tok, layout, "1 + 2 ?", 3)
    assert ids.count(tag_ids[2]) == 1
    assert json.loads((tmp_path / "base" / "config.json").read_text())["model_type"] == "llama"
    out = HfSampler(model, tok).generate([ids], n=1, temperature=None, max_new_tokens=3)
    assert out[0][0].length <= 3


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="model.checkpoint=.*no config.json"):
        models.build(ModelConfig(checkpoint=str(tmp_path)), 4, 0)
