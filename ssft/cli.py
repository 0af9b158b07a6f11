"""``ssft traces | train | evaluate | report``: the stages ``dvc.yaml`` runs, and humans too.

    ssft traces                      # data/traces/{train,eval}.parquet
    ssft train --method ssft         # models/ssft/
    ssft evaluate --method ssft      # results/ssft/{metrics.json,details.jsonl}
    ssft gfpo --method ssft          # models/gfpo/ssft/ (RL on the forking token)
    ssft report                      # results/summary.md
    ssft register                    # SSFT model -> MLflow registry; results/registry.json
    ssft sample "3+4+5+6?"           # each tag's answer from models/ssft (--model, --tags 1,3)
    ssft costs                       # which trace tokens decide models/ssft's matching, and how firmly
Every command reads ``params.yaml`` (``--params``) and accepts ``--set key=value`` overrides, before or
after the sub-command.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import re
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from ssft import atomic, env, lifeline
from ssft import config as config_mod
from ssft.errors import UserError

if TYPE_CHECKING:  # mlflow is imported only when tracking is on
    from ssft.tracking.null import NullTracker
    from ssft.tracking.runs import Tracker

log = logging.getLogger("ssft")
FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ssft", description="Set Supervised Fine-Tuning pipeline stages")
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a param, e.g. --set train.max_steps=50 (YAML value)")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("traces", help="generate and validate the trace dataset")
    t.add_argument("--out", default="data/traces", help="output directory")
    for name, helptext in (("train", "train one method"), ("evaluate", "evaluate one trained method")):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("--method", required=True, choices=config_mod.METHODS)
        s.add_argument("--traces", default="data/traces", help="trace dataset directory")
        s.add_argument("--models", default="models", help="models directory (models/<method>)")
        s.add_argument("--checkpoints", default="checkpoints", help="resumable checkpoints (checkpoints/<method>)"
                       + ("" if name == "train" else "; --curve reads the snapshots in checkpoints/<method>/steps"))
        if name == "evaluate":
            s.add_argument("--results", default="results", help="results directory (results/<method>)")
            s.add_argument("--prefix-forced", action="store_true",
                           help="sample the untagged model with each strategy's opening forced (eval.prefix_forced; "
                                "with --results results/forced)")
            s.add_argument("--curve", action="store_true",
                           help="the learning curve: evaluate every snapshot (eval.every_steps) on a cheap set -> "
                                "<results>/curves/<method>.jsonl")
    f = sub.add_parser("gfpo", help="RL on the forking token (GFPO; GRPO for sft) after training one method")
    f.add_argument("--method", required=True, choices=config_mod.METHODS)
    f.add_argument("--models", default="models", help="trained models (models/<method>)")
    f.add_argument("--traces", default="data/traces", help="trace dataset directory (its training questions)")
    f.add_argument("--out", default="models/gfpo", help="where the RL-trained model goes (<out>/<method>)")
    r = sub.add_parser("report", help="summarise all methods side by side")
    r.add_argument("--results", default="results")
    r.add_argument("--models", default="models", help="trained models: their MLflow runs get the comparison plots")
    g = sub.add_parser("register", help="register the trained SSFT model in the MLflow registry")
    g.add_argument("--method", default="ssft", choices=config_mod.METHODS)
    g.add_argument("--models", default="models")
    g.add_argument("--results", default="results")
    g.add_argument("--traces", default="data/traces", help="held-out questions: the model's input example")
    g.add_argument("--out", default="results/registry.json", help="what was registered (a DVC output)")
    a = sub.add_parser("sample", help="prompt a trained model with its forking tags and print each tag's answer")
    a.add_argument("question", help="the question text, as in the trace data")
    a.add_argument("--model", default="models/ssft", help="a model directory written by `ssft train`")
    a.add_argument("--tags", default="all", help="all, self (the model picks its own tag), or tag numbers such as "
                   "1,3 (the sft model has one tag)")
    a.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    a.add_argument("--max-new-tokens", type=int, default=256)
    c = sub.add_parser("costs", help="which trace tokens decide the matching: per position, how far the tag moves "
                       "the NLL and how much of the best assignment's margin it carries, on training and held-out "
                       "questions")
    c.add_argument("--method", default="ssft", choices=config_mod.METHODS)
    c.add_argument("--models", default="models", help="trained models (models/<method>)")
    c.add_argument("--model", help="any model directory written by `ssft train` instead of <models>/<method>")
    c.add_argument("--traces", default="data/traces", help="trace dataset directory (train.parquet, eval.parquet)")
    c.add_argument("--questions", type=int, default=64, help="questions per split")
    c.add_argument("--tokens", type=int, help="trace tokens per pair (default ssft.cost_tokens, what the matching "
                   "scores; more shows where the traces part later)")
    c.add_argument("--out", help="also write the numbers as JSON")
    st = sub.add_parser("study", help="run a study (settings x seeds) and write its report")
    st.add_argument("file", help="a study file, e.g. studies/cpu.yaml")
    st.add_argument("--report", help="the report (default results/study.md for cpu, results/study-<name>.md "
                    "for others); figures go to its stem/")
    st.add_argument("--workdir", default=".studies", help="where the cells run (finished ones are reused)")
    st.add_argument("--settings", help="only these settings, comma-separated (their report: <report>-<names>.md)")
    for s in sub.choices.values():  # --set is also accepted after the sub-command
        s.add_argument("--set", dest="overrides_after", action="append", default=[], metavar="KEY=VALUE",
                       help="override a param (also allowed before the sub-command)")
    return p


def _rank() -> tuple[int, int]:
    """(rank, world size) of this process: torchrun sets RANK and WORLD_SIZE; a plain run is (0, 1)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _tracker(cfg: config_mod.Config, args: argparse.Namespace) -> Tracker | NullTracker:
    """MLflow for this stage; the do-nothing tracker when tracking is off or this is not rank 0 of a torchrun
    job (one run per job, not one per rank), and then mlflow is never imported."""
    if not cfg.tracking.enabled or _rank()[0] != 0:
        from ssft.tracking.null import NullTracker

        return NullTracker()
    from ssft.tracking.runs import Tracker

    return Tracker(cfg, Path(args.params).resolve().parent)


