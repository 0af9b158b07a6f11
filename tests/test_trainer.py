"""Training: exact batch layout, per-method tags, learning, accumulation scaling, kill-and-resume, and SSFT
specialising tags where random tags do not."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_cfg
from transformers import TrainerCallback

from ssft.train import methods, models
from ssft.train.trainer import Example, build_batch, last_complete_checkpoint, run_stage

EX = Example("q", prompts=((1, 7, 8), (1, 7, 9), (1, 7, 10)), tag_pos=2, completions=((5, 2), (6, 6, 2)),
             sources=("a", "b"), strategy=(1, 0))


def test_build_batch_exactly() -> None:
    b = build_batch([EX], [[2, None]], pad_id=0, tag_in_loss=True)
    assert b["input_ids"].tolist() == [[1, 7, 10, 5, 2, 0], [1, 7, 8, 6, 6, 2]]
    assert b["labels"].tolist() == [[-100, -100, 10, 5, 2, -100], [-100, -100, 8, 6, 6, 2]]
    assert b["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]]
    b = build_batch([EX], [[1, 2]], pad_id=0, tag_in_loss=False)
    assert b["labels"].tolist() == [[-100, -100, -100, 5, 2, -100], [-100, -100, -100, 6, 6, 2]]


def choose_tags(name: str, ex: Example, num_tags: int, cost: np.ndarray | None,
                rng: np.random.Generator) -> list[int | None]:
    return methods.get(name).tags(ex.strategy, num_tags, cost, rng)


def test_choose_tags_per_method() -> None:
    rng = np.random.default_rng(0)
    cost = np.array([[3.0, 1.0, 2.0], [1.0, 5.0, 5.0]])
    assert choose_tags("ssft", EX, 3, cost, rng) == [2, 1]
    assert choose_tags("sft", EX, 3, None, rng) == [None, None]
    assert choose_tags("fixed", EX, 3, None, rng) == [2, 1]
    draws = {tuple(choose_tags("random", EX, 3, None, rng)) for _ in range(200)}
    assert all(len(set(d)) == 2 and set(d) <= {1, 2, 3} for d in draws) and len(draws) == 6
    tied = {tuple(choose_tags("ssft", EX, 3, np.ones((2, 3)), rng)) for _ in range(200)}
    assert len(tied) == 6, "ssft must break cost ties at random, not trace j -> tag j"


def test_random_tags_are_drawn_afresh_every_step(tmp_path: Path, trace_dir: Path) -> None:
    """Random tags per question-step: over an epoch of 32 question-steps the assignments spread over many of
    the 24 permutations (entropy well above log 4, which draws reused every step would cap it at), and a
    question seen again usually gets another one."""
    stats = _train(tmp_path, trace_dir, "random", **{"train.max_steps": 16})
    for epoch in stats["epochs"]:
        assert epoch["assignment_entropy"] > 2.0, epoch
    assert stats["epochs"][1]["churn"] > 0.7


def _train(tmp: Path, trace_dir: Path, method: str = "ssft", callbacks: tuple = (), **over: object) -> dict:
    cfg = tiny_cfg(**over)
    return run_stage(cfg, method, trace_dir / "train.parquet", tmp / "models" / method, tmp / "ckpt" / method,
                     callbacks)


def test_training_changes_every_parameter_and_writes_the_model(tmp_path: Path, trace_dir: Path) -> None:
    init, _ = models.build(tiny_cfg().model, 4, seed=0)
    stats = _train(tmp_path, trace_dir)
    trained, _, meta = models.load(tmp_path / "models" / "ssft")
    assert np.isfinite(stats["train_loss"]) and stats["steps"] == 8
    for (name, a), b in zip(init.named_parameters(), trained.parameters()):
        assert not torch.equal(a, b), f"{name} did not change"
    assert meta["sources"] == ["l2r", "r2l", "pair", "sort"] and meta["num_tags"] == 4
    assert len(stats["epochs"]) == 1 and stats["epochs"][0]["questions"] == 32
    assert (tmp_path / "models" / "ssft" / "train_stats.json").exists()
    host = [h["host_ms"] for h in stats["log_history"] if "host_ms" in h]
    assert len(host) == 4 and all(0 < ms < 1000 for ms in host), "host time per micro-batch, every logging step"


def test_gradient_accumulation_is_scaled(tmp_path: Path, trace_dir: Path) -> None:
    """GA=2 x 2 questions must give the gradient of 1 x 4 questions (not 2x: Trainer pitfall 3)."""
    norms = []
    for qps, ga in [(4, 1), (2, 2)]:
        stats = _train(tmp_path / f"ga{ga}", trace_dir, "sft", **{"train.max_steps": 1, "train.logging_steps": 1,
                                                                  "train.questions_per_step": qps,
                                                                  "train.grad_accum": ga})
        norms.append(next(h["grad_norm"] for h in stats["log_history"] if "grad_norm" in h))
    assert norms[1] == pytest.approx(norms[0], rel=0.05)


def _first_step(stats: dict) -> tuple[float, float]:
    first = next(h for h in stats["log_history"] if "grad_norm" in h)
    return first["loss"], first["grad_norm"]


def test_the_loss_is_summed_then_divided_once_by_the_step_tokens(tmp_path: Path, trace_dir: Path) -> None:
    """GA 2 x 3 questions gives exactly the loss and gradient of 1 x 6 questions, although the micro-batches
    hold different token counts (a mean per micro-batch weighs the tokens of the shorter one more)."""
    from ssft.data import traces
    from ssft.train.trainer import labelled_tokens, tokenize

    qs, _ = traces.load(trace_dir / "train.parquet", 4)
    tok = models.build(tiny_cfg().model, 4, seed=0)[1]
    counts = {labelled_tokens(ex, True) for ex in tokenize(qs, tok, 4, sorted({s for q in qs for s in q.sources}))}
    assert len(counts) > 1, "the fixture's questions must differ in length for this test to mean anything"
    one, two = (_first_step(_train(tmp_path / f"ga{ga}", trace_dir, "fixed", **{
        "train.max_steps": 1, "train.logging_steps": 1, "train.questions_per_step": qps, "train.grad_accum": ga}))
        for qps, ga in [(6, 1), (3, 2)])
    assert two == pytest.approx(one, rel=1e-6, abs=1e-7)


class Kill(TrainerCallback):
    """Stops the process mid-run, after a checkpoint was written."""

    def __init__(self, at: int = 6) -> None:
        self.at = at

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
        if state.global_step == self.at:
            raise KeyboardInterrupt


@pytest.mark.parametrize("group_by_length", [False, True])
def test_kill_and_resume_gives_identical_weights_and_stats(tmp_path: Path, trace_dir: Path,
                                                           group_by_length: bool) -> None:
    over = {"train.group_by_length": group_by_length}
    straight = _train(tmp_path / "a", trace_dir, **over)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "b", trace_dir, callbacks=(Kill(),), **over)
    assert not (tmp_path / "b" / "models" / "ssft").exists(), "no model dir before training finished"
    (tmp_path / "b" / "ckpt" / "ssft" / "checkpoint-7").mkdir()   # a save cut short: must be skipped
    resumed = _train(tmp_path / "b", trace_dir, **over)
    a, _, _ = models.load(tmp_path / "a" / "models" / "ssft")
    b, _, _ = models.load(tmp_path / "b" / "models" / "ssft")
    for (name, x), y in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(x, y), f"{name} differs after resume"
    assert resumed["epochs"] == straight["epochs"]
    assert resumed["tag_source_totals"] == straight["tag_source_totals"]
    assert resumed["train_loss"] == pytest.approx(straight["train_loss"]), "train_loss covers the whole run"
    again = _train(tmp_path / "b", trace_dir, **over)  # a finished run re-run (a retry, dvc repro -f)
    assert again["steps"] == 8 and again["train_loss"] == pytest.approx(straight["train_loss"])
    c, _, _ = models.load(tmp_path / "b" / "models" / "ssft")
    assert all(torch.equal(x, y) for x, y in zip(b.parameters(), c.parameters())), "trained further"


@pytest.mark.slow
def test_resume_from_an_epoch_end_with_unaligned_logging_equals_an_uninterrupted_run(
        tmp_path: Path, trace_dir: Path) -> None:
    """Checkpoint at step 8 = the end of epoch 0, logging every 3 steps, killed at step 10: the steps 7-8 were
    never logged before the kill (train_loss differed) and epoch 0 closed after the save (merged with epoch 1)."""
    over = {"train.max_steps": 16, "train.save_steps": 8, "train.logging_steps": 3}
    straight = _train(tmp_path / "a", trace_dir, **over)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "b", trace_dir, callbacks=(Kill(10),), **over)
    resumed = _train(tmp_path / "b", trace_dir, **over)
    assert [e["epoch"] for e in resumed["epochs"]] == [0, 1], "two epochs merged into one"
    assert resumed["epochs"] == straight["epochs"]
    assert resumed["train_loss"] == pytest.approx(straight["train_loss"], rel=1e-9)
    losses = [(h["step"], h["loss"]) for h in straight["log_history"] if "loss" in h]
    assert losses == [(h["step"], h["loss"]) for h in resumed["log_history"] if "loss" in h]


def test_last_complete_checkpoint_skips_partial_saves(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for step, state in [(4, "{}"), (8, '{"global_step": 8}'), (12, None), (16, '{"global_step": 16, "log_h')]:
        (tmp_path / f"checkpoint-{step}").mkdir()
        if state is not None:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    assert last_complete_checkpoint(tmp_path).name == "checkpoint-8"
    assert "checkpoint-16: trainer_state.json is truncated" in caplog.text
    assert last_complete_checkpoint(tmp_path / "none") is None


def test_another_configuration_keeps_the_old_checkpoints_and_a_rerun_resumes_them(
        tmp_path: Path, trace_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A typo'd lr trains to the end; the original config's interrupted checkpoints survive it, the log says
    which key differs, and rerunning the original resumes from its own checkpoint instead of step 0."""
    from ssft.cli import main
    from ssft.train.trainer import fingerprint

    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, trace_dir, callbacks=(Kill(),))  # killed at step 6: checkpoint-4 is resumable
    before = sorted(p.name for p in (tmp_path / "ckpt" / "ssft").iterdir())
    params = tmp_path / "params.yaml"
    import yaml
    from conftest import TINY

    params.write_text(yaml.safe_dump({**TINY, "tracking": {"enabled": False}}))
    args = ["--params", str(params), "--set", "train.scheduler=cosin", "train", "--method", "ssft", "--traces",
            str(trace_dir), "--models", str(tmp_path / "models"), "--checkpoints", str(tmp_path / "ckpt")]
    assert main(args) == 2, "a mistyped value is refused"
    assert sorted(p.name for p in (tmp_path / "ckpt" / "ssft").iterdir()) == before, "and nothing was touched"

    fp = fingerprint(tiny_cfg(), "ssft", trace_dir / "train.parquet")
    _train(tmp_path, trace_dir, **{"train.lr": 0.001})
    assert "train.lr: 0.003 -> 0.001" in caplog.text, "the log names the key that differs"
    assert (tmp_path / "ckpt" / f"ssft.previous-{fp}" / "checkpoint-4").exists(), "kept after the other run"

    caplog.clear()
    with caplog.at_level("INFO"):
        resumed = _train(tmp_path, trace_dir)
    assert "checkpoint-4" in caplog.text and "resuming ssft from" in caplog.text, "resumed, not restarted"
    assert not (tmp_path / "ckpt" / f"ssft.previous-{fp}").exists(), "its own history entry was taken back"
    assert resumed["steps"] == 8 and len(list((tmp_path / "ckpt").glob("ssft.previous-*"))) == 1


