"""GFPO (Global Forking Policy Optimization, paper v3): a few RL steps after SSFT that train only the model's
choice of forking tag, so it needs no tag at inference. Run: ``ssft gfpo --method ssft``.

One step, top to bottom (B questions x G rollouts, the training questions):

    rollouts   the model samples its own tag from P(tag | question) over its N tags (a logit mask), then writes
               the reasoning and answer (``rollouts.generate``: the sampler evaluation uses)
    reward     1 if the answer is right, else 0 (``ssft.data.grading``: exactly what evaluation counts)
    advantage  group-relative: reward minus the mean of the question's G rollouts, divided by their std
               (``gfpo.scale_rewards``; false = no division, which ThreadWeaver found better)
    loss       PPO's clipped ratio at the tag position only (:func:`tag_policy_loss`): the reasoning tokens get
               no gradient; + ``gfpo.kl`` x KL(P(tag | q) || the starting model's)
    update     AdamW, ``gfpo.updates_per_batch`` times over the step's rollouts (the ratio starts at 1)

``gfpo.scope: all`` is the paper's baseline, GRPO: the same rollouts and rewards with the loss on every
generated token (:func:`token_policy_loss`); ``auto`` = tag for tagged models, all for ``sft`` (one tag: there
is no tag choice to train). The authors released no RL code; the knobs they did not report (group size, KL,
clipping) are ``params.yaml`` ``gfpo:`` choices, documented there.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ssft.config import Config
from ssft.data import grading, traces
from ssft.data.traces import QuestionTraces
from ssft.generation.hf import HfSampler, left_pad
from ssft.generation.sampler import Sample
from ssft.train import methods, models, rollouts
from ssft.train.forking import PromptLayout, prompt_ids, question_ids, tag_ids
from ssft.train.loss import Targets, right_pad

log = logging.getLogger(__name__)
GFPO_FILE = "gfpo_stats.json"   # beside the weights: per-step history, the tag distribution before and after


def advantages(rewards: np.ndarray, scale: bool, eps: float = 1e-6) -> np.ndarray:
    """(B, G) group-relative advantages: each question's rewards minus their mean (over its G rollouts),
    divided by their standard deviation when ``scale`` (a group whose rollouts all agree gets 0).

    >>> advantages(np.array([[1.0, 0.0], [1.0, 1.0]]), scale=False).tolist()
    [[0.5, -0.5], [0.0, 0.0]]
    """
    centred = rewards - rewards.mean(axis=1, keepdims=True)
    return centred / (rewards.std(axis=1, keepdims=True) + eps) if scale else centred


def tag_policy_loss(logits: torch.Tensor, at: torch.Tensor, tags: Sequence[int], picked: torch.Tensor,
                    old_logp: torch.Tensor, adv: torch.Tensor, clip: float, kl: float = 0.0,
                    ref_logp: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """GFPO's loss: the clipped policy ratio of each rollout's tag, at the tag position only.

    logits (B, T, V): the model's output; at (B,): the position whose logits predict the tag; tags: the N tag
    ids; picked (B, G): index 0..N-1 of each rollout's tag; old_logp (B, G): its log-probability when it was
    sampled; adv (B, G); ref_logp (B, N): the starting model's log P(tag | q), for the KL term.
    Every other position of ``logits`` gets exactly zero gradient."""
    logp_all = F.log_softmax(logits[torch.arange(len(at)), at][:, list(tags)].float(), dim=-1)  # (B, N)
    logp = logp_all.gather(1, picked)                                                          # (B, G)
    ratio = torch.exp(logp - old_logp)
    surrogate = torch.minimum(ratio * adv, torch.clamp(ratio, 1 - clip, 1 + clip) * adv)
    loss = -surrogate.mean()
    divergence = torch.zeros(())
    if ref_logp is not None:  # exact KL over the N tags (the whole distribution is at hand)
        divergence = (logp_all.exp() * (logp_all - ref_logp)).sum(-1).mean()
        loss = loss + kl * divergence
    clipped = ((ratio - 1).abs() > clip).float().mean()
    return loss, {"kl": float(divergence.detach()), "clip_frac": float(clipped),
                  "entropy": float(-(logp_all.exp() * logp_all).sum(-1).mean().detach())}


def token_policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, clip: float) -> torch.Tensor:
    """GRPO's loss over every generated token (K,): each token carries its rollout's advantage; the clipped
    ratio is averaged over all tokens of the step (DAPO's token-level mean: long answers weigh per token)."""
    ratio = torch.exp(logp - old_logp)
    return -torch.minimum(ratio * adv, torch.clamp(ratio, 1 - clip, 1 + clip) * adv).mean()


# -- the pieces of one step -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Batch:
    questions: list[QuestionTraces]
    prompts: list[list[list[int]]]      # (B, G) the prompt each rollout was written after (its tag included)
    samples: list[list[Sample]]         # (B, G) what it wrote
    picked: np.ndarray | None           # (B, G) index 0..N-1 of each rollout's tag; None: the untagged model
    rewards: np.ndarray                 # (B, G)


def sample_batch(cfg: Config, sampler: HfSampler, tokenizer: Any, layout: PromptLayout, tagged: bool,
                 questions: list[QuestionTraces], grade: grading.Grader, rng: np.random.Generator,
                 seed: int) -> Batch:
    """G rollouts per question and their rewards: the model picks each tag (tagged models), then writes on."""
    g = cfg.gfpo
    texts = [q.question for q in questions]
    if tagged:
        out = rollouts.generate(sampler, tokenizer, layout, texts, g.rollouts, "sampled_tag", rng, g.temperature,
                                max_new_tokens=g.max_new_tokens, seed=seed)
        samples, picked = out.samples, out.tags - 1
        prompts = [[prompt_ids(tokenizer, layout, q, int(t) + 1) for t in row] for q, row in zip(texts, picked)]
    else:
        heads = [prompt_ids(tokenizer, layout, q, None) for q in texts]
        samples = sampler.generate(heads, g.rollouts, g.temperature, max_new_tokens=g.max_new_tokens, seed=seed)
        picked, prompts = None, [[h] * g.rollouts for h in heads]
    rewards = np.array([[float(grade.correct(q, s.text)) for s in row] for q, row in zip(questions, samples)])
    return Batch(questions, prompts, samples, picked, rewards)


def tag_logits(model: Any, heads: Sequence[Sequence[int]], pad_id: int) -> torch.Tensor:
    """(B, 1, V) the logits at each question's tag position (left-padded heads, positions from the first
    token; only the last position meets the output head)."""
    ids, mask = left_pad(heads, pad_id)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    dev = next(model.parameters()).device
    return model(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=positions.to(dev),
                 logits_to_keep=1).logits


def rollout_rows(batch: Batch, pad_id: int, starts: Sequence[int | None]
                 ) -> tuple[torch.Tensor, torch.Tensor, Targets, torch.Tensor]:
    """Right-padded (prompt + generation) rows of every rollout, what the model generated as targets, and each
    target's rollout index. ``starts[b]``: where question b's generated part begins (a tagged model chose its
    tag: from the tag on), None = after the prompt."""
    rows, labels, owner = [], [], []
    for b, (prompts, samples) in enumerate(zip(batch.prompts, batch.samples)):
        for k, (prompt, s) in enumerate(zip(prompts, samples)):
            start = len(prompt) if starts[b] is None else starts[b]
            assert start is not None
            rows.append(list(prompt) + list(s.token_ids))
            labels.append([-100] * start + rows[-1][start:])
            owner += [b * len(prompts) + k] * (len(rows[-1]) - start)
    ids, mask, lab = right_pad(rows, labels, pad_id)
    return ids, mask, Targets.from_labels(lab), torch.tensor(owner)


def token_logp(model: Any, ids: torch.Tensor, mask: torch.Tensor, targets: Targets) -> torch.Tensor:
    """(K,) differentiable log-probability of each target token (full logits: the rollouts are short)."""
    dev = next(model.parameters()).device
    logits = model(input_ids=ids.to(dev), attention_mask=mask.to(dev)).logits.float()
    flat = logits.reshape(-1, logits.shape[-1])[targets.positions.to(dev)]
    return -F.cross_entropy(flat, targets.tokens.to(dev), reduction="none")


# -- the stage ------------------------------------------------------------------------------------------
class Policy:
    """The model being trained, its sampler, and what one step needs of it."""

    def __init__(self, cfg: Config, model_dir: Path) -> None:
        self.model, self.tokenizer, self.meta = models.load(model_dir)
        self.model.to("cuda" if torch.cuda.is_available() else "cpu")  # type: ignore[arg-type]
        self.method = methods.get(self.meta["method"])
        self.scope = methods.rl_scope(cfg.gfpo.scope, self.method)
        self.layout = PromptLayout.from_meta(self.meta)
        self.tags = tag_ids(self.tokenizer, self.layout.tags)
        self.sampler = HfSampler(self.model, self.tokenizer, batch_size=cfg.eval.batch_size)
        self.pad = self.sampler.pad_id

    def heads(self, questions: Sequence[QuestionTraces]) -> list[list[int]]:
        return [question_ids(self.tokenizer, self.layout, q.question) for q in questions]

    @torch.no_grad()
    def tag_logp(self, questions: Sequence[QuestionTraces]) -> torch.Tensor:
        """(Q, N) log P(tag | question) over the N tags (what the tag choice is)."""
        self.model.eval()
        out = [F.log_softmax(tag_logits(self.model, self.heads(questions[i:i + 256]), self.pad)[:, -1][:, self.tags]
                             .float(), -1).cpu() for i in range(0, len(questions), 256)]
        return torch.cat(out) if out else torch.zeros((0, len(self.tags)))


def step_loss(cfg: Config, policy: Policy, batch: Batch, adv: torch.Tensor, old: torch.Tensor,
              ref: torch.Tensor | None, rows: tuple | None) -> tuple[torch.Tensor, dict[str, float]]:
    """The step's loss on the current weights: GFPO's at the tag position, or GRPO's over every token."""
    g = cfg.gfpo
    if policy.scope == "tag":
        logits = tag_logits(policy.model, policy.heads(batch.questions), policy.pad)            # (B, 1, V)
        at = torch.zeros(len(batch.questions), dtype=torch.long)
        picked = torch.as_tensor(batch.picked, device=logits.device)
        return tag_policy_loss(logits, at.to(logits.device), policy.tags, picked, old.to(logits.device),
                               adv.to(logits.device), g.clip, g.kl, None if ref is None else ref.to(logits.device))
    assert rows is not None
    ids, mask, targets, owner = rows
    logp = token_logp(policy.model, ids, mask, targets)
    loss = token_policy_loss(logp, old.to(logp.device), adv.flatten()[owner].to(logp.device), g.clip)
    return loss, {"kl": 0.0, "clip_frac": float(((logp.detach() - old.to(logp.device)).exp() - 1).abs()
                                                 .gt(g.clip).float().mean()), "entropy": float("nan")}


def trainable(policy: Policy, which: str) -> list[torch.nn.Parameter]:
    """What the RL steps update: ``all`` weights, or ``tag_rows``: only the output head's rows of the N tags (a
    linear choice of tag on the frozen model's features at the tag position: the reasoning cannot drift; with
    tied embeddings the tags' input rows move with them). GRPO (scope all) always trains every weight."""
    params = list(policy.model.parameters())
    if which == "all" or policy.scope == "all":
        return params
    head = policy.model.get_output_embeddings().weight
    rows = torch.zeros(head.shape[0], 1, dtype=head.dtype, device=head.device)
    rows[policy.tags] = 1.0
    head.register_hook(lambda grad: grad * rows)  # every other row's gradient is zero: Adam leaves it as it is
    for p in params:
        p.requires_grad_(p is head)
    return [head]


def train(cfg: Config, policy: Policy, questions: list[QuestionTraces],
          on_step: Callable[[int, dict[str, float]], None]) -> list[dict[str, float]]:
    """``gfpo.steps`` RL steps on ``policy`` in place; the per-step metrics."""
    g, grade = cfg.gfpo, grading.grader(cfg)
    opt = torch.optim.AdamW(trainable(policy, g.params), lr=g.lr, weight_decay=0.0)
    start = policy.tag_logp(questions) if policy.scope == "tag" else None   # the KL's reference
    index = {q.question_id: k for k, q in enumerate(questions)}
    history = []
    for step in range(1, g.steps + 1):
        t0 = time.monotonic()
        rng = np.random.default_rng([cfg.seed, step])
        chosen = [questions[i] for i in rng.choice(len(questions), size=min(g.questions_per_step, len(questions)),
                                                  replace=False)]
        tagged = policy.method.tagged
        batch = sample_batch(cfg, policy.sampler, policy.tokenizer, policy.layout, tagged, chosen, grade, rng,
                             seed=int(rng.integers(2**31)))
        adv = torch.as_tensor(advantages(batch.rewards, g.scale_rewards), dtype=torch.float32)
        starts = [len(h) if tagged else None for h in policy.heads(chosen)]
        rows = None if policy.scope == "tag" else rollout_rows(batch, policy.pad, starts)
        with torch.no_grad():  # the policy that sampled: the ratio's denominator
            policy.model.eval()
            if policy.scope == "tag":
                old = policy.tag_logp(chosen).gather(1, torch.as_tensor(batch.picked))
            else:
                assert rows is not None
                old = token_logp(policy.model, *rows[:3]).cpu()
        ref = None if start is None else start[[index[q.question_id] for q in chosen]]
        policy.model.train()
        for _ in range(g.updates_per_batch):
            loss, extra = step_loss(cfg, policy, batch, adv, old, ref if g.kl else None, rows)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.model.parameters(), g.max_grad_norm)
            opt.step()
        metrics = step_metrics(batch, len(policy.tags), float(loss), extra, time.monotonic() - t0)
        history.append({"step": step, **metrics})
        on_step(step, metrics)
        log.info("gfpo step %d/%d  reward %.3f ± %.3f  tag entropy %.3f  kl %.4f  %.1f s", step, g.steps,
                 metrics["reward_mean"], metrics["reward_std"], metrics.get("tag_entropy", float("nan")),
                 metrics["kl"], metrics["seconds"])
    return history