def _overrides(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise config_mod.ConfigError(f"--set {pair!r}: expected KEY=VALUE, e.g. train.max_steps=50")
        try:
            out[key] = yaml.safe_load(value)
            if isinstance(out[key], str) and FLOAT_RE.fullmatch(value.strip()):
                out[key] = float(value)  # YAML 1.1 reads 5e-5 (no dot) as a string
        except yaml.YAMLError as e:
            raise config_mod.ConfigError(f"--set {pair!r}: the value is not valid YAML ({e.problem}); quote it, "
                                         f"e.g. --set '{key}=\"{value}\"'") from e
    return out


def cmd_traces(cfg: config_mod.Config, args: argparse.Namespace) -> None:
    from ssft.data import dataset

    with atomic.exclusive(Path(args.out)):
        dataset.build(cfg, Path(args.out))


def cmd_train(cfg: config_mod.Config, args: argparse.Namespace) -> None:
    from ssft.train.trainer import run_stage

    train_file, out = Path(args.traces) / "train.parquet", Path(args.models) / args.method
    ckpt = Path(args.checkpoints) / args.method
    tracker = _tracker(cfg, args)
    # One job per output: the checkpoints and the model directory are both locked, so a second job with other
    # --checkpoints cannot overwrite this one's model (its ranks share them: rank 0 holds the locks for all).
    with contextlib.ExitStack() as locks:
        if _rank()[0] == 0:
            for path in (ckpt, out):
                locks.enter_context(atomic.exclusive(path))
        with tracker.training_run(args.method, train_file, world_size=_rank()[1]) as run:
            stats = run_stage(cfg, args.method, train_file, out, ckpt, run.callbacks())
            run.finish(out, stats)


def cmd_evaluate(cfg: config_mod.Config, args: argparse.Namespace) -> None:
    from ssft.eval.evaluate import evaluate

    if cfg.train.threads:
        import torch

        torch.set_num_threads(cfg.train.threads)
    model_dir = Path(args.models) / args.method
    tracker = _tracker(cfg, args)  # first: a tracking server that is down fails in seconds, before any work
    if args.curve:
        _evaluate_curve(cfg, args, model_dir, tracker)
        return
    out = Path(args.results) / args.method
    with atomic.exclusive(out):
        evaluate(cfg, model_dir, Path(args.traces) / "eval.parquet", out, Path(args.traces) / "train.parquet",
                 Path(args.traces) / "val.parquet", prefix_forced=args.prefix_forced)
    tracker.log_eval(args.method, model_dir, out, args.prefix_forced)


def _evaluate_curve(cfg: config_mod.Config, args: argparse.Namespace, model_dir: Path,
                    tracker: Tracker | NullTracker) -> None:
    """``ssft evaluate --curve``: the cheap evaluation of every step snapshot, one JSON line per step."""
    from ssft.eval.curves import CURVES_DIR, evaluate_curve

    curve = Path(args.results) / CURVES_DIR / f"{args.method}.jsonl"
    with atomic.exclusive(curve):
        rows = evaluate_curve(cfg, model_dir, Path(args.checkpoints) / args.method,
                              Path(args.traces) / "eval.parquet", curve, Path(args.traces) / "train.parquet",
                              Path(args.traces) / "val.parquet")
    tracker.log_curve(args.method, model_dir, rows)


def cmd_gfpo(cfg: config_mod.Config, args: argparse.Namespace) -> None:
    from ssft.train.gfpo import run_stage

    base, out = Path(args.models) / args.method, Path(args.out) / args.method
    tracker = _tracker(cfg, args)
    with atomic.exclusive(out), tracker.rl_run(args.method, base) as run:
        stats = run_stage(cfg, args.method, Path(args.models), Path(args.traces) / "train.parquet", out, run.log)
        run.finish(out, stats)


def cmd_register(cfg: config_mod.Config, args: argparse.Namespace) -> None:
    from ssft.eval.evaluate import METRICS_FILE

    tracker = _tracker(cfg, args)
    metrics = json.loads((Path(args.results) / args.method / METRICS_FILE).read_text())
    from ssft.data.traces import read_rows

    question = read_rows(Path(args.traces) / "eval.parquet")[0]["question"]
    info = tracker.register(Path(args.models) / args.method, metrics, question)
    atomic.write_text(Path(args.out), json.dumps(info, indent=2))


def cmd_sample(cfg: config_mod.Config, args: argparse.Namespace) -> None:
    """Each requested tag's answer to one question, from the prompt layout the model was trained with, generated
    by ``eval.backend`` (``--set eval.backend=openai --set eval.server=...``: a served copy of the model)."""
    from ssft.eval.evaluate import open_sampler
    from ssft.train import methods
    from ssft.train.forking import PromptLayout, prompt_ids, prompt_text

    sampler, tokenizer, meta = open_sampler(cfg, Path(args.model))
    layout = PromptLayout.from_meta(meta)
    n = int(meta["num_tags"])
    method = methods.get(meta["method"])
    if method.tagged and args.tags == "self":  # tag-free: the model picks its tag (argmax), then writes on
        from ssft.train import rollouts

        probs = rollouts.tag_probs(sampler, tokenizer, layout, [args.question])[0]
        print("P(tag | question): " + ", ".join(f"{layout.tags[i]} {p:.3f}" for i, p in enumerate(probs)))
        tags: list[int | None] = [int(probs.argmax()) + 1]
    elif not method.tagged or args.tags == "all":
        tags = method.eval_tags(n)
    else:
        try:
            numbers = [int(t) for t in args.tags.split(",")]
        except ValueError:
            raise UserError(f"--tags {args.tags!r}: use all, self or numbers such as 1,3") from None
        if not all(1 <= t <= n for t in numbers):
            raise UserError(f"--tags {args.tags!r}: this model has tags 1..{n}")
        tags = list(numbers)
    outs = sampler.generate([prompt_ids(tokenizer, layout, args.question, t) for t in tags], 1,
                            args.temperature or None, max_new_tokens=args.max_new_tokens, seed=cfg.seed)
    for tag, (sample,) in zip(tags, outs):
        print(f"{prompt_text(tokenizer, layout, args.question, tag)!r} -> {sample.text!r}")


def cmd_costs(cfg: config_mod.Config, args: argparse.Namespace) -> None:
    from ssft.eval import costs

    if cfg.train.threads:
        import torch

        torch.set_num_threads(cfg.train.threads)
    traces = Path(args.traces)
    splits = {name: traces / f for name, f in (("training questions", "train.parquet"),
                                                ("held-out questions", "eval.parquet")) if (traces / f).exists()}
    if not splits:
        raise UserError(f"{traces}: no train.parquet or eval.parquet; run `ssft traces` (or pass --traces)")
    result = costs.analyse(Path(args.model or Path(args.models) / args.method), splits, args.questions,
                           args.tokens or cfg.ssft.cost_tokens)
    if args.out:
        atomic.write_text(Path(args.out), json.dumps(result, indent=2))
    print(costs.markdown(result))


def cmd_report(cfg: config_mod.Config, args: argparse.Namespace) -> None:
    """The table (results/summary.md), the comparison plots (results/plots/*.png, DVC plots) in every method's
    MLflow run."""
    from ssft.eval.evaluate import DETAILS_FILE
    from ssft.eval.report import collect, write_report
    from ssft.eval.report import columns as report_columns
    from ssft.tracking.figures import comparison_figures, save_figures

    methods, results = list(cfg.train.methods), Path(args.results)
    columns = report_columns(cfg)  # the methods, then their RL-trained models (dvc.yaml evaluate-gfpo)
    tracker = _tracker(cfg, args)
    print(write_report(results, columns))
    details = {label: [json.loads(line) for line in (results / sub / DETAILS_FILE).read_text().splitlines()]
               for label, sub in columns.items() if (results / sub / DETAILS_FILE).exists()}
    plots = save_figures(comparison_figures(collect(results, columns), details, cfg.ssft.num_tags), results / "plots")
    tracker.log_comparison(methods, Path(args.models), plots)


def _quiet_progress_bars() -> None:
    """Stage logs are read in files and CI: one line per event, no carriage-return bars."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    try:  # training and evaluation run without datasets (e.g. on a GPU image); only `traces` writes with it
        import datasets
    except ImportError:
        return
    datasets.disable_progress_bars()


def cmd_study(cfg: config_mod.Config, args: argparse.Namespace) -> None:
    from ssft import study

    spec = study.load(Path(args.file), Path(args.params))
    if args.settings:
        spec = study.only(spec, args.settings.split(","))
    report = Path(args.report) if args.report else study.default_report(spec.name)
    if args.settings and not args.report:  # never overwrite the full study's report with a part of it
        report = report.with_name(f"{report.stem}-{'-'.join(args.settings.split(','))}.md")
    print(study.run(spec, report, Path(args.workdir), params=Path(args.params)))


COMMANDS = {"traces": cmd_traces, "train": cmd_train, "evaluate": cmd_evaluate, "gfpo": cmd_gfpo, "report": cmd_report,
            "register": cmd_register, "sample": cmd_sample, "costs": cmd_costs, "study": cmd_study}


# Library lines a stage's log is better without: one per HTTP request (a teacher's, a tracking server's) and
# matplotlib's one-off font cache notice (levels), the system-metrics monitor starting and stopping, and
# mlflow.transformers.log_model's "... make sure your Internet connection is on" when, offline as every stage
# runs, it cannot fetch a Hub model card or licence (filters on the loggers: importing mlflow resets the
# levels of its loggers, never their filters).
QUIET_LOGGERS = {"httpx": logging.WARNING, "httpcore": logging.WARNING, "matplotlib": logging.ERROR}
HUB_NOTICES = ("could not be retrieved from the hub", "Failed to download the license file",
               "Unable to find license information")
QUIET_FILTERS = {
    "mlflow.system_metrics.system_metrics_monitor": lambda r: r.levelno > logging.INFO,
    "mlflow.transformers": lambda r: not any(n in r.getMessage() for n in HUB_NOTICES),
}


def main(argv: list[str] | None = None) -> int:
    lifeline.die_with_dvc()
    env.apply()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    for name, keep in QUIET_FILTERS.items():
        logging.getLogger(name).addFilter(keep)
    args = _parser().parse_args(argv)
    _quiet_progress_bars()
    try:
        cfg = config_mod.load(args.params, _overrides(args.overrides + args.overrides_after))
        COMMANDS[args.command](cfg, args)
    except (UserError, FileNotFoundError) as e:
        log.error("%s", e)  # bad input: the message names the file or field and the fix
        log.debug("traceback", exc_info=True)
        return 2
    except Exception as e:  # the machine, not the code: a full or read-only disk, a permission
        disk = _os_error(e)
        if disk is None:
            raise  # anything else is a bug: its traceback is shown and the exit status is 1
        outputs = [str(v) for a in ("out", "checkpoints", "models", "results") if (v := getattr(args, a, None))]
        where = f" (writing under {' or '.join(outputs)})" if disk.filename is None and outputs else ""
        log.error("%s: %s%s%s", type(disk).__name__, disk, where, "; free space or choose another output directory"
                  if disk.errno in DISK_ERRNOS else "")
        log.debug("traceback", exc_info=True)
        return 2
    return 0


DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EIO)
TORCH_WRITE_FAILED = re.compile(r"iostream error|PytorchStreamWriter failed|inline_container|file write failed")


def _os_error(e: BaseException) -> OSError | None:
    """The OSError behind ``e``: itself, or a failed write a library reported in its own type. A checkpoint on
    a full disk fails in safetensors (``SafetensorError`` "... I/O error: No space left on device (os error
    28)", the weights) or in ``torch.save`` (a ``RuntimeError`` without the errno: "basic_ios::clear: iostream
    error", "PytorchStreamWriter failed writing file ...", the optimizer state)."""
    if isinstance(e, OSError):
        return e
    if type(e).__name__ == "SafetensorError" and (found := re.search(r"\(os error (\d+)\)", str(e))):
        return OSError(int(found[1]), os.strerror(int(found[1])))
    in_torch_save = any(f.filename.endswith(os.path.join("torch", "serialization.py"))
                        for f in traceback.extract_tb(e.__traceback__))
    if isinstance(e, RuntimeError) and in_torch_save and TORCH_WRITE_FAILED.search(str(e)):
        return OSError(errno.EIO, f"torch.save could not write ({str(e).splitlines()[0]}); is the disk full?")
    return None


if __name__ == "__main__":
    sys.exit(main())
