"""Dynamic PCA (Ku, Storer and Georgakis 1995): PCA on each sample joined with its `lags` predecessors."""

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
from iip.analytics.monitoring.pca import PcaBasis, check_components, no_more


def lagged_segments(segments: Sequence[FloatArray], lags: int) -> FloatArray:
    """The lagged rows of every segment, stacked; no row spans two segments."""
    parts = [lag_matrix(segment, lags) for segment in segments]
    return np.vstack([part for part in parts if part.shape[0]])


@register
class DpcaMonitor(Monitor):
    """T² and SPE of the lagged vector [xₜ, xₜ₋₁, …, xₜ₋ₗ]: serial correlation enters the model.

    A row is scored once its `lags` predecessors are known; contributions add up a variable's
    lagged copies (reconstructed together).
    """

    kind = "dpca"

    def __init__(
        self,
        variables: Sequence[str],
        limits: Mapping[str, float],
        *,
        basis: PcaBasis,
        lags: int,
        false_alarm_rate: float,
        persistence: int = 1,
    ) -> None:
        super().__init__(variables, limits, false_alarm_rate=false_alarm_rate, persistence=persistence)
        self.basis = basis
        self.lags = lags
        self.history = lags

    @classmethod
    def fit(
        cls,
        data: npt.ArrayLike,
        variables: Sequence[str],
        *,
        false_alarm_rate: float = 0.01,
        validation: npt.ArrayLike | None = None,
        lags: int = 1,
        components: int | None = None,
        variance: float = 0.9,
        folds: int = 5,
        persistence: int = 1,
        **params: Any,
    ) -> Self:
        no_more(cls.kind, params)
        rate = check_rate(false_alarm_rate)
        names = tuple(str(v) for v in variables)
        if not 0 <= int(lags) <= 50:
            raise TrainingDataError(f"lags must be between 0 and 50, got {lags}")
        lags = int(lags)
        width = len(names) * (lags + 1)
        check_components(components, variance, width)
        min_rows = max(10, width + 2) + lags
        array = check_training_data(data, names, min_rows=min_rows)
        held = check_validation(validation, names)
        if held is None:
            check_folds(folds, array.shape[0], min_rows)

        def fit_core(segments: list[FloatArray]) -> PcaBasis:
            return PcaBasis.fit(lagged_segments(segments, lags), components=components, variance=variance)

        def statistics(basis: PcaBasis, rows: FloatArray) -> dict[str, FloatArray]:
            return dpca_statistics(basis, rows, lags)

        basis, limits = fit_with_limits(fit_core, statistics, array, held, folds=folds, false_alarm_rate=rate)
        return cls(names, limits, basis=basis, lags=lags, false_alarm_rate=rate, persistence=persistence)

    def _statistics(self, rows: FloatArray) -> dict[str, FloatArray]:
        return dpca_statistics(self.basis, rows, self.lags)

    def contributions(self, rows: npt.ArrayLike) -> dict[str, dict[str, float]]:
        z = self.basis.scaled(lag_matrix(self.complete_rows(rows), self.lags))
        groups = self.lags + 1
        return {
            "t2": named(self.variables, group_contributions(z, self.basis.t2_weights(), groups).mean(axis=0)),
            "spe": named(self.variables, group_contributions(z, self.basis.residual_projector(), groups).mean(axis=0)),
        }

    def params(self) -> dict[str, Any]:
        explained = float(self.basis.eigenvalues[: self.basis.components].sum() / self.basis.eigenvalues.sum())
        return {
            "lags": self.lags,
            "components": self.basis.components,
            "explained_variance": round(explained, 6),
            "training_rows": self.basis.rows,
        }

    def _state_meta(self) -> dict[str, Any]:
        return {"lags": self.lags, "components": self.basis.components, "rows": self.basis.rows}

    def _state_arrays(self) -> dict[str, FloatArray]:
        return self.basis.arrays()

    @classmethod
    def _from_state(cls, meta: Mapping[str, Any], arrays: Mapping[str, FloatArray], common: dict[str, Any]) -> Self:
        lags = int(meta["lags"])
        if not 0 <= lags <= 50:
            raise ValueError(f"lags {lags} out of range")
        width = len(common["variables"]) * (lags + 1)
        basis = PcaBasis.from_arrays(arrays, width, int(meta["components"]), int(meta["rows"]))
        return cls(basis=basis, lags=lags, **common)


def dpca_statistics(basis: PcaBasis, rows: FloatArray, lags: int) -> dict[str, FloatArray]:
    t2, spe = basis.t2_spe(basis.scaled(lag_matrix(rows, lags)))
    count = min(lags, rows.shape[0])
    return {"t2": pad_front(t2, count), "spe": pad_front(spe, count)}
