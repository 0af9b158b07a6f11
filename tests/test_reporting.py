"""What users read (issue 18.3-5, 8, 10): the report beside its table, the trainer's terminal lines, the library
noise the CLI silences, the end of a watched flow run. Real files, real loggers, Prefect's own test harness."""

import json
import logging
from pathlib import Path

import pytest

from ssft.eval.report import write_report

# A run of the demo as issue 18 saw it: ssft's headline tag (validation) ahead of sft, its tag 1 behind.
SSFT = {"pass@1": 0.9225, "pass@1_val_tag": 0.988, "pass@1_tag1": 0.771, "pass@1_best_tag": 0.97, "val_tag": 2,
        "best_tag": 4, "acc_tag1": 0.771, "acc_tag2": 0.988, "len_tag1": 34.7, "len_tag2": 25.9, "cons@N": 0.9845,
        "pass@N": 0.99, "coverage": 3.78, "purity": 0.95, "nmi": 1.0, "coverage_greedy": 3.8, "pass@1_greedy": 0.93,
        "pass@N_greedy": 0.99}
SFT = {"pass@1": 0.906, "pass@1_val_tag": 0.906, "pass@1_tag1": 0.906, "pass@1_best_tag": 0.906, "val_tag": 0,
       "best_tag": 0, "cons@N": 0.93, "pass@N": 0.985, "coverage": 2.58, "purity": 0.25, "nmi": 0.0}
UNTRAINED = {"pass@1": 0.0, "pass@1_val_tag": 0.0, "pass@1_tag1": 0.0, "val_tag": 1, "cons@N": 0.0, "pass@N": 0.0,
             "coverage": 1.3, "purity": 0.4, "nmi": 0.1, "pass@1_greedy": 0.0, "pass@N_greedy": 0.0,
             "coverage_greedy": 1.0}


def _results(tmp_path: Path, **methods: dict) -> Path:
    for m, metrics in methods.items():
        (tmp_path / m).mkdir(parents=True)
        (tmp_path / m / "metrics.json").write_text(json.dumps(metrics))
    return tmp_path


def test_the_report_says_which_tag_each_row_uses_and_why_tag1_trails(tmp_path: Path) -> None:
    results = _results(tmp_path, ssft=SSFT, sft=SFT)
    line = write_report(results, ["ssft", "sft"])
    text = (results / "summary.md").read_text()
    assert "**" not in text and "**" not in line, "plain text: the terminal shows no bold markers"
    assert line.count("\n") == 0 and "| metric |" not in line, "the stage prints one line; the table once, later"
    assert "`pass@1_tag1`: always `<think1>`, the paper's protocol" in text
    assert "- chosen here: ssft val_tag 2, best_tag 4." in text, "sft (untagged) has no tag to name"
    assert ("- ssft: `pass@1_tag1` 0.771 trails `pass@1_val_tag` 0.988. Matching decides which tag learns which "
            "mode, so tag 1 is an arbitrary one: here it is right on 0.771 of its samples against tag 2's 0.988, "
            "and its generations run 35 tokens against 26") in text
    assert text.index("| metric |") < text.index("Which tag each pass@1 row samples"), "beside (after) the table"
    assert "| cons@N ◀ | 0.985 | 0.930 |" in text and "| pass@1 | 0.922 | 0.906 |" in text


def test_coverage_and_purity_mean_nothing_without_a_correct_answer(tmp_path: Path) -> None:
    """Issue 18.10: an untrained model got a 'coverage ahead' headline."""
    results = _results(tmp_path, ssft=UNTRAINED, sft=SFT)
    line = write_report(results, ["ssft", "sft"])
    text = (results / "summary.md").read_text()
    assert "coverage n/a (ssft answered nothing correctly)" in line and "coverage 1.300" not in line
    assert "| coverage ◀ | n/a | 2.580 |" in text and "| purity | n/a | 0.250 |" in text
    assert "| coverage_greedy | n/a | – |" in text, "the greedy set too"
    assert "n/a: coverage, purity and nmi of a method that answered nothing correctly" in text


