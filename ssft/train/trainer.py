"""SSFT, SFT, random-tag and fixed-tag training on transformers' Trainer. Run: ``ssft train --method ssft``.

Every method trains the very same sequences per step: all M traces of each question in the batch, each
under one tag; the method objects (``ssft.train.methods``) differ only in which tag a trace gets. The
Trainer supplies checkpoints, exact resume, accumulation, schedules and multi-device; this module adds a
question-level dataset, a ``compute_loss`` override and a callback that keeps the assignment statistics
inside checkpoints.

One SSFT step, in the order it runs (micro-batch of B questions, each with M traces, N tags):

    score    ``SSFTTrainer.compute_loss`` -> ``matching.score_batch`` builds the (question, tag i, first L
             tokens of trace j) rows, ``matching.score`` runs them without gradient: an (M, N) cost each
    assign   ``methods.SSFT.tags`` -> ``matching.assign``: Hungarian matching, ties broken by the step's
             seeded generator (paper Eq. 2-3)
    record   ``SSFTTrainer._record`` -> ``MatchStats.record`` (gathered over ranks); the epoch's summary is
             closed by ``StatsCallback.on_epoch_end`` and reaches the trackers through ``SSFTTrainer.log``
    batch    ``build_batch``: the M matched sequences ``question <think sigma(j)> trace_j`` with labels on
             the trace (and the tag)
    loss     ``sequence_loss`` -> ``loss.nll_sum``: summed next-token NLL of the labelled tokens only,
             divided once by the step's labelled-token count
    step     the Trainer: backward, gradient clipping, AdamW, schedule, logging, checkpoints
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import ExportableState, PrinterCallback
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices

from ssft import atomic, stages
from ssft.config import Config, ModelConfig
from ssft.data import traces
from ssft.data.tasks import get_task
from ssft.data.traces import QuestionTraces
from ssft.errors import UserError
from ssft.train import adapters, methods, models, precision, snapshots
from ssft.train.forking import PromptLayout, completion_ids, prompt_ids, question_ids, tag_ids
from ssft.train.loss import Targets, nll_sum, right_pad
from ssft.train.matching import MatchStats, ScoreItem, agreement_with_full, score, score_batch
from ssft.train.methods import Method

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    """One question, tokenized: prompts[0] is the shared-tag prompt, prompts[i] the ``<think i>`` one."""

    question_id: str
    prompts: tuple[tuple[int, ...], ...]
    tag_pos: int                                # index of the tag token in every prompt
    completions: tuple[tuple[int, ...], ...]    # M traces + eos
    sources: tuple[str, ...]
    strategy: tuple[int, ...]                   # 0-based index of each trace's source (``fixed``)


def tokenize(questions: Sequence[QuestionTraces], tokenizer: PreTrainedTokenizerBase, num_tags: int,
             source_order: Sequence[str], layout: PromptLayout | None = None) -> list[Example]:
    """Tokenize every question once, with the prompt layout evaluation uses too (``models.prompt_layout``;
    None: the default ``model.tag_format``, checked to be single tokens of ``tokenizer``)."""
    if layout is None:
        layout = PromptLayout.for_tokenizer(tokenizer, ModelConfig().tag_format, num_tags)
    if len(layout.tags) != num_tags:
        raise UserError(f"the prompt layout has {len(layout.tags)} tags, ssft.num_tags={num_tags}")
    tag_ids(tokenizer, layout.all_tags)  # a layout that does not match the tokenizer fails here, not silently
    out = []
    for q in questions:
        prompts = tuple(tuple(prompt_ids(tokenizer, layout, q.question, t))
                        for t in [None, *range(1, num_tags + 1)])
        comps = tuple(tuple(completion_ids(tokenizer, tr)) for tr in q.traces)
        out.append(Example(q.question_id, prompts, len(question_ids(tokenizer, layout, q.question)), comps,
                           q.sources, tuple(source_order.index(s) for s in q.sources)))
    return out


def within_context(examples: list[Example], limit: int | None, setting: str) -> tuple[list[Example], dict]:
    """Drop traces whose prompt + trace exceeds ``limit`` tokens (None: no limit), counted per source, and
    questions left with fewer than 2; raise, saying what to set, when nothing is left."""
    over: Counter = Counter()
    kept, dropped, longest = [], 0, 0
    for ex in examples:
        prompt = max(map(len, ex.prompts))
        longest = max(longest, prompt + max(map(len, ex.completions)))
        keep = [j for j, c in enumerate(ex.completions) if limit is None or prompt + len(c) <= limit]
        over.update(ex.sources[j] for j in range(len(ex.completions)) if j not in keep)
        if len(keep) < 2:
            dropped += 1
            continue
        kept.append(dataclasses.replace(ex, completions=tuple(ex.completions[j] for j in keep),
                                        sources=tuple(ex.sources[j] for j in keep),
                                        strategy=tuple(ex.strategy[j] for j in keep)))
    report = {"limit": limit, "longest": longest, "over_context": dict(sorted(over.items())),
              "dropped_traces": sum(over.values()), "dropped_questions": dropped}
    if over:
        log.warning("%d trace(s) over %s=%s tokens dropped (per source: %s), %d question(s) left with < 2 traces",
                    sum(over.values()), setting, limit, report["over_context"], dropped)
    if not kept:
        raise UserError(f"no question has 2 traces within {setting}={limit} tokens (the longest prompt + trace "
                         f"is {longest}); set model.max_length: {longest} (within the model's context) or use "
                         "shorter traces")
    return kept, report


class QuestionDataset(torch.utils.data.Dataset):
    """Question-level: shuffling never splits a question's traces, and an epoch counts questions."""

    def __init__(self, examples: list[Example]) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict:
        return {"example": self.examples[i]}

    def lengths(self) -> list[int]:
        """Each question's padded row width (longest prompt + longest trace): what length grouping sorts by."""
        return [max(map(len, ex.prompts)) + max(map(len, ex.completions)) for ex in self.examples]


