"""How a generation's answer is read and checked: the synthetic task itself, or ``data.checker`` against the
question's reference answer. One grader for evaluation (``ssft.eval.evaluate``'s Judge) and for GFPO's
rewards (``ssft.train.gfpo``), so a rollout is rewarded exactly when evaluation would count it correct."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ssft.config import Config
from ssft.data.checkers import get_checker
from ssft.data.tasks import extract_answer, get_task
from ssft.data.traces import QuestionTraces


@dataclass(frozen=True)
class Grader:
    answer: Callable[[str], str | None]               # the extracted, normalised answer a vote counts
    correct: Callable[[QuestionTraces, str], bool]    # is this generation right for this question?


def grader(cfg: Config) -> Grader:
    if cfg.data.source == "synthetic":
        task = get_task(cfg.task.name, marked=cfg.task.marked, **cfg.task.options)
        return Grader(extract_answer, lambda q, text: task.check(task.parse(q.question_id, q.question, q.answer),
                                                                 text))
    checker = get_checker(cfg.data.checker)
    return Grader(checker.extract, lambda q, text: checker.correct(text, q.answer))
