"""The openai backend against a REAL OpenAI-compatible server: ``transformers serve`` on a tiny local model
directory written by ``ssft.train.models.save``, started and stopped here (127.0.0.1, a free port).

What transformers serve can do is tested: greedy generation of the evaluation prompts (text and lengths equal
to the hf backend's, stop ids included), a whole evaluation (the greedy set, the validation tag and every
greedy metric equal to hf's; the sampled sets have the same rows), and its refusals as one clear line (no
logprobs, another model's directory). It takes no token-id prompts, ignores ``n`` and returns no logprobs, so the
sampler falls back to checked text prompts there (see ssft/generation/openai.py); the token-id path is what
vLLM and SGLang get, tested with the request recorder in test_generation.py.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_generation import text_model

from ssft.config import Config
from ssft.data import traces
from ssft.data.sources import synthetic
from ssft.data.tasks import get_task
from ssft.errors import UserError
from ssft.eval.evaluate import evaluate, open_sampler
from ssft.generation.hf import HfSampler
from ssft.generation.serve import transformers_serve
from ssft.train import models
from ssft.train.forking import prompt_ids

pytestmark = pytest.mark.slow  # a server start and two evaluations: ~30 s on 2 busy cores


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory (models/ssft) and its trace splits (data/), as `ssft train` and `ssft traces` leave them."""
    root = tmp_path_factory.mktemp("served")
    model, tok, layout = text_model()
    models.save(model, tok, root / "models" / "ssft", {"method": "ssft", "num_tags": 4}, layout=layout)
    splits = synthetic.synthetic_splits(get_task("add4", marked=True), 8, 6, 0, n_val=4)
    for split, rows in splits.items():
        traces.write(rows, root / "data" / f"{split}.parquet")
    return root


@pytest.fixture(scope="module")
def server(project: Path) -> Iterator[str]:
    with transformers_serve(project / "models" / "ssft") as url:
        yield url


def _cfg(cfg: Config, **eval_fields: object) -> Config:
    return dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, **eval_fields))


def test_greedy_generation_through_the_server_equals_hf(project: Path, server: str, cfg: Config) -> None:
    model_dir = project / "models" / "ssft"
    openai, tok, meta = open_sampler(_cfg(cfg, backend="openai", server=server), model_dir)
    hf, _, _ = open_sampler(cfg, model_dir)
    assert isinstance(hf, HfSampler) and openai.dialect == "text"  # type: ignore[attr-defined]
    from ssft.train.forking import PromptLayout

    layout = PromptLayout.from_meta(meta)
    questions = [q.question for q in traces.load_questions(project / "data" / "eval.parquet")]
    prompts = [prompt_ids(tok, layout, q, t) for q in questions for t in (1, 2, 3, 4)]
    want = hf.generate(prompts, 1, None, max_new_tokens=12)
    got = openai.generate(prompts, 1, None, max_new_tokens=12)
    assert [(s.text, s.length) for (s,) in got] == [(s.text, s.length) for (s,) in want]
    assert len({s.text for (s,) in want}) >= 4, "the answers differ between prompts: the comparison means something"
    # A stop id the model writes at the start of some answers only: both cut there, the stop counted.
    stop = next(s.token_ids[0] for (s,) in want)
    stops = [stop, tok.eos_token_id]
    cut_hf = hf.generate(prompts, 1, None, max_new_tokens=12, stop_ids=stops)
    cut_openai = openai.generate(prompts, 1, None, max_new_tokens=12, stop_ids=stops)
    assert [(s.text, s.length) for (s,) in cut_openai] == [(s.text, s.length) for (s,) in cut_hf]
    assert {s.length for (s,) in cut_hf} == {1, 12}


def test_evaluation_through_the_server_equals_hf(project: Path, server: str, cfg: Config, tmp_path: Path) -> None:
    data, model_dir = project / "data", project / "models" / "ssft"
    runs = {}
    for backend, extra in (("hf", {}), ("openai", {"server": server})):
        out = tmp_path / backend
        # transformers serve returns no logprobs: no tag-free sets (the hf backend's are tested elsewhere)
        metrics = evaluate(_cfg(cfg, backend=backend, max_new_tokens=12, self_tag=False, **extra), model_dir,
                           data / "eval.parquet",
                           out, data / "train.parquet", data / "val.parquet")
        rows = [json.loads(line) for line in (out / "details.jsonl").read_text().splitlines()]
        runs[backend] = metrics, rows
    (m_hf, rows_hf), (m_oa, rows_oa) = runs["hf"], runs["openai"]
    greedy = [r for r in rows_hf if r["set"] == "greedy"]
    assert greedy and greedy == [r for r in rows_oa if r["set"] == "greedy"]
    keys = ("question_id", "tag", "sample", "set", "temperature")
    assert [tuple(r[k] for k in keys) for r in rows_oa] == [tuple(r[k] for k in keys) for r in rows_hf]
    assert all(1 <= r["length"] <= 12 for r in rows_oa)
    same = [k for k in m_hf if k.endswith("_greedy") or k.startswith("val_") or k in ("val_tag", "best_tag")]
    assert same and {k: m_oa[k] for k in same} == {k: m_hf[k] for k in same}
    assert sorted(m_oa) == sorted(m_hf)  # every metric, whatever the backend


def test_what_transformers_serve_cannot_do_is_one_clear_line(project: Path, server: str, cfg: Config,
                                                             tmp_path: Path) -> None:
    model_dir = project / "models" / "ssft"
    openai, tok, _ = open_sampler(_cfg(cfg, backend="openai", server=server), model_dir)
    with pytest.raises(UserError, match="returns no logprobs .transformers serve cannot."):
        openai.tag_logprobs([[tok.bos_token_id]], [tok.eos_token_id])
    # another model directory (other tags) is not what this server serves
    model, other, layout = text_model()
    cfg_other = _cfg(cfg, backend="openai", server=server)
    other.add_special_tokens({"additional_special_tokens": ["<extra>"]}, replace_extra_special_tokens=False)
    models.save(model, other, tmp_path / "other", {"method": "ssft", "num_tags": 4}, layout=layout)
    with pytest.raises(UserError, match="whose tokenizer is not that of"):
        open_sampler(cfg_other, tmp_path / "other")
