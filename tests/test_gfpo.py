"""GFPO: group-relative advantages, a loss that reaches the tag position only, rollouts under one of the N tags,
rewards read from the rollout they score, tag-free inference, and the stage through the CLI (GRPO for sft)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_cfg

from ssft.generation.hf import HfSampler
from ssft.generation.sampler import Sample
from ssft.train import gfpo, models, rollouts
from ssft.train.forking import PromptLayout, prompt_ids, question_ids, tag_ids
from ssft.train.trainer import run_stage


def test_advantages_are_relative_to_each_question_group() -> None:
    rewards = np.array([[1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    adv = gfpo.advantages(rewards, scale=False)
    assert np.allclose(adv.mean(axis=1), 0.0), "each group is centred on its own mean"
    assert adv[0, 0] == pytest.approx(0.25) and adv[1, 0] == pytest.approx(-0.25)
    scaled = gfpo.advantages(rewards, scale=True)
    assert np.allclose(scaled.std(axis=1), 1.0, atol=1e-4), "scaled by each group's own std"
    assert np.all(gfpo.advantages(np.ones((1, 4)), scale=True) == 0), "a group that agrees teaches nothing"


def test_the_gfpo_loss_reaches_the_tag_position_only() -> None:
    """Autograd: of (B, T, V) logits, only each row's tag position gets a gradient."""
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 11, requires_grad=True)
    at = torch.tensor([2, 4, 0])
    picked = torch.tensor([[0, 1, 2, 0], [1, 1, 2, 2], [0, 0, 0, 1]])
    old = torch.full((3, 4), -1.1)
    adv = torch.randn(3, 4)
    ref = torch.log_softmax(torch.randn(3, 3), -1)
    loss, _ = gfpo.tag_policy_loss(logits, at, [5, 6, 9], picked, old, adv, clip=0.2, kl=0.1, ref_logp=ref)
    loss.backward()
    assert logits.grad is not None
    grad = logits.grad.abs().sum(-1)  # (B, T)
    for b in range(3):
        for t in range(7):
            assert (grad[b, t] > 0) == (t == int(at[b])), f"row {b} position {t}"
    assert logits.grad[torch.arange(3), at][:, [0, 1, 2, 3, 4, 7, 8, 10]].abs().sum() == 0, "non-tag ids"


def test_grpo_on_every_token_reaches_the_reasoning() -> None:
    logp = torch.log(torch.full((6,), 0.3)).requires_grad_()
    gfpo.token_policy_loss(logp, logp.detach(), torch.tensor([1.0, 1, 1, -1, -1, -1]), clip=0.2).backward()
    assert logp.grad is not None and bool((logp.grad != 0).all())


@pytest.fixture
def trained(tmp_path: Path, trace_dir: Path) -> Path:
    """A tiny SSFT model (tags 1..4) and its sft twin under tmp_path/models."""
    for method in ("ssft", "sft"):
        run_stage(tiny_cfg(**{"train.max_steps": 16}), method, trace_dir / "train.parquet",
                  tmp_path / "models" / method, tmp_path / "ck" / method)
    return tmp_path / "models"


def test_rollouts_are_written_under_one_of_the_n_tags(trained: Path) -> None:
    """Even where the model's most likely next token is not a tag, the tag comes from the N tags only."""
    model, tok, meta = models.load(trained / "ssft")
    layout = PromptLayout.from_meta(meta)
    sampler = HfSampler(model, tok)
    qs = ["1+2+3+4?", "9+8+7+6?", "5+5+5+5?"]
    heads = [question_ids(tok, layout, q) for q in qs]
    full = sampler.tag_logprobs(heads, list(range(len(tok))))  # every id of the vocabulary
    tags = tag_ids(tok, layout.tags)
    assert not set(full.argmax(1)) <= set(tags), "the fixture should prefer a non-tag token somewhere"
    out = rollouts.generate(sampler, tok, layout, qs, 6, "sampled_tag", np.random.default_rng(0), 1.0,
                            max_new_tokens=8)
    assert out.tags.shape == (3, 6) and set(out.tags.ravel()) <= {1, 2, 3, 4}
    assert np.allclose(out.probs.sum(1), 1.0)
    greedy = rollouts.pick(out.probs, 5, "greedy_tag", np.random.default_rng(0))
    assert (greedy == out.probs.argmax(1)[:, None] + 1).all()


