"""Matching: the no-grad M x N cost matrix per question, the Hungarian assignment, and its statistics.

Cost (paper Eq. 2): ``C[j, i]`` = mean NLL of the first L tokens of trace j given question + ``<think i>``;
only trace tokens are scored, never the question or the tag. Assignment (Eq. 3): the injective map
traces -> tags of least total cost, ``scipy.optimize.linear_sum_assignment`` on the rectangular (M <= N)
matrix. Only the L scored tokens per pair ever meet the output projection (``ssft.train.loss.token_nll``).
Two layouts of the same costs (``ssft.scoring``; equal to 1e-5 in float32, tested with eager and sdpa):

    batched  M*N rows per question, each the prompt's tail + the first L trace tokens; with
             ``ssft.prefix_cache`` the shared question prefix runs once (all questions in one call) and its KV
             cache is repeated for all rows (one more call)
    packed   the paper's single forward pass (v3): ONE row per question, the question once and then, for
             every (trace j, tag i), a segment ``<think i> + first L tokens of trace j`` that attends to the
             question and to itself only (a 4D block mask), position ids restarting after the question

Memory and compute: packed runs one row of P + M*N*(tag + L) tokens per question where batched runs M*N
short rows of tag + L tokens (over the cached prefix). The token work is the same as batched with the cache;
the attention is not: with a dense mask eager and sdpa compute (and eager holds) the full (P + M*N*L)^2 score
matrix per head, about M*N*L / (P + L) times the M*N * L * (P + L) scores of batched, and the mask itself is
(P + M*N*L)^2 bytes (sdpa, bool) or 4x that (eager, float) per question. A varlen or flex-attention kernel
would skip the masked blocks; with dense kernels packed pays off only while M*N*L stays short against the
model's width (``make bench``: 1.07x the batched SSFT step at L = 12, 1.8x at L = 32 on the tiny CPU model).
"""

from __future__ import annotations

import inspect
import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from transformers import PreTrainedModel

from ssft.errors import UserError
from ssft.train.loss import Targets, token_nll

TIE_RESOLUTION = 1e-6  # costs closer than this (nats) count as equal


@dataclass(frozen=True)
class ScoreItem:
    """What scoring needs of one question: the N tag prompts and the M trace completions, as token ids."""

    prompts: Sequence[Sequence[int]]      # N, one per tag
    completions: Sequence[Sequence[int]]  # M


def _common_prefix(rows: Sequence[Sequence[int]]) -> int:
    n = min(len(r) for r in rows)
    for k in range(n):
        if any(r[k] != rows[0][k] for r in rows):
            return k
    return n


def _prefix_len(item: ScoreItem, prefix_cache: bool) -> int:
    """Tokens every prompt of the question shares (run once, cached); at least one prompt token is left
    in each row so that the first scored token is predicted inside the row."""
    if not prefix_cache:
        return 0
    return min(_common_prefix(item.prompts), min(len(p) for p in item.prompts) - 1)


@dataclass(frozen=True)
class ScoreBatch:
    """The scored rows of a whole batch, built on the host. A row is the prompt after the shared prefix plus
    the first L trace tokens but the last (its own prediction is never scored), right-padded to (R, W);
    ``targets`` are the states that predict the L trace tokens and ``row`` the row of each."""

    prefix: torch.Tensor       # (Q, P) left-padded shared prefixes
    prefix_mask: torch.Tensor  # (Q, P)
    tails: torch.Tensor        # (R, W)
    tail_mask: torch.Tensor    # (R, W)
    targets: Targets           # (K,) positions into the (R * W) flattened states, and the tokens they predict
    row: torch.Tensor          # (K,) row of each target
    counts: torch.Tensor       # (R,) scored tokens per row
    owner: torch.Tensor        # (R,) question of each row
    plen: torch.Tensor         # (Q,) prefix length of each question
    cached: bool               # run the prefixes first (prefix_cache), even if some are empty


