"""The evaluation stage: generate per tag, score, write ``metrics.json`` and ``details.jsonl``.

Two generation sets per eval question, both batched across questions:
    greedy   one generation per tag (the untagged ``sft`` model: one, from its single prompt)
    sampled  ``eval.samples`` at ``eval.temperature``, split evenly over the tags
    sweep    the same at each of ``eval.temperatures`` (diversity against accuracy; usually empty)
Metrics (see ``ssft.eval.metrics``) come from the sampled set, again from the greedy set with suffix
``_greedy`` and from each sweep set with suffix ``_t<temperature>``. A :class:`Judge` scores generations:
the synthetic task itself, or ``data.checker`` plus a teacher classifier for imported and generated data.
``details.jsonl`` holds one line per generation (its ``set``: greedy, sampled or sweep), so every figure can
be recomputed.
Run: ``ssft evaluate --method ssft``.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ssft.atomic import replace_dir, temp_path
from ssft.config import Config
from ssft.data import grading, traces
from ssft.data.tasks import get_task
from ssft.data.traces import QuestionTraces
from ssft.errors import UserError
from ssft.eval import metrics
from ssft.generation import factory
from ssft.generation.sampler import Sampler
from ssft.train import methods, rollouts
from ssft.train.forking import PromptLayout, prompt_ids, prompt_text

log = logging.getLogger(__name__)
# The evaluate stage's outputs (report, study and tracking read them).
METRICS_FILE = "metrics.json"
DETAILS_FILE = "details.jsonl"


@dataclass(frozen=True)
class Judge:
    """How a generation is scored: the answer its vote counts, whether it is right, and the mode it follows.

    Synthetic tasks know their strategies (the task parses a trace's structure). Imported or generated data
    knows only who wrote each training trace: a teacher classifier (``ssft.eval.classify``) trained on the
    training traces labels every generation, and its held-out accuracy is reported beside the mode metrics."""

    answer: Callable[[str], str | None]
    correct: Callable[[QuestionTraces, str], bool]
    modes: Callable[[list[tuple[QuestionTraces, str]]], list[str | None]]
    extra: dict[str, float] = field(default_factory=dict)


def synthetic_judge(cfg: Config) -> Judge:
    task = get_task(cfg.task.name, marked=cfg.task.marked, **cfg.task.options)
    problem = lambda q: task.parse(q.question_id, q.question, q.answer)  # noqa: E731
    g = grading.grader(cfg)
    return Judge(g.answer, g.correct, lambda pairs: [task.classify(problem(q), text) for q, text in pairs])


def teacher_judge(cfg: Config, train: list[dict]) -> Judge:
    """``train``: the training trace rows (what the teacher classifier learns from)."""
    from ssft.eval.classify import fit_teacher_classifier

    g = grading.grader(cfg)
    clf = fit_teacher_classifier([r["trace"] for r in train], [r["source"] for r in train],
                                 [r["question_id"] for r in train], cfg.seed)
    log.info("teacher classifier: %d teachers, held-out accuracy %.3f", len(clf.labels), clf.heldout_accuracy)
    return Judge(g.answer, g.correct, lambda pairs: clf.predict([text for _, text in pairs]),
                 {"teacher_classifier_acc": clf.heldout_accuracy, "teachers": float(len(clf.labels))})


def question_key(text: str) -> str:
    """A question's text up to what does not change it: unicode compatibility forms (NFKC) and whitespace."""
    return "".join(unicodedata.normalize("NFKC", text).split())


def _check_held_out(cfg: Config, questions: list[QuestionTraces], eval_file: Path, train_file: Path | None,
                    train: list[dict] | None) -> None:
    """Evaluation questions must never have been trained on (e.g. an eval file that is the train file), by id,
    by normalised text (:func:`question_key`), and for the synthetic task by its canonical form (the operand
    multiset: a reordered question has the same traces)."""
    if train is None:
        return
    keys: list[tuple[str, Callable[[str, str], str]]] = [("id", lambda qid, q: qid),
                                                         ("question text", lambda qid, q: question_key(q))]
    if cfg.data.source == "synthetic":
        task = get_task(cfg.task.name, marked=cfg.task.marked, **cfg.task.options)
        keys.append(("canonical form", lambda qid, q: task.canonical(task.parse(qid, q, "").operands)))
    for what, key in keys:
        trained = {key(r["question_id"], r["question"]): r["question_id"] for r in train}
        seen = [(q.question_id, trained[k]) for q in questions if (k := key(q.question_id, q.question)) in trained]
        if seen:
            raise UserError(f"{eval_file}: {len(seen)} of {len(questions)} evaluation questions are also in "
                            f"{train_file} (same {what}: e.g. {seen[0][0]!r} and training's {seen[0][1]!r}); "
                            "rebuild the split with `ssft traces` or hold out another file (data.eval_path)")


def judge_for(cfg: Config, train_file: Path | None, train: list[dict] | None) -> Judge:
    if cfg.data.source == "synthetic":
        return synthetic_judge(cfg)
    if train is None:
        raise FileNotFoundError(f"{train_file}: the training traces are needed to learn the teachers' styles; "
                                "run `ssft traces` first (or pass --traces)")
    return teacher_judge(cfg, train)


def open_sampler(cfg: Config, model_dir: Path) -> tuple[Sampler, Any, dict]:
    """(the ``eval.backend`` sampler, the tokenizer, ``tags.json``) of a trained model directory; the weights
    are loaded (by ``ssft.train.models``) only for ``hf``, the one backend that runs the model in this process."""
    import torch

    from ssft.train import models

    meta_file = Path(model_dir) / models.TAGS_FILE
    if not meta_file.exists():
        raise FileNotFoundError(f"{model_dir}: no {models.TAGS_FILE}; not a model directory written by `ssft train`")
    meta = json.loads(meta_file.read_text())  # tags.json: the exact tags and layout training used

    def load_model() -> Any:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model, _, _ = models.load(model_dir)
        return model.to(device)  # type: ignore[arg-type]  # transformers' decorated .to() hides torch's signature

    tokenizer = models.load_tokenizer(model_dir)
    sampler = factory.make(cfg.eval.backend, Path(model_dir), tokenizer, load_model, server=cfg.eval.server,
                           batch_size=cfg.eval.batch_size, tags=PromptLayout.from_meta(meta).all_tags)
    return sampler, tokenizer, meta


@dataclass(frozen=True)
class Prompts:
    """How evaluation prompts a model: per (question, tag), the prompt ids and the text forced after it (the
    judged generation is that text, then what the model wrote). Normally the tag's prompt, nothing forced;
    :meth:`forced`: the untagged prompt plus each strategy's opening, with tag i standing for strategy i."""

    build: Callable[[QuestionTraces, int | None], tuple[list[int], str]]
    tags: list[int | None]

    @classmethod
    def tagged(cls, tokenizer: Any, layout: PromptLayout, tags: list[int | None]) -> Prompts:
        return cls(lambda q, t: (prompt_ids(tokenizer, layout, q.question, t), ""), tags)

    @classmethod
    def forced(cls, cfg: Config, tokenizer: Any, layout: PromptLayout) -> Prompts:
        """Prefix-forced decoding (arXiv 2605.17026): the untagged model made to open with each strategy's first
        token (``Task.opening``), what SSFT's tags learn to choose without being told."""
        if cfg.data.source != "synthetic":
            raise UserError("eval.prefix_forced: needs data.source synthetic (a task that knows its strategies' "
                            "openings); leave it empty for imported or generated traces")
        task = get_task(cfg.task.name, marked=cfg.task.marked, **cfg.task.options)
        strategies = list(cfg.traces.strategies or task.strategies)

        def build(q: QuestionTraces, t: int | None) -> tuple[list[int], str]:
            assert t is not None
            opening = task.opening(task.parse(q.question_id, q.question, q.answer), strategies[t - 1])
            text = prompt_text(tokenizer, layout, q.question, None) + opening
            return tokenizer.encode(text, add_special_tokens=False), opening  # one encoding: the merges training saw

        return cls(build, list(range(1, len(strategies) + 1)))


def _generations(cfg: Config, sampler: Sampler, prompts: Prompts, questions, temperature: float | None,
                 judge: Judge, seed: int | None = None) -> list[dict]:
    """Details rows of one generation set (``temperature`` None = greedy), in (question, tag, sample) order.
    ``seed`` restarts the sampler's random stream; None: this set draws where the previous one stopped."""
    greedy, tags = temperature is None, prompts.tags
    per_tag = 1 if greedy else cfg.eval.samples // len(tags)
    built = [prompts.build(q, t) for q in questions for t in tags]
    outs = sampler.generate([ids for ids, _ in built], per_tag, temperature, cfg.eval.top_p, cfg.eval.max_new_tokens,
                            seed=seed)
    keys = [(questions[k // len(tags)], tags[k % len(tags)], s, built[k][1] + smp.text, smp.length)
            for k, samples in enumerate(outs) for s, smp in enumerate(samples)]
    modes = judge.modes([(q, text) for q, _, _, text, _ in keys])
    kind = "greedy" if greedy else "sampled" if temperature == cfg.eval.temperature else "sweep"
    return [{"question_id": q.question_id, "tag": tag, "sample": s, "set": kind,
             "temperature": temperature or 0.0, "text": text,
             "answer": judge.answer(text), "correct": judge.correct(q, text), "mode": mode,
             "length": length} for (q, tag, s, text, length), mode in zip(keys, modes)]


def _self_tagged(cfg: Config, sampler: Sampler, tokenizer, layout: PromptLayout, questions, mode: str,  # noqa: ANN001
                 judge: Judge, rng: np.random.Generator) -> list[dict]:
    """Details rows of ``eval.samples`` tag-free samples per question: the model picks each tag itself (``mode``
    greedy_tag or sampled_tag, ``ssft.train.rollouts``); ``tag`` is the tag picked, ``tag_probs`` the
    model's distribution over its N tags for that question."""
    out = rollouts.generate(sampler, tokenizer, layout, [q.question for q in questions], cfg.eval.samples, mode, rng,
                            cfg.eval.temperature, cfg.eval.top_p, cfg.eval.max_new_tokens)
    keys = [(q, int(out.tags[k, s]), s, out.samples[k][s], out.probs[k]) for k, q in enumerate(questions)
            for s in range(cfg.eval.samples)]
    modes = judge.modes([(q, smp.text) for q, _, _, smp, _ in keys])
    return [{"question_id": q.question_id, "tag": tag, "sample": s, "set": metrics.SELF_SETS[mode],
             "temperature": cfg.eval.temperature, "text": smp.text, "answer": judge.answer(smp.text),
             "correct": judge.correct(q, smp.text), "mode": m, "length": smp.length,
             "tag_probs": [float(x) for x in p]} for (q, tag, s, smp, p), m in zip(keys, modes)]


def self_metrics(self_sets: dict[str, list[dict]], sampled: list[dict], n_tags: int, ks: list) -> dict[str, float]:
    """``pass@1_self``, ``cons@N_self``, ... (sampled_tag), the same with ``_self_greedy_tag``, and how the
    model chooses its tag (``metrics.tag_choice_metrics``)."""
    if not self_sets:
        return {}
    picked = _as_generations(self_sets["sampled_tag"], n_tags)
    probs = {r["question_id"]: r["tag_probs"] for r in self_sets["sampled_tag"]}
    return {**metrics.self_tag_metrics(picked, n_tags, ks, "_self"),
            **metrics.self_tag_metrics(_as_generations(self_sets["greedy_tag"], n_tags), n_tags, ks,
                                       "_self_greedy_tag"),
            **metrics.tag_choice_metrics(probs, picked, _as_generations(sampled, n_tags))}


def _as_generations(rows: list[dict], n_tags: int) -> list[metrics.Generation]:
    gens = [metrics.Generation(r["question_id"], r["tag"], r["sample"], r["answer"], r["correct"], r["mode"],
                               r["length"]) for r in rows]
    # The untagged greedy set has one (deterministic) generation per question: its N-sample rounds are
    # that generation N times.
    if gens and gens[0].tag is None and all(g.sample == 0 for g in gens):
        gens = [metrics.Generation(g.question_id, None, s, g.answer, g.correct, g.mode, g.length)
                for g in gens for s in range(n_tags)]
    return gens


def train_stats(model_dir: Path) -> dict:
    from ssft.train.models import STATS_FILE

    f = Path(model_dir) / STATS_FILE
    return json.loads(f.read_text()) if f.exists() else {}


def best_tag(stats: dict) -> int | None:
    """The tag matched to the most distinct trajectories in training (paper Eq. 4), from the train stats."""
    tagged = {int(t): n for t, n in stats.get("tag_trajectories", {}).items() if int(t) > 0}
    return metrics.best_tag(tagged) if tagged else None


def validation_tag(cfg: Config, sampler: Sampler, prompts: Prompts, val_file: Path | None,
                   judge: Judge) -> tuple[int | None, dict[str, float]]:
    """The tag with the best greedy accuracy on the validation questions (never the evaluation ones; a tie
    goes to the lower tag), and each tag's validation accuracy."""
    tags = prompts.tags
    if tags[0] is None or val_file is None or not Path(val_file).exists() or not traces.num_rows(val_file):
        return None, {}
    questions = traces.load_questions(val_file)
    rows = _generations(cfg, sampler, prompts, questions, None, judge)
    acc = {t: sum(r["correct"] for r in rows if r["tag"] == t) / len(questions) for t in tags if t is not None}
    best = max(sorted(acc), key=lambda t: acc[t])
    log.info("validation (%d questions): accuracy per tag %s -> tag %d", len(questions),
             {t: round(a, 3) for t, a in acc.items()}, best)
    return best, {f"val_acc_tag{t}": a for t, a in acc.items()}


def evaluate(cfg: Config, model_dir: Path, eval_file: Path, out_dir: Path, train_file: Path | None = None,
             val_file: Path | None = None, prefix_forced: bool = False) -> dict:
    """Evaluate one trained model on the held-out split; write ``out_dir`` atomically; return metrics.
    ``train_file``: the training traces (imported/generated data: what the teacher classifier learns from).
    ``prefix_forced``: an untagged model sampled with each strategy's opening forced (:meth:`Prompts.forced`);
    its "tags" are the M strategies."""
    t0 = time.monotonic()
    sampler, tokenizer, meta = open_sampler(cfg, model_dir)
    layout = PromptLayout.from_meta(meta)
    n = meta["num_tags"]
    questions = traces.load_questions(eval_file)
    train = traces.read_rows(train_file) if train_file is not None and Path(train_file).exists() else None
    _check_held_out(cfg, questions, eval_file, train_file, train)
    judge = judge_for(cfg, train_file, train)
    method = methods.get(meta["method"])
    if prefix_forced and method.tagged:
        raise UserError(f"eval.prefix_forced: {meta['method']} is a tagged method (its tags choose the mode); "
                        "force the openings of untagged ones only, e.g. [sft]")
    prompts = Prompts.forced(cfg, tokenizer, layout) if prefix_forced else Prompts.tagged(tokenizer, layout,
                                                                                           method.eval_tags(n))
    n = n if not prefix_forced else len(prompts.tags)
    # One seed per evaluation, given to its first set: every later set continues the sampler's random stream.
    greedy = _generations(cfg, sampler, prompts, questions, None, judge, seed=cfg.seed)
    sampled = _generations(cfg, sampler, prompts, questions, cfg.eval.temperature, judge)
    sweep = {t: _generations(cfg, sampler, prompts, questions, t, judge)
             for t in cfg.eval.temperatures if t != cfg.eval.temperature}
    stats = train_stats(model_dir)
    best = best_tag(stats) if method.tagged else None
    chosen, val_acc = validation_tag(cfg, sampler, prompts, val_file, judge)
    # Last, so the sets above draw exactly what they drew before tag-free inference existed.
    rng = np.random.default_rng([cfg.seed, 1])  # the sampled tags' own stream
    self_sets = {mode: _self_tagged(cfg, sampler, tokenizer, layout, questions, mode, judge, rng)
                 for mode in rollouts.MODES} if method.tagged and cfg.eval.self_tag else {}
    result = {**metrics.compute_metrics(_as_generations(sampled, n), n, cfg.eval.ks, best, val_tag=chosen),
              **metrics.compute_metrics(_as_generations(greedy, n), n, (), best, suffix="_greedy", val_tag=chosen),
              # the sweep, the main sampled set among its temperatures: one series per method
              **{k: v for t, rows in sorted({**sweep, cfg.eval.temperature: sampled}.items()) if sweep
                 for k, v in metrics.compute_metrics(_as_generations(rows, n), n, (), best, suffix=f"_t{t:g}",
                                                     val_tag=chosen).items()},
              **{k: float(stats[k]) for k in ("match_agreement_full",) if k in stats},
              "best_tag": best or 0, "val_tag": chosen or 0, **val_acc,
              "dead_tags": float(len(stats.get("dead_tags", []))) if method.tagged else 0.0, **judge.extra,
              **self_metrics(self_sets, sampled, n, cfg.eval.ks)}
    warn_if_truncated([*greedy, *sampled], cfg.eval.max_new_tokens)
    tmp = temp_path(out_dir)
    shutil.rmtree(tmp, ignore_errors=True)  # left by a killed run or a full disk: never shipped with this one
    tmp.mkdir(parents=True)
    (tmp / METRICS_FILE).write_text(json.dumps(result, indent=2, sort_keys=True))
    with open(tmp / DETAILS_FILE, "w") as f:
        f.writelines(json.dumps(row) + "\n" for rows in (greedy, sampled, *sweep.values(), *self_sets.values())
                     for row in rows)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    replace_dir(tmp, out_dir)
    headline = {k: round(result[k], 3) for k in ("pass@1", "cons@N", "coverage", "coverage_greedy", "purity")}
    log.info("%s: %s (%.0f s)", meta["method"], headline, time.monotonic() - t0)
    return result


def warn_if_truncated(rows: list[dict], max_new_tokens: int) -> None:
    """Warn when most generations ran into ``eval.max_new_tokens``: their answers are cut off, so the metrics
    measure the budget rather than the model (a real checkpoint reasons for thousands of tokens)."""
    share = sum(r["length"] >= max_new_tokens for r in rows) / max(len(rows), 1)
    if share > 0.5:
        log.warning("%.0f%% of generations hit eval.max_new_tokens=%d before they finished (answers cut off): "
                    "raise eval.max_new_tokens, e.g. to 4096 for a chat checkpoint (configs/real.yaml)",
                    100 * share, max_new_tokens)