def test_epoch_lines_are_rounded_and_sft_has_no_matching_statistics() -> None:
    from ssft.train.matching import MatchStats
    from ssft.train.trainer import epoch_line

    st = MatchStats(4)
    for q in range(3):
        st.record(f"q{q}", ["l2r", "r2l", "pair", "sort"], [None] * 4)
    assert epoch_line(st.close_epoch(0, 8)) == "epoch 0 (step 8): 3 questions, one shared tag (no matching)"
    st = MatchStats(4)
    st.record("q0", ["l2r", "r2l"], [1, 2], [2.140255012791604, 2.0])
    st.record("q1", ["l2r", "r2l"], [2, 1], [1.5, 1.25])
    assert epoch_line(st.close_epoch(0, 8)) == ("epoch 0 (step 8): 2 questions, assignment entropy 0.69, matched "
                                                "cost 1.72, tag match 1:1.00 2:1.00 3:0.00 4:0.00, dead tags 3,4")


def test_step_lines_name_their_method(caplog: pytest.LogCaptureFixture) -> None:
    from types import SimpleNamespace

    from ssft.train.trainer import ProgressLineCallback

    cb = ProgressLineCallback("random")
    state = SimpleNamespace(global_step=0, max_steps=10, is_world_process_zero=True)
    cb.on_train_begin(None, state, None)
    state.global_step = 2
    with caplog.at_level(logging.INFO, logger="ssft.train.trainer"):
        cb.on_log(None, state, None, logs={"loss": 2.5, "learning_rate": 1e-3})
    assert caplog.messages and caplog.messages[-1].startswith("random step 2/10  loss 2.5000"), caplog.messages


def test_the_cli_silences_library_noise_even_after_mlflow_configures_its_loggers(tmp_path: Path) -> None:
    from ssft.cli import main

    assert main(["--params", str(tmp_path / "missing.yaml"), "traces"]) == 2  # logging is set up first
    import mlflow  # noqa: F401 - its dictConfig resets the levels of its own loggers
    import mlflow.transformers  # noqa: F401

    def shown(name: str, level: int, msg: str) -> bool:
        logger = logging.getLogger(name)
        return logger.isEnabledFor(level) and bool(logger.filter(logger.makeRecord(name, level, "f", 1, msg, (), None)))

    assert not shown("httpx", logging.INFO, 'HTTP Request: POST http://127.0.0.1:8000/v1/completions "200 OK"')
    assert not shown("mlflow.system_metrics.system_metrics_monitor", logging.INFO, "Started monitoring system metrics.")
    assert not shown("matplotlib.font_manager", logging.WARNING, "Matplotlib is building the font cache")
    assert not shown("mlflow.transformers", logging.WARNING, "The model card could not be retrieved from the hub due "
                     "to ... make sure your Internet connection is on.")
    assert shown("mlflow.transformers", logging.WARNING, "Some other warning"), "only the hub notices go"
    assert shown("mlflow.system_metrics.system_metrics_monitor", logging.WARNING, "Failed to sample GPU")


def test_a_watched_run_ends_with_its_summary_line(capsys: pytest.CaptureFixture) -> None:
    """Issue 18.8: `python -m flows.watch ssft/smoke` ended on its state, no result; it now ends on the headline."""
    import asyncio

    from prefect import flow
    from prefect.artifacts import create_markdown_artifact
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    from flows.watch import summary_line

    @flow
    def summarised() -> str:
        create_markdown_artifact("# SSFT vs baselines\n\nHeadline, ssft vs baselines: cons@N 0.985 vs sft 0.930 "
                                 "(+0.055).\n\n| metric |", key="ssft-smoke-summary")
        return str(flow_run.get_id())

    run_id = summarised()

    async def line() -> str | None:
        async with get_client() as client:
            return await summary_line(client, run_id)

    assert asyncio.run(line()) == "Headline, ssft vs baselines: cons@N 0.985 vs sft 0.930 (+0.055)."