def _cost_span(comp: Sequence[int], cost_tokens: int) -> list[int]:
    """The trace tokens a cost averages over: the first L (0 = all); a shorter trace is scored whole."""
    return list(comp[:cost_tokens] if cost_tokens > 0 else comp)


def score_batch(items: Sequence[ScoreItem], cost_tokens: int, pad_id: int, prefix_cache: bool,
                scoring: str = "batched") -> ScoreBatch | PackedBatch:
    """The host-side half of scoring: every row, padding and target of the batch (see :func:`score`), in the
    ``scoring`` layout (``ssft.scoring``; packed has the question once per row, so ``prefix_cache`` is moot)."""
    if scoring == "packed":
        return packed_batch(items, cost_tokens, pad_id)
    if scoring != "batched":  # the choices live in ssft.config.SCORINGS (config imports no torch, so not from here)
        raise UserError(f"ssft.scoring={scoring!r}: use batched or packed")
    plens = [_prefix_len(it, prefix_cache) for it in items]
    tails, scored, owner = [], [], []
    for q, (it, plen) in enumerate(zip(items, plens)):
        for comp in it.completions:            # trace-major: row j * N + i is (trace j, tag i)
            comp = _cost_span(comp, cost_tokens)
            for prompt in it.prompts:
                head = list(prompt[plen:])
                tails.append(head + comp[:-1])
                scored.append((len(head) - 1, comp))   # the state at len(head) - 1 + k predicts comp[k]
                owner.append(q)
    width, pwidth = max(len(t) for t in tails), max(max(plens), 1)
    ids = torch.full((len(tails), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, t in enumerate(tails):
        ids[r, : len(t)], mask[r, : len(t)] = torch.tensor(t), 1
    positions = [r * width + start + k for r, (start, comp) in enumerate(scored) for k in range(len(comp))]
    row = [r for r, (_, comp) in enumerate(scored) for _ in comp]
    targets = Targets(torch.tensor(positions), torch.tensor([t for _, comp in scored for t in comp]))
    prefix = torch.full((len(items), pwidth), pad_id, dtype=torch.long)
    pmask = torch.zeros_like(prefix)
    for q, (it, plen) in enumerate(zip(items, plens)):
        if plen:
            prefix[q, pwidth - plen:], pmask[q, pwidth - plen:] = torch.tensor(list(it.prompts[0][:plen])), 1
    return ScoreBatch(prefix, pmask, ids, mask, targets, torch.tensor(row), torch.tensor([len(c) for _, c in scored]),
                   torch.tensor(owner), torch.tensor(plens), prefix_cache)


@dataclass(frozen=True)
class PackedBatch:
    """The packed rows of a whole batch (``ssft.scoring: packed``), built on the host: per question ONE row, its
    shared prefix (the question) once, then one segment per (trace j, tag i), trace-major as in
    :class:`ScoreBatch`: the prompt's tail (the tag and what follows it) + the first L trace tokens but the last.
    ``segment`` numbers what a token may see (0: the question, seen by all; s >= 1: segment s, seen by itself;
    -1: padding); ``positions`` restart after the question in every segment.

    Question [7, 8], tags 60 and 61, one trace [3, 4] + eos 2, L = 0 (whole trace):

        ids       [7, 8, 60, 3, 4, 61, 3, 4]
        segment   [0, 0,  1, 1, 1,  2, 2, 2]
        positions [0, 1,  2, 3, 4,  2, 3, 4]
        targets   positions [2, 3, 4, 5, 6, 7] predict [3, 4, 2, 3, 4, 2]; row [0, 0, 0, 1, 1, 1]
    """

    ids: torch.Tensor        # (Q, W) right-padded packed rows
    segment: torch.Tensor    # (Q, W) 0 = question, s >= 1 = segment s, -1 = padding
    positions: torch.Tensor  # (Q, W) position ids
    targets: Targets         # (K,) positions into the (Q * W) flattened states, and the tokens they predict
    row: torch.Tensor        # (K,) (question, trace, tag) pair of each target, numbered as ScoreBatch's rows
    counts: torch.Tensor     # (R,) scored tokens per pair


def packed_batch(items: Sequence[ScoreItem], cost_tokens: int, pad_id: int) -> PackedBatch:
    """The host-side half of packed scoring (see :class:`PackedBatch`)."""
    rows, segs, poss, scored = [], [], [], []   # scored: (question, start index in its row, span) per pair
    for q, it in enumerate(items):
        plen = _prefix_len(it, True)          # the question; >= 1 prompt token is left in every segment
        ids, seg, pos = list(it.prompts[0][:plen]), [0] * plen, list(range(plen))
        pairs = [(_cost_span(comp, cost_tokens), prompt) for comp in it.completions for prompt in it.prompts]
        for s, (comp, prompt) in enumerate(pairs, start=1):
            head = list(prompt[plen:])
            scored.append((q, len(ids) + len(head) - 1, comp))  # the state there + k predicts comp[k]
            tail = head + comp[:-1]
            ids += tail
            seg += [s] * len(tail)
            pos += range(plen, plen + len(tail))
        rows.append(ids)
        segs.append(seg)
        poss.append(pos)
    width = max(len(r) for r in rows)
    ids_t = torch.full((len(rows), width), pad_id, dtype=torch.long)
    seg_t = torch.full_like(ids_t, -1)
    pos_t = torch.zeros_like(ids_t)
    for q, (r, sg, ps) in enumerate(zip(rows, segs, poss)):
        ids_t[q, : len(r)], seg_t[q, : len(r)], pos_t[q, : len(r)] = torch.tensor(r), torch.tensor(sg), torch.tensor(ps)
    positions = [q * width + start + k for q, start, comp in scored for k in range(len(comp))]
    targets = Targets(torch.tensor(positions), torch.tensor([t for _, _, comp in scored for t in comp]))
    row = torch.tensor([r for r, (_, _, comp) in enumerate(scored) for _ in comp])
    return PackedBatch(ids_t, seg_t, pos_t, targets, row, torch.tensor([len(c) for _, _, c in scored]))


def block_mask(segment: torch.Tensor, attn_implementation: str, dtype: torch.dtype) -> torch.Tensor:
    """(Q, 1, W, W) attention mask of packed rows, in the form the model's attention takes as given (a 4D mask
    skips transformers' own mask building): query t sees key s <= t of the question (segment 0) or of its own
    segment. Every query sees at least itself (padding too), so no softmax row is empty. sdpa: bool, True =
    attend; eager adds it to the scores: 0 or the dtype's minimum.

    >>> block_mask(torch.tensor([[0, 1, 1, 2, 2, -1]]), "sdpa", torch.float32)[0, 0].int()
    tensor([[1, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
            [1, 0, 0, 1, 0, 0],
            [1, 0, 0, 1, 1, 0],
            [1, 0, 0, 0, 0, 1]], dtype=torch.int32)
    """
    q, k = segment[:, :, None], segment[:, None, :]                                 # (Q, W, 1), (Q, 1, W)
    causal = torch.ones(segment.shape[1], segment.shape[1], dtype=torch.bool, device=segment.device).tril()
    allowed = (causal & ((k == 0) | (k == q)))[:, None]                             # (Q, 1, W, W)
    if attn_implementation == "sdpa":
        return allowed
    if attn_implementation == "eager":
        return torch.zeros(allowed.shape, dtype=dtype, device=segment.device).masked_fill_(~allowed,
                                                                                            torch.finfo(dtype).min)
    raise UserError(f"ssft.scoring=packed needs a 4D attention mask, which attn_implementation="
                    f"{attn_implementation!r} does not take: set model.attn_implementation to eager or sdpa, "
                    "or ssft.scoring to batched")


def _packed_nll(model: PreTrainedModel, lay: PackedBatch) -> torch.Tensor:
    """(R,) mean NLL of each pair's scored span: one forward call for the whole batch, whatever the data."""
    dev = model.device
    ids, segment, positions = (x.to(dev, non_blocking=True) for x in (lay.ids, lay.segment, lay.positions))
    mask = block_mask(segment, model.config._attn_implementation, model.dtype)
    nll = token_nll(model, ids, mask, lay.targets.to(dev), use_cache=False, position_ids=positions)   # (K,)
    return _mean_per_row(nll, lay.row.to(dev, non_blocking=True), lay.counts.to(dev, non_blocking=True))


def _mean_per_row(nll: torch.Tensor, row: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    sums = torch.zeros(len(counts), dtype=torch.float32, device=nll.device)
    sums.index_add_(0, row, nll)
    return sums / counts


def _cache_kwarg(model: PreTrainedModel) -> str:
    # transformers renamed ``past_key_values`` to ``cache`` (the old name warns until 5.40).
    unwrap = getattr(model, "get_base_model", None)  # peft wraps the forward
    base = unwrap() if unwrap is not None else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _row_nll(model: PreTrainedModel, lay: ScoreBatch) -> torch.Tensor:
    """(R,) mean NLL of each row's scored span, on the device: two forward calls for the whole batch (the
    shared prefixes, then every row's tail over the repeated prefix cache), or one without the cache. The
    number of calls depends on the settings only, never on the data: under FSDP every rank must match."""
    dev = model.device
    tails, tail_mask, owner = (x.to(dev, non_blocking=True) for x in (lay.tails, lay.tail_mask, lay.owner))
    kwargs: dict = {}
    mask = tail_mask
    if lay.cached:
        pmask = lay.prefix_mask.to(dev, non_blocking=True)
        ppos = (pmask.cumsum(1) - 1).clamp(min=0)                       # left padding: positions from 0
        out = model(input_ids=lay.prefix.to(dev, non_blocking=True), attention_mask=pmask, position_ids=ppos,
                    use_cache=True, logits_to_keep=1)
        cache = out.cache if hasattr(out, "cache") else out.past_key_values
        cache.reorder_cache(owner)                                       # (Q, ...) -> (R, ...)
        mask = torch.cat([pmask[owner], tail_mask], dim=1)
        start = lay.plen.to(dev, non_blocking=True)[owner][:, None]
        kwargs = {_cache_kwarg(model): cache, "position_ids": start + torch.arange(tails.shape[1], device=dev)}
    nll = token_nll(model, tails, mask, lay.targets.to(dev), use_cache=False, **kwargs)   # (K,)
    return _mean_per_row(nll, lay.row.to(dev, non_blocking=True), lay.counts.to(dev, non_blocking=True))


@torch.no_grad()
def score(model: PreTrainedModel, batch: ScoreBatch | PackedBatch, items: Sequence[ScoreItem]) -> list[np.ndarray]:
    """The device half: one (M, N) cost matrix per question of ``items`` (those ``batch`` was built from); no
    gradient, the model in eval mode for the call, one device-to-host transfer."""
    was_training = model.training
    model.eval()
    try:
        nll = _packed_nll(model, batch) if isinstance(batch, PackedBatch) else _row_nll(model, batch)
        costs = nll.double().cpu().numpy()
    finally:
        model.train(was_training)
    out, start = [], 0
    for it in items:
        m, n = len(it.completions), len(it.prompts)
        out.append(costs[start: start + m * n].reshape(m, n))
        start += m * n
    return out


def score_costs(model: PreTrainedModel, items: Sequence[ScoreItem], cost_tokens: int, pad_id: int,
                prefix_cache: bool = True, scoring: str = "batched") -> list[np.ndarray]:
    """One (M, N) cost matrix per question: :func:`score_batch` then :func:`score`."""
    return score(model, score_batch(items, cost_tokens, pad_id, prefix_cache, scoring), items)


def assign(cost: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """Trace j -> tag index ``tags[j]`` (0-based) minimising the summed cost; injective, M <= N.

    Ties (costs within TIE_RESOLUTION) break at random by ``rng``: exact ties are the rule, not the
    exception (new tags share one embedding, and strategies that share their first L tokens cost the same),
    and a fixed tie order would hand trace j to tag j, i.e. the strategy order of the data to the tags (the
    ``fixed`` oracle in disguise). Without ``rng`` they break towards low tags for early traces (all costs
    equal -> trace j gets tag j). The tie-breaker sums to < TIE_RESOLUTION / 2 over any matching, so it
    never overrules a real difference.
    """
    m, n = cost.shape
    if m > n:
        raise UserError(f"{m} traces but only {n} tags: ssft.num_tags must be >= traces per question")
    rounded = np.round(cost / TIE_RESOLUTION) * TIE_RESOLUTION
    if rng is None:
        j, i = np.meshgrid(np.arange(m), np.arange(n), indexing="ij")
        tiebreak = i * (m - j) / (n * m * m)
    else:
        tiebreak = rng.random((m, n)) / m
    rows, cols = linear_sum_assignment(rounded + 0.5 * TIE_RESOLUTION * tiebreak)
    tags = np.empty(m, dtype=np.int64)
    tags[rows] = cols
    return tags


def agreement_with_full(model: PreTrainedModel, items: Sequence[ScoreItem], cost_tokens: int, pad_id: int,
                        seed: int, batch: int = 32, scoring: str = "batched") -> float:
    """Share of questions whose assignment from the first ``cost_tokens`` trace tokens is the one the whole
    traces give (ties broken at random, as in training): does the cost prefix see where the modes fork?
    ``scoring`` lays out both (packed holds M*N whole traces in one row per question: mind its memory)."""
    rng = np.random.default_rng(seed)
    same = []
    for k in range(0, len(items), batch):
        chunk = items[k: k + batch]
        short = score_costs(model, chunk, cost_tokens, pad_id, scoring=scoring)
        full = score_costs(model, chunk, 0, pad_id, scoring=scoring)
        same += [np.array_equal(assign(a, rng), assign(b, rng)) for a, b in zip(short, full)]
    return float(np.mean(same)) if same else float("nan")


@dataclass
class MatchStats:
    """Assignment statistics, accumulated over an epoch and closed into ``history`` at its end.

    Per epoch: tag x source counts, per-tag match rate (share of question-steps in which the tag got a
    trace: dead tags show as 0), churn (share of questions whose assignment changed since they were last
    seen), assignment entropy (nats, over source->tag configurations), mean matched cost. Over the whole run:
    the distinct trajectories (question, trace) each tag was ever matched to (the paper's Eq. 4).
    """

    num_tags: int
    counts: dict[int, Counter] = field(default_factory=lambda: defaultdict(Counter))
    configs: Counter = field(default_factory=Counter)
    cost_sum: float = 0.0
    cost_n: int = 0
    questions: int = 0
    changed: int = 0
    revisited: int = 0
    last: dict[str, tuple] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    trajectories: dict[int, set[str]] = field(default_factory=lambda: defaultdict(set))
    seen: set[str] = field(default_factory=set)  # questions recorded in the open epoch

    def record(self, qid: str, sources: Sequence[str], tags: Sequence[int | None], costs: Sequence[float] = ()) -> bool:
        """One question-step: trace k of ``sources`` was trained under tag ``tags[k]`` (1-based; None = shared).
        A question already recorded in this epoch is not counted again (False): under DDP, accelerate's
        ``even_batches`` repeats questions at an epoch's end so every rank gets a full batch."""
        if qid in self.seen:
            return False
        self.seen.add(qid)
        config = tuple(sorted(zip(sources, [t or 0 for t in tags])))
        for k, (s, t) in enumerate(zip(sources, tags)):
            self.counts[t or 0][s] += 1
            self.trajectories[t or 0].add(f"{qid}#{k}")  # trace k of the question, whoever wrote it
        self.configs[config] += 1
        self.questions += 1
        if qid in self.last:
            self.revisited += 1
            self.changed += self.last[qid] != config
        self.last[qid] = config
        for c in costs:
            self.cost_sum += float(c)
            self.cost_n += 1
        return True

    def summary(self) -> dict:
        total = sum(self.configs.values())
        probs = [c / total for c in self.configs.values()] if total else []
        matched = {t: sum(c.values()) for t, c in self.counts.items()}
        return {
            "questions": self.questions,
            "churn": self.changed / self.revisited if self.revisited else None,
            "assignment_entropy": max(0.0, -sum(p * math.log(p) for p in probs)),
            "mean_matched_cost": self.cost_sum / self.cost_n if self.cost_n else None,
            "tag_match_rate": {str(t): matched.get(t, 0) / max(self.questions, 1) for t in range(1, self.num_tags + 1)},
            "tag_source_counts": {str(t): dict(sorted(c.items())) for t, c in sorted(self.counts.items())},
        }

    def close_epoch(self, epoch: int, step: int) -> dict:
        """Append this epoch's summary to history and start a new epoch (``last`` carries over for churn)."""
        summary = {"epoch": epoch, "step": step, **self.summary()}
        self.history.append(summary)
        self.counts, self.configs = defaultdict(Counter), Counter()
        self.cost_sum, self.cost_n, self.questions, self.changed, self.revisited = 0.0, 0, 0, 0, 0
        self.seen = set()
        return summary

    def totals(self) -> dict[int, dict[str, int]]:
        """Tag -> source -> matches over all closed epochs and the open one (input of pass@1_best_tag)."""
        out: dict[int, Counter] = defaultdict(Counter)
        for h in self.history:
            for t, c in h["tag_source_counts"].items():
                out[int(t)].update(c)
        for t, c in self.counts.items():
            out[t].update(c)
        return {t: dict(c) for t, c in out.items()}

    def trajectory_counts(self) -> dict[int, int]:
        """Tag -> distinct (question, trace) pairs it was ever matched to (input of pass@1_best_tag, Eq. 4)."""
        return {t: len(s) for t, s in sorted(self.trajectories.items())}

    def state(self) -> dict:
        """JSON-safe state for checkpoints (int keys become str; :meth:`from_state` turns them back)."""
        return {"num_tags": self.num_tags, "history": self.history,
                "counts": {str(t): dict(c) for t, c in self.counts.items()},
                "configs": [[list(map(list, k)), v] for k, v in self.configs.items()],
                "cost_sum": self.cost_sum, "cost_n": self.cost_n, "questions": self.questions,
                "changed": self.changed, "revisited": self.revisited,
                "last": {q: list(map(list, c)) for q, c in self.last.items()},
                "trajectories": {str(t): sorted(s) for t, s in self.trajectories.items()},
                "seen": sorted(self.seen)}

    @classmethod
    def from_state(cls, state: dict) -> MatchStats:
        st = cls(num_tags=state["num_tags"], history=state["history"])
        for t, c in state["counts"].items():
            st.counts[int(t)] = Counter(c)
        st.configs = Counter({tuple(map(tuple, k)): v for k, v in state["configs"]})
        st.cost_sum, st.cost_n, st.questions = state["cost_sum"], state["cost_n"], state["questions"]
        st.changed, st.revisited = state["changed"], state["revisited"]
        st.last = {q: tuple(map(tuple, c)) for q, c in state["last"].items()}
        for t, pairs in state.get("trajectories", {}).items():  # absent in checkpoints of older versions
            st.trajectories[int(t)] = set(pairs)
        st.seen = set(state.get("seen", []))
        return st
