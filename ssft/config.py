"""``params.yaml`` -> typed, frozen, validated settings.

One dataclass per section; every field documents its units, range and sentinels in ``help``. Unknown keys
and bad values are collected and reported together, each naming the field, the value and the fix, before
any model is built. Nothing else in ``ssft`` reads YAML.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# Each list of choices lives with the code that implements it; config only reads them (one home each).
from ssft.data.checkers import CHECKERS
from ssft.data.selection import SELECTIONS
from ssft.data.sources.teachers import BACKENDS
from ssft.errors import UserError
from ssft.generation.factory import BACKENDS as GENERATION_BACKENDS
from ssft.train.methods import NAMES as METHODS
from ssft.train.methods import RL_PARAMS, RL_SCOPES, UNTAGGED
from ssft.train.precision import DTYPES, KERNELS

log = logging.getLogger(__name__)


def _f(default: Any, help: str) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


SOURCES = ("synthetic", "import", "generate")
# The stage families a work pool can run (pipeline.pool_stages): the GPU stages, whose inputs and outputs are
# DVC-tracked so the remote can carry them; the others are cheap and write git-tracked or local results.
POOL_STAGES = ("train", "evaluate")
_POOL_NAME = re.compile(r"[A-Za-z0-9][\w.-]*")
# transformers' lr_scheduler_type values that need no extra arguments
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt")
SCORINGS = ("batched", "packed")  # ssft.scoring: layouts of the matching cost (ssft.train.matching)


@dataclass(frozen=True)
class TeacherConfig:
    """One teacher of ``data.source: generate``: a local checkpoint (``hf``) or an OpenAI-compatible server."""

    name: str = _f("", "teacher name: the trace's source, the label specialisation is measured against")
    backend: str = _f("openai", "hf (a local checkpoint, transformers) | openai (chat completions: vLLM, SGLang, "
                      "a hosted API)")
    model: str = _f("", "hf: local checkpoint directory; openai: the served model name")
    base_url: str | None = _f(None, "openai: the server, e.g. http://127.0.0.1:8000/v1")
    api_key_env: str | None = _f(None, "openai: NAME of the environment variable holding the API key (never the key)")
    n: int = _f(1, "traces per question from this teacher")
    temperature: float = _f(0.7, "sampling temperature")
    top_p: float = _f(1.0, "nucleus sampling mass")
    max_tokens: int = _f(1024, "generation budget per trace (tokens)")
    concurrency: int = _f(8, "openai: requests in flight at once")
    timeout_s: float = _f(300.0, "openai: seconds before a request is abandoned and retried")
    max_retries: int = _f(5, "openai: retries with exponential back-off per request")
    batch_size: int = _f(16, "hf: questions per generate() call")


@dataclass(frozen=True)
class DataConfig:
    source: str = _f("synthetic", "where traces come from: synthetic (task, traces sections) | import (a file) | "
                     "generate (teachers)")
    name: str | None = _f(None, "dataset name: MLflow experiment and registered model ssft-<name>; null = task.name "
                          "(synthetic) or the stem of data.path")
    path: str | None = _f(None, "import: trace file (.jsonl/.json/.parquet/.csv) or save_to_disk directory; "
                          "generate: questions file (question, answer); keep it under data/raw (dvc add)")
    eval_path: str | None = _f(None, "held-out evaluation questions in their own file; null = data.eval_share")
    val_share: float = _f(0.05, "share of the training questions set aside (seeded hash) to choose the "
                                "single-sample tag (pass@1_val_tag); 0 = none")
    eval_share: float = _f(0.1, "share of questions held out for evaluation, split by a seeded hash of the "
                           "question id (import/generate without data.eval_path)")
    checker: str = _f("int", "answer check: int (trailing #<int>) | math (math-verify: \\boxed{}, LaTeX, numbers) | "
                      "exact (final answer string) | none (keep every non-empty trace)")
    columns: dict = _f({}, "column names in the file, if not the defaults: question, answer, question_id, traces "
                       "(list per question), teacher, text (one row per trace: teacher and text columns)")
    teachers: list = _f([], "generate: teachers, each {name, backend, model, base_url, api_key_env, n, ...}")
    cache: str = _f(".cache/generations", "generate: append-only JSONL cache of finished traces (resumes a killed run)")


@dataclass(frozen=True)
class TaskConfig:
    name: str = _f("add4", "task family: add4 (fast default) or mult (harder)")
    marked: bool = _f(True, "each strategy's trace opens with its own constant letter")
    options: dict = _f({}, "extra task options, e.g. {max_operand: 9} for add4, {fork_depth: 6} (every strategy's "
                           "trace opens with the same 6 tokens, the question restated: the matching cost "
                           "ssft.cost_tokens must look past them)")


@dataclass(frozen=True)
class TracesConfig:
    train_questions: int = _f(800, "training questions (each gets one trace per strategy)")
    eval_questions: int = _f(500, "held-out evaluation questions, never seen in training")
    val_questions: int = _f(100, "validation questions, never trained or evaluated: they choose the single-sample "
                                 "tag (pass@1_val_tag); 0 = none")
    strategies: list = _f([], "subset of the task's strategies to use as traces; [] = all")
    min_strategies: int = _f(0, "0 = every training question has all M traces; k >= 2 = each keeps a seeded "
                                "random k..M of them (M varies per question)")
    select: str = _f("correct_only", "which traces of a question train (every source): correct_only (those passing "
                     "data.checker) | all (wrong answers too) | random_k | diverse (k of the correct ones: at random, "
                     "or far apart); ssft.data.selection")
    k: int = _f(0, "random_k / diverse: traces kept per question; 0 = ssft.num_tags")


@dataclass(frozen=True)
class ModelConfig:
    checkpoint: str | None = _f(None, "local pretrained HF checkpoint dir; null = tiny Llama from config")
    hidden_size: int = _f(128, "tiny model width")
    num_layers: int = _f(3, "tiny model depth")
    num_heads: int = _f(4, "attention heads (must divide hidden_size)")
    intermediate_size: int = _f(512, "MLP width")
    max_length: int = _f(0, "max tokens of prompt + trace; longer traces are dropped and counted per source; "
                         "0 = the checkpoint's context (tiny model: no limit)")
    attn_implementation: str = _f("eager", "eager | sdpa | flash_attention_2 (eager is fastest for tiny CPU models)")
    dtype: str = _f("float32", "compute dtype: float32 | bfloat16 (mixed precision: float32 master weights and "
                    "optimizer state, bf16 autocast; GPU, or CPU) | float16 (CUDA only, with loss scaling)")
    pure_dtype: bool = _f(False, "opt-in: keep weights and optimizer state in model.dtype too (no float32 master "
                          "copy; half the memory, but with bf16 an update below ~1/256 of a weight is rounded away, "
                          "so at lr 1e-5 most weights never move)")
    save_dtype: str = _f("float32", "dtype of the saved trained weights: float32 | bfloat16 | float16")
    tag_init: str = _f("mean", "embedding init of new tag tokens: mean (of existing rows) | random; tags "
                       "already in the checkpoint's vocabulary keep their trained rows")
    tag_format: str = _f("<think{i}>", "tag string, {i} = 1..N; the shared SFT tag is the format without the number")
    lora_rank: int = _f(0, "LoRA rank via peft (0 = full fine-tuning); tag embedding rows always train")
    lora_alpha: int = _f(32, "LoRA scaling alpha")
    lora_targets: str = _f("all-linear", "peft target_modules: all-linear, or comma-separated module names")


@dataclass(frozen=True)
class SSFTConfig:
    num_tags: int = _f(4, "N forking tokens <think1>..<thinkN>; must be >= traces per question (M)")
    cost_tokens: int = _f(12, "L: matching cost = mean NLL of the first L trace tokens; 0 = whole trace")
    prefix_cache: bool = _f(True, "score the shared question prefix once (KV cache) when scoring")
    scoring: str = _f("batched", "matching-cost layout: batched (M*N rows per question) | packed (the paper's one "
                      "pass: one row per question, the question once + M*N tag-and-L-token segments under a block "
                      "mask; eager or sdpa only, attention memory grows with (M*N*L)^2)")
    tag_in_loss: bool = _f(True, "train the tag token itself (gives the model a prior over tags)")


@dataclass(frozen=True)
class TrainConfig:
    methods: list = _f(["ssft", "sft", "random"], f"methods the pipeline trains, from {METHODS}")
    max_steps: int = _f(1000, "optimizer steps")
    questions_per_step: int = _f(8, "questions per device micro-batch (all M traces of each are trained)")
    grad_accum: int = _f(1, "gradient accumulation steps")
    lr: float = _f(2e-3, "peak learning rate (AdamW)")
    weight_decay: float = _f(0.1, "AdamW weight decay")
    warmup_steps: int = _f(50, "linear warm-up steps")
    scheduler: str = _f("cosine", "transformers lr_scheduler_type: cosine | linear | constant_with_warmup")
    max_grad_norm: float = _f(1.0, "gradient clipping norm; 0 = off")
    save_steps: int = _f(250, "checkpoint every this many steps (resume after a kill)")
    logging_steps: int = _f(10, "log loss and learning rate to MLflow every this many steps (the terminal's "
                                "progress line: at most every 15 s)")
    threads: int = _f(0, "torch CPU threads; 0 = torch default")
    gradient_checkpointing: bool = _f(False, "recompute activations in backward: less memory, ~30% more compute")
    group_by_length: bool = _f(False, "batch questions of similar length together (less padding on real data)")
    loss_kernel: str = _f("auto", "output projection + cross-entropy: torch (chunked, never the full-vocabulary "
                          "logits) | liger (liger-kernel's fused kernel, CUDA) | auto (liger when installed on CUDA)")


@dataclass(frozen=True)
class EvalConfig:
    samples: int = _f(16, "sampled generations per question, split evenly over the tags")
    temperature: float = _f(0.7, "sampling temperature of the sampled set")
    temperatures: list = _f([], "more sampled sets at these temperatures (metrics suffixed _t<T>): diversity "
                                "against accuracy; [] = none")
    top_p: float = _f(1.0, "nucleus sampling mass")
    ks: list = _f([8, 16], "k values for cons@k / pass@k beyond N (k <= samples)")
    max_new_tokens: int = _f(64, "generation budget per sample")
    batch_size: int = _f(256, "hf: sequences (prompts x samples) per generate() call")
    self_tag: bool = _f(True, "tag-free inference too (tagged models): the model picks its own tag, greedy_tag and "
                              "sampled_tag sets (pass@1_self, cons@N_self); needs the backend's tag log-probabilities")
    backend: str = _f("hf", "generation engine: hf (transformers, in this process) | openai (a served copy of the "
                      "model at eval.server: vLLM, SGLang, transformers serve) | vllm (vLLM's offline engine, GPU)")
    server: str | None = _f(None, "openai: the server's base URL, e.g. http://127.0.0.1:8000/v1; null otherwise")
    every_steps: int = _f(0, "learning curves: training keeps a weights snapshot every k steps (checkpoints/<method>/"
                          "steps) and `ssft evaluate --curve` evaluates each on a cheap set (results/curves); 0 = off")
    curve_samples: int = _f(4, "--curve: sampled generations per question (with one greedy per tag)")
    curve_questions: int = _f(100, "--curve: the first this many evaluation questions")
    prefix_forced: list = _f([], "untagged methods (e.g. [sft]) also sampled with each strategy's opening token "
                             "forced (prefix-forced decoding, arXiv 2605.17026): results/forced/<method>, reported "
                             "as <method>+forced; synthetic tasks whose strategies open differently (pathstar, or "
                             "task.marked)")


@dataclass(frozen=True)
class TrackingConfig:
    enabled: bool = _f(True, "log runs, curves, plots and models to MLflow (false = no MLflow at all)")
    uri: str | None = _f(None, "MLflow tracking URI; null = $MLFLOW_TRACKING_URI, else sqlite under <project>/mlruns")
    artifacts: str | None = _f(None, "artifact root of new experiments; null = <project>/mlruns/artifacts")
    experiment: str | None = _f(None, "MLflow experiment; null = ssft-<data name> (data.name, task or file stem)")
    register: bool = _f(True, "register the trained SSFT model in the MLflow registry with aliases")
    baselines: list = _f(["sft"], "methods a new champion must beat in its own pipeline run, besides the current "
                         "champion (dvc.yaml's register deps name their results/<method>/metrics.json)")
    system_metrics: bool = _f(True, "sample CPU, memory, disk and GPU use into the training run every 5 s (psutil)")
    model_name: str | None = _f(None, "registered model name; null = ssft-<data name>")


@dataclass(frozen=True)
class GFPOConfig:
    """The RL stage after training (``ssft gfpo``; paper v3). The paper reports 10 steps, batch 256 and 1k
    prompts on Qwen2.5-32B; group size, KL and clipping are not reported: these defaults are choices."""

    methods: list = _f(["ssft", "sft"], "trained models that get the RL stage (dvc.yaml gfpo@<method>); ssft: GFPO "
                                        "(tag only), sft: GRPO (every token) at the same budget")
    steps: int = _f(10, "RL steps (the paper: 10)")
    questions_per_step: int = _f(16, "B: training questions per step")
    rollouts: int = _f(8, "G: rollouts per question (the group of the group-relative advantage)")
    lr: float = _f(1e-5, "AdamW learning rate of the RL steps (the tag's gradient reaches every weight: on the "
                         "CPU demo 1e-4 unlearnt the reasoning, 1e-5 improved the tag choice)")
    temperature: float = _f(1.0, "sampling temperature of the rollouts (the tag is drawn from the model's own "
                                 "distribution over its N tags)")
    max_new_tokens: int = _f(48, "generation budget per rollout (tokens)")
    clip: float = _f(0.2, "PPO clipping: the policy ratio is clipped to [1 - clip, 1 + clip]")
    updates_per_batch: int = _f(2, "optimizer updates on each step's rollouts (the ratio is 1 at the first)")
    scale_rewards: bool = _f(True, "divide advantages by the group's reward std (false: ThreadWeaver's choice)")
    kl: float = _f(0.0, "weight of KL(P(tag | q) || the starting model's) in GFPO's loss; 0 = none")
    max_grad_norm: float = _f(1.0, "gradient clipping norm")
    params: str = _f("all", "GFPO's trainable weights: all (the whole model, as the paper) | tag_rows (only the "
                            "output head's N tag rows, a linear tag choice on the model's features; with tied "
                            "embeddings the tags' input rows move too)")
    scope: str = _f("auto", "where the loss goes: tag (GFPO: the tag position only) | all (GRPO: every generated "
                            "token) | auto (tag for tagged models, all for sft)")


@dataclass(frozen=True)
class PipelineConfig:
    parallel: int = _f(0, "stages the Prefect flow runs at once when they do not depend on each other; 0 = what "
                          "the cores allow (cores // train.threads; 1 when train.threads is 0 = all cores)")
    pool: str | None = _f(None, "Prefect work pool whose workers run pool_stages (`make worker POOL=gpu` on a GPU "
                                "host; data moves through the DVC remote); null = every stage in the flow's process")
    pool_stages: list = _f(["train@*"], "with a pool: the stages sent to it, as DVC stage names or patterns, each "
                                        f"of {', '.join(s + '@*' for s in POOL_STAGES)} or one stage of them")


@dataclass(frozen=True)
class Config:
    seed: int = _f(0, "one seed for data, init, matching ties and sampling")
    data: DataConfig = _f(None, "")
    task: TaskConfig = _f(None, "")
    traces: TracesConfig = _f(None, "")
    model: ModelConfig = _f(None, "")
    ssft: SSFTConfig = _f(None, "")
    train: TrainConfig = _f(None, "")
    eval: EvalConfig = _f(None, "")
    tracking: TrackingConfig = _f(None, "")
    gfpo: GFPOConfig = _f(None, "")
    pipeline: PipelineConfig = _f(None, "")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def dataset_name(self) -> str:
        """What the data is called in MLflow (experiment, registered model): data.name, else the synthetic
        task's name, else the stem of the trace or question file."""
        if self.data.name:
            return self.data.name
        if self.data.source == "synthetic":
            return self.task.name
        return Path(self.data.path).stem if self.data.path else self.data.source