class TagEcho:
    """A sampler whose answer depends only on the prompt's tag: tag 2 answers right, every other tag wrong.
    It stands in for a model with one good mode, so a reward read from another rollout shows."""

    def __init__(self, real: HfSampler, tag2: int, answers: dict[tuple[int, ...], str]) -> None:
        self.real, self.tag2, self.answers = real, tag2, answers

    def tag_logprobs(self, prompts, tag_ids):  # noqa: ANN001, ANN201
        return np.log(np.full((len(prompts), len(tag_ids)), 1 / len(tag_ids)))

    def generate(self, prompts, n, temperature, top_p=1.0, max_new_tokens=64, stop_ids=None, seed=None):  # noqa: ANN001, ANN201
        out = []
        for p in prompts:
            head = tuple(p[:-1])
            text = f"#{self.answers[head]}" if p[-1] == self.tag2 else "#-1"
            out.append([Sample(text, 2, (1, 2))] * n)
        return out


def test_each_reward_scores_its_own_rollout(trained: Path, trace_dir: Path) -> None:
    from ssft.data import grading, traces

    cfg = tiny_cfg(**{"gfpo.rollouts": 8})
    model, tok, meta = models.load(trained / "ssft")
    layout = PromptLayout.from_meta(meta)
    questions = traces.load_questions(trace_dir / "train.parquet")[:4]
    answers = {tuple(prompt_ids(tok, layout, q.question, 2)[:-1]): q.answer for q in questions}
    sampler = TagEcho(HfSampler(model, tok), tag_ids(tok, layout.tags)[1], answers)
    batch = gfpo.sample_batch(cfg, sampler, tok, layout, True, questions, grading.grader(cfg),  # type: ignore[arg-type]
                              np.random.default_rng(3), seed=0)
    assert batch.picked is not None and len(set(batch.picked.ravel())) > 1, "rollouts under several tags"
    assert (batch.rewards == (batch.picked == 1)).all(), "reward k must score rollout k (tag 2 answers right)"


def test_rewarding_one_tag_moves_the_tag_distribution_towards_it(trained: Path, trace_dir: Path) -> None:
    """Only tag 2's rollouts answer right: a few GFPO steps raise P(tag 2 | question), and only the tag choice
    was trained (the rollouts' reasoning never entered the loss)."""
    from ssft.data import traces

    cfg = tiny_cfg(**{"gfpo.steps": 3, "gfpo.questions_per_step": 8, "gfpo.rollouts": 4, "gfpo.lr": 0.01})
    policy = gfpo.Policy(cfg, trained / "ssft")
    questions = traces.load_questions(trace_dir / "train.parquet")
    answers = {tuple(prompt_ids(policy.tokenizer, policy.layout, q.question, 2)[:-1]): q.answer for q in questions}
    policy.sampler = TagEcho(policy.sampler, policy.tags[1], answers)  # type: ignore[assignment]
    before = policy.tag_logp(questions).exp().mean(0)
    history = gfpo.train(cfg, policy, questions, lambda step, m: None)
    after = policy.tag_logp(questions).exp().mean(0)
    assert after[1] > before[1] + 0.02, (before, after)
    assert all(0 < h["reward_mean"] < 1 for h in history)


def test_the_gfpo_stage_saves_a_model_that_keeps_its_tags_and_statistics(tmp_path: Path, trained: Path,
                                                                             trace_dir: Path) -> None:
    cfg = tiny_cfg(**{"gfpo.steps": 3, "gfpo.questions_per_step": 4, "gfpo.rollouts": 4, "gfpo.lr": 0.01,
                      "gfpo.max_new_tokens": 16})
    seen: list[tuple[int, dict]] = []
    stats = gfpo.run_stage(cfg, "ssft", trained, trace_dir / "train.parquet", tmp_path / "rl" / "ssft",
                           lambda step, m: seen.append((step, m)))
    assert [s for s, _ in seen] == [1, 2, 3] and all("reward_mean" in m and "pick_rate_tag1" in m for _, m in seen)
    assert stats["scope"] == "tag" and len(stats["tag_distribution_after"]) == 4
    _, _, meta = models.load(tmp_path / "rl" / "ssft")
    assert meta["method"] == "ssft" and meta["stage"] == "gfpo" and meta["tags"] == PromptLayout.from_meta(
        meta).meta()["tags"]
    saved = json.loads((tmp_path / "rl" / "ssft" / gfpo.GFPO_FILE).read_text())
    assert len(saved["steps"]) == 3
    assert (tmp_path / "rl" / "ssft" / models.STATS_FILE).exists(), "Eq. 4's training statistics travel along"


