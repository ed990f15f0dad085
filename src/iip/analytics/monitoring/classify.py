"""Fault classification from labelled fault history: multinomial logistic regression on scaled, lagged rows.

The learned coefficients are kept as plain arrays (no pickled scikit-learn object), and the class
probabilities are computed here with a softmax, so a stored classifier loads like a stored monitor.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from iip.analytics.monitoring.base import (
    STATE_FORMAT,
    BoolArray,
    FloatArray,
    ModelStateError,
    Monitor,
    ScoringDataError,
    TrainingDataError,
    check_training_data,
    check_variables,
    lag_matrix,
)


class FaultClassifier:
    """Per-class probabilities for each row (given its `lags` predecessors) of a labelled fault history."""

    kind: ClassVar[str] = "logistic_classifier"

    def __init__(
        self,
        variables: Sequence[str],
        classes: Sequence[str],
        *,
        lags: int,
        mean: FloatArray,
        scale: FloatArray,
        coefficients: FloatArray,
        intercepts: FloatArray,
        regularization: float,
        converged: bool = True,
    ) -> None:
        self.variables = tuple(variables)
        self.classes = tuple(classes)
        self.lags = lags
        self.mean = mean
        self.scale = scale
        self.coefficients = coefficients  # (k, p·(lags+1))
        self.intercepts = intercepts  # (k,)
        self.regularization = regularization
        self.converged = converged

    @classmethod
    def fit(
        cls,
        runs: Sequence[tuple[str, npt.ArrayLike]],
        variables: Sequence[str],
        *,
        lags: int = 0,
        regularization: float = 1.0,
        max_iter: int = 1000,
    ) -> Self:
        """Fit on runs of consecutive rows, each labelled with its class ("normal", "fault 1", ...)."""
        names = check_variables(variables, len(tuple(variables)))
        if not 0 <= int(lags) <= 20:
            raise TrainingDataError(f"lags must be between 0 and 20, got {lags}")
        if not float(regularization) > 0.0:
            raise TrainingDataError(f"regularization must be positive, got {regularization}")
        lags = int(lags)
        features: list[FloatArray] = []
        labels: list[str] = []
        for label, rows in runs:
            name = str(label).strip()
            if not name:
                raise TrainingDataError("every run needs a class label")
            array = check_training_data(
                rows, names, min_rows=lags + 1, what=f"run labelled {name!r}", check_constant=False
            )
            lagged = lag_matrix(array, lags)
            features.append(lagged)
            labels.extend([name] * lagged.shape[0])
        classes = sorted(set(labels))
        if len(classes) < 2:
            raise TrainingDataError(f"at least two classes are needed, got {len(classes)}")
        x = np.vstack(features)
        mean = x.mean(axis=0)
        scale = x.std(axis=0, ddof=1)
        constant = scale <= 1e-12 * np.maximum(np.abs(mean), 1.0)
        if constant.any():
            width = len(names)
            named = sorted({names[j % width] for j in np.flatnonzero(constant)})
            raise TrainingDataError(f"constant columns in fault history, variables: {', '.join(named)}")
        model = LogisticRegression(C=float(regularization), max_iter=int(max_iter))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            model.fit((x - mean) / scale, np.array(labels))
        coefficients = np.asarray(model.coef_, dtype=np.float64)
        intercepts = np.asarray(model.intercept_, dtype=np.float64)
        if len(classes) == 2:
            # scikit-learn keeps one row for two classes: the log-odds of the second.
            coefficients = np.vstack([np.zeros_like(coefficients[0]), coefficients[0]])
            intercepts = np.array([0.0, intercepts[0]])
        return cls(
            names,
            [str(c) for c in model.classes_],
            lags=lags,
            mean=mean,
            scale=scale,
            coefficients=coefficients,
            intercepts=intercepts,
            regularization=float(regularization),
            converged=not any(issubclass(w.category, ConvergenceWarning) for w in caught),
        )

    def probabilities(self, data: npt.ArrayLike) -> FloatArray:
        """(rows × classes) probabilities, columns in `classes` order; NaN rows lack history or values."""
        array = np.asarray(data, dtype=np.float64)
        if array.ndim == 1:
            array = array.reshape(1, -1)
        if array.ndim != 2 or array.shape[1] != len(self.variables):
            raise ScoringDataError(
                f"mismatched columns: the classifier has {len(self.variables)} variables, the data has shape "
                f"{array.shape}"
            )
        n = array.shape[0]
        out = np.full((n, len(self.classes)), np.nan)
        lagged = lag_matrix(array, self.lags)
        if lagged.shape[0] == 0:
            return out
        logits = ((lagged - self.mean) / self.scale) @ self.coefficients.T + self.intercepts
        logits -= logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        probabilities = weights / weights.sum(axis=1, keepdims=True)
        complete = np.isfinite(lagged).all(axis=1)
        probabilities[~complete] = np.nan
        out[self.lags :] = probabilities
        return out

    def predict(self, data: npt.ArrayLike) -> list[str | None]:
        """The most probable class per row (None where the row could not be classified)."""
        probabilities = self.probabilities(data)
        scored: BoolArray = np.asarray(np.isfinite(probabilities).all(axis=1), dtype=bool)
        best = np.argmax(np.where(scored[:, None], probabilities, 0.0), axis=1)
        return [self.classes[int(i)] if ok else None for i, ok in zip(best, scored, strict=True)]

    def summary(self, data: npt.ArrayLike) -> dict[str, float]:
        """Mean probability of each class over the scored rows of a block, most probable first."""
        probabilities = self.probabilities(data)
        scored = probabilities[np.isfinite(probabilities).all(axis=1)]
        if scored.shape[0] == 0:
            raise ScoringDataError(f"no row could be classified (each needs {self.lags} predecessors and no gaps)")
        mean = scored.mean(axis=0)
        order = np.argsort(-mean, kind="stable")
        return {self.classes[int(i)]: float(mean[i]) for i in order}

    def to_state(self) -> tuple[dict[str, Any], dict[str, FloatArray]]:
        meta: dict[str, Any] = {
            "format": STATE_FORMAT,
            "kind": self.kind,
            "variables": list(self.variables),
            "classes": list(self.classes),
            "lags": self.lags,
            "regularization": self.regularization,
            "converged": self.converged,
        }
        arrays = {
            "mean": self.mean,
            "scale": self.scale,
            "coefficients": self.coefficients,
            "intercepts": self.intercepts,
        }
        return meta, arrays

    @classmethod
    def from_state(cls, meta: Mapping[str, Any], arrays: Mapping[str, npt.ArrayLike]) -> Self:
        if meta.get("kind") != cls.kind or meta.get("format") != STATE_FORMAT:
            raise ModelStateError(f"stored model is not a {cls.kind} of format {STATE_FORMAT}")
        try:
            variables = [str(v) for v in meta["variables"]]
            classes = [str(c) for c in meta["classes"]]
            lags = int(meta["lags"])
            numeric = {}
            for key, value in arrays.items():
                array = np.asarray(value)
                if array.dtype.kind not in "fiub":
                    raise ModelStateError(f"stored array {key!r} is not numeric (dtype {array.dtype})")
                numeric[key] = array.astype(np.float64, copy=False)
            width = len(variables) * (lags + 1)
            k = len(classes)
            scale = Monitor.require(numeric, "scale", (width,))
            if not (scale > 0).all() or not 0 <= lags <= 20 or k < 2:
                raise ModelStateError("stored classifier has a non-positive scale, bad lags or fewer than 2 classes")
            return cls(
                variables,
                classes,
                lags=lags,
                mean=Monitor.require(numeric, "mean", (width,)),
                scale=scale,
                coefficients=Monitor.require(numeric, "coefficients", (k, width)),
                intercepts=Monitor.require(numeric, "intercepts", (k,)),
                regularization=float(meta["regularization"]),
                converged=bool(meta["converged"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            if isinstance(err, ModelStateError):
                raise
            raise ModelStateError(f"stored classifier is malformed: {err}") from err