SECTIONS = {"data": DataConfig, "task": TaskConfig, "traces": TracesConfig, "model": ModelConfig, "ssft": SSFTConfig,
            "train": TrainConfig, "eval": EvalConfig, "tracking": TrackingConfig,
            "gfpo": GFPOConfig, "pipeline": PipelineConfig}


class ConfigError(UserError):
    """Every problem of a params file at once."""


def _coerce(value: Any, typ: str, where: str, errors: list[str]) -> Any:
    ok = {
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "bool": lambda v: isinstance(v, bool),
        "str": lambda v: isinstance(v, str),
        "str | None": lambda v: v is None or isinstance(v, str),
        "list": lambda v: isinstance(v, list),
        "dict": lambda v: isinstance(v, dict),
    }[typ]
    if not ok(value):
        errors.append(f"{where}: {value!r} is not a {typ}")
        return value
    return float(value) if typ == "float" else value


def _section(cls: type, raw: Any, name: str, errors: list[str]) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        errors.append(f"{name}: expected a mapping of settings, got {raw!r}")
        return cls()
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            errors.append(f"{name}.{key}: unknown setting; known: {', '.join(fields)}")
    kwargs = {k: _coerce(v, str(fields[k].type), f"{name}.{k}", errors) for k, v in raw.items() if k in fields}
    return cls(**kwargs)