class SeededLengthGroupedSampler(LengthGroupedSampler):
    """transformers' length grouping (shuffled mega-batches, each sorted by length), drawn from (seed, epoch)
    alone: the same order on every rank, and again after a resume. transformers' own sampler draws from the
    global RNG before the Trainer restores it from the checkpoint, so a resumed epoch would skip the wrong
    batches."""

    def __init__(self, batch_size: int, lengths: list[int], seed: int) -> None:
        super().__init__(batch_size, lengths=lengths)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:  # called by accelerate's data loader at every epoch
        self.epoch = epoch

    def __iter__(self):  # noqa: ANN204
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=g))


def collate(batch: list[dict]) -> dict:
    """Keep the examples whole; sequences are built in ``compute_loss`` once the tags are known."""
    return {"examples": [b["example"] for b in batch]}


def labelled_tokens(ex: Example, tag_in_loss: bool) -> int:
    """The tokens of ``ex`` that the loss scores, whatever tags its traces get: each trace's tokens (and its tag
    and what follows it in the prompt, when the tag is trained). Exactly the labels :func:`build_batch` sets."""
    prompt = len(ex.prompts[0])
    keep = ex.tag_pos if tag_in_loss else prompt
    return sum(prompt - keep + len(c) for c in ex.completions)


def build_batch(examples: Sequence[Example], tags: Sequence[Sequence[int | None]], pad_id: int,
                tag_in_loss: bool) -> dict[str, torch.Tensor]:
    """Right-padded (question, tag, trace) rows with labels on the trace (and the tag, if trained).

    >>> # prompt [1, 7, 9] with the tag at index 2, completion [5, 2]:
    >>> # input_ids [1, 7, 9, 5, 2], labels [-100, -100, 9, 5, 2] (tag_in_loss) or [-100, -100, -100, 5, 2]
    """
    rows, labels = [], []
    for ex, ex_tags in zip(examples, tags):
        for comp, tag in zip(ex.completions, ex_tags):
            prompt = ex.prompts[tag or 0]
            keep = ex.tag_pos if tag_in_loss else len(prompt)
            rows.append(list(prompt) + list(comp))
            labels.append([-100] * keep + list(prompt[keep:]) + list(comp))
    ids, mask, lab = right_pad(rows, labels, pad_id)
    return {"input_ids": ids, "attention_mask": mask, "labels": lab}


def sequence_loss(model: PreTrainedModel, batch: dict[str, torch.Tensor], core: PreTrainedModel | None = None,
                  kernel: str = "torch") -> tuple[torch.Tensor, int]:
    """Summed next-token NLL over labelled tokens, and their count (sum first, divide once).

    Only labelled positions meet the output projection (``ssft.train.loss``): no full-vocabulary logits."""
    core = core or model
    dev = next(core.parameters()).device
    targets = Targets.from_labels(batch["labels"].cpu())  # host-side: no device sync per step
    ids, mask = (batch[k].to(dev, non_blocking=True) for k in ("input_ids", "attention_mask"))
    return nll_sum(model, ids, mask, targets.to(dev), core=core, kernel=kernel), len(targets)


Row = tuple[str, tuple[str, ...], list, list[float]]  # (question id, sources, tags, matched costs)


