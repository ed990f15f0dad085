"""Fitting a model of a registered kind on a `DataTable`, measuring it, and loading it back from its state.

The kinds are the process monitors (`MONITOR_KINDS`: pca, dpca, ica, dynamic_mahalanobis), `rul`,
remaining useful life from run-to-failure histories (a table with a unit column), and `classifier`,
the fault classes of labelled rows (a table with a label column).

A monitor is fitted on the first rows of the table and measured on the last `holdout` share, which
it never saw: the false-alarm rate stored with a version is the share of those normal rows in alarm,
not the rate its limits were set for. A RUL model measures itself on units it leaves out (its
held-out RMSE and interval coverage), so `holdout` does not apply to it. A classifier is fitted on
the first rows of each labelled run (consecutive rows of one label) and measured on the last
`holdout` share of each: accuracy, the confusion matrix and each class's recall. The stored state is
`state_to_bytes` of the model's `to_state()`: an `.npz` of numeric arrays and JSON, read back with
`allow_pickle=False`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from iip.analytics.monitoring import (
    MONITOR_KINDS,
    ModelStateError,
    Monitor,
    TrainingDataError,
    load_monitor,
    monitor_to_bytes,
    state_from_bytes,
    state_to_bytes,
)
from iip.analytics.monitoring.classify import FaultClassifier
from iip.analytics.rul import DEFAULT_PARAMS as RUL_DEFAULTS
from iip.analytics.rul import RulModel, histories_from_table
from iip.analytics.training import DataTable

RUL = RulModel.kind
CLASSIFIER = "classifier"
Model = Monitor | RulModel | FaultClassifier

# Bounds of the numeric parameters the kinds take: a fuzzed `folds=10**9` must not allocate the moon.
PARAMETER_BOUNDS: dict[str, tuple[float, float]] = {
    "components": (1, 1000),
    "variance": (0.0, 1.0),
    "folds": (2, 50),
    "lags": (0, 50),
    "persistence": (1, 1000),
    "max_iter": (1, 10_000),
    "seed": (0, 2**31 - 1),
    "ridge": (0.0, 1.0),
    # remaining useful life
    "cap": (1, 1e6),
    "coverage": (0.5, 0.999),
    "window": (10, 1000),
    "smoothing": (0.0, 1.0),
    "baseline_cycles": (1, 10_000),
    "stride": (1, 1000),
    "learning_rate": (0.0, 1.0),
    "max_leaf_nodes": (2, 1000),
    "min_samples_leaf": (1, 100_000),
    "l2_regularization": (0.0, 1e6),
    "bins": (1, 100),
    # fault classifier
    "regularization": (1e-6, 1e6),
}
RUL_PARAMETERS = frozenset(RUL_DEFAULTS) | {"cap", "coverage"}
CLASSIFIER_PARAMETERS = frozenset({"lags", "regularization", "max_iter"})
WHOLE_NUMBERS = frozenset(
    {"components", "folds", "lags", "persistence", "max_iter", "seed", "window", "baseline_cycles", "stride"}
    | {"max_leaf_nodes", "min_samples_leaf", "bins"}
)
DEFAULT_HOLDOUT = 0.2


@dataclass(frozen=True)
class FittedModel:
    """A trained model ready to be stored as a version."""

    kind: str
    variables: tuple[str, ...]
    state: bytes
    limits: dict[str, float]
    summary: dict[str, Any]
    metrics: dict[str, Any]


def model_kinds() -> tuple[str, ...]:
    from iip.analytics.monitoring import kinds  # noqa: F401 - registers every monitor kind

    return (*sorted(MONITOR_KINDS), RUL, CLASSIFIER)


def check_parameters(kind: str, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Scalar values within their bounds; the kind itself refuses names it does not take."""
    if kind not in model_kinds():
        raise TrainingDataError(f"unknown model kind '{kind}'; known: {', '.join(model_kinds())}", kind=kind)
    checked: dict[str, Any] = {}
    for name, value in parameters.items():
        if value is not None and not isinstance(value, (bool, int, float, str)):
            raise TrainingDataError(f"parameter '{name}' must be a number or a string")
        if name in PARAMETER_BOUNDS and value is not None:
            low, high = PARAMETER_BOUNDS[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise TrainingDataError(f"parameter '{name}' must be a number, got {value!r}")
            if not low <= value <= high:
                raise TrainingDataError(f"parameter '{name}' must be between {low:g} and {high:g}, got {value}")
            if name in WHOLE_NUMBERS and value != int(value):
                raise TrainingDataError(f"parameter '{name}' must be a whole number, got {value}")
        if value is not None:
            checked[name] = int(value) if name in WHOLE_NUMBERS else value
    allowed = {RUL: RUL_PARAMETERS, CLASSIFIER: CLASSIFIER_PARAMETERS}.get(kind)
    if allowed is not None:
        unknown = sorted(set(checked) - allowed)
        if unknown:
            raise TrainingDataError(f"unknown parameters for {kind}: {', '.join(unknown)}")
    return checked


def fit_model(
    kind: str,
    table: DataTable,
    parameters: Mapping[str, Any],
    *,
    false_alarm_rate: float,
    holdout: float = DEFAULT_HOLDOUT,
) -> FittedModel:
    """Fit a monitor on the first rows of `table` and measure it on the last `holdout` share (or a RUL model)."""
    params = check_parameters(kind, parameters)
    if kind == RUL:
        return fit_rul(table, params)
    if not 0.0 <= holdout <= 0.5:
        raise TrainingDataError(f"holdout must be between 0 and 0.5, got {holdout}")
    if kind == CLASSIFIER:
        return fit_classifier(table, params, holdout)
    rows = table.rows
    held = round(rows * holdout) if holdout > 0 else 0
    if holdout > 0 and held < 1 and rows > 1:
        held = 1
    fit_rows = table.data[: rows - held]
    cls = MONITOR_KINDS[kind]
    try:
        # Values so large that their squares overflow cannot be modelled: refused, not stored as inf.
        with np.errstate(over="raise"):
            monitor = cls.fit(fit_rows, table.variables, false_alarm_rate=false_alarm_rate, **params)
    except FloatingPointError as err:
        raise TrainingDataError(f"training data values are too large to model ({err}); rescale them") from err
    except TrainingDataError as err:
        if held and "min_rows" in err.details:
            raise TrainingDataError(
                f"{err.message} (after holding out the last {held} rows to measure the model; "
                "set holdout to 0 to train on every row)",
                **err.details,
            ) from err
        raise
    except (TypeError, ValueError, ArithmeticError, np.linalg.LinAlgError) as err:
        raise TrainingDataError(f"cannot fit a {kind} model with these parameters: {err}") from err
    state = monitor_to_bytes(monitor)
    try:
        load_model(state)  # what is stored must load: finite arrays and limits
    except ModelStateError as err:
        raise TrainingDataError(f"the fitted {kind} model is not usable: {err.message}") from err
    metrics = measure(monitor, table.data[rows - held :]) if held else {}
    metrics.update(training_rows=int(fit_rows.shape[0]), false_alarm_rate_target=monitor.false_alarm_rate)
    summary = monitor.params()
    for name in ("explained_variance", "components"):
        if name in summary:
            metrics[name] = summary[name]
    return FittedModel(kind, monitor.variables, state, dict(monitor.limits), summary, metrics)


def measure(monitor: Monitor, held_out: np.ndarray[Any, np.dtype[np.float64]]) -> dict[str, Any]:
    """Alarm and exceedance rates on normal rows the monitor did not see."""
    scores = monitor.score(held_out)
    valid = scores.valid
    scored = int(valid.sum())
    out: dict[str, Any] = {"held_out_rows": int(held_out.shape[0]), "held_out_scored": scored}
    if scored:
        out["false_alarm_rate"] = round(float(scores.alarm[valid].mean()), 6)
        out["exceedance"] = {name: round(float(scores.exceeded(name)[valid].mean()), 6) for name in scores.statistics}
    return out


def fit_rul(table: DataTable, params: dict[str, Any]) -> FittedModel:
    """A RUL model on the table's run-to-failure histories (rows of a unit in order, its last row its failure)."""
    if table.units is None:
        raise TrainingDataError("a rul model needs the unit each row belongs to: name the unit column")
    histories = histories_from_table(table.data, np.asarray(table.units))
    try:
        model = RulModel.fit(histories, table.variables, **params)
    except TrainingDataError:
        raise
    except (TypeError, ValueError, ArithmeticError) as err:
        raise TrainingDataError(f"cannot fit a rul model with these parameters: {err}") from err
    metrics: dict[str, Any] = {**model.report, "training_rows": int(table.rows)}
    summary = {"cap": model.cap, "coverage": model.coverage, **model.params}
    return FittedModel(RUL, model.variables, model.to_bytes(), {}, summary, metrics)


def labelled_runs(table: DataTable) -> list[tuple[str, int, int]]:
    """(label, first row, end row) of each run of consecutive rows with one label."""
    if table.labels is None:
        raise TrainingDataError("a classifier needs the class of each row: name the label column")
    labels = [label.strip() for label in table.labels]
    empty = [i for i, label in enumerate(labels) if not label]
    if empty:
        raise TrainingDataError(
            f"missing label at row {empty[0] + 1} ({len(empty)} rows without one); every row needs its class",
            row=empty[0] + 1,
        )
    runs: list[tuple[str, int, int]] = []
    start = 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            runs.append((labels[start], start, i))
            start = i
    return runs


def fit_classifier(table: DataTable, params: dict[str, Any], holdout: float) -> FittedModel:
    """A fault classifier fitted on the first rows of each labelled run and measured on the rest."""
    lags = int(params.get("lags", 0))
    fit_runs: list[tuple[str, np.ndarray[Any, np.dtype[np.float64]]]] = []
    held_runs: list[tuple[str, np.ndarray[Any, np.dtype[np.float64]]]] = []
    for label, start, end in labelled_runs(table):
        rows = table.data[start:end]
        held = round((end - start) * holdout) if holdout > 0 else 0
        if held and end - start - held < lags + 1:
            held = 0  # a run too short to split is used for fitting only
        fit_runs.append((label, rows[: rows.shape[0] - held]))
        if held:
            # The held rows with the lags before them, so each held row is classified.
            held_runs.append((label, rows[rows.shape[0] - held - lags :]))
    try:
        classifier = FaultClassifier.fit(fit_runs, table.variables, **params)
    except TrainingDataError:
        raise
    except (TypeError, ValueError, ArithmeticError) as err:
        raise TrainingDataError(f"cannot fit a classifier with these parameters: {err}") from err
    meta, arrays = classifier.to_state()
    state = state_to_bytes(meta, arrays)
    try:
        load_model(state)  # what is stored must load: finite coefficients
    except ModelStateError as err:
        raise TrainingDataError(f"the fitted classifier is not usable: {err.message}") from err
    metrics: dict[str, Any] = {
        "training_rows": int(sum(rows.shape[0] for _, rows in fit_runs)),
        "classes": list(classifier.classes),
    }
    if held_runs:
        metrics.update(confusion(classifier, held_runs))
    summary = {
        "classes": list(classifier.classes),
        "lags": classifier.lags,
        "regularization": classifier.regularization,
        "converged": classifier.converged,
    }
    return FittedModel(CLASSIFIER, classifier.variables, state, {}, summary, metrics)


def confusion(
    classifier: FaultClassifier, runs: list[tuple[str, np.ndarray[Any, np.dtype[np.float64]]]]
) -> dict[str, Any]:
    """Accuracy, the confusion matrix (rows: true class, columns: predicted) and each class's recall."""
    classes = list(classifier.classes)
    index = {name: k for k, name in enumerate(classes)}
    matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    unknown = 0
    for label, rows in runs:
        for predicted in classifier.predict(rows)[classifier.lags :]:
            if predicted is None:
                continue
            if label not in index:
                unknown += 1  # a class the fit never saw (its run was too short): counted as an error
                continue
            matrix[index[label], index[predicted]] += 1
    total = int(matrix.sum()) + unknown
    recall = {
        name: round(float(matrix[k, k] / matrix[k].sum()), 6) if matrix[k].sum() else None
        for k, name in enumerate(classes)
    }
    return {
        "held_out_rows": total,
        "accuracy": round(float(np.trace(matrix) / total), 6) if total else None,
        "per_class_recall": recall,
        "confusion": {"classes": classes, "matrix": matrix.tolist()},
    }


def classification_report(
    classifier: FaultClassifier, runs: list[tuple[str, np.ndarray[Any, np.dtype[np.float64]]]]
) -> tuple[dict[str, Any], list[str | None]]:
    """Accuracy, each class's recall and precision and the confusion matrix (rows: true class, columns:
    predicted) of labelled runs whose labels are all classes of the classifier; and the class predicted
    at each row (None where it could not be classified: its first `lags` rows, or a missing value)."""
    classes = list(classifier.classes)
    index = {name: k for k, name in enumerate(classes)}
    matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    predicted_rows: list[str | None] = []
    for label, rows in runs:
        predicted = classifier.predict(rows)
        predicted_rows.extend(predicted)
        for guess in predicted:
            if guess is not None:
                matrix[index[label], index[guess]] += 1
    total = int(matrix.sum())

    def share(hits: int, count: int) -> float | None:
        return round(hits / count, 6) if count else None

    report = {
        "rows": len(predicted_rows),
        "classified_rows": total,
        "accuracy": share(int(np.trace(matrix)), total),
        "per_class_recall": {name: share(int(matrix[k, k]), int(matrix[k].sum())) for k, name in enumerate(classes)},
        "per_class_precision": {
            name: share(int(matrix[k, k]), int(matrix[:, k].sum())) for k, name in enumerate(classes)
        },
        "confusion": {"classes": classes, "matrix": matrix.tolist()},
    }
    return report, predicted_rows


def load_model(state: bytes) -> Model:
    """The model a stored state describes; a state holding anything but numbers and JSON is refused."""
    meta, arrays = state_from_bytes(state)
    if meta.get("kind") == RUL:
        return RulModel.from_state(meta, arrays)
    if meta.get("kind") == FaultClassifier.kind:
        return FaultClassifier.from_state(meta, arrays)
    return load_monitor(meta, arrays)


__all__ = [
    "CLASSIFIER",
    "DEFAULT_HOLDOUT",
    "RUL",
    "FittedModel",
    "Model",
    "ModelStateError",
    "check_parameters",
    "classification_report",
    "confusion",
    "fit_model",
    "load_model",
    "measure",
    "model_kinds",
]
