"""Independent component analysis monitor (Lee, Yoo and Lee 2004): I², Ie² and SPE.

The unmixing matrix is learned with scikit-learn's FastICA and kept as plain arrays; the components
are ordered by the Euclidean norm of their unmixing rows, the first `components` ("dominant") give
I², the rest Ie², and SPE is what the dominant ones leave unexplained.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Self

import numpy as np
import numpy.typing as npt
from sklearn.decomposition import FastICA
from sklearn.exceptions import ConvergenceWarning

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
    named,
    register,
)
from iip.analytics.monitoring.pca import PcaBasis, check_components, no_more


class IcaModel:
    """Centre, scale, dominant and excluded unmixing rows, and the dominant mixing columns."""

    def __init__(
        self, center: FloatArray, scale: FloatArray, dominant: FloatArray, excluded: FloatArray, mixing: FloatArray
    ) -> None:
        self.center = center
        self.scale = scale
        self.dominant = dominant  # (d, p): s_d = z W_dᵀ
        self.excluded = excluded  # (m − d, p)
        self.mixing = mixing  # (p, d): ẑ = s_d A_dᵀ
        self.converged = True

    @classmethod
    def fit(cls, data: FloatArray, *, components: int | None, variance: float, seed: int, max_iter: int) -> IcaModel:
        mean = data.mean(axis=0)
        scale = data.std(axis=0, ddof=1)
        if (scale <= 1e-12 * np.maximum(np.abs(mean), 1.0)).any():
            raise TrainingDataError("a column is constant in the training rows")
        z = (data - mean) / scale
        if components is None:
            components = PcaBasis.fit(data, components=None, variance=variance).components
        ica = FastICA(
            n_components=z.shape[1],
            whiten="unit-variance",
            whiten_solver="eigh",
            random_state=seed,
            max_iter=max_iter,
            tol=1e-4,
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            ica.fit(z)
        unmixing = np.asarray(ica.components_, dtype=np.float64)
        mixing = np.asarray(ica.mixing_, dtype=np.float64)
        order = np.argsort(-np.linalg.norm(unmixing, axis=1), kind="stable")
        dominant, excluded = order[:components], order[components:]
        model = cls(
            center=mean + scale * np.asarray(ica.mean_, dtype=np.float64),
            scale=scale,
            dominant=np.ascontiguousarray(unmixing[dominant]),
            excluded=np.ascontiguousarray(unmixing[excluded]),
            mixing=np.ascontiguousarray(mixing[:, dominant]),
        )
        model.converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        return model

    def scaled(self, rows: FloatArray) -> FloatArray:
        return (rows - self.center) / self.scale

    def residual_operator(self) -> FloatArray:
        out: FloatArray = np.eye(self.scale.shape[0]) - self.mixing @ self.dominant
        return out

    def statistics(self, rows: FloatArray) -> dict[str, FloatArray]:
        z = self.scaled(rows)
        sources = z @ self.dominant.T
        other = z @ self.excluded.T
        residual = z - sources @ self.mixing.T
        return {
            "i2": np.einsum("ij,ij->i", sources, sources),
            "ie2": np.einsum("ij,ij->i", other, other),
            "spe": np.einsum("ij,ij->i", residual, residual),
        }


@register
class IcaMonitor(Monitor):
    kind = "ica"

    def __init__(
        self,
        variables: Sequence[str],
        limits: Mapping[str, float],
        *,
        model: IcaModel,
        seed: int,
        rows: int,
        false_alarm_rate: float,
        persistence: int = 1,
    ) -> None:
        super().__init__(variables, limits, false_alarm_rate=false_alarm_rate, persistence=persistence)
        self.model = model
        self.seed = seed
        self.training_rows = rows

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
        seed: int = 0,
        max_iter: int = 1000,
        folds: int = 5,
        persistence: int = 1,
        **params: Any,
    ) -> Self:
        no_more(cls.kind, params)
        rate = check_rate(false_alarm_rate)
        names = tuple(str(v) for v in variables)
        check_components(components, variance, len(names))
        min_rows = max(10, 2 * len(names))
        array = check_training_data(data, names, min_rows=min_rows)
        held = check_validation(validation, names)
        if held is None:
            check_folds(folds, array.shape[0], min_rows)

        def fit_core(segments: list[FloatArray]) -> IcaModel:
            rows = np.vstack(segments)
            return IcaModel.fit(rows, components=components, variance=variance, seed=seed, max_iter=max_iter)

        model, limits = fit_with_limits(fit_core, IcaModel.statistics, array, held, folds=folds, false_alarm_rate=rate)
        return cls(
            names,
            limits,
            model=model,
            seed=seed,
            rows=int(array.shape[0]),
            false_alarm_rate=rate,
            persistence=persistence,
        )

    def _statistics(self, rows: FloatArray) -> dict[str, FloatArray]:
        return self.model.statistics(rows)

    def contributions(self, rows: npt.ArrayLike) -> dict[str, dict[str, float]]:
        z = self.model.scaled(self.complete_rows(rows))
        residual = self.model.residual_operator()
        weights = {
            "i2": self.model.dominant.T @ self.model.dominant,
            "ie2": self.model.excluded.T @ self.model.excluded,
            "spe": residual.T @ residual,
        }
        return {name: named(self.variables, group_contributions(z, m, 1).mean(axis=0)) for name, m in weights.items()}

    def params(self) -> dict[str, Any]:
        return {
            "components": int(self.model.dominant.shape[0]),
            "excluded_components": int(self.model.excluded.shape[0]),
            "seed": self.seed,
            "converged": self.model.converged,
            "training_rows": self.training_rows,
        }

    def _state_meta(self) -> dict[str, Any]:
        return self.params()

    def _state_arrays(self) -> dict[str, FloatArray]:
        m = self.model
        return {
            "center": m.center,
            "scale": m.scale,
            "dominant": m.dominant,
            "excluded": m.excluded,
            "mixing": m.mixing,
        }

    @classmethod
    def _from_state(cls, meta: Mapping[str, Any], arrays: Mapping[str, FloatArray], common: dict[str, Any]) -> Self:
        p = len(common["variables"])
        d, e = int(meta["components"]), int(meta["excluded_components"])
        scale = cls.require(arrays, "scale", (p,))
        if not (scale > 0).all():
            raise ValueError("stored scale must be positive")
        model = IcaModel(
            center=cls.require(arrays, "center", (p,)),
            scale=scale,
            dominant=cls.require(arrays, "dominant", (d, p)),
            excluded=cls.require(arrays, "excluded", (e, p)),
            mixing=cls.require(arrays, "mixing", (p, d)),
        )
        model.converged = bool(meta["converged"])
        return cls(model=model, seed=int(meta["seed"]), rows=int(meta["training_rows"]), **common)