def test_superseded_checkpoint_history_is_bounded_and_says_what_it_deletes(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from ssft.train.trainer import prepare_checkpoint_dir

    ckpt = tmp_path / "ssft"
    for k in range(5):  # five configurations in turn, each leaving a checkpoint
        prepare_checkpoint_dir(ckpt, f"fp{k}", {"train.lr": k}, keep=3)
        (ckpt / "checkpoint-2").mkdir()
    assert sorted(p.name for p in tmp_path.glob("ssft.previous-*")) == [
        "ssft.previous-fp1", "ssft.previous-fp2", "ssft.previous-fp3"]
    assert "deleting " + str(tmp_path / "ssft.previous-fp0") in caplog.text
    assert "train.lr: 3 -> 4" in caplog.text
    prepare_checkpoint_dir(ckpt, "fp9", {"train.lr": 9}, keep=3)  # an empty dir of fp9 replaces no history
    prepare_checkpoint_dir(ckpt, "fp2", {"train.lr": 2}, keep=3)
    assert (ckpt / "checkpoint-2").exists() and (ckpt / "fingerprint").read_text() == "fp2"


def test_bookkeeping_keys_keep_the_checkpoints(trace_dir: Path) -> None:
    """pipeline.parallel, data.name, data.cache (and eval, tracking) change no trained weight: same fingerprint,
    so changing them resumes instead of moving the checkpoints aside."""
    from ssft.train.trainer import fingerprint

    f = trace_dir / "train.parquet"
    base = fingerprint(tiny_cfg(), "ssft", f)
    for key, value in [("pipeline.parallel", 3), ("data.name", "other"), ("data.cache", "/tmp/elsewhere"),
                       ("tracking.enabled", False), ("train.save_steps", 3), ("train.threads", 1)]:
        assert fingerprint(tiny_cfg(**{key: value}), "ssft", f) == base, f"{key} changed the fingerprint"


def _purity(totals: dict) -> float:
    """Share of matches that go to each tag's majority source (0.25 = no specialisation with 4 sources)."""
    return sum(max(c.values()) for c in totals.values()) / sum(sum(c.values()) for c in totals.values())


def test_ssft_specialises_tags_where_random_does_not(tmp_path: Path, trace_dir: Path) -> None:
    over = {"train.max_steps": 48, "ssft.cost_tokens": 4, "train.logging_steps": 48, "train.save_steps": 1000}
    ssft = _train(tmp_path, trace_dir, "ssft", **over)
    rand = _train(tmp_path, trace_dir, "random", **over)
    last_ssft, last_rand = ssft["epochs"][-1]["tag_source_counts"], rand["epochs"][-1]["tag_source_counts"]
    assert _purity(last_ssft) >= 0.9, last_ssft
    assert _purity(last_rand) <= 0.5, last_rand
    assert ssft["epochs"][-1]["churn"] <= 0.1


@pytest.mark.slow
def _torchrun(tmp_path: Path, trace_dir: Path, method: str) -> None:
    """``ssft train`` under torchrun, 2 CPU ranks (gloo), with tmp_path/params.yaml; models in tmp_path/m."""
    import subprocess
    import sys

    from conftest import tool_env

    torchrun = Path(sys.executable).parent / "torchrun"
    res = subprocess.run([str(torchrun), "--nproc_per_node", "2", "-m", "ssft.cli", "--params",
                          str(tmp_path / "params.yaml"), "train", "--method", method, "--traces", str(trace_dir),
                          "--models", str(tmp_path / "m"), "--checkpoints", str(tmp_path / "ck")],
                         env=tool_env(OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]


def test_two_process_ddp_gathers_statistics_into_one_mlflow_run(tmp_path: Path, trace_dir: Path) -> None:
    """torchrun, 2 CPU ranks (gloo): each rank trains its own questions, the statistics cover all of them, and
    rank 0 alone tracks, into one MLflow run with world_size 2."""
    import json

    import mlflow
    import yaml
    from conftest import TINY

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**TINY, "tracking": {"uri": uri}}))
    _torchrun(tmp_path, trace_dir, "ssft")
    stats = json.loads((tmp_path / "m" / "ssft" / "train_stats.json").read_text())
    assert stats["steps"] == 8  # 32 questions / (4 per rank x 2 ranks) = 4 steps per epoch
    assert [e["questions"] for e in stats["epochs"]] == [32, 32]
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("ssft-add4").experiment_id])
    assert len(runs) == 1, [(r.info.run_id, r.data.params.get("world_size")) for r in runs]
    (run,) = runs
    assert run.info.status == "FINISHED" and run.data.params["world_size"] == "2"
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == 4  # 8 steps, logging every 2
    assert {"match/churn", "match/rate_tag1"} <= set(run.data.metrics)


