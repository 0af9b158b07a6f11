"""Evaluation: the files and keys the issue names, generation counts, and metrics recomputable from details."""

import json
from pathlib import Path

import pytest
from conftest import tiny_cfg

from ssft.eval.evaluate import evaluate
from ssft.eval.report import write_report
from ssft.train.trainer import run_stage

KEYS = {"pass@1", "pass@1_best_tag", "pass@1_val_tag", "dead_tags", "cons@N", "cons@N_ties", "cons@N_split", "pass@N",
        "coverage", "purity", "nmi", "blended", "cons@8", "pass@8", "pass@1_tag1"}


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ssft.data import traces
    from ssft.data.sources import synthetic
    from ssft.data.tasks import get_task

    root = tmp_path_factory.mktemp("eval")
    cfg = tiny_cfg(**{"eval.ks": [2, 8], "eval.temperatures": [0.05, 3.0]})
    for split, rows in synthetic.synthetic_splits(get_task("add4", marked=True), 32, 8, 0, n_val=8).items():
        traces.write(rows, root / "data" / f"{split}.parquet")
    for method in ("ssft", "sft"):
        run_stage(cfg, method, root / "data" / "train.parquet", root / "models" / method, root / "ckpt" / method)
        evaluate(cfg, root / "models" / method, root / "data" / "eval.parquet", root / "results" / method,
                 val_file=root / "data" / "val.parquet")
    return root


@pytest.mark.parametrize("method, greedy_per_q", [("ssft", 4), ("sft", 1)])
def test_outputs_and_keys(evaluated: Path, method: str, greedy_per_q: int) -> None:
    m = json.loads((evaluated / "results" / method / "metrics.json").read_text())
    assert KEYS <= set(m) and {k + "_greedy" for k in ("pass@1", "cons@N", "coverage", "purity", "nmi")} <= set(m)
    assert all(isinstance(v, (int, float)) for v in m.values())
    rows = [json.loads(line) for line in (evaluated / "results" / method / "details.jsonl").read_text().splitlines()]
    greedy = [r for r in rows if r["set"] == "greedy"]
    sampled = [r for r in rows if r["set"] == "sampled"]
    assert len(greedy) == 8 * greedy_per_q and len(sampled) == 8 * 8
    assert {"question_id", "tag", "sample", "temperature", "text", "answer", "correct", "mode"} <= set(rows[0])
    if method == "sft":
        assert {r["tag"] for r in rows} == {None} and m["coverage_greedy"] <= 1
    else:
        assert {r["tag"] for r in greedy} == {1, 2, 3, 4}
        assert m.get("acc_tag1") is not None


def _recompute(rows: list[dict], n: int) -> dict[str, float]:
    """pass@1, per-tag accuracy, cons@N and coverage straight from details rows, written independently of
    ssft.eval.metrics: a round is the n samples with the same index (tagged: one per tag) or n consecutive
    sample indices (untagged); the vote needs a unique most common answer; gold = a correct row's answer."""
    from collections import Counter
    from statistics import mean

    by_q: dict[str, list[dict]] = {}
    for r in rows:
        by_q.setdefault(r["question_id"], []).append(r)
    out = {"pass@1": mean(mean(r["correct"] for r in qr) for qr in by_q.values())}
    tags = sorted({r["tag"] for r in rows if r["tag"] is not None})
    for t in tags:
        out[f"acc_tag{t}"] = mean(mean(r["correct"] for r in qr if r["tag"] == t) for qr in by_q.values())
    cons, cover = [], []
    for qr in by_q.values():
        gold = {r["answer"] for r in qr if r["correct"]}
        if tags:
            rounds = [[r for r in qr if r["sample"] == s] for s in sorted({r["sample"] for r in qr})]
        else:
            ordered = sorted(qr, key=lambda r: r["sample"])
            rounds = [ordered[i:i + n] for i in range(0, len(ordered) - n + 1, n)]
        votes = []
        for rnd in rounds:
            top = Counter(r["answer"] for r in rnd if r["answer"] is not None).most_common()
            unique = top and (len(top) == 1 or top[0][1] > top[1][1])
            votes.append(bool(unique) and top[0][0] in gold)
        cons.append(mean(votes))
        cover.append(mean(len({r["mode"] for r in rnd} - {None}) for rnd in rounds))
    return {**out, "cons@N": mean(cons), "coverage": mean(cover)}