class Alternate:
    """A sampler for an untagged model: every other rollout of a question answers right, and the right ones
    open with token ``right``, the wrong ones with ``wrong``."""

    def __init__(self, answers: dict[tuple[int, ...], str], right: int, wrong: int) -> None:
        self.answers, self.right, self.wrong = answers, right, wrong

    def generate(self, prompts, n, temperature, top_p=1.0, max_new_tokens=64, stop_ids=None, seed=None):  # noqa: ANN001, ANN201
        return [[Sample(f"#{self.answers[tuple(p)]}", 2, (self.right, self.right)) if k % 2 else
                 Sample("#-1", 2, (self.wrong, self.wrong)) for k in range(n)] for p in prompts]


def test_grpo_on_the_sft_model_trains_every_token(trained: Path, trace_dir: Path) -> None:
    """The baseline: the same rollouts and rewards, the loss on every generated token of the untagged model."""
    from ssft.data import traces

    cfg = tiny_cfg(**{"gfpo.steps": 2, "gfpo.questions_per_step": 4, "gfpo.rollouts": 4, "gfpo.lr": 0.01})
    policy = gfpo.Policy(cfg, trained / "sft")
    assert policy.scope == "all"
    questions = traces.load_questions(trace_dir / "train.parquet")
    answers = {tuple(prompt_ids(policy.tokenizer, policy.layout, q.question, None)): q.answer for q in questions}
    token, wrong = policy.tokenizer.convert_tokens_to_ids("7"), policy.tokenizer.convert_tokens_to_ids("3")
    policy.sampler = Alternate(answers, token, wrong)  # type: ignore[assignment]
    head = [prompt_ids(policy.tokenizer, policy.layout, questions[0].question, None)]
    before = float(torch.log_softmax(gfpo.tag_logits(policy.model, head, policy.pad)[0, -1].detach(), -1)[token])
    history = gfpo.train(cfg, policy, questions, lambda step, m: None)
    after = float(torch.log_softmax(gfpo.tag_logits(policy.model, head, policy.pad)[0, -1].detach(), -1)[token])
    assert after > before + 0.01, "the rewarded tokens became likelier: the loss reached the generated tokens"
    assert "pick_rate_tag1" not in history[0] and all(h["reward_mean"] == 0.5 for h in history)
    with pytest.raises(ValueError, match="gfpo.scope=tag on a sft model"):
        gfpo.Policy(tiny_cfg(**{"gfpo.scope": "tag"}), trained / "sft")


def test_tag_free_metrics_recompute_from_the_details(trained: Path, trace_dir: Path, tmp_path: Path) -> None:
    """pass@1_self, the pick rates and the tag entropy follow from details.jsonl with this test's own code; the
    greedy_tag set writes every sample of a question under its argmax tag."""
    from collections import Counter

    from ssft.eval.evaluate import evaluate

    cfg = tiny_cfg()
    m = evaluate(cfg, trained / "ssft", trace_dir / "eval.parquet", tmp_path / "r", trace_dir / "train.parquet")
    rows = [json.loads(line) for line in (tmp_path / "r" / "details.jsonl").read_text().splitlines()]
    picked = [r for r in rows if r["set"] == "self_sampled"]
    greedy = [r for r in rows if r["set"] == "self_greedy"]
    questions = {r["question_id"] for r in picked}
    assert len(picked) == len(greedy) == cfg.eval.samples * len(questions)
    assert all(r["tag"] in (1, 2, 3, 4) for r in picked + greedy)
    per_q = [np.mean([r["correct"] for r in picked if r["question_id"] == q]) for q in sorted(questions)]
    assert m["pass@1_self"] == pytest.approx(np.mean(per_q))
    counts = Counter(r["tag"] for r in picked)
    for t in range(1, 5):
        assert m[f"pick_rate_tag{t}"] == pytest.approx(counts[t] / len(picked))
    probs = {r["question_id"]: np.array(r["tag_probs"]) for r in picked}
    assert m["tag_entropy_self"] == pytest.approx(np.mean([-(p * np.log(p)).sum() for p in probs.values()]))
    for r in greedy:
        assert r["tag"] == int(np.argmax(probs[r["question_id"]])) + 1, "greedy_tag writes under the argmax tag"
    sft = evaluate(cfg, trained / "sft", trace_dir / "eval.parquet", tmp_path / "s", trace_dir / "train.parquet")
    assert "pass@1_self" not in sft, "an untagged model has no tag to pick"


