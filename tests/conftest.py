"""Shared fixtures: offline HF, a tiny config, a tiny trace dataset on disk."""

from __future__ import annotations

import os

from ssft import env

os.environ.update(env.with_defaults(os.environ))  # before transformers reads HF_HUB_OFFLINE

from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers, trainers
from tokenizers import models as tk_models
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from ssft import config
from ssft.data import traces
from ssft.data.sources import synthetic
from ssft.data.tasks import get_task

TINY = {
    "seed": 0,
    "task": {"name": "add4", "marked": True},
    "traces": {"train_questions": 32, "eval_questions": 8},
    "model": {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64, "max_length": 64},
    "ssft": {"num_tags": 4, "cost_tokens": 12},
    "train": {"max_steps": 8, "questions_per_step": 4, "warmup_steps": 2, "save_steps": 4, "logging_steps": 2,
              "lr": 0.003},
    "eval": {"samples": 8, "ks": [8], "max_new_tokens": 40},
}


def tiny_cfg(**overrides: object) -> config.Config:
    """TINY with dotted overrides, e.g. tiny_cfg(**{"train.max_steps": 20})."""
    import copy

    raw = copy.deepcopy(TINY)
    for dotted, value in overrides.items():
        config.set_dotted(raw, dotted, value)
    return config.from_dict(raw)


@pytest.fixture(autouse=True)
def _hf_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.getbasetemp() / "hf"))


@pytest.fixture
def cfg() -> config.Config:
    return tiny_cfg()


@pytest.fixture
def trace_dir(tmp_path: Path, cfg: config.Config) -> Path:
    task = get_task("add4", marked=True)
    splits = synthetic.synthetic_splits(task, cfg.traces.train_questions, cfg.traces.eval_questions, cfg.seed)
    for split, rows in splits.items():
        traces.write(rows, tmp_path / "data" / f"{split}.parquet")
    return tmp_path / "data"


ROOT = Path(__file__).resolve().parents[1]


# -- tiny pretrained-style checkpoints (byte-level BPE, chat template), built offline ----------------------
CHATML = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def bpe_tokenizer(corpus: Sequence[str], pre_tokenizer: pre_tokenizers.PreTokenizer = None, chat: bool = True,
                  think: bool = False) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on ``corpus``; ChatML specials; eos <|im_end|>, pad <|endoftext|>, no bos.
    ``think``: ``<think>`` is already in the vocabulary (an added, non-special token, as in Qwen3)."""
    tk = Tokenizer(tk_models.BPE())
    tk.pre_tokenizer = pre_tokenizer or pre_tokenizers.ByteLevel(add_prefix_space=True)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(corpus, trainer)
    if think:
        tk.add_tokens([AddedToken("<think>", special=False, normalized=False)])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    if chat:
        tok.chat_template = CHATML
    return tok


def qwen2_checkpoint(path: Path, tok: PreTrainedTokenizerFast, pad_rows: int = 0,
                     eos_ids: list[int] | None = None) -> Qwen2ForCausalLM:
    """A 1-layer ``qwen2`` checkpoint for ``tok``; ``pad_rows`` unused embedding rows as real Qwen has."""
    config = Qwen2Config(vocab_size=len(tok) + pad_rows, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, intermediate_size=64, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    if eos_ids is not None:
        model.generation_config.eos_token_id = eos_ids
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return model



def chat_checkpoint(path: Path, corpus: Sequence[str]) -> Path:
    """A tiny local chat checkpoint as users have them: byte-level BPE trained on ``corpus``, a ChatML template,
    and two eos ids in its generation_config (<|im_end|>, <|endoftext|>), like Qwen2.5."""
    tok = bpe_tokenizer(corpus)
    qwen2_checkpoint(path, tok, eos_ids=[tok.eos_token_id, tok.pad_token_id])
    return path



def copy_project(dst: Path, params: dict | None = None) -> Path:
    """The project in a new git repo at ``dst`` (as the smoke deployment's scratch copy), with TINY params
    (plus ``params``) so a whole pipeline runs in seconds."""
    import yaml

    from flows.pipeline import copy_project as copy_files

    copy_files(ROOT, dst)
    raw = yaml.safe_load((dst / "params.yaml").read_text())
    for section, values in {**TINY, **(params or {})}.items():
        raw[section] = {**raw.get(section, {}), **values} if isinstance(values, dict) else values
    (dst / "params.yaml").write_text(yaml.safe_dump(raw))
    return dst


def tool_env(**extra: str) -> dict[str, str]:
    """Environment for subprocesses: this venv's tools first, offline, quiet."""
    import sys

    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "DVC_NO_ANALYTICS": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t", **extra}


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect test server for every flow test of the run (startup raised to 120 s for slow CI)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


# -- an s1K-style trace file: one question per line, one trace per teacher, \boxed{} answers --------------
TEACHER_STYLES = {
    "alpha": "Let us add step by step. First {a} plus {b} is {s}. Therefore the answer is \\boxed{{{s}}}.",
    "beta": "- take {a}\n- add {b}\n- total {s}\nFinal: \\boxed{{{s}}}",
    "gamma": "{a}+{b} => {s} \\boxed{{{s}}}",
    "delta": "We need {a} + {b}. Counting on from {a} by {b} gives {s}, so \\boxed{{{s}}}",
}


def s1k_rows(n: int = 24) -> list[dict]:
    """``n`` questions "What is a + b?" with a trace per teacher, plus the flaws the importer must handle:
    question 0 has a wrong trace (alpha), question 1 an empty one (beta), question 2 a single trace (dropped)."""
    rows = []
    for k in range(n):
        a, b = 3 + k, 2 * k + 1
        traces = [{"teacher": t, "text": style.format(a=a, b=b, s=a + b)} for t, style in TEACHER_STYLES.items()]
        if k == 0:
            traces[0]["text"] = traces[0]["text"].replace(f"{{{a + b}}}", f"{{{a + b + 1}}}")
        if k == 1:
            traces[1]["text"] = ""
        if k == 2:
            traces = traces[:1]
        rows.append({"question": f"What is {a} + {b}?", "answer": str(a + b), "traces": traces})
    return rows


def write_s1k(path: Path, n: int = 24) -> Path:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in s1k_rows(n)))
    return path