@pytest.mark.parametrize("method", ["ssft", "sft"])
def test_metrics_recompute_from_details(evaluated: Path, method: str) -> None:
    m = json.loads((evaluated / "results" / method / "metrics.json").read_text())
    rows = [json.loads(line) for line in (evaluated / "results" / method / "details.jsonl").read_text().splitlines()]
    again = _recompute([r for r in rows if r["set"] == "sampled"], 4)
    assert again == pytest.approx({k: m[k] for k in again}), "metrics.json agrees with its details.jsonl"


@pytest.fixture
def echo(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """A stand-in sampler that answers with the tag it was prompted with ("think3>"): (module, tokenizer, layout,
    sampler)."""
    from ssft.eval import evaluate as ev
    from ssft.generation.sampler import Sample
    from ssft.train.forking import PromptLayout

    layout = PromptLayout.from_format("<think{i}>", 4, chat=False)

    class Tok:
        def decode(self, ids: list[int]) -> str:
            return "".join(chr(i) for i in ids)

    def prompt_ids(tokenizer, layout, question, tag):  # noqa: ANN001, ANN202
        return [ord(c) for c in f"{question}{layout.tag(tag)}"]

    class Echo:
        def generate(self, prompts, n, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            return [[Sample(Tok().decode(p).rsplit("<", 1)[1], 1, (0,)) for _ in range(n)] for p in prompts]

    monkeypatch.setattr(ev, "prompt_ids", prompt_ids)
    return ev, Tok(), layout, Echo()


@pytest.mark.parametrize("method", ["ssft", "sft"])
def test_the_temperature_sweep_samples_at_each_temperature(evaluated: Path, method: str) -> None:
    """eval.temperatures: one more sampled set per temperature, its metrics suffixed _t<T>; the main set's
    temperature is in the series too. Near-greedy sampling repeats itself, hot sampling does not."""
    m = json.loads((evaluated / "results" / method / "metrics.json").read_text())
    rows = [json.loads(line) for line in (evaluated / "results" / method / "details.jsonl").read_text().splitlines()]
    sweep = {t: [r for r in rows if r["set"] == "sweep" and r["temperature"] == t] for t in (0.05, 3.0)}
    assert all(len(rs) == 8 * 8 for rs in sweep.values())
    for t, rs in sweep.items():
        again = _recompute(rs, 4)
        assert again == pytest.approx({k: m[f"{k}_t{t:g}"] for k in again}), t
    assert m["pass@1_t0.7"] == m["pass@1"] and m["coverage_t0.7"] == m["coverage"]

    def alphabet(rs: list[dict]) -> int:  # cold sampling keeps to the few likeliest characters
        return len(set("".join(r["text"] for r in rs)))

    assert 2 * alphabet(sweep[0.05]) < alphabet(sweep[3.0]), (alphabet(sweep[0.05]), alphabet(sweep[3.0]))


@pytest.mark.parametrize("tagged", [True, False])
def test_metrics_agree_with_the_independent_recompute_on_varied_answers(tagged: bool) -> None:
    """The tiny trained models answer mostly wrong; here answers, ties, misses and modes vary (seeded)."""
    import random

    from ssft.eval import metrics
    from ssft.eval.evaluate import _as_generations

    rng = random.Random(0)
    rows = [{"question_id": f"q{q}", "tag": (k % 4) + 1 if tagged else None, "sample": k // 4 if tagged else k,
             "answer": (a := rng.choice(["1", "2", "3", None])), "correct": a == "1",
             "mode": rng.choice(["a", "b", "c", None]), "length": 5} for q in range(30) for k in range(16)]
    want = _recompute(rows, 4)
    got = metrics.compute_metrics(_as_generations(rows, 4), 4)
    assert 0.1 < want["cons@N"] < 0.9 and 0.1 < want["pass@1"] < 0.9
    assert want == pytest.approx({k: got[k] for k in want})


def test_each_tag_label_is_that_tags_generation(echo) -> None:  # noqa: ANN001
    """A generation labelled tag t was prompted with tag t."""
    ev, tok, layout, sampler = echo
    q = type("Q", (), {"question": "1+2+3+4?", "question_id": "q", "answer": "10"})()
    judge = ev.Judge(lambda text: text, lambda q, text: False, lambda pairs: [None] * len(pairs))
    for temperature in (None, 0.7, 1.3):
        rows = ev._generations(tiny_cfg(), sampler, ev.Prompts.tagged(tok, layout, [1, 2, 3, 4]), [q, q], temperature,
                               judge)
        assert rows and all(r["text"] == f"think{r['tag']}>" for r in rows), rows[:6]


def test_the_validation_tag_is_the_most_accurate_on_validation_questions(echo, tmp_path: Path) -> None:  # noqa: ANN001
    """Only tag 3 answers right on the validation questions: it is chosen, whatever tag 1 does elsewhere; no
    validation file, or an empty one, chooses nothing."""
    from ssft.data import traces
    from ssft.data.sources import synthetic
    from ssft.data.tasks import get_task

    ev, tok, layout, sampler = echo
    traces.write(synthetic.synthetic_splits(get_task("add4"), 4, 4, 0, n_val=6)["val"], tmp_path / "val.parquet")
    judge = ev.Judge(lambda text: text, lambda q, text: text == "think3>", lambda pairs: [None] * len(pairs))
    tag, acc = ev.validation_tag(tiny_cfg(), sampler, ev.Prompts.tagged(tok, layout, [1, 2, 3, 4]),
                                 tmp_path / "val.parquet", judge)
    assert tag == 3 and acc == {"val_acc_tag1": 0.0, "val_acc_tag2": 0.0, "val_acc_tag3": 1.0, "val_acc_tag4": 0.0}
    traces.write([], tmp_path / "empty.parquet")
    two = ev.Prompts.tagged(tok, layout, [1, 2])
    assert ev.validation_tag(tiny_cfg(), sampler, two, tmp_path / "empty.parquet", judge) == (None, {})
    assert ev.validation_tag(tiny_cfg(), sampler, two, None, judge) == (None, {})


def test_best_tag_comes_from_the_training_trajectories() -> None:
    from ssft.eval.evaluate import best_tag

    assert best_tag({"tag_trajectories": {"1": 30, "2": 31, "3": 44, "4": 44}}) == 3
    assert best_tag({"tag_trajectories": {"0": 99}}) is None and best_tag({}) is None


def test_report_puts_methods_side_by_side(evaluated: Path) -> None:
    line = write_report(evaluated / "results", ["ssft", "sft"])
    text = (evaluated / "results" / "summary.md").read_text()
    assert "| metric | ssft | sft |" in text and "| coverage_greedy |" in text and "| cons@N ◀ |" in text
    table = json.loads((evaluated / "results" / "summary.json").read_text())
    diff = table["ssft"]["cons@N"] - table["sft"]["cons@N"]
    assert f"cons@N {table['ssft']['cons@N']:.3f} vs sft {table['sft']['cons@N']:.3f} ({diff:+.3f})" in line
    assert "\n" not in line and line.split(": ", 1)[1] in text, "the stage prints the headline; the table: the file"
    assert json.loads((evaluated / "results" / "summary.json").read_text()).keys() == {"ssft", "sft"}
    with pytest.raises(FileNotFoundError, match="ssft evaluate --method random"):
        write_report(evaluated / "results", ["random"])


def test_training_questions_are_never_evaluated(evaluated: Path) -> None:
    """An eval file that overlaps the training traces (here: the train file itself) is refused, naming both."""
    from conftest import tiny_cfg

    data, model = evaluated / "data", evaluated / "models" / "ssft"
    with pytest.raises(ValueError, match=r"train.parquet: 32 of 32 evaluation questions are also in .*train.parquet"):
        evaluate(tiny_cfg(), model, data / "train.parquet", evaluated / "r2", data / "train.parquet")
    (evaluated / "r3.tmp").mkdir()
    (evaluated / "r3.tmp" / "stray.txt").write_text("from a killed run")
    evaluate(tiny_cfg(**{"eval.samples": 4, "eval.ks": [4]}), model, data / "eval.parquet", evaluated / "r3",
             data / "train.parquet")
    assert sorted(p.name for p in (evaluated / "r3").iterdir()) == ["details.jsonl", "metrics.json"]


def test_a_model_directory_without_weights_names_itself_and_the_fix(evaluated: Path, tmp_path: Path) -> None:
    import shutil

    from ssft.train import models

    broken = tmp_path / "ssft"
    shutil.copytree(evaluated / "models" / "ssft", broken)
    for f in broken.glob("*.safetensors"):
        f.unlink()
    with pytest.raises(FileNotFoundError, match=r"ssft: no weights \(\*.safetensors\).*run `ssft train`"):
        models.load(broken)


def test_report_rows_are_in_a_fixed_order_whatever_the_hash_seed(tmp_path: Path) -> None:
    """cons@k and pass@k of the same k used to swap places between runs (set order)."""
    import subprocess
    import sys

    code = ("from ssft.eval.report import markdown; "
            "print(markdown({'a': {'pass@8': 1.0, 'cons@8': 0.5, 'pass@16': 1.0, 'cons@16': 0.7, 'pass@1': 0.2}}))")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**__import__("os").environ, "PYTHONHASHSEED": str(seed)}).stdout for seed in range(6)}
    assert len(outs) == 1
    rows = [line.split(" | ")[0].strip("| ") for line in outs.pop().strip().splitlines()[2:]]
    assert rows == ["pass@1", "cons@8", "pass@8", "cons@16", "pass@16"]


