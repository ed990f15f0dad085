"""Dynamic Mahalanobis monitor: the full covariance of the lagged vector, every direction whitened.

PCA and DPCA judge the minor directions (those with little normal variance) only through SPE, which
adds them up unweighted, so a fault that breaks a tight relation between variables is diluted by
the noise of all the others. Here every direction of the lagged vector [xₜ, …, xₜ₋ₗ] is scaled by
its own normal spread, so a small break of a tight relation weighs as much as a large move along a
loose one (the idea behind CVA's residual T² and ICA's Ie²). Small eigenvalues are estimated
poorly from few rows, which makes the statistic heavy-tailed on new data: the limit is therefore
always taken on held-out rows, never from a distribution. See docs/adr/0014.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Self

import numpy as np
import numpy.typing as npt

from iip.analytics.monitoring.base import (
    FloatArray,
    Monitor,
    TrainingDataError,
    check_folds,
    check_rate,
    check_training_data,
    check_validation,
    fit_with_limits,
    group_contributions,
    lag_matrix,
    named,
    pad_front,
    register,
)
from iip.analytics.monitoring.dpca import lagged_segments
from iip.analytics.monitoring.pca import no_more


class Whitening:
    """Autoscaling and a whitening matrix W of lagged rows: d² = ‖((x − μ)/σ) W‖²."""

    def __init__(self, mean: FloatArray, scale: FloatArray, whitening: FloatArray) -> None:
        self.mean = mean
        self.scale = scale
        self.whitening = whitening

    @classmethod
    def fit(cls, lagged: FloatArray, ridge: float) -> Whitening:
        mean = lagged.mean(axis=0)
        scale = lagged.std(axis=0, ddof=1)
        if (scale <= 1e-12 * np.maximum(np.abs(mean), 1.0)).any():
            raise TrainingDataError("a lagged column is constant in the training rows")
        z = (lagged - mean) / scale
        covariance = z.T @ z / (z.shape[0] - 1)
        eigenvalues, vectors = np.linalg.eigh(covariance)
        # The ridge keeps directions the rows do not span (more lagged columns than rows) finite.
        floor = ridge * float(np.mean(eigenvalues))
        whitening = vectors / np.sqrt(np.maximum(eigenvalues, 0.0) + floor)
        return cls(mean, scale, np.ascontiguousarray(whitening))

    def scaled(self, lagged: FloatArray) -> FloatArray:
        return (lagged - self.mean) / self.scale

    def distance(self, lagged: FloatArray) -> FloatArray:
        white = self.scaled(lagged) @ self.whitening
        out: FloatArray = np.einsum("ij,ij->i", white, white)
        return out

    def weights(self) -> FloatArray:
        """M = W Wᵀ (the inverse covariance, ridged), so that d² = zᵀ M z."""
        out: FloatArray = self.whitening @ self.whitening.T
        return out


@register
class DynamicMahalanobisMonitor(Monitor):
    """Squared Mahalanobis distance ("d2") of [xₜ, …, xₜ₋ₗ] from normal operation."""

    kind = "dynamic_mahalanobis"

    def __init__(
        self,
        variables: Sequence[str],
        limits: Mapping[str, float],
        *,
        model: Whitening,
        lags: int,
        ridge: float,
        rows: int,
        false_alarm_rate: float,
        persistence: int = 1,
    ) -> None:
        super().__init__(variables, limits, false_alarm_rate=false_alarm_rate, persistence=persistence)
        self.model = model
        self.lags = lags
        self.ridge = ridge
        self.training_rows = rows
        self.history = lags

    @classmethod
    def fit(
        cls,
        data: npt.ArrayLike,
        variables: Sequence[str],
        *,
        false_alarm_rate: float = 0.01,
        validation: npt.ArrayLike | None = None,
        lags: int = 2,
        ridge: float = 1e-6,
        folds: int = 10,
        persistence: int = 1,
        **params: Any,
    ) -> Self:
        no_more(cls.kind, params)
        rate = check_rate(false_alarm_rate)
        names = tuple(str(v) for v in variables)
        if not 0 <= int(lags) <= 50:
            raise TrainingDataError(f"lags must be between 0 and 50, got {lags}")
        if not 0.0 < float(ridge) < 1.0:
            raise TrainingDataError(f"ridge must be between 0 and 1, got {ridge}")
        lags, ridge = int(lags), float(ridge)
        # More rows than lagged columns, or the covariance is mostly ridge.
        min_rows = len(names) * (lags + 1) + 2 + lags
        array = check_training_data(data, names, min_rows=min_rows)
        held = check_validation(validation, names)
        if held is None:
            check_folds(folds, array.shape[0], min_rows)

        def fit_core(segments: list[FloatArray]) -> Whitening:
            return Whitening.fit(lagged_segments(segments, lags), ridge)

        def statistics(model: Whitening, rows: FloatArray) -> dict[str, FloatArray]:
            return mahalanobis_statistics(model, rows, lags)

        model, limits = fit_with_limits(fit_core, statistics, array, held, folds=folds, false_alarm_rate=rate)
        return cls(
            names,
            limits,
            model=model,
            lags=lags,
            ridge=ridge,
            rows=int(array.shape[0]),
            false_alarm_rate=rate,
            persistence=persistence,
        )

    def _statistics(self, rows: FloatArray) -> dict[str, FloatArray]:
        return mahalanobis_statistics(self.model, rows, self.lags)

    def contributions(self, rows: npt.ArrayLike) -> dict[str, dict[str, float]]:
        z = self.model.scaled(lag_matrix(self.complete_rows(rows), self.lags))
        values = group_contributions(z, self.model.weights(), self.lags + 1).mean(axis=0)
        return {"d2": named(self.variables, values)}

    def params(self) -> dict[str, Any]:
        return {"lags": self.lags, "ridge": self.ridge, "training_rows": self.training_rows}

    def _state_meta(self) -> dict[str, Any]:
        return self.params()

    def _state_arrays(self) -> dict[str, FloatArray]:
        return {"mean": self.model.mean, "scale": self.model.scale, "whitening": self.model.whitening}

    @classmethod
    def _from_state(cls, meta: Mapping[str, Any], arrays: Mapping[str, FloatArray], common: dict[str, Any]) -> Self:
        lags = int(meta["lags"])
        if not 0 <= lags <= 50:
            raise ValueError(f"lags {lags} out of range")
        width = len(common["variables"]) * (lags + 1)
        scale = cls.require(arrays, "scale", (width,))
        if not (scale > 0).all():
            raise ValueError("stored scale must be positive")
        model = Whitening(
            cls.require(arrays, "mean", (width,)), scale, cls.require(arrays, "whitening", (width, width))
        )
        return cls(model=model, lags=lags, ridge=float(meta["ridge"]), rows=int(meta["training_rows"]), **common)


def mahalanobis_statistics(model: Whitening, rows: FloatArray, lags: int) -> dict[str, FloatArray]:
    d2 = model.distance(lag_matrix(rows, lags))
    return {"d2": pad_front(d2, min(lags, rows.shape[0]))}