def step_metrics(batch: Batch, n_tags: int, loss: float, extra: dict[str, float], seconds: float) -> dict[str, float]:
    m = {"reward_mean": float(batch.rewards.mean()), "reward_std": float(batch.rewards.std()), "loss": loss,
         "kl": extra["kl"], "clip_frac": extra["clip_frac"], "seconds": seconds}
    if batch.picked is not None:
        counts = np.bincount(batch.picked.ravel(), minlength=n_tags) / batch.picked.size
        m.update({f"pick_rate_tag{t + 1}": float(c) for t, c in enumerate(counts)})
        if extra["entropy"] == extra["entropy"]:  # not NaN
            m["tag_entropy"] = extra["entropy"]
    return m


def run_stage(cfg: Config, method: str, models_dir: Path, train_file: Path, out: Path,
              on_step: Callable[[int, dict[str, float]], None] = lambda step, m: None) -> dict:
    """The gfpo stage: ``models_dir/<method>`` -> RL -> ``out`` (a model directory, written atomically)."""
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.seed)
    policy = Policy(cfg, Path(models_dir) / method)
    questions = traces.load_questions(train_file)
    log.info("gfpo %s (scope %s): %d steps x %d questions x %d rollouts, %d questions to draw from", method,
             policy.scope, cfg.gfpo.steps, cfg.gfpo.questions_per_step, cfg.gfpo.rollouts, len(questions))
    before = policy.tag_logp(questions).exp().mean(0).tolist() if policy.method.tagged else []
    history = train(cfg, policy, questions, on_step)
    after = policy.tag_logp(questions).exp().mean(0).tolist() if policy.method.tagged else []
    stats = {"method": method, "scope": policy.scope, "steps": history, "tag_distribution_before": before,
             "tag_distribution_after": after}
    base_stats = Path(models_dir) / method / models.STATS_FILE  # Eq. 4's best tag, dead tags: still the SFT stage's
    extra = {GFPO_FILE: json.dumps(stats, indent=1)}
    if base_stats.exists():
        extra[models.STATS_FILE] = base_stats.read_text()
    meta = {k: v for k, v in policy.meta.items() if k not in policy.layout.meta()}
    models.save(policy.model, policy.tokenizer, out, {**meta, "stage": "gfpo", "gfpo_scope": policy.scope},
                extra=extra, dtype=cfg.model.save_dtype, layout=policy.layout)
    return stats