def test_sample_answers_with_every_tag_and_set_goes_anywhere(evaluated: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    import yaml
    from conftest import TINY

    from ssft.cli import main

    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(TINY))
    model = str(evaluated / "models" / "ssft")
    assert main(["--params", str(p), "sample", "3+4+5+6?", "--model", model, "--set", "train.lr=5e-5"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(" -> ")[0] for line in lines] == [f"'<s>3+4+5+6?<think{t}>'" for t in (1, 2, 3, 4)]
    assert main(["--params", str(p), "sample", "3+4+5+6?", "--model", model, "--tags", "2,4"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2
    assert main(["--params", str(p), "sample", "3+4+5+6?", "--model", model, "--tags", "9"]) == 2
    sft = str(evaluated / "models" / "sft")
    assert main(["--params", str(p), "--set", "seed=1", "sample", "3+4+5+6?", "--model", sft]) == 0
    assert capsys.readouterr().out.strip().splitlines()[0].startswith("'<s>3+4+5+6?<think>'")


def test_prefix_forcing_opens_each_tag_with_its_strategy() -> None:
    """Tag t of a prefix-forced evaluation is prompted with strategy t's opening after the untagged prompt, and
    judged on that opening plus what the model wrote: a model that writes the rest of a forward walk whatever
    it is given walks forward under tag 1 (forced to the start's letter) and under tag 2 too (forced to the
    goal's letter, which it takes for the start's: forcing a letter does not choose the mode of such a model)."""
    from ssft.eval import evaluate as ev
    from ssft.generation.sampler import Sample
    from ssft.train.forking import PromptLayout, build_char_tokenizer

    cfg = tiny_cfg(**{"task.name": "pathstar", "task.marked": False, "task.options": {"arm_length": 2},
                      "eval.prefix_forced": ["sft"]})
    layout = PromptLayout.from_format("<think{i}>", 4, chat=False)
    tok = build_char_tokenizer(layout.all_tags)
    q = type("Q", (), {"question": "h=7;k=c+2,m=h+1,c=h+3,q=m+4;k?", "question_id": "q", "answer": "12"})()

    class Rest:
        def generate(self, prompts, n, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            self.prompts = [tok.decode(p) for p in prompts]
            return [[Sample("=7,c=h+3=10,k=c+2=12#12", 5, (0,)) for _ in range(n)] for _ in prompts]

    sampler = Rest()
    rows = ev._generations(cfg, sampler, ev.Prompts.forced(cfg, tok, layout), [q], None, ev.synthetic_judge(cfg))
    assert [(r["tag"], r["text"][0], r["mode"], r["correct"]) for r in rows] == [
        (1, "h", "forward", True), (2, "k", "forward", True)]
    assert [p[-len(q.question) - len("<think>") - 1:] for p in sampler.prompts] == [
        f"{q.question}<think>h", f"{q.question}<think>k"]


def test_prefix_forcing_is_for_untagged_methods_of_tasks_that_know_their_openings() -> None:
    with pytest.raises(ValueError, match="eval.prefix_forced"):
        tiny_cfg(**{"eval.prefix_forced": ["ssft"]})
    with pytest.raises(ValueError, match="eval.prefix_forced"):
        tiny_cfg(**{"eval.prefix_forced": ["sft"], "data.source": "import"})