@pytest.mark.slow
def test_two_ranks_equal_one_rank_and_count_each_question_once(tmp_path: Path, trace_dir: Path) -> None:
    """torchrun, 2 ranks x 3 questions: the first step's loss and gradient norm equal one rank's at 6 questions
    (the loss is divided by the tokens of every rank), and with 32 questions (not a multiple of 6) accelerate's
    even_batches repeats questions at the epoch's end, which the statistics count once."""
    import json

    import yaml
    from conftest import TINY

    over = {"max_steps": 6, "logging_steps": 1, "questions_per_step": 3, "save_steps": 100}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**TINY, "train": {**TINY["train"], **over},
                                                          "tracking": {"enabled": False}}))
    _torchrun(tmp_path, trace_dir, "fixed")
    ddp = json.loads((tmp_path / "m" / "fixed" / "train_stats.json").read_text())
    assert [e["questions"] for e in ddp["epochs"]] == [32], "a repeated question was counted twice"
    single = _train(tmp_path / "one", trace_dir, "fixed", **{"train.max_steps": 1, "train.logging_steps": 1,
                                                           "train.questions_per_step": 6})
    assert _first_step(ddp) == pytest.approx(_first_step(single), rel=1e-6, abs=1e-7)


def test_checkpoint_fingerprint_covers_training_inputs_only(trace_dir: Path) -> None:
    from ssft.train.trainer import fingerprint

    f = trace_dir / "train.parquet"
    base = fingerprint(tiny_cfg(), "ssft", f)
    assert fingerprint(tiny_cfg(**{"eval.samples": 16, "train.logging_steps": 7}), "ssft", f) == base
    assert fingerprint(tiny_cfg(**{"train.lr": 0.01}), "ssft", f) != base
    assert fingerprint(tiny_cfg(), "sft", f) != base