def _not_finite(cfg: Config) -> dict[str, float]:
    """Every float setting that is inf or NaN (YAML reads ``.inf``/``.nan``): no range means anything for
    them, so they get this one error and no other."""
    found: dict[str, float] = {}
    sections = [(name, getattr(cfg, name)) for name in SECTIONS]
    sections += [(f"data.teachers[{k}]", t) for k, t in enumerate(cfg.data.teachers)]
    for where, section in sections:
        for f in dataclasses.fields(section):
            values = getattr(section, f.name)
            for v in values if isinstance(values, list) else [values]:
                if isinstance(v, float) and not math.isfinite(v):
                    found[f"{where}.{f.name}"] = values
    return found


def _check(cfg: Config, errors: list[str]) -> None:
    m, s, t, e, d = cfg.model, cfg.ssft, cfg.train, cfg.eval, cfg.data
    not_finite = _not_finite(cfg)
    errors += [f"{name}: {value!r} is invalid; use a finite number" for name, value in not_finite.items()]
    rules = [
        (cfg.seed >= 0, "seed", "use a seed >= 0"),
        (cfg.pipeline.parallel >= 0, "pipeline.parallel", "use >= 0 (0 = what the cores allow)"),
        (not cfg.tracking.register or all(x in t.methods and x != "ssft" for x in cfg.tracking.baselines),
         "tracking.baselines", f"each must be a trained method other than ssft, of train.methods={t.methods} "
         "([] = the champion is compared only with the current champion)"),
        (all(x in t.methods and x in UNTAGGED for x in e.prefix_forced)
         and (not e.prefix_forced or d.source == "synthetic"),
         "eval.prefix_forced", f"each must be an untagged method of train.methods={t.methods} (e.g. [sft]), "
         "with data.source synthetic ([] = none)"),
        (all(x in t.methods for x in cfg.gfpo.methods), "gfpo.methods",
         f"each must be a trained method, one of train.methods={t.methods} ([] = no RL stage)"),
        (cfg.gfpo.steps >= 1 and cfg.gfpo.questions_per_step >= 1, "gfpo.steps",
         "use >= 1 (and gfpo.questions_per_step >= 1)"),
        (cfg.gfpo.rollouts >= 2, "gfpo.rollouts", "use >= 2: a group-relative advantage needs a group"),
        (cfg.gfpo.lr > 0 and cfg.gfpo.temperature > 0, "gfpo.lr", "use > 0 (and gfpo.temperature > 0)"),
        (cfg.gfpo.max_new_tokens >= 1 and cfg.gfpo.updates_per_batch >= 1, "gfpo.max_new_tokens",
         "use >= 1 (and gfpo.updates_per_batch >= 1)"),
        (0 < cfg.gfpo.clip < 1 and cfg.gfpo.kl >= 0, "gfpo.clip", "use 0 < clip < 1 (and gfpo.kl >= 0)"),
        (cfg.gfpo.scope in RL_SCOPES, "gfpo.scope", f"use one of {', '.join(RL_SCOPES)}"),
        (cfg.gfpo.params in RL_PARAMS, "gfpo.params", f"use one of {', '.join(RL_PARAMS)}"),
        (cfg.pipeline.pool is None or bool(_POOL_NAME.fullmatch(str(cfg.pipeline.pool))), "pipeline.pool",
         "use a work pool name (letters, digits, '-', '_', '.'), e.g. gpu; null = no pool"),
        (all(_poolable(p) for p in cfg.pipeline.pool_stages), "pipeline.pool_stages",
         f"list stage names or patterns of {', '.join(POOL_STAGES)}, e.g. [train@*, evaluate@ssft]"),
        (d.source in SOURCES, "data.source", f"use one of {', '.join(SOURCES)}"),
        (d.source == "synthetic" or bool(d.path), "data.path",
         f"data.source={d.source} needs a file: the traces (import) or the questions (generate)"),
        (d.source != "generate" or bool(d.teachers), "data.teachers",
         "data.source=generate needs at least one teacher"),
        (0 < d.eval_share < 1, "data.eval_share", "use a share between 0 and 1, e.g. 0.1"),
        (0 <= d.val_share < 1, "data.val_share", "use a share between 0 and 1, e.g. 0.05 (0 = no validation)"),
        (cfg.traces.val_questions >= 0, "traces.val_questions", "use >= 0 (0 = no validation)"),
        (cfg.traces.min_strategies == 0 or cfg.traces.min_strategies >= 2, "traces.min_strategies",
         "use 0 (all traces) or >= 2 (a question needs two traces to fork)"),
        (d.checker in CHECKERS, "data.checker", f"use one of {', '.join(CHECKERS)}"),
        (e.every_steps >= 0 and e.curve_samples >= 1 and e.curve_questions >= 1, "eval.every_steps",
         "use >= 0 (0 = no learning curve), with eval.curve_samples and eval.curve_questions >= 1"),
        (cfg.traces.select in SELECTIONS, "traces.select", f"use one of {', '.join(SELECTIONS)}"),
        (cfg.traces.k == 0 or 2 <= cfg.traces.k <= s.num_tags, "traces.k",
         f"use 0 (= ssft.num_tags) or 2..ssft.num_tags={s.num_tags} (a question needs two traces to fork)"),
        (cfg.traces.train_questions >= 1, "traces.train_questions", "use >= 1"),
        (cfg.traces.eval_questions >= 1, "traces.eval_questions", "use >= 1"),
        (1 <= s.num_tags <= 64, "ssft.num_tags", "use 1..64"),
        (s.cost_tokens >= 0, "ssft.cost_tokens", "use >= 0 (0 = whole trace)"),
        (s.scoring in SCORINGS and (s.scoring != "packed" or m.attn_implementation in ("eager", "sdpa")),
         "ssft.scoring", f"use one of {', '.join(SCORINGS)}; packed needs model.attn_implementation eager or sdpa"),
        (m.hidden_size % max(m.num_heads, 1) == 0, "model.hidden_size", "must be divisible by model.num_heads"),
        (m.attn_implementation in ("eager", "sdpa", "flash_attention_2"), "model.attn_implementation",
         "use eager, sdpa or flash_attention_2"),
        (m.dtype in DTYPES, "model.dtype", f"use one of {', '.join(DTYPES)}"),
        (m.tag_init in ("mean", "random"), "model.tag_init", "use mean or random"),
        (m.save_dtype in DTYPES, "model.save_dtype", f"use one of {', '.join(DTYPES)}"),
        (not m.pure_dtype or m.dtype != "float32", "model.pure_dtype",
         "only means something with model.dtype bfloat16 or float16"),
        ("{i}" in m.tag_format and m.tag_format.replace("{i}", "") != "", "model.tag_format",
         "must contain {i} and some other text, e.g. <think{i}>"),
        (m.max_length >= 0, "model.max_length", "use 0 (the model's context) or a token count"),
        (m.lora_rank >= 0, "model.lora_rank", "use 0 (full fine-tuning) or a positive rank"),
        (t.loss_kernel in KERNELS, "train.loss_kernel", f"use one of {', '.join(KERNELS)}"),
        (all(x in METHODS for x in t.methods), "train.methods", f"each must be one of {METHODS}"),
        (t.max_steps >= 1, "train.max_steps", "use >= 1"),
        (t.save_steps >= 1, "train.save_steps", "use >= 1: a checkpoint is what a killed run resumes from"),
        (t.logging_steps >= 1, "train.logging_steps", "use >= 1"),
        (t.threads >= 0, "train.threads", "use 0 (torch's default) or a positive count"),
        (t.scheduler in SCHEDULERS, "train.scheduler", f"use one of {', '.join(SCHEDULERS)}"),
        (m.num_heads >= 1 and m.num_layers >= 1 and m.hidden_size >= 1 and m.intermediate_size >= 1,
         "model.num_heads", "model sizes (hidden_size, num_layers, num_heads, intermediate_size) must be >= 1"),
        (t.questions_per_step >= 1, "train.questions_per_step", "use >= 1"),
        (t.grad_accum >= 1, "train.grad_accum", "use >= 1"),
        (t.lr > 0, "train.lr", "use > 0"),
        (t.weight_decay >= 0, "train.weight_decay", "use >= 0 (0 = no decay)"),
        (t.warmup_steps >= 0, "train.warmup_steps", "use >= 0 (0 = no warm-up)"),
        (t.max_grad_norm >= 0, "train.max_grad_norm", "use >= 0 (0 = no clipping)"),
        (m.lora_alpha >= 1, "model.lora_alpha", "use >= 1, e.g. 32"),
        (e.max_new_tokens >= 1, "eval.max_new_tokens", "use >= 1 (tokens generated per sample)"),
        (e.batch_size >= 1, "eval.batch_size", "use >= 1 (sequences per generate() call)"),
        (e.samples >= s.num_tags and e.samples % max(s.num_tags, 1) == 0, "eval.samples",
         f"use a positive multiple of ssft.num_tags={s.num_tags} so samples split evenly over tags"),
        (e.temperature > 0, "eval.temperature", "use > 0 (greedy decoding is always run as well)"),
        (all(isinstance(t, (int, float)) and t > 0 for t in e.temperatures), "eval.temperatures",
         "use a list of temperatures > 0, e.g. [0.3, 1.0]"),
        (0 < e.top_p <= 1, "eval.top_p", "use 0 < top_p <= 1"),
        (e.backend in GENERATION_BACKENDS, "eval.backend", f"use one of {', '.join(GENERATION_BACKENDS)}"),
        (e.backend != "openai" or bool(e.server), "eval.server",
         "eval.backend=openai needs the server's base URL, e.g. http://127.0.0.1:8000/v1"),
        (e.server is None or e.backend == "openai", "eval.server",
         "only eval.backend=openai talks to a server: set eval.backend=openai, or eval.server: null"),
        (not e.server or e.server.startswith(("http://", "https://")), "eval.server",
         "use an http(s) base URL, e.g. http://127.0.0.1:8000/v1"),
        (all(isinstance(k, int) and 1 <= k <= e.samples for k in e.ks), "eval.ks",
         f"each k must be an int in 1..eval.samples={e.samples}"),
    ]
    for ok, name, fix in rules:
        if not ok and name not in not_finite:
            value = getattr(cfg, name) if "." not in name else getattr(getattr(cfg, name.split(".")[0]),
                                                                        name.split(".")[1])
            errors.append(f"{name}: {value!r} is invalid; {fix}")
    for k, teacher in enumerate(d.teachers):
        _check_teacher(teacher, f"data.teachers[{k}]", errors, not_finite)
    names = [t.name for t in d.teachers]
    for k, name in enumerate(names):
        if name and name in names[:k]:
            errors.append(f"data.teachers[{k}].name: {name!r} is used twice; give every teacher its own name "
                          "(it is the traces' source)")


