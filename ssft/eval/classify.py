"""Which teacher does a generation read like? A text classifier trained on the training traces' teachers.

Synthetic tasks know each trace's strategy and classify generations by structure; real teachers have no
such parser, so tag specialisation is measured against the teachers instead: a TF-IDF (character n-grams
within words plus word uni/bigrams) logistic regression learns ``trace -> teacher`` from the TRAINING
traces and labels every generation. Its accuracy on a held-out share of the training questions (split by
question, so no question is on both sides) is reported with it: a purity computed with a 55%-accurate
classifier means little, and the number says so. The evaluation questions are never used here.

    clf = fit_teacher_classifier(train.trace, train.source, train.question_id, seed=cfg.seed)
    clf.predict(generations)  # -> ["teacherA", None, ...]; None for an empty generation
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ssft.errors import UserError


@dataclass
class TeacherClassifier:
    """Predicts a teacher name per text. ``heldout_accuracy`` is measured on held-out training questions
    (``heldout_questions``) before the final model is refitted on every trace."""

    labels: list[str]
    heldout_accuracy: float
    heldout_questions: tuple[str, ...] = ()
    model: Any = field(default=None, repr=False)  # a fitted sklearn Pipeline; None with a single teacher

    def predict(self, texts: Sequence[str]) -> list[str | None]:
        """The teacher each text reads like; None for an empty (or whitespace-only) text."""
        keep = [i for i, t in enumerate(texts) if t and t.strip()]
        out: list[str | None] = [None] * len(texts)
        if not keep:
            return out
        found = [self.labels[0]] * len(keep) if self.model is None else self.model.predict([texts[i] for i in keep])
        for i, label in zip(keep, found):
            out[i] = str(label)
        return out


def _pipeline(seed: int) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import FeatureUnion, Pipeline

    # Characters catch punctuation habits ("=>", "- ", "**"); words catch phrasing ("First,", "Therefore").
    # The word pattern keeps punctuation runs as tokens, which the default pattern drops.
    features = FeatureUnion([
        # Capped vocabularies: long real traces (thousands of tokens each) stay cheap to fit and hold.
        ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True, max_features=100_000,
                                  dtype=np.float32)),
        ("words", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, max_features=100_000,
                                  token_pattern=r"(?u)\b\w+\b|[^\w\s]+", dtype=np.float32)),
    ])
    return Pipeline([("tfidf", features), ("logreg", LogisticRegression(max_iter=1000, random_state=seed))])


def heldout_split(groups: Sequence[str], seed: int, heldout_share: float) -> tuple[np.ndarray, np.ndarray]:
    """(fit, held-out) row indices; every question's traces fall on one side only."""
    from sklearn.model_selection import GroupShuffleSplit

    if len(set(groups)) < 2:
        raise UserError(f"teacher classifier: need traces of >= 2 questions to hold some out, got {len(set(groups))}")
    split = GroupShuffleSplit(n_splits=1, test_size=heldout_share, random_state=seed)
    fit, held = next(split.split(np.zeros(len(groups)), groups=list(groups)))
    return fit, held


def fit_teacher_classifier(texts: Sequence[str], teachers: Sequence[str], groups: Sequence[str], seed: int,
                           heldout_share: float = 0.2) -> TeacherClassifier:
    """Fit on the training traces (``texts``, their ``teachers``, their question ids as ``groups``): score
    on a held-out share of the questions, then refit on all traces. Deterministic for a given seed."""
    if not (len(texts) == len(teachers) == len(groups)):
        raise ValueError(f"teacher classifier: {len(texts)} texts, {len(teachers)} teachers, {len(groups)} groups; "
                         "pass one teacher and one question id per trace")
    labels = sorted(set(teachers))
    if len(labels) == 1:  # nothing to tell apart: every generation reads like the one teacher
        return TeacherClassifier(labels=labels, heldout_accuracy=1.0)

    x, y = np.asarray(texts, dtype=object), np.asarray(teachers, dtype=object)
    fit, held = heldout_split(groups, seed, heldout_share)
    scorer = _pipeline(seed).fit(x[fit], y[fit])
    accuracy = float(np.mean(scorer.predict(x[held]) == y[held]))
    return TeacherClassifier(labels=labels, heldout_accuracy=accuracy,
                             heldout_questions=tuple(sorted({str(groups[i]) for i in held})),
                             model=_pipeline(seed).fit(x, y))