class StatsCallback(TrainerCallback, ExportableState):
    """Holds the MatchStats; being an ExportableState, it is saved in (and restored from) checkpoints.

    Each rank queues its micro-batches' assignments; they are gathered over the ranks once per logging or
    saving step and at an epoch's end (one collective then, not one per micro-batch), so every rank holds the
    same statistics and a checkpoint never misses a step it covers."""

    def __init__(self, num_tags: int, stats: dict | None = None) -> None:
        self.stats = MatchStats.from_state(stats) if stats else MatchStats(num_tags)
        self.pending: list[Row] = []
        self.window = [0.0, 0]  # matched cost sum and count since the last log

    def state(self) -> dict:
        return {"args": {"num_tags": self.stats.num_tags, "stats": self.stats.state()}, "attributes": {}}

    def flush(self) -> None:
        rows = self.pending
        if distributed():
            gathered: list = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, rows)
            rows = [r for part in gathered for r in part]
        for qid, sources, tags, costs in rows:
            if self.stats.record(qid, sources, tags, costs):
                self.window[0] += sum(costs)
                self.window[1] += len(costs)
        self.pending = []

    def on_step_end(self, args, state, control, **kwargs):
        # Runs on every rank after DefaultFlowCallback has decided this step's log/save, before they happen.
        if control.should_save:
            # The loss of the steps since the last log lives only in the process: logged before a checkpoint,
            # a resumed run's history (and train_loss) equals an uninterrupted one's.
            control.should_log = True
        if control.should_log or control.should_save or control.should_training_stop:
            self.flush()

    def on_epoch_begin(self, args, state, control, **kwargs):
        # Resumed from a checkpoint saved at an epoch's last step: that epoch ended in the killed process, after
        # the save, so close it here (at the step it ended) instead of merging it into the next one.
        if self.stats.questions and len(self.stats.history) < int(state.epoch or 0):
            self.stats.close_epoch(len(self.stats.history), state.global_step)

    def on_epoch_end(self, args, state, control, **kwargs):
        self.flush()
        if self.stats.questions:
            s = self.stats.close_epoch(len(self.stats.history), state.global_step)
            if state.is_world_process_zero:
                log.info("%s", epoch_line(s))


def epoch_line(s: dict) -> str:
    """An epoch's line, numbers rounded: the matching statistics where tags were assigned (an untagged method,
    sft, trains every trace under its one shared tag: they would mean nothing)."""
    head = f"epoch {s['epoch']} (step {s['step']}): {s['questions']} questions"
    if set(s["tag_source_counts"]) <= {"0"}:
        return f"{head}, one shared tag (no matching)"
    parts = [head]
    if s["churn"] is not None:
        parts.append(f"churn {s['churn']:.2f}")
    parts.append(f"assignment entropy {s['assignment_entropy']:.2f}")
    if s["mean_matched_cost"] is not None:
        parts.append(f"matched cost {s['mean_matched_cost']:.2f}")
    rates = s["tag_match_rate"]
    parts.append("tag match " + " ".join(f"{t}:{v:.2f}" for t, v in rates.items()))
    dead = [t for t, v in rates.items() if v == 0]
    if dead:
        parts.append(f"dead tags {','.join(dead)}")
    return ", ".join(parts)