class Checkpointing(TrainerCallback):
    """Records whether the model's layers recompute activations (what gradient checkpointing switches on)."""

    def __init__(self) -> None:
        self.seen: list[bool] = []

    def on_step_begin(self, args, state, control, model=None, **kwargs):  # noqa: ANN001
        self.seen.append(any(getattr(m, "gradient_checkpointing", False) for m in model.modules()))


def test_gradient_checkpointing_trains_the_same_model(tmp_path: Path, trace_dir: Path) -> None:
    over = {"train.max_steps": 3, "train.save_steps": 100}
    off, on = Checkpointing(), Checkpointing()
    _train(tmp_path / "a", trace_dir, callbacks=(off,), **over)
    _train(tmp_path / "b", trace_dir, callbacks=(on,), **over, **{"train.gradient_checkpointing": True})
    assert off.seen == [False] * 3 and on.seen == [True] * 3
    a, _, _ = models.load(tmp_path / "a" / "models" / "ssft")
    b, _, _ = models.load(tmp_path / "b" / "models" / "ssft")
    for (name, x), y in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=name)


def test_group_by_length_batches_similar_lengths_in_a_resumable_order(tmp_path: Path) -> None:
    """Padding per micro-batch (sum of width - length) is far below random order's; the order depends on
    (seed, epoch) only, so a resumed run (a new sampler, any global RNG state) replays the same batches."""
    from ssft.train.trainer import QuestionDataset, SSFTTrainer, training_args

    rng = np.random.default_rng(0)
    exs = [Example(str(k), ((1,) * int(n),), 0, ((2,),), ("a",), (0,)) for k, n in enumerate(rng.integers(5, 200, 400))]
    ds = QuestionDataset(exs)
    widths = ds.lengths()
    model = models.build(tiny_cfg().model, 4, seed=0)[0]

    def sampler(group: bool):  # noqa: ANN202
        cfg = tiny_cfg(**{"train.group_by_length": group, "train.questions_per_step": 8})
        trainer = SSFTTrainer(model=model, args=training_args(cfg, tmp_path / str(group)), train_dataset=ds,
                              method="sft", cfg=cfg, pad_id=0)
        return trainer._get_train_sampler()

    def padding(order: list[int]) -> int:
        batches = [[widths[i] for i in order[s: s + 8]] for s in range(0, len(order), 8)]
        return sum(max(b) * len(b) - sum(b) for b in batches)

    grouped = sampler(True)
    epoch0 = list(grouped)
    assert padding(epoch0) < 0.5 * padding(list(sampler(False)))
    torch.manual_seed(123)                              # a resumed process: other global RNG state
    again = sampler(True)
    assert list(again) == epoch0
    again.set_epoch(1)
    assert list(again) != epoch0 and sorted(again) == sorted(epoch0)