def _poolable(pattern: object) -> bool:
    """``train@*``, ``evaluate@ssft``, ...: a stage of a family a pool can run (the part after @ may be a glob)."""
    family, at, item = str(pattern).partition("@")
    return isinstance(pattern, str) and family in POOL_STAGES and bool(at) and bool(item)


def _check_teacher(t: TeacherConfig, where: str, errors: list[str], not_finite: dict[str, float]) -> None:
    rules = [(bool(t.name), "name", "give every teacher a name (its traces' source)"),
             (t.backend in BACKENDS, "backend", f"use one of {', '.join(BACKENDS)}"),
             (bool(t.model), "model", "hf: a local checkpoint directory; openai: the served model name"),
             (t.backend != "openai" or bool(t.base_url), "base_url", "openai needs the server, e.g. http://host:8000/v1"),
             (t.n >= 1, "n", "use >= 1"), (t.max_tokens >= 1, "max_tokens", "use >= 1"),
             (t.concurrency >= 1, "concurrency", "use >= 1"), (t.temperature >= 0, "temperature", "use >= 0"),
             (0 < t.top_p <= 1, "top_p", "use 0 < top_p <= 1"), (t.timeout_s > 0, "timeout_s", "use > 0 seconds"),
             (t.max_retries >= 0, "max_retries", "use >= 0 (0 = no retry)"),
             (t.batch_size >= 1, "batch_size", "use >= 1")]
    for ok, key, fix in rules:
        if not ok and f"{where}.{key}" not in not_finite:
            errors.append(f"{where}.{key}: {getattr(t, key)!r} is invalid; {fix}")


