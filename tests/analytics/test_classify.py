"""Fault classification from labelled runs, and its stored state."""

from __future__ import annotations

import numpy as np
import pytest

from iip.analytics.monitoring import (
    ModelStateError,
    ScoringDataError,
    TrainingDataError,
    state_from_bytes,
    state_to_bytes,
)
from iip.analytics.monitoring.classify import FaultClassifier

VARIABLES = ("a", "b", "c", "d")


def run(rows: int, seed: int, offset: tuple[float, ...]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(rows, 4)) + np.asarray(offset)


def history(seed: int) -> list[tuple[str, np.ndarray]]:
    return [
        ("normal", run(300, seed, (0, 0, 0, 0))),
        ("fault 1", run(300, seed + 1, (4.0, 0, 0, 0))),
        ("fault 2", run(300, seed + 2, (0, 0, -4.0, 1.0))),
    ]


@pytest.mark.parametrize("lags", [0, 2])
def test_classes_are_recognised_with_probabilities(lags: int) -> None:
    classifier = FaultClassifier.fit(history(1), VARIABLES, lags=lags)
    assert classifier.classes == ("fault 1", "fault 2", "normal")
    for label, rows in history(50):
        probabilities = classifier.probabilities(rows)
        assert np.isnan(probabilities[:lags]).all()
        np.testing.assert_allclose(probabilities[lags:].sum(axis=1), 1.0)
        predicted = classifier.predict(rows)[lags:]
        assert np.mean([p == label for p in predicted]) > 0.9
        assert next(iter(classifier.summary(rows))) == label


def test_state_round_trips_exactly() -> None:
    classifier = FaultClassifier.fit(history(2), VARIABLES, lags=1)
    meta, arrays = state_from_bytes(state_to_bytes(*classifier.to_state()))
    loaded = FaultClassifier.from_state(meta, arrays)
    rows = run(40, 9, (1, 0, -1, 0))
    np.testing.assert_array_equal(loaded.probabilities(rows), classifier.probabilities(rows))
    assert loaded.classes == classifier.classes
    with pytest.raises(ModelStateError, match="has shape"):
        FaultClassifier.from_state(meta, {**arrays, "coefficients": arrays["coefficients"][:2]})
    with pytest.raises(ModelStateError, match="not a logistic_classifier"):
        FaultClassifier.from_state({**meta, "kind": "pca"}, arrays)


def test_two_classes_give_two_probability_columns() -> None:
    classifier = FaultClassifier.fit(history(3)[:2], VARIABLES)
    probabilities = classifier.probabilities(run(200, 4, (4.0, 0, 0, 0)))
    assert probabilities.shape == (200, 2)
    assert (probabilities[:, 0] > 0.5).mean() > 0.9  # "fault 1" sorts first


def test_bad_history_is_named() -> None:
    with pytest.raises(TrainingDataError, match="at least two classes"):
        FaultClassifier.fit(history(4)[:1], VARIABLES)
    bad = history(5)
    bad[1][1][3, 2] = np.nan
    with pytest.raises(TrainingDataError, match="run labelled 'fault 1', variables: c"):
        FaultClassifier.fit(bad, VARIABLES)
    with pytest.raises(TrainingDataError, match="mismatched columns"):
        FaultClassifier.fit(history(6), VARIABLES[:3])
    constant = [(label, rows.copy()) for label, rows in history(7)]
    for _, rows in constant:
        rows[:, 1] = 4.0
    with pytest.raises(TrainingDataError, match="constant columns in fault history, variables: b"):
        FaultClassifier.fit(constant, VARIABLES)
    classifier = FaultClassifier.fit(history(8), VARIABLES)
    with pytest.raises(ScoringDataError, match="mismatched columns"):
        classifier.probabilities(np.zeros((2, 3)))