def test_lora_trains_adapters_and_tag_rows_then_saves_a_plain_model(tmp_path: Path, trace_dir: Path) -> None:
    """LoRA (peft): the saved model is an ordinary checkpoint with the adapters merged in; linear layers moved,
    the forking tokens' embedding rows moved, every other embedding row stayed as it was."""
    pytest.importorskip("peft")
    from ssft.train.forking import PromptLayout, tag_ids

    init, tok = models.build(tiny_cfg().model, 4, seed=0)
    _train(tmp_path, trace_dir, "ssft", **{"model.lora_rank": 4, "train.lr": 0.01, "train.max_steps": 4})
    trained, _, _ = models.load(tmp_path / "models" / "ssft")
    assert not any("lora" in n for n, _ in trained.named_parameters())
    before, after = dict(init.named_parameters()), dict(trained.named_parameters())
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(before[q], after[q]), "a LoRA target: the merged adapter must move it"
    assert torch.equal(before["model.norm.weight"], after["model.norm.weight"]), "not a LoRA target: must not move"
    emb0, emb1 = before["model.embed_tokens.weight"], after["model.embed_tokens.weight"]
    tags = tag_ids(tok, PromptLayout.from_format("<think{i}>", 4, chat=False).all_tags)
    changed = {int(i) for i in (emb0 != emb1).any(dim=1).nonzero().flatten()}
    assert changed and changed <= set(tags), (changed, tags)