def from_dict(raw: dict[str, Any], source: str = "params") -> Config:
    """Build and validate a Config; raise ConfigError listing every problem, prefixed by ``source``."""
    errors: list[str] = []
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    for key in raw:
        if key not in SECTIONS and key != "seed":
            errors.append(f"{key}: unknown section; known: seed, {', '.join(SECTIONS)}")
    seed = _coerce(raw.get("seed", 0), "int", "seed", errors)
    sections = {name: _section(cls, raw.get(name), name, errors) for name, cls in SECTIONS.items()}
    teachers = sections["data"].teachers
    if isinstance(teachers, list):
        parsed = [_section(TeacherConfig, t, f"data.teachers[{k}]", errors) for k, t in enumerate(teachers)]
        sections["data"] = dataclasses.replace(sections["data"], teachers=parsed)
    cfg = Config(seed=seed, **sections)
    if not errors:
        _check(cfg, errors)
    if errors:
        raise ConfigError(f"{source}: {len(errors)} problem(s):\n  - " + "\n  - ".join(errors))
    return cfg


def load(path: str | Path = "params.yaml", overrides: dict[str, Any] | None = None) -> Config:
    """Read ``path`` (and apply dotted ``overrides`` such as ``{"train.max_steps": 10}``)."""
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found; run from the project root or pass --params") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if raw is None:  # an empty file would silently run on every default
        raise ConfigError(f"{path}: empty; copy the project's params.yaml and change what you need")
    for dotted, value in (overrides or {}).items():
        set_dotted(raw, dotted, value)
    cfg = from_dict(raw, str(path))
    if cfg.train.warmup_steps >= cfg.train.max_steps:  # runs, but the learning rate never reaches train.lr
        log.warning("%s: train.warmup_steps=%d >= train.max_steps=%d: training ends still warming up; use a "
                    "fraction of max_steps, e.g. train.warmup_steps=%d", path, cfg.train.warmup_steps,
                    cfg.train.max_steps, max(1, cfg.train.max_steps // 20))
    return cfg


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice (YAML keeps the last one silently: a second ``train:`` section
    would replace the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice (line {key_node.start_mark.line + 1}); keep one",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def set_dotted(doc: dict, dotted: str, value: Any) -> None:
    """``set_dotted(d, "train.max_steps", 5)`` sets ``d["train"]["max_steps"]``, creating sections as needed."""
    *parents, leaf = dotted.split(".")
    for depth, p in enumerate(parents):
        if doc.get(p) is None:  # absent, or present but empty (``train:`` alone reads as None)
            doc[p] = {}
        doc = doc[p]
        if not isinstance(doc, dict):
            raise ConfigError(f"{dotted}: {'.'.join(parents[:depth + 1])} is a value, not a section; "
                              "override it as a whole, e.g. --set " + ".".join(parents[:depth + 1]) + "=...")
    doc[leaf] = value
