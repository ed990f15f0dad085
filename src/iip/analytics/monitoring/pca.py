"""Principal component analysis monitor: Hotelling's T² in the model space, SPE (Q) in the residual space."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Self

import numpy as np
import numpy.typing as npt
from scipy import stats

from iip.analytics.monitoring.base import (
    FloatArray,
    ModelStateError,
    Monitor,
    TrainingDataError,
    check_folds,
    check_rate,
    check_training_data,
    check_validation,
    fit_with_limits,
    group_contributions,
    named,
    register,
)

LimitMethod = Literal["empirical", "theoretical"]
LIMIT_METHODS: tuple[str, ...] = ("empirical", "theoretical")


@dataclass(frozen=True, slots=True)
class PcaBasis:
    """Scaling and principal directions of a (possibly lagged) data matrix."""

    mean: FloatArray  # (p,)
    scale: FloatArray  # (p,)
    loadings: FloatArray  # (p, a), orthonormal columns
    eigenvalues: FloatArray  # (p,) all of them, descending: the residual ones give the SPE limit
    rows: int

    @property
    def components(self) -> int:
        return int(self.loadings.shape[1])

    @classmethod
    def fit(cls, data: FloatArray, *, components: int | None, variance: float) -> PcaBasis:
        n, p = data.shape
        mean = data.mean(axis=0)
        scale = data.std(axis=0, ddof=1)
        constant = scale <= 1e-12 * np.maximum(np.abs(mean), 1.0)
        if constant.any():
            raise TrainingDataError(f"constant columns in training rows: {np.flatnonzero(constant).tolist()}")
        z = (data - mean) / scale
        # Economy SVD of the scaled data: the right singular vectors are the loadings.
        _, singular, vt = np.linalg.svd(z, full_matrices=False)
        eigenvalues = np.zeros(p)
        eigenvalues[: singular.shape[0]] = singular**2 / (n - 1)
        if components is None:
            cumulative = np.cumsum(eigenvalues) / eigenvalues.sum()
            components = int(np.searchsorted(cumulative, variance - 1e-12) + 1)
        top = min(int(np.sum(eigenvalues > eigenvalues[0] * 1e-12)), n - 2)
        if not 1 <= components <= top:
            raise TrainingDataError(f"components must be between 1 and {top} for this data, got {components}")
        loadings = np.ascontiguousarray(vt[:components].T)
        return cls(mean=mean, scale=scale, loadings=loadings, eigenvalues=eigenvalues, rows=n)

    def scaled(self, rows: FloatArray) -> FloatArray:
        return (rows - self.mean) / self.scale

    def t2_spe(self, z: FloatArray) -> tuple[FloatArray, FloatArray]:
        scores = z @ self.loadings
        t2 = np.einsum("ij,ij->i", scores, scores / self.eigenvalues[: self.components])
        residual = z - scores @ self.loadings.T
        spe = np.einsum("ij,ij->i", residual, residual)
        return t2, spe

    def t2_weights(self) -> FloatArray:
        """D = P Λ⁻¹ Pᵀ, so that T² = zᵀ D z."""
        out: FloatArray = (self.loadings / self.eigenvalues[: self.components]) @ self.loadings.T
        return out

    def residual_projector(self) -> FloatArray:
        """C̃ = I − P Pᵀ, so that SPE = zᵀ C̃ z."""
        out: FloatArray = np.eye(self.loadings.shape[0]) - self.loadings @ self.loadings.T
        return out

    def theoretical_limits(self, false_alarm_rate: float) -> dict[str, float]:
        """T² from the F distribution; SPE from Jackson and Mudholkar (1979)."""
        a, n = self.components, self.rows
        t2 = a * (n - 1) * (n + 1) / (n * (n - a)) * float(stats.f.ppf(1.0 - false_alarm_rate, a, n - a))
        residual = self.eigenvalues[a:]
        theta1, theta2, theta3 = (float(np.sum(residual**k)) for k in (1, 2, 3))
        if theta1 <= 0.0 or theta2 <= 0.0:
            return {"t2": float(t2), "spe": 0.0}
        h0 = 1.0 - 2.0 * theta1 * theta3 / (3.0 * theta2**2)
        c = float(stats.norm.ppf(1.0 - false_alarm_rate))
        base = c * np.sqrt(2.0 * theta2 * h0**2) / theta1 + 1.0 + theta2 * h0 * (h0 - 1.0) / theta1**2
        return {"t2": float(t2), "spe": float(theta1 * base ** (1.0 / h0))}

    def arrays(self, prefix: str = "") -> dict[str, FloatArray]:
        return {
            f"{prefix}mean": self.mean,
            f"{prefix}scale": self.scale,
            f"{prefix}loadings": self.loadings,
            f"{prefix}eigenvalues": self.eigenvalues,
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, FloatArray], p: int, a: int, rows: int, prefix: str = "") -> PcaBasis:
        require = Monitor.require
        scale = require(arrays, f"{prefix}scale", (p,))
        eigenvalues = require(arrays, f"{prefix}eigenvalues", (p,))
        if not (scale > 0).all() or not (eigenvalues[:a] > 0).all():
            raise ModelStateError("stored scale and retained eigenvalues must be positive")
        return cls(
            mean=require(arrays, f"{prefix}mean", (p,)),
            scale=scale,
            loadings=require(arrays, f"{prefix}loadings", (p, a)),
            eigenvalues=eigenvalues,
            rows=rows,
        )


def check_limit_method(method: str) -> LimitMethod:
    if method == "empirical":
        return "empirical"
    if method == "theoretical":
        return "theoretical"
    raise TrainingDataError(f"limit_method must be one of {', '.join(LIMIT_METHODS)}, got {method!r}")


def check_components(components: int | None, variance: float, width: int) -> None:
    if components is not None and not 1 <= int(components) < width:
        raise TrainingDataError(f"components must be between 1 and {width - 1}, got {components}")
    if not 0.0 < variance <= 1.0:
        raise TrainingDataError(f"variance must be in (0, 1], got {variance}")


def no_more(kind: str, params: Mapping[str, Any]) -> None:
    if params:
        raise TrainingDataError(f"unknown parameters for {kind}: {', '.join(sorted(params))}")


@register
class PcaMonitor(Monitor):
    """Static PCA on autoscaled variables.

    Components: `components` if given, else the fewest that reach `variance` of the total. Limits:
    "empirical" takes the (1 − rate) quantile on held-out normal rows; "theoretical" uses the F
    distribution for T² and Jackson–Mudholkar for SPE. Both sets are computed and kept.
    """

    kind = "pca"

    def __init__(
        self,
        variables: Sequence[str],
        limits: Mapping[str, float],
        *,
        basis: PcaBasis,
        limit_method: LimitMethod,
        theoretical: Mapping[str, float],
        empirical: Mapping[str, float],
        false_alarm_rate: float,
        persistence: int = 1,
    ) -> None:
        super().__init__(variables, limits, false_alarm_rate=false_alarm_rate, persistence=persistence)
        self.basis = basis
        self.limit_method: LimitMethod = limit_method
        self.theoretical_limits = dict(theoretical)
        self.empirical_limits = dict(empirical)

    @classmethod
    def fit(
        cls,
        data: npt.ArrayLike,
        variables: Sequence[str],
        *,
        false_alarm_rate: float = 0.01,
        validation: npt.ArrayLike | None = None,
        components: int | None = None,
        variance: float = 0.9,
        limit_method: str = "empirical",
        folds: int = 5,
        persistence: int = 1,
        **params: Any,
    ) -> Self:
        no_more(cls.kind, params)
        rate = check_rate(false_alarm_rate)
        method = check_limit_method(limit_method)
        names = tuple(str(v) for v in variables)
        check_components(components, variance, len(names))
        min_rows = max(10, len(names) + 2)
        array = check_training_data(data, names, min_rows=min_rows)
        held = check_validation(validation, names)
        if held is None:
            check_folds(folds, array.shape[0], min_rows)

        def fit_core(segments: list[FloatArray]) -> PcaBasis:
            return PcaBasis.fit(np.vstack(segments), components=components, variance=variance)

        basis, empirical = fit_with_limits(fit_core, pca_statistics, array, held, folds=folds, false_alarm_rate=rate)
        theoretical = basis.theoretical_limits(rate)
        return cls(
            names,
            empirical if method == "empirical" else theoretical,
            basis=basis,
            limit_method=method,
            theoretical=theoretical,
            empirical=empirical,
            false_alarm_rate=rate,
            persistence=persistence,
        )

    def _statistics(self, rows: FloatArray) -> dict[str, FloatArray]:
        return pca_statistics(self.basis, rows)

    def contributions(self, rows: npt.ArrayLike) -> dict[str, dict[str, float]]:
        z = self.basis.scaled(self.complete_rows(rows))
        return {
            "t2": named(self.variables, group_contributions(z, self.basis.t2_weights(), 1).mean(axis=0)),
            "spe": named(self.variables, group_contributions(z, self.basis.residual_projector(), 1).mean(axis=0)),
        }

    def params(self) -> dict[str, Any]:
        explained = float(self.basis.eigenvalues[: self.basis.components].sum() / self.basis.eigenvalues.sum())
        return {
            "components": self.basis.components,
            "explained_variance": round(explained, 6),
            "limit_method": self.limit_method,
            "training_rows": self.basis.rows,
        }

    def _state_meta(self) -> dict[str, Any]:
        return {
            "components": self.basis.components,
            "rows": self.basis.rows,
            "limit_method": self.limit_method,
            "theoretical_limits": self.theoretical_limits,
            "empirical_limits": self.empirical_limits,
        }

    def _state_arrays(self) -> dict[str, FloatArray]:
        return self.basis.arrays()

    @classmethod
    def _from_state(cls, meta: Mapping[str, Any], arrays: Mapping[str, FloatArray], common: dict[str, Any]) -> Self:
        p = len(common["variables"])
        return cls(
            basis=PcaBasis.from_arrays(arrays, p, int(meta["components"]), int(meta["rows"])),
            limit_method=check_limit_method(str(meta["limit_method"])),
            theoretical=float_map(meta["theoretical_limits"]),
            empirical=float_map(meta["empirical_limits"]),
            **common,
        )


def pca_statistics(basis: PcaBasis, rows: FloatArray) -> dict[str, FloatArray]:
    t2, spe = basis.t2_spe(basis.scaled(rows))
    return {"t2": t2, "spe": spe}


def float_map(value: Any) -> dict[str, float]:
    return {str(k): float(v) for k, v in dict(value).items()}