def test_preflight_lists_every_setting_this_machine_cannot_run(tmp_path: Path, trace_dir: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Checked before any model loads, all at once (nothing is built: models.build is never reached)."""
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setattr(models, "build", lambda *a, **k: pytest.fail("a model was built before the check"))
    cfg = tiny_cfg(**{"model.dtype": "float16", "model.pure_dtype": True, "model.lora_rank": 4,
                      "train.loss_kernel": "liger", "model.attn_implementation": "flash_attention_2"})
    with pytest.raises(ValueError, match="5 setting") as e:
        run_stage(cfg, "ssft", trace_dir / "train.parquet", tmp_path / "m", tmp_path / "ck")
    for field in ("model.dtype=float16", "model.pure_dtype", "model.lora_rank", "train.loss_kernel",
                  "flash_attention_2"):
        assert field in str(e.value)


def test_two_runs_write_the_same_model_directory_bytes(tmp_path: Path, trace_dir: Path) -> None:
    """Wall-clock values (seconds, tokens/s, host ms) go beside the checkpoints: the model directory, a DVC
    output, depends on code, params and data only, so its dvc.lock hash is the same for every run."""
    for run in ("a", "b"):
        _train(tmp_path / run, trace_dir, "ssft")
    a, b = (tmp_path / run / "models" / "ssft" for run in ("a", "b"))
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
    for f in a.iterdir():
        assert f.read_bytes() == (b / f.name).read_bytes(), f.name
    timing = json.loads((tmp_path / "a" / "ckpt" / "ssft" / "timing.json").read_text())
    assert timing["train_seconds"] > 0 and any("tokens_per_s" in h for h in timing["log_history"])