class ProgressLineCallback(TrainerCallback):
    """A progress line, fixed key order: step, loss, lr, steps/s, tokens/s, host ms per micro-batch, ETA. At the
    first logging step, then at most every ``every_s`` seconds, and at the last step: MLflow gets every logging
    step, the terminal a readable pace. Each line opens with the method, as trainings run side by side."""

    def __init__(self, method: str = "", every_s: float = 15.0) -> None:
        self.method, self.every_s = method, every_s
        self.t0 = self.last = time.monotonic()
        self.step0 = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.t0, self.last, self.step0 = time.monotonic(), float("-inf"), state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or "loss" not in (logs or {}):
            return
        now = time.monotonic()
        if now - self.last < self.every_s and state.global_step < state.max_steps:
            return
        self.last = now
        rate = (state.global_step - self.step0) / max(time.monotonic() - self.t0, 1e-9)
        eta = (state.max_steps - state.global_step) / max(rate, 1e-9)
        log.info("%sstep %d/%d  loss %.4f  lr %.2e  %.2f steps/s  %.0f tok/s  host %.1f ms  ETA %dm%02ds",
                 f"{self.method} " if self.method else "", state.global_step, state.max_steps, logs["loss"],
                 logs.get("learning_rate", 0.0), rate,
                 logs.get("tokens_per_s", 0.0), logs.get("host_ms", 0.0), eta // 60, eta % 60)


class SSFTTrainer(Trainer):
    """The Trainer with a set loss: pick each trace's tag, then ordinary next-token loss."""

    # compute_loss divides the summed NLL once, by the whole step's labelled tokens over every micro-batch
    # and rank (``num_items_in_batch``): already scaled for accumulation, so the Trainer must not divide again.
    loss_is_scaled_for_ga = True

    def __init__(self, *args, method: Method, cfg: Config, pad_id: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.method, self.cfg, self.pad_id = method, cfg, pad_id
        self.kernel = precision.resolve_kernel(cfg.train.loss_kernel, self.args.device.type)
        self._buf = self._empty_buf()
        self._t_log = time.monotonic()
        self._epochs_logged = 0

    @staticmethod
    def _empty_buf() -> dict[str, float]:
        return {"tokens": 0.0, "host_s": 0.0, "micro": 0.0}

    def _get_train_sampler(self, train_dataset=None):  # noqa: ANN001, ANN202
        """With ``train.group_by_length``, a length-grouped order that resumes exactly (see the sampler)."""
        ds = train_dataset if train_dataset is not None else self.train_dataset
        if not self.cfg.train.group_by_length:
            return super()._get_train_sampler(train_dataset)
        return SeededLengthGroupedSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                          ds.lengths(), self.cfg.seed)

    def _stats_cb(self) -> StatsCallback:
        # Looked up every time: on resume the Trainer replaces the callback object with a restored one.
        return next(cb for cb in self.callback_handler.callbacks if isinstance(cb, StatsCallback))

    def _stats(self) -> MatchStats:
        return self._stats_cb().stats

    def get_batch_samples(self, epoch_iterator, num_batches, device):  # noqa: ANN001, ANN201
        """The step's micro-batches and their labelled-token count summed over micro-batches and ranks: the one
        divisor of the step's loss (sum first, divide once), as TRL's ``num_items_in_batch``."""
        batches, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        tag_in_loss = self.cfg.ssft.tag_in_loss
        count = torch.tensor(sum(labelled_tokens(ex, tag_in_loss) for b in batches for ex in b["examples"]),
                             device=device)
        if self.args.world_size > 1:
            count = self.accelerator.gather(count).sum()
        return batches, int(count)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        examples: list[Example] = inputs["examples"]
        n = self.cfg.ssft.num_tags
        costs: list[np.ndarray | None] = [None] * len(examples)
        core = self.accelerator.unwrap_model(model)
        t0 = time.perf_counter()                                   # host work is timed, device work is not
        if self.method.scores:
            items = [ScoreItem(ex.prompts[1:], ex.completions) for ex in examples]
            rows = score_batch(items, self.cfg.ssft.cost_tokens, self.pad_id, self.cfg.ssft.prefix_cache,
                               self.cfg.ssft.scoring)
            host = time.perf_counter() - t0
            with self.accelerator.autocast():  # score in the compute dtype, like the training forward
                costs = score(core, rows, items)
            t0 = time.perf_counter()
        else:
            host = 0.0
        key = zlib.crc32("|".join(ex.question_id for ex in examples).encode())
        rng = np.random.default_rng([self.cfg.seed, self.state.global_step, key, self.args.process_index])
        tags = [self.method.tags(ex.strategy, n, c, rng) for ex, c in zip(examples, costs)]
        self._record(examples, tags, costs)
        batch = build_batch(examples, tags, self.pad_id, self.cfg.ssft.tag_in_loss)
        self._buf["host_s"] += host + time.perf_counter() - t0
        self._buf["micro"] += 1
        loss_sum, count = sequence_loss(model, batch, core, self.kernel)
        self._buf["tokens"] += float(batch["attention_mask"].sum())
        # DDP averages gradients over ranks: x world_size makes the step's gradient that of sum / all tokens.
        total = num_items_in_batch if num_items_in_batch else count
        return loss_sum * self.args.world_size / max(total, 1)

    def _record(self, examples: list[Example], tags: list[list[int | None]], costs: list) -> None:
        """Queue this micro-batch's assignments for the statistics (gathered over the ranks at the next flush)."""
        self._stats_cb().pending += [(ex.question_id, ex.sources, t,
                                      [] if c is None else [float(c[j, (tj or 1) - 1]) for j, tj in enumerate(t)])
                                     for ex, t, c in zip(examples, tags, costs)]

    def log(self, logs: dict, start_time: float | None = None) -> None:
        if "loss" in logs:
            now = time.monotonic()
            logs["tokens_per_s"] = self._buf["tokens"] * self.args.world_size / max(now - self._t_log, 1e-9)
            window = self._stats_cb().window
            if window[1]:
                logs["matched_cost"] = window[0] / window[1]
            window[:] = [0.0, 0]
            if self._buf["micro"]:  # host-side ms per micro-batch: tokenizing rows, matching, statistics
                logs["host_ms"] = 1000 * self._buf["host_s"] / self._buf["micro"]
            self._buf = self._empty_buf()
            self._t_log = now
        super().log(logs, start_time)
        self.log_epochs()

    def log_epochs(self) -> None:
        """Each epoch closed since the last log, as its own log record (what trackers read: no side channel
        into the statistics). ``match/step`` is the training step the epoch ended at."""
        history = self._stats().history
        for summary in history[self._epochs_logged:]:
            super().log(epoch_logs(summary))
        self._epochs_logged = len(history)


def epoch_logs(summary: dict) -> dict[str, Any]:
    """One closed epoch's assignment statistics as log keys: scalars, and the tag x source counts."""
    scalars = {"match/epoch": summary["epoch"], "match/step": summary["step"], "match/churn": summary["churn"],
               "match/assignment_entropy": summary["assignment_entropy"],
               "match/mean_matched_cost": summary["mean_matched_cost"],
               **{f"match/rate_tag{t}": r for t, r in summary["tag_match_rate"].items()}}
    return {**{k: v for k, v in scalars.items() if v is not None},
            "match/tag_source_counts": summary["tag_source_counts"]}


def dead_tags(history: list[dict]) -> list[int]:
    """Tags never matched in the last epoch: sampling them gives a mode nobody trained."""
    if not history:
        return []
    return [int(t) for t, rate in history[-1]["tag_match_rate"].items() if rate == 0]


# Wall-clock measurements: they differ between any two runs, so they stay out of the model directory (a DVC
# output whose hash must depend on code, params and data only) and go beside the checkpoints instead.
TIMING_FILE = "timing.json"
TIMING_KEYS = ("train_seconds", "tokens_per_s", "host_ms", "train_runtime", "train_samples_per_second",
               "train_steps_per_second")


def split_timing(stats: dict) -> tuple[dict, dict]:
    """(the training statistics without wall-clock values, those values: ``train_seconds`` and the
    log history's rates, per logged step)."""
    log_history = stats.get("log_history", [])
    kept = {k: v for k, v in stats.items() if k not in TIMING_KEYS}
    kept["log_history"] = [{k: v for k, v in h.items() if k not in TIMING_KEYS} for h in log_history]
    timing = {"train_seconds": stats.get("train_seconds"),
              "log_history": [{"step": h.get("step"), **{k: h[k] for k in TIMING_KEYS if k in h}}
                              for h in log_history if any(k in h for k in TIMING_KEYS)]}
    return kept, timing


def whole_run_loss(log_history: list[dict], fallback: float) -> float:
    """Mean training loss over every logged step of the run, resumed parts included (the Trainer's own
    ``training_loss`` covers only the steps since the last resume, and is 0 when nothing was left to do)."""
    logged, last, total = [h for h in log_history if "loss" in h and "step" in h], 0, 0.0
    for h in logged:
        total += h["loss"] * (h["step"] - last)
        last = h["step"]
    return total / last if last else fallback


def fingerprint(cfg: Config, method: str, traces_file: Path) -> str:
    """What a checkpoint depends on: the train stage's params and code (``ssft.stages``, the list dvc.yaml's
    train stage uses too) and the training data; with any of them changed, the checkpoints are another run's."""
    h = hashlib.sha256(json.dumps([stages.params_of("train", cfg), method], sort_keys=True, default=str).encode())
    h.update(Path(traces_file).read_bytes())
    h.update(stages.code_digest(("train",)).encode())
    return h.hexdigest()[:16]


def _safetensors_whole(f: Path) -> bool:
    """Whether a ``.safetensors`` file is as long as its header says: 8 bytes of header length, the JSON header,
    then the tensors up to the largest end offset (a full disk or a kill mid-write leaves it shorter)."""
    try:
        with open(f, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        return f.stat().st_size == 8 + n + end
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return False


def last_complete_checkpoint(ckpt_dir: Path) -> Path | None:
    """Newest ``checkpoint-*`` that finished writing: a kill mid-save (or a full disk) leaves one without
    ``trainer_state.json``, with a truncated one, or with truncated weights; each is skipped with a warning
    naming it, and the previous complete one is resumed."""
    def complete(p: Path) -> bool:
        try:
            json.loads((p / "trainer_state.json").read_text())
        except FileNotFoundError:
            return False
        except (json.JSONDecodeError, UnicodeDecodeError):
            log.warning("%s: trainer_state.json is truncated (a kill while saving?); skipping this checkpoint", p)
            return False
        broken = [f.name for f in sorted(p.glob("*.safetensors")) if not _safetensors_whole(f)]
        if broken:
            log.warning("%s: %s truncated (a kill or a full disk while saving?); skipping this checkpoint", p,
                        ", ".join(broken))
        return not broken

    done = [p for p in ckpt_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit() and complete(p)]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


def training_args(cfg: Config, ckpt_dir: Path) -> TrainingArguments:
    t = cfg.train
    # Passed only when on: the argument's name is changing (activation_checkpointing) across 5.x releases.
    checkpointing: dict[str, Any] = ({"gradient_checkpointing": True,
                                      "gradient_checkpointing_kwargs": {"use_reentrant": False}}
                                     if t.gradient_checkpointing else {})
    return TrainingArguments(
        output_dir=str(ckpt_dir), max_steps=t.max_steps, per_device_train_batch_size=t.questions_per_step,
        gradient_accumulation_steps=t.grad_accum, learning_rate=t.lr, weight_decay=t.weight_decay,
        warmup_steps=t.warmup_steps, lr_scheduler_type=t.scheduler, max_grad_norm=t.max_grad_norm,
        logging_steps=t.logging_steps, save_steps=t.save_steps, save_total_limit=2, report_to="none",
        remove_unused_columns=False, restore_callback_states_from_checkpoint=True, seed=cfg.seed,
        data_seed=cfg.seed, disable_tqdm=True, **precision.decide(cfg.model, torch.cuda.is_available()).trainer_flags(),
        use_cpu=not torch.cuda.is_available(), ddp_find_unused_parameters=False, dataloader_num_workers=0,
        **checkpointing,
    )


def train(cfg: Config, method: Method, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
          examples: list[Example], ckpt_dir: Path, callbacks: Sequence[TrainerCallback] = ()) -> tuple[
              PreTrainedModel, dict | None, dict]:
    """Train ``model`` in place with ``method``; resumes from ``ckpt_dir`` when a matching checkpoint exists.

    Returns the model, its full state dict when FSDP sharded it (gathered on every rank; None otherwise),
    and the training statistics (per-epoch assignment stats, totals, log history).
    """
    stats_cb = StatsCallback(cfg.ssft.num_tags)
    trainer = SSFTTrainer(model=model, args=training_args(cfg, ckpt_dir), train_dataset=QuestionDataset(examples),
                          data_collator=collate, callbacks=[stats_cb, ProgressLineCallback(method.name), *callbacks],
                          method=method, cfg=cfg, pad_id=tokenizer.pad_token_id)
    trainer.remove_callback(PrinterCallback)  # ProgressLineCallback prints one line per log instead
    if trainer.is_fsdp_enabled and cfg.model.lora_rank:
        raise UserError("model.lora_rank > 0 with FSDP is not supported: the adapters would be saved unmerged; "
                         "use DDP (torchrun) for LoRA, or model.lora_rank: 0 with FSDP")
    resume = last_complete_checkpoint(ckpt_dir)
    if resume:
        log.info("resuming %s from %s", method.name, resume)
    t0 = time.monotonic()
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    trainer._stats_cb().flush()  # a step after the last log (none when training ends on a logging step)
    stats = trainer._stats()
    if stats.questions:
        stats.close_epoch(len(stats.history), trainer.state.global_step)
        trainer.log_epochs()
    out = {"method": method.name, "steps": trainer.state.global_step, "train_seconds": time.monotonic() - t0,
           "train_loss": whole_run_loss(trainer.state.log_history, result.training_loss), "epochs": stats.history,
           "tag_source_totals": {str(k): v for k, v in sorted(stats.totals().items())},
           "tag_trajectories": {str(k): v for k, v in stats.trajectory_counts().items()},
           "dead_tags": dead_tags(stats.history),
           "log_history": trainer.state.log_history}
    # Under FSDP the weights are shards: gather the whole state dict (a collective: every rank calls it).
    state_dict = trainer.accelerator.get_state_dict(trainer.model) if trainer.is_fsdp_enabled else None
    if state_dict is not None:  # a tied head is gathered as a copy of its source: saved once, as without FSDP
        for tied in getattr(trainer.accelerator.unwrap_model(trainer.model), "all_tied_weights_keys", {}):
            state_dict.pop(tied, None)
    return trainer.accelerator.unwrap_model(trainer.model), state_dict, out


# Superseded configurations' checkpoints kept beside checkpoints/<method>: a typo'd param must not cost a run.
HISTORY = 3
PARAMS_FILE = "params.json"  # beside the fingerprint marker: what the fingerprint covers, for the diff


def previous_dir(ckpt_dir: Path, fp: str) -> Path:
    """Where the checkpoints of configuration ``fp`` wait while another one trains in ``ckpt_dir``."""
    return ckpt_dir.with_name(f"{ckpt_dir.name}.previous-{fp}")


def fingerprinted(cfg: Config, method: str, traces_file: Path) -> dict[str, Any]:
    """What :func:`fingerprint` hashes, readable: the train params (dotted), the method, data and code hashes."""
    flat: dict[str, Any] = {"method": method}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(f"{prefix}.{k}", v)
        else:
            flat[prefix] = node

    for key, value in stages.params_of("train", cfg).items():
        walk(key, value)
    flat["training data (sha256)"] = hashlib.sha256(Path(traces_file).read_bytes()).hexdigest()[:16]
    flat["train stage code (sha256)"] = stages.code_digest(("train",))[:16]
    return json.loads(json.dumps(flat, default=str))


def _differences(old: dict[str, Any] | None, new: dict[str, Any]) -> str:
    if old is None:
        return "its params were not recorded"
    keys = sorted(set(old) | set(new))
    return ", ".join(f"{k}: {old.get(k, '-')!r} -> {new.get(k, '-')!r}" for k in keys if old.get(k) != new.get(k))


def _read_params(ckpt_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((ckpt_dir / PARAMS_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def _prune_history(ckpt_dir: Path, keep: int) -> None:
    """Keep the ``keep`` most recently superseded configurations; say which older one is deleted."""
    history = sorted(ckpt_dir.parent.glob(f"{ckpt_dir.name}.previous-*"), key=lambda p: p.stat().st_mtime,
                     reverse=True)
    for old in history[keep:]:
        log.warning("deleting %s: the checkpoints of the oldest superseded configuration (%d are kept)", old, keep)
        shutil.rmtree(old, ignore_errors=True)


def prepare_checkpoint_dir(ckpt_dir: Path, fp: str, params: dict[str, Any], keep: int = HISTORY) -> None:
    """Make ``ckpt_dir`` hold only checkpoints of configuration ``fp`` (``params``: what it covers).

    Another configuration's checkpoints move to ``<dir>.previous-<its fingerprint>`` (the ``keep`` most recent
    such moves are kept, older ones deleted with a warning), and the log names the keys that differ. A rerun
    of a superseded configuration takes its own checkpoints back and resumes from them."""
    marker = ckpt_dir / "fingerprint"
    if ckpt_dir.exists() and (not marker.exists() or marker.read_text() != fp):
        old_fp = marker.read_text().strip() if marker.exists() else "unmarked"
        if not any(ckpt_dir.glob("checkpoint-*")):
            shutil.rmtree(ckpt_dir)  # nothing resumable in it: nothing to keep
        else:
            aside = previous_dir(ckpt_dir, old_fp)
            log.warning("%s holds checkpoints of another configuration (%s); moved to %s", ckpt_dir,
                        _differences(_read_params(ckpt_dir), params), aside)
            shutil.rmtree(aside, ignore_errors=True)  # only an unmarked leftover can collide
            ckpt_dir.rename(aside)
            os.utime(aside)  # the history is ordered by when a configuration was superseded
            _prune_history(ckpt_dir, keep)
    own = previous_dir(ckpt_dir, fp)
    if not ckpt_dir.exists() and own.exists():
        log.info("%s: this configuration's own checkpoints, kept from an earlier run; resuming from them", own)
        own.rename(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_text(ckpt_dir / PARAMS_FILE, json.dumps(params, indent=1, sort_keys=True))
    atomic.write_text(marker, fp)


def distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def is_main_process() -> bool:
    return not distributed() or torch.distributed.get_rank() == 0


def source_order(cfg: Config, questions: Sequence[QuestionTraces]) -> list[str]:
    """Sources in a stable order: the task's strategy order where it applies, then the rest sorted.
    Position i is the tag ``fixed`` gives that source."""
    seen = sorted({s for q in questions for s in q.sources})
    if cfg.data.source != "synthetic":
        return seen
    order = list(get_task(cfg.task.name, marked=cfg.task.marked, **cfg.task.options).strategies)
    return [s for s in order if s in seen] + [s for s in seen if s not in order]


def full_cost_agreement(cfg: Config, model: PreTrainedModel, examples: list[Example], pad_id: int,
                        sample: int = 256) -> float:
    """How often the trained model's assignment from the first L trace tokens equals the whole-trace one, over
    (up to) ``sample`` training questions."""
    items = [ScoreItem(ex.prompts[1:], ex.completions) for ex in examples[:sample]]
    agree = agreement_with_full(model, items, cfg.ssft.cost_tokens, pad_id, cfg.seed)
    log.info("assignment agreement of L=%d with whole-trace costs: %.3f (%d questions)", cfg.ssft.cost_tokens,
             agree, len(items))
    return agree


def preflight(cfg: Config, cuda: bool) -> None:
    """Every setting this machine cannot run, all at once, before any model loads."""
    import importlib.util

    m, problems = cfg.model, []
    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true")
    if m.dtype == "float16" and not cuda:
        problems.append("model.dtype=float16 needs a CUDA GPU; use bfloat16 (mixed precision) or float32 on the CPU")
    if m.dtype == "float16" and m.pure_dtype:
        problems.append("model.pure_dtype with float16 trains without a loss scaler (gradients underflow); use "
                        "model.pure_dtype: false (float32 masters, fp16 autocast with scaling) or bfloat16")
    if m.lora_rank and fsdp:
        problems.append("model.lora_rank > 0 with FSDP is not supported: the adapters would be saved unmerged; "
                        "use DDP (torchrun) for LoRA, or model.lora_rank: 0 with FSDP")
    if cfg.train.loss_kernel == "liger" and not (cuda and importlib.util.find_spec("liger_kernel")):
        problems.append("train.loss_kernel=liger needs CUDA and liger-kernel (pip install '.[gpu]'); use auto or torch")
    if cfg.eval.every_steps and (m.lora_rank or fsdp):
        problems.append("eval.every_steps (learning-curve snapshots) needs whole weights: not with model.lora_rank "
                        "> 0 or FSDP; set eval.every_steps: 0 there")
    if m.attn_implementation == "flash_attention_2" and not (cuda and importlib.util.find_spec("flash_attn")):
        problems.append("model.attn_implementation=flash_attention_2 needs CUDA and the flash-attn package; "
                        "use sdpa")
    if problems:
        raise UserError(f"{len(problems)} setting(s) cannot run here:\n  - " + "\n  - ".join(problems))


def run_stage(cfg: Config, method_name: str, train_file: Path, out: Path, ckpt_dir: Path,
              callbacks: Sequence[TrainerCallback] = ()) -> dict:
    """The train stage: data -> model -> train (resuming if possible) -> ``out`` written atomically."""
    method = methods.get(method_name)
    preflight(cfg, torch.cuda.is_available())
    numerics = precision.decide(cfg.model, torch.cuda.is_available())
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    questions, _ = traces.load(train_file, cfg.ssft.num_tags)
    sources = source_order(cfg, questions)
    model, tokenizer = models.build(cfg.model, cfg.ssft.num_tags, cfg.seed)
    layout = models.prompt_layout(cfg.model, tokenizer, cfg.ssft.num_tags)
    examples = tokenize(questions, tokenizer, cfg.ssft.num_tags, sources, layout=layout)
    # model.max_length, else the model's positions (a checkpoint's context; a tiny model's from config: its
    # max_length, 4096 when 0): a longer trace is dropped and counted (unbounded, a 400 KB trace asked for 160 GB)
    limit = cfg.model.max_length or getattr(model.config, "max_position_embeddings", None)
    examples, context = within_context(examples, limit, "model.max_length" if cfg.model.max_length else
                                       "the model's max_position_embeddings")
    training_args(cfg, ckpt_dir)  # every training setting is checked before a checkpoint is touched
    if is_main_process():  # one rank moves and marks the directory (ranks racing on it crashed one of them)
        prepare_checkpoint_dir(ckpt_dir, fingerprint(cfg, method.name, train_file),
                               fingerprinted(cfg, method.name, train_file))
    if distributed():  # training_args set up the process group; no rank looks for a checkpoint before this
        torch.distributed.barrier()
    log.info("train %s: %d questions, %d traces, %.2fM params", method.name, len(examples),
             sum(len(ex.completions) for ex in examples), sum(p.numel() for p in model.parameters()) / 1e6)
    if cfg.model.lora_rank:
        model = adapters.add_lora(model, cfg.model, tag_ids(tokenizer, layout.all_tags))
    if cfg.eval.every_steps:
        callbacks = [*callbacks, snapshots.SnapshotCallback(cfg.eval.every_steps, ckpt_dir)]
    model, state_dict, stats = train(cfg, method, model, tokenizer, examples, ckpt_dir, callbacks)
    stats["context"] = context
    if is_main_process():
        if method.scores and cfg.ssft.cost_tokens and state_dict is None:  # FSDP shards: not measured
            stats["match_agreement_full"] = full_cost_agreement(cfg, model, examples, tokenizer.pad_token_id)
        # dtype: what the model computed in, so evaluation reloads it so (ssft.train.precision)
        meta = {"method": method.name, "num_tags": cfg.ssft.num_tags, "task": cfg.dataset_name, "seed": cfg.seed,
                "sources": sources, "base": cfg.model.checkpoint or "tiny", "dtype": numerics.compute}
        kept, timing = split_timing(stats)
        models.save(adapters.merged(model), tokenizer, out, meta, dtype=cfg.model.save_dtype, layout=layout,
                    extra={models.STATS_FILE: json.dumps(kept, indent=1, default=str)}, state_dict=state_dict)
        atomic.write_text(ckpt_dir / TIMING_FILE, json.dumps(timing, indent=1))
        snapshots.complete(ckpt_dir, out)
    if distributed():
        torch.distributed.barrier()  # rank 0 has saved; an untidy exit can abort a rank (trainer.md pitfall 6)
        torch.distributed.destroy_process_group()
    return stats