def test_ssft_sample_with_tags_self_prints_the_tag_distribution(trained: Path, capsys: pytest.CaptureFixture
                                                                ) -> None:
    import yaml
    from conftest import TINY

    from ssft.cli import main

    params = trained.parent / "params.yaml"
    params.write_text(yaml.safe_dump({**TINY, "tracking": {"enabled": False}}))
    args = ["--params", str(params), "sample", "1+2+3+4?", "--model", str(trained / "ssft"), "--tags", "self"]
    assert main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("P(tag | question): <think1>") and len(out) == 2 and "<think" in out[1]


@pytest.mark.slow
def test_the_rl_run_nests_under_the_training_run_and_holds_its_evaluation(tmp_path: Path) -> None:
    """MLflow: gfpo is a child run of the training run, with per-step reward and pick rates, the tag
    distribution figure, and the RL model's evaluation as its own child run."""
    import mlflow
    import yaml
    from conftest import TINY

    from ssft.cli import main

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        **TINY, "tracking": {"uri": uri, "artifacts": str(tmp_path / "art"), "system_metrics": False},
        "gfpo": {"steps": 2, "questions_per_step": 4, "rollouts": 4, "max_new_tokens": 12}}))
    base = ["--params", str(tmp_path / "params.yaml")]
    models_dir, data = str(tmp_path / "models"), str(tmp_path / "data")
    assert main([*base, "traces", "--out", data]) == 0
    assert main([*base, "train", "--method", "ssft", "--traces", data, "--models", models_dir,
                 "--checkpoints", str(tmp_path / "ck")]) == 0
    assert main([*base, "gfpo", "--method", "ssft", "--traces", data, "--models", models_dir,
                 "--out", str(tmp_path / "models" / "gfpo")]) == 0
    assert main([*base, "evaluate", "--method", "ssft", "--traces", data, "--models", str(tmp_path / "models" / "gfpo"),
                 "--results", str(tmp_path / "results" / "gfpo")]) == 0
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("ssft-add4").experiment_id])
    train = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    rl = next(r for r in runs if r.data.tags.get("stage") == "gfpo")
    assert rl.data.tags["mlflow.parentRunId"] == train.info.run_id and rl.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(rl.info.run_id, "gfpo/reward_mean")] == [1, 2]
    assert {"gfpo/pick_rate_tag1", "gfpo/kl"} <= set(rl.data.metrics)
    assert {"gfpo/tag_distribution.png", "gfpo/gfpo_stats.json"} <= {
        a.path for a in client.list_artifacts(rl.info.run_id, "gfpo")}
    evaluation = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == rl.info.run_id]
    assert evaluation and "eval/pass_at_1_self" in evaluation[0].data.metrics
    # Registered as its own version, compared like with like: its own aliases; no sft+grpo run here, so no
    # champion-gfpo, and stage 1's aliases are not touched.
    assert main([*base, "register", "--method", "ssft", "--traces", data, "--models", str(tmp_path / "models" / "gfpo"),
                 "--results", str(tmp_path / "results" / "gfpo"), "--out", str(tmp_path / "reg.json")]) == 0
    version = client.get_model_version_by_alias("ssft-add4", "candidate-gfpo")
    assert version.tags["stage"] == "gfpo" and version.run_id == rl.info.run_id
    assert "no evaluated sft run" in version.tags["champion_decision"]
    assert {a for m in client.search_registered_models() for a in m.aliases} == {"candidate-gfpo"}


def test_tag_rows_trains_only_the_heads_tag_rows(trained: Path, trace_dir: Path) -> None:
    from ssft.data import traces

    cfg = tiny_cfg(**{"gfpo.steps": 2, "gfpo.questions_per_step": 8, "gfpo.rollouts": 4, "gfpo.lr": 0.01,
                      "gfpo.params": "tag_rows"})
    policy = gfpo.Policy(cfg, trained / "ssft")
    questions = traces.load_questions(trace_dir / "train.parquet")
    answers = {tuple(prompt_ids(policy.tokenizer, policy.layout, q.question, 2)[:-1]): q.answer for q in questions}
    policy.sampler = TagEcho(policy.sampler, policy.tags[1], answers)  # type: ignore[assignment]
    before = {n: p.detach().clone() for n, p in policy.model.named_parameters()}
    gfpo.train(cfg, policy, questions, lambda step, m: None)
    head = policy.model.get_output_embeddings().weight
    changed = {n for n, p in policy.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(p.data_ptr() == head.data_ptr() for n, p in policy.model.named_parameters()
                           if n in changed), changed
    moved_rows = {int(r) for r in (head.detach() != before[next(iter(changed))]).any(1).nonzero().flatten()}
    assert moved_rows and moved_rows <= set(policy.tags), "only the tags' rows move"
