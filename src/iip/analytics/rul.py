"""Remaining useful life (RUL) from run-to-failure histories, with a conformal interval.

A history is one unit's cycles in order, one row per cycle, from when the unit was new (or last
restored) up to now; a training history runs to the failure, its last row being the failure cycle.
The target is the piecewise-linear RUL capped at `cap` cycles (Heimes 2008): early in life a unit
shows no measurable wear, so "125 or more" is all the data can support.

Features per cycle, per variable, after z-scoring on the training rows and exponential smoothing
(causal: a cycle's features use that cycle and earlier ones only): the smoothed value, its mean and
least-squares slope over the last `window` cycles, the slope over the last 10, the mean of the last
5, and its offset from the unit's own first `baseline_cycles` cycles (units start with different
wear and manufacturing variation; the offset removes it). Plus the number of cycles seen.

The regressor is an ensemble of gradient-boosted trees (scikit-learn's histogram gradient
boosting), one per fold of units: each is fitted without one fold, predicts that fold's cycles,
and the ensemble's mean is the point estimate. The held-out residuals, grouped by predicted RUL,
give split-conformal bounds at the stated coverage (Vovk et al. 2005; Mondrian bins), calibrated
for a unit stopped at a random cycle once its window is full (`calibration_rows`: each held-out
unit weighs the same, its first cycles are left out; weighted ranks, Tibshirani et al. 2019).
A live unit is followed by a `RulTracker`, which keeps a bounded `FeatureState` instead of its
history and estimates exactly as `predict_cycles` does on the whole of it. The trees are
stored as plain arrays and evaluated here, so a stored model is JSON plus numbers, never a pickle.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import lfilter
from sklearn.ensemble import HistGradientBoostingRegressor

from iip.analytics.monitoring.base import (
    CONSTANT_TOLERANCE,
    ModelStateError,
    ScoringDataError,
    TrainingDataError,
    check_variables,
    state_from_bytes,
    state_to_bytes,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

STATE_FORMAT = 1
SHORT_SLOPE = 10
RECENT_MEAN = 5
FEATURES_PER_VARIABLE = 6
# Below these the folds cannot both fit trees and leave units out to calibrate on.
MIN_UNITS_PER_FOLD = 2
MIN_CYCLES = 50
PREDICT_BLOCK = 2048

DEFAULT_PARAMS: dict[str, Any] = {
    "window": 30,
    "smoothing": 0.3,  # weight of the newest cycle in the exponential smoothing
    "baseline_cycles": 20,
    "folds": 5,
    "stride": 2,  # training rows every `stride` cycles: neighbouring windows are nearly the same
    "max_iter": 150,
    "learning_rate": 0.1,
    "max_leaf_nodes": 31,
    "min_samples_leaf": 40,
    "l2_regularization": 1.0,
    "bins": 5,  # Mondrian bins of predicted RUL for the interval
    "seed": 0,
}
INT_PARAMS = ("window", "baseline_cycles", "folds", "stride", "max_iter", "max_leaf_nodes", "min_samples_leaf", "bins")


@dataclass(frozen=True, slots=True)
class RulEstimate:
    """RUL at a unit's latest cycle: `point`, and [`lower`, `upper`] calibrated to hold the true
    (capped) RUL for a share `coverage` of held-out training cycles.

    All three are in cycles and lie in [0, cap]; an `upper` equal to the cap reads "cap or more".
    When the history lacks a variable, nothing is estimated (NaN) and `missing` names it.
    """

    point: float
    lower: float
    upper: float
    coverage: float
    cycles: int
    missing: tuple[str, ...] = ()

    @property
    def valid(self) -> bool:
        return not self.missing and math.isfinite(self.point)


@dataclass(frozen=True, slots=True)
class RulCurve:
    """RUL estimated at every cycle of a history; NaN from the first cycle with a missing value on."""

    point: FloatArray
    lower: FloatArray
    upper: FloatArray
    coverage: float
    missing: tuple[str, ...] = ()
    valid: BoolArray = field(default_factory=lambda: np.zeros(0, dtype=bool))


# -- histories ---------------------------------------------------------------------------------


def histories_from_table(table: npt.ArrayLike, units: npt.ArrayLike) -> list[FloatArray]:
    """A table of cycles with a unit id per row, as one history per unit (rows kept in order)."""
    try:
        array = np.asarray(table, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TrainingDataError(f"training histories are not numeric: {err}") from err
    ids = np.asarray(units).reshape(-1)
    if array.ndim != 2 or ids.shape[0] != array.shape[0]:
        raise TrainingDataError(
            f"a table of histories needs one unit id per row: {ids.shape[0]} ids for table of shape {array.shape}"
        )
    _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # units in order of first appearance
    return [array[inverse == k] for k in order]


def _training_histories(histories: Sequence[npt.ArrayLike], variables: tuple[str, ...]) -> list[FloatArray]:
    out: list[FloatArray] = []
    p = len(variables)
    for number, history in enumerate(histories, start=1):
        try:
            array = np.asarray(history, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise TrainingDataError(f"unit {number}: history is not numeric: {err}", unit=number) from err
        if array.ndim != 2 or array.shape[1] != p:
            raise TrainingDataError(
                f"mismatched columns: unit {number} has shape {array.shape}, expected (cycles, {p}) for "
                f"variables {', '.join(variables)}",
                unit=number,
                expected=p,
            )
        if array.shape[0] < 2:
            raise TrainingDataError(f"too few rows: unit {number} has {array.shape[0]} cycle(s), at least 2 needed")
        bad = ~np.isfinite(array).all(axis=0)
        if bad.any():
            named = [variables[j] for j in np.flatnonzero(bad)]
            raise TrainingDataError(
                f"missing or non-finite values in unit {number}, variables: {', '.join(named)}",
                unit=number,
                variables=named,
            )
        out.append(array)
    return out


def _check_params(params: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(params) - set(DEFAULT_PARAMS))
    if unknown:
        raise TrainingDataError(f"unknown RUL model parameters: {', '.join(unknown)}")
    merged = {**DEFAULT_PARAMS, **params}
    try:
        for name in INT_PARAMS:
            merged[name] = int(merged[name])
        for name in ("smoothing", "learning_rate", "l2_regularization"):
            merged[name] = float(merged[name])
        merged["seed"] = int(merged["seed"])
    except (TypeError, ValueError) as err:
        raise TrainingDataError(f"RUL model parameters must be numbers: {err}") from err
    if merged["window"] < 2 or merged["baseline_cycles"] < 1 or merged["stride"] < 1 or merged["bins"] < 1:
        raise TrainingDataError("window must be at least 2; baseline_cycles, stride and bins at least 1")
    if merged["window"] < SHORT_SLOPE:
        raise TrainingDataError(f"window must be at least {SHORT_SLOPE} cycles, got {merged['window']}")
    if not 0.0 < merged["smoothing"] <= 1.0:
        raise TrainingDataError(f"smoothing must be in (0, 1], got {merged['smoothing']}")
    if merged["folds"] < 2:
        raise TrainingDataError(f"folds must be at least 2, got {merged['folds']}")
    if merged["max_iter"] < 1 or merged["max_leaf_nodes"] < 2 or merged["min_samples_leaf"] < 1:
        raise TrainingDataError("max_iter, max_leaf_nodes and min_samples_leaf must be positive (leaves at least 2)")
    return merged


# -- features ----------------------------------------------------------------------------------


def _slope_weights(length: int) -> FloatArray:
    """Weights w with w·y the least-squares slope of y over `length` equally spaced cycles."""
    t = np.arange(length, dtype=np.float64) - (length - 1) / 2.0
    weights: FloatArray = t / np.dot(t, t)
    return weights


@dataclass(frozen=True, slots=True)
class FeatureState:
    """What the features of a unit's next cycles need of its earlier ones: a bounded summary of them.

    `filter` is the exponential smoothing's state, `tail` the last `window - 1` smoothed cycles (the
    look-back of the window features), `baseline_sum` the sum of the unit's first scaled cycles (up to
    `baseline_cycles` of them), `cycles` how many it has had. Its size does not grow with the unit's age.
    """

    cycles: int
    filter: FloatArray  # (1, p)
    tail: FloatArray  # (window - 1, p)
    baseline_sum: FloatArray  # (1, p)


def advance_features(
    z: FloatArray, state: FeatureState | None, *, window: int, smoothing: float, baseline_cycles: int
) -> tuple[FloatArray, FeatureState]:
    """Features of the next cycles of one scaled history (rows: cycles) after `state`, and the state after them.

    Fed in pieces, a history gets exactly the features it gets in one piece: every step below runs the
    same arithmetic in the same order whatever the split.
    """
    n = z.shape[0]
    # s[t] = a·z[t] + (1 − a)·s[t−1], started at s[0] = z[0].
    decay = 1.0 - smoothing
    initial = decay * z[:1] if state is None else state.filter
    smoothed, after = lfilter([smoothing], [1.0, -decay], z, axis=0, zi=initial)
    smoothed = np.asarray(smoothed, dtype=np.float64)
    # Before a full window exists, the window is padded with the first cycle (no change yet).
    before = np.repeat(smoothed[:1], window - 1, axis=0) if state is None else state.tail
    padded = np.concatenate([before, smoothed])
    windows = sliding_window_view(padded, window, axis=0)  # (n, p, window)
    mean = windows.mean(axis=2)
    slope = windows @ _slope_weights(window)
    short = windows[:, :, -SHORT_SLOPE:] @ _slope_weights(SHORT_SLOPE)
    recent = windows[:, :, -RECENT_MEAN:].mean(axis=2)
    done = 0 if state is None else state.cycles
    seen = np.arange(done + 1, done + n + 1, dtype=np.float64)[:, None]
    carried = np.zeros((1, z.shape[1])) if state is None else state.baseline_sum
    # The running sum goes on from the carried one: the same additions, in the same order, as in one piece.
    learning = max(0, min(n, baseline_cycles - done))
    sums = np.cumsum(np.concatenate([carried, z[:learning]]), axis=0)
    baseline = np.empty_like(z)
    baseline[:learning] = sums[1:] / seen[:learning]
    if learning < n:
        baseline[learning:] = sums[-1] / float(baseline_cycles)
    offset = smoothed - baseline
    features = np.hstack([smoothed, mean, slope, short, recent, offset, seen])
    kept = FeatureState(
        done + n, np.asarray(after, dtype=np.float64), padded[padded.shape[0] - (window - 1) :].copy(), sums[-1:].copy()
    )
    return features, kept


def cycle_features(z: FloatArray, *, window: int, smoothing: float, baseline_cycles: int) -> FloatArray:
    """Features of every cycle of one scaled history (rows: cycles), using only earlier cycles."""
    features, _ = advance_features(z, None, window=window, smoothing=smoothing, baseline_cycles=baseline_cycles)
    return features


def capped_rul(cycles: int, cap: float) -> FloatArray:
    """Piecewise-linear target of a run to failure: cycles left after each row, at most `cap`."""
    return np.minimum(np.arange(cycles - 1, -1, -1, dtype=np.float64), cap)


# -- trees as arrays ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TreeEnsemble:
    """Regression trees as padded arrays (trees x nodes); the prediction is the mean over models.

    A node goes left when x[feature] <= threshold, as scikit-learn's trees do.
    """

    feature: IntArray
    threshold: FloatArray
    left: IntArray
    right: IntArray
    leaf: BoolArray
    value: FloatArray
    baselines: FloatArray  # one constant per model: its initial prediction
    depth: int

    @classmethod
    def from_boosters(cls, boosters: Sequence[HistGradientBoostingRegressor]) -> TreeEnsemble:
        # `_predictors` and `_baseline_prediction` are scikit-learn internals; the tests compare our
        # predictions with the booster's own, so a change in them is caught.
        trees = [predictors[0].nodes for booster in boosters for predictors in booster._predictors]
        width = max(len(nodes) for nodes in trees)
        shape = (len(trees), width)
        feature = np.zeros(shape, dtype=np.int64)
        threshold = np.zeros(shape)
        left = np.zeros(shape, dtype=np.int64)
        right = np.zeros(shape, dtype=np.int64)
        leaf = np.ones(shape, dtype=bool)  # padding is a leaf of value 0 that nothing reaches
        value = np.zeros(shape)
        for t, nodes in enumerate(trees):
            if nodes["is_categorical"].any():
                raise TrainingDataError("categorical splits cannot be stored")
            k = len(nodes)
            feature[t, :k] = nodes["feature_idx"]
            threshold[t, :k] = nodes["num_threshold"]
            left[t, :k] = nodes["left"]
            right[t, :k] = nodes["right"]
            leaf[t, :k] = nodes["is_leaf"].astype(bool)
            value[t, :k] = np.where(leaf[t, :k], nodes["value"], 0.0)
        baselines = np.array([float(np.asarray(b._baseline_prediction).reshape(-1)[0]) for b in boosters])
        depth = max(int(nodes["depth"].max()) for nodes in trees)
        return cls(feature, threshold, left, right, leaf, value, baselines, depth)

    def predict(self, x: FloatArray) -> FloatArray:
        # In blocks of rows: the traversal holds a few (rows x trees) index arrays.
        if x.shape[0] > PREDICT_BLOCK:
            return np.concatenate([self.predict(x[i : i + PREDICT_BLOCK]) for i in range(0, x.shape[0], PREDICT_BLOCK)])
        trees = self.feature.shape[0]
        rows = x.shape[0]
        tree_index = np.broadcast_to(np.arange(trees), (rows, trees))
        node = np.zeros((rows, trees), dtype=np.int64)
        for _ in range(self.depth):
            at_leaf = self.leaf[tree_index, node]
            if at_leaf.all():
                break
            values = np.take_along_axis(x, self.feature[tree_index, node], axis=1)
            step = np.where(
                values <= self.threshold[tree_index, node], self.left[tree_index, node], self.right[tree_index, node]
            )
            node = np.where(at_leaf, node, step)
        total = self.value[tree_index, node].sum(axis=1) + self.baselines.sum()
        out: FloatArray = total / self.baselines.shape[0]
        return out

    def arrays(self) -> dict[str, npt.NDArray[Any]]:
        return {
            "tree_feature": self.feature,
            "tree_threshold": self.threshold,
            "tree_left": self.left,
            "tree_right": self.right,
            "tree_leaf": self.leaf.astype(np.uint8),
            "tree_value": self.value,
            "tree_baselines": self.baselines,
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, npt.NDArray[Any]], *, depth: int, features: int) -> TreeEnsemble:
        feature = _require(arrays, "tree_feature", 2).astype(np.int64)
        shape = feature.shape
        # A split may send every finite value one way: its threshold is infinite.
        threshold = _require(arrays, "tree_threshold", 2, shape, finite=False).astype(np.float64)
        if np.isnan(threshold).any():
            raise ModelStateError("stored array 'tree_threshold' has NaN values")
        left = _require(arrays, "tree_left", 2, shape).astype(np.int64)
        right = _require(arrays, "tree_right", 2, shape).astype(np.int64)
        leaf = _require(arrays, "tree_leaf", 2, shape).astype(bool)
        value = _require(arrays, "tree_value", 2, shape).astype(np.float64)
        baselines = _require(arrays, "tree_baselines", 1).astype(np.float64)
        width = shape[1]
        inner = ~leaf
        # Out-of-range indices would read outside the arrays; refuse them rather than trust the file.
        if (
            (feature[inner] < 0).any()
            or (feature[inner] >= features).any()
            or (left[inner] <= 0).any()
            or (right[inner] <= 0).any()
            or (left[inner] >= width).any()
            or (right[inner] >= width).any()
        ):
            raise ModelStateError("stored trees have node or feature indices out of range")
        if baselines.shape[0] == 0 or not 0 <= depth < width:
            raise ModelStateError(f"stored trees have no models or an impossible depth ({depth} for {width} nodes)")
        return cls(
            np.where(inner, feature, 0), threshold, np.where(inner, left, 0), np.where(inner, right, 0),
            leaf, value, baselines, depth,
        )  # fmt: skip


def _require(
    arrays: Mapping[str, npt.NDArray[Any]],
    name: str,
    ndim: int,
    shape: tuple[int, ...] | None = None,
    *,
    finite: bool = True,
) -> npt.NDArray[Any]:
    if name not in arrays:
        raise ModelStateError(f"stored model lacks the array {name!r}")
    array = np.asarray(arrays[name])
    if array.dtype.kind not in "fiub":
        raise ModelStateError(f"stored array {name!r} is not numeric (dtype {array.dtype})")
    if array.ndim != ndim or (shape is not None and array.shape != shape):
        raise ModelStateError(f"stored array {name!r} has shape {array.shape}")
    if finite and array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ModelStateError(f"stored array {name!r} has non-finite values")
    return array


# -- conformal interval ------------------------------------------------------------------------


def conformal_offsets(
    predicted: FloatArray,
    actual: FloatArray,
    *,
    coverage: float,
    bins: int,
    weights: FloatArray | None = None,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Bin edges of predicted RUL and, per bin, the residual offsets (lower, upper) of the interval.

    Split conformal per bin: with n residuals r = actual − predicted sorted, the lower offset is the
    ⌊(n+1)·α/2⌋-th smallest and the upper the ⌈(n+1)·(1−α/2)⌉-th (α = 1 − coverage), so each tail
    holds at most α/2 of exchangeable new residuals. With `weights` (mean 1), ranks are counted in
    weight (weighted conformal, Tibshirani et al. 2019): the lower offset is the largest residual whose
    cumulative weight is at most (W+1)·α/2, the upper the smallest reaching (W+1)·(1−α/2); unit
    weights give the ranks above. Bin edges are quantiles of the predictions in the same weight.
    """
    alpha = 1.0 - coverage
    minimum = math.ceil(2.0 / alpha)  # rows a bin needs for both order statistics to exist
    bins = max(1, min(bins, predicted.shape[0] // max(minimum, 1)))
    if weights is None:
        edges = np.unique(np.quantile(predicted, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
        weights = np.ones_like(predicted)
    else:
        order = np.argsort(predicted, kind="stable")
        cumulative = np.cumsum(weights[order]) / weights.sum()
        picks = np.searchsorted(cumulative, np.linspace(0.0, 1.0, bins + 1)[1:-1], side="left")
        edges = np.unique(predicted[order][np.minimum(picks, predicted.shape[0] - 1)])
    which = np.searchsorted(edges, predicted, side="right")
    lower = np.zeros(edges.shape[0] + 1)
    upper = np.zeros(edges.shape[0] + 1)
    for b in range(edges.shape[0] + 1):
        chosen = which == b
        residuals = actual[chosen] - predicted[chosen]
        order = np.argsort(residuals, kind="stable")
        residuals, weight = residuals[order], weights[chosen][order]
        n = residuals.shape[0]
        if n < minimum:
            raise TrainingDataError(f"too few rows to calibrate the interval: {n} in a bin, at least {minimum}")
        cumulative = np.cumsum(weight)
        total = cumulative[-1]
        # The tolerance keeps 1 − 0.9 = 0.0999… from moving a rank that should be whole.
        low_rank = max(int(np.searchsorted(cumulative, (total + 1) * alpha / 2.0 + 1e-9, side="right")), 1)
        high_rank = min(int(np.searchsorted(cumulative, (total + 1) * (1.0 - alpha / 2.0) - 1e-9, side="left")) + 1, n)
        lower[b] = residuals[low_rank - 1]
        upper[b] = residuals[high_rank - 1]
    return edges, lower, upper


def calibration_rows(lengths: Sequence[int], window: int) -> tuple[BoolArray, FloatArray]:
    """Which held-out cycles calibrate the interval, and their weights (mean 1).

    The interval is for a unit in service, stopped at a random cycle of its life once its window is
    full: every held-out unit weighs the same (a long life is not more likely to be the one asked
    about), and its first `window - 1` cycles are left out (no wear yet, the estimate the cap: easy
    residuals that made the interval too narrow for units in service). A unit shorter than its
    window still gives its last cycle.
    """
    firsts = [min(window, n) - 1 for n in lengths]
    chosen: BoolArray = np.concatenate([np.arange(n) >= first for n, first in zip(lengths, firsts, strict=True)])
    weights = np.concatenate([np.full(n - first, 1.0 / (n - first)) for n, first in zip(lengths, firsts, strict=True)])
    return chosen, weights * (weights.shape[0] / weights.sum())


def calibrate_interval(
    predicted: FloatArray, actual: FloatArray, lengths: Sequence[int], *, coverage: float, **settings: Any
) -> tuple[FloatArray, FloatArray, FloatArray, float]:
    """The interval's bins and offsets from held-out units' cycles (in unit order), and the weighted
    share of the calibration cycles it holds."""
    calibrate, weights = calibration_rows(lengths, settings["window"])
    edges, lower, upper = conformal_offsets(
        predicted[calibrate], actual[calibrate], coverage=coverage, bins=settings["bins"], weights=weights
    )
    offsets = np.searchsorted(edges, predicted[calibrate], side="right")
    residuals = actual[calibrate] - predicted[calibrate]
    inside = (residuals >= lower[offsets]) & (residuals <= upper[offsets])
    return edges, lower, upper, float(np.average(inside, weights=weights))


# -- the model ---------------------------------------------------------------------------------


class RulModel:
    """Remaining useful life regression with a calibrated interval; see the module docstring."""

    kind: ClassVar[str] = "rul"

    def __init__(
        self,
        variables: Sequence[str],
        *,
        cap: float,
        coverage: float,
        params: Mapping[str, Any],
        mean: FloatArray,
        scale: FloatArray,
        trees: TreeEnsemble,
        edges: FloatArray,
        lower: FloatArray,
        upper: FloatArray,
        report: Mapping[str, Any] | None = None,
    ) -> None:
        self.variables: tuple[str, ...] = tuple(variables)
        self.cap = float(cap)
        self.coverage = float(coverage)
        self.params: dict[str, Any] = dict(params)
        self.mean = mean
        self.scale = scale
        self.trees = trees
        self.edges = edges
        self.lower_offsets = lower
        self.upper_offsets = upper
        # Held-out figures from fitting (RMSE, interval coverage on the calibration rows).
        self.report: dict[str, Any] = dict(report or {})

    # -- fitting -------------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        histories: Sequence[npt.ArrayLike],
        variables: Sequence[str],
        *,
        cap: float = 125,
        coverage: float = 0.9,
        **params: Any,
    ) -> Self:
        """Fit on run-to-failure histories (each ends at its failure cycle), one column per variable.

        For a single table with a unit id column, pass `histories_from_table(table, units)`.
        """
        if getattr(histories, "ndim", None) == 2:
            raise TrainingDataError(
                "histories must be one array per unit (a list); split a table with histories_from_table"
            )
        names = check_variables(variables, len(tuple(variables)))
        settings = _check_params(params)
        cap = float(cap)
        coverage = float(coverage)
        if not (math.isfinite(cap) and cap > 0):
            raise TrainingDataError(f"cap must be a positive number of cycles, got {cap}")
        if not 0.5 <= coverage < 1.0:
            raise TrainingDataError(f"coverage must be in [0.5, 1), got {coverage}")
        units = _training_histories(histories, names)
        folds = settings["folds"]
        if len(units) < MIN_UNITS_PER_FOLD * folds:
            raise TrainingDataError(
                f"too few units: {len(units)} run-to-failure histories for {folds} folds "
                f"(at least {MIN_UNITS_PER_FOLD * folds} needed)",
                units=len(units),
            )
        stacked = np.concatenate(units)
        if stacked.shape[0] < MIN_CYCLES:
            raise TrainingDataError(f"too few rows: {stacked.shape[0]} cycles in all (at least {MIN_CYCLES} needed)")
        mean = stacked.mean(axis=0)
        spread = stacked.max(axis=0) - stacked.min(axis=0)
        constant = spread <= CONSTANT_TOLERANCE * np.maximum(np.abs(stacked).max(axis=0), 1.0)
        if constant.any():
            named = [names[j] for j in np.flatnonzero(constant)]
            raise TrainingDataError(
                f"constant columns in training histories (no variation to learn from), variables: {', '.join(named)}",
                variables=named,
            )
        scale = stacked.std(axis=0)

        feature_args = {k: settings[k] for k in ("window", "smoothing", "baseline_cycles")}
        features = [cycle_features((u - mean) / scale, **feature_args) for u in units]
        targets = [capped_rul(u.shape[0], cap) for u in units]
        # Training rows every `stride` cycles, always including the failure cycle.
        picks = [np.arange(u.shape[0] - 1, -1, -settings["stride"])[::-1] for u in units]

        rng = np.random.default_rng(settings["seed"])
        fold_of_unit = rng.permutation(len(units)) % folds
        boosters: list[HistGradientBoostingRegressor] = []
        held_predicted: list[FloatArray] = []
        held_actual: list[FloatArray] = []
        held_units: list[int] = []
        for fold in range(folds):
            inside = [k for k in range(len(units)) if fold_of_unit[k] != fold]
            outside = [k for k in range(len(units)) if fold_of_unit[k] == fold]
            x = np.concatenate([features[k][picks[k]] for k in inside])
            y = np.concatenate([targets[k][picks[k]] for k in inside])
            booster = HistGradientBoostingRegressor(
                max_iter=settings["max_iter"],
                learning_rate=settings["learning_rate"],
                max_leaf_nodes=settings["max_leaf_nodes"],
                min_samples_leaf=settings["min_samples_leaf"],
                l2_regularization=settings["l2_regularization"],
                early_stopping=False,
                random_state=settings["seed"] + fold,
            ).fit(x, y)
            boosters.append(booster)
            held_predicted.append(np.clip(booster.predict(np.concatenate([features[k] for k in outside])), 0.0, cap))
            held_actual.append(np.concatenate([targets[k] for k in outside]))
            held_units.extend(outside)
        predicted = np.concatenate(held_predicted)
        actual = np.concatenate(held_actual)
        # The interval is calibrated for a unit in service, stopped at a random cycle of its life once
        # its window is full: every held-out unit weighs the same (a long life is not more likely to be
        # the one asked about), and its first `window` cycles (no wear yet, the estimate the cap: easy
        # residuals that made the interval too narrow for units in service) are left out.
        lengths = [units[k].shape[0] for k in held_units]
        edges, lower, upper, covered = calibrate_interval(predicted, actual, lengths, coverage=coverage, **settings)
        report = {
            "units": len(units),
            "cycles": int(stacked.shape[0]),
            "held_out_rmse": float(np.sqrt(np.mean((predicted - actual) ** 2))),
            "held_out_coverage": covered,
        }
        return cls(
            names,
            cap=cap,
            coverage=coverage,
            params=settings,
            mean=mean,
            scale=scale,
            trees=TreeEnsemble.from_boosters(boosters),
            edges=edges,
            lower=lower,
            upper=upper,
            report=report,
        )

    # -- prediction ----------------------------------------------------------------------------

    def _history(self, history: npt.ArrayLike | Mapping[str, npt.ArrayLike]) -> tuple[FloatArray, tuple[str, ...]]:
        """The history as a table in `variables` order, and the variables absent or not finite in it."""
        p = len(self.variables)
        if isinstance(history, Mapping):
            unknown = sorted(set(history) - set(self.variables))
            if unknown:
                raise ScoringDataError(f"unknown variables in the history: {', '.join(unknown)}", variables=unknown)
            lengths = {np.asarray(v).reshape(-1).shape[0] for v in history.values()}
            if len(lengths) > 1:
                raise ScoringDataError("history columns have different lengths")
            n = lengths.pop() if lengths else 0
            array = np.full((n, p), np.nan)
            for j, name in enumerate(self.variables):
                if name in history:
                    try:
                        array[:, j] = np.asarray(history[name], dtype=np.float64).reshape(-1)
                    except (TypeError, ValueError) as err:
                        raise ScoringDataError(f"history variable {name!r} is not numeric: {err}") from err
        else:
            try:
                array = np.asarray(history, dtype=np.float64)
            except (TypeError, ValueError) as err:
                raise ScoringDataError(f"history is not numeric: {err}") from err
            if array.ndim != 2 or array.shape[1] != p:
                raise ScoringDataError(
                    f"mismatched columns: the model has {p} variables ({', '.join(self.variables)}), "
                    f"the history has shape {array.shape}",
                    expected=p,
                )
        if array.shape[0] == 0:
            raise ScoringDataError("the history has no cycles")
        missing = tuple(self.variables[j] for j in np.flatnonzero(~np.isfinite(array).all(axis=0)))
        return array, missing

    def _interval(self, point: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        point = np.clip(point, 0.0, self.cap)
        which = np.searchsorted(self.edges, point, side="right")
        # A bin whose residuals all have one sign (near the cap the model underestimates) would put
        # the interval beside the estimate; widening it to hold the estimate only raises coverage.
        lower = np.minimum(np.clip(point + self.lower_offsets[which], 0.0, self.cap), point)
        upper = np.maximum(np.clip(point + self.upper_offsets[which], 0.0, self.cap), point)
        return point, lower, upper

    def predict_cycles(self, history: npt.ArrayLike | Mapping[str, npt.ArrayLike]) -> RulCurve:
        """RUL at every cycle of one unit's history (oldest row first)."""
        array, missing = self._history(history)
        n = array.shape[0]
        complete = np.isfinite(array).all(axis=1)
        # A cycle's features depend on every earlier cycle, so a gap ends what can be estimated.
        usable = n if complete.all() else int(np.argmin(complete))
        point = np.full(n, np.nan)
        lower = np.full(n, np.nan)
        upper = np.full(n, np.nan)
        if usable:
            x = cycle_features(
                (array[:usable] - self.mean) / self.scale,
                window=self.params["window"],
                smoothing=self.params["smoothing"],
                baseline_cycles=self.params["baseline_cycles"],
            )
            point[:usable], lower[:usable], upper[:usable] = self._interval(self.trees.predict(x))
        valid = np.zeros(n, dtype=bool)
        valid[:usable] = True
        return RulCurve(point, lower, upper, self.coverage, missing, valid)

    def predict(self, history: npt.ArrayLike | Mapping[str, npt.ArrayLike]) -> RulEstimate:
        """RUL at the latest cycle of one unit's history (oldest row first)."""
        array, missing = self._history(history)
        n = array.shape[0]
        if missing:
            return RulEstimate(math.nan, math.nan, math.nan, self.coverage, n, missing)
        x = cycle_features(
            (array - self.mean) / self.scale,
            window=self.params["window"],
            smoothing=self.params["smoothing"],
            baseline_cycles=self.params["baseline_cycles"],
        )[-1:]
        point, lower, upper = self._interval(self.trees.predict(x))
        return RulEstimate(float(point[0]), float(lower[0]), float(upper[0]), self.coverage, n)

    def predict_many(self, histories: Sequence[npt.ArrayLike | Mapping[str, npt.ArrayLike]]) -> list[RulEstimate]:
        """`predict` for several units, with one pass through the trees."""
        rows: list[FloatArray] = []
        results: list[RulEstimate | None] = []
        lengths: list[int] = []
        for history in histories:
            array, missing = self._history(history)
            lengths.append(array.shape[0])
            if missing:
                results.append(RulEstimate(math.nan, math.nan, math.nan, self.coverage, array.shape[0], missing))
                continue
            rows.append(
                cycle_features(
                    (array - self.mean) / self.scale,
                    window=self.params["window"],
                    smoothing=self.params["smoothing"],
                    baseline_cycles=self.params["baseline_cycles"],
                )[-1]
            )
            results.append(None)
        if rows:
            point, lower, upper = self._interval(self.trees.predict(np.vstack(rows)))
            estimates = iter(zip(point, lower, upper, strict=True))
        out: list[RulEstimate] = []
        for result, n in zip(results, lengths, strict=True):
            if result is None:
                p, lo, hi = next(estimates)
                out.append(RulEstimate(float(p), float(lo), float(hi), self.coverage, n))
            else:
                out.append(result)
        return out

    # -- state ---------------------------------------------------------------------------------

    def to_state(self) -> tuple[dict[str, Any], dict[str, npt.NDArray[Any]]]:
        """Plain JSON metadata and numeric arrays; `from_state` rebuilds the model from them."""
        meta: dict[str, Any] = {
            "format": STATE_FORMAT,
            "kind": self.kind,
            "variables": list(self.variables),
            "cap": self.cap,
            "coverage": self.coverage,
            "params": dict(self.params),
            "depth": self.trees.depth,
            "report": dict(self.report),
        }
        arrays: dict[str, npt.NDArray[Any]] = {
            "mean": self.mean,
            "scale": self.scale,
            "interval_edges": self.edges,
            "interval_lower": self.lower_offsets,
            "interval_upper": self.upper_offsets,
            **self.trees.arrays(),
        }
        return meta, {k: np.ascontiguousarray(v) for k, v in arrays.items()}

    @classmethod
    def from_state(cls, meta: Mapping[str, Any], arrays: Mapping[str, npt.ArrayLike]) -> Self:
        if meta.get("kind") != cls.kind:
            raise ModelStateError(f"stored model is of kind {meta.get('kind')!r}, not {cls.kind!r}")
        if meta.get("format") != STATE_FORMAT:
            raise ModelStateError(f"unsupported stored model format {meta.get('format')!r}")
        numeric = {k: np.asarray(v) for k, v in arrays.items()}
        try:
            variables = check_variables([str(v) for v in meta["variables"]], len(meta["variables"]))
            params = _check_params(dict(meta["params"]))
            cap = float(meta["cap"])
            coverage = float(meta["coverage"])
            depth = int(meta["depth"])
            report = dict(meta.get("report", {}))
        except (KeyError, TypeError, ValueError, TrainingDataError) as err:
            raise ModelStateError(f"stored RUL model metadata is incomplete or invalid: {err}") from err
        p = len(variables)
        mean = _require(numeric, "mean", 1, (p,)).astype(np.float64)
        scale = _require(numeric, "scale", 1, (p,)).astype(np.float64)
        if (scale <= 0).any():
            raise ModelStateError("stored scale has non-positive entries")
        edges = _require(numeric, "interval_edges", 1).astype(np.float64)
        lower = _require(numeric, "interval_lower", 1, (edges.shape[0] + 1,)).astype(np.float64)
        upper = _require(numeric, "interval_upper", 1, (edges.shape[0] + 1,)).astype(np.float64)
        trees = TreeEnsemble.from_arrays(numeric, depth=depth, features=FEATURES_PER_VARIABLE * p + 1)
        return cls(
            variables,
            cap=cap,
            coverage=coverage,
            params=params,
            mean=mean,
            scale=scale,
            trees=trees,
            edges=edges,
            lower=lower,
            upper=upper,
            report=report,
        )

    def to_bytes(self) -> bytes:
        """An `.npz` file (arrays plus JSON metadata); read back with `from_bytes`, no pickle either way."""
        meta, arrays = self.to_state()
        return state_to_bytes(meta, arrays)

    @classmethod
    def from_bytes(cls, blob: bytes) -> Self:
        meta, arrays = state_from_bytes(blob)
        return cls.from_state(meta, arrays)


class RulTracker:
    """One unit followed cycle by cycle, keeping a bounded `FeatureState` instead of its history.

    `advance` gives the estimates of the next complete cycles exactly as `predict_cycles` gives them
    for the whole history; what it keeps is `window + 1` rows of the model's variables, whatever the
    unit's age.
    """

    def __init__(self, model: RulModel) -> None:
        self.model = model
        self.state: FeatureState | None = None

    @property
    def cycles(self) -> int:
        return 0 if self.state is None else self.state.cycles

    def advance(self, rows: npt.ArrayLike, *, estimate: bool = True) -> RulCurve | None:
        """Take the unit's next complete cycles (oldest first); their estimates, unless `estimate` is false."""
        array = np.asarray(rows, dtype=np.float64)
        p = len(self.model.variables)
        if array.ndim != 2 or array.shape[1] != p:
            raise ScoringDataError(
                f"mismatched columns: the model has {p} variables, the cycles have shape {array.shape}"
            )
        if not np.isfinite(array).all():
            raise ScoringDataError("a cycle followed live must be complete (no missing or non-finite value)")
        if array.shape[0] == 0:
            return None
        features, self.state = advance_features(
            (array - self.model.mean) / self.model.scale,
            self.state,
            window=self.model.params["window"],
            smoothing=self.model.params["smoothing"],
            baseline_cycles=self.model.params["baseline_cycles"],
        )
        if not estimate:
            return None
        point, lower, upper = self.model._interval(self.model.trees.predict(features))
        return RulCurve(point, lower, upper, self.model.coverage, (), np.ones(array.shape[0], dtype=bool))

    @property
    def held_values(self) -> int:
        """How many floats the tracker keeps (bounded by the model, not the unit's age)."""
        if self.state is None:
            return 0
        return int(self.state.filter.size + self.state.tail.size + self.state.baseline_sum.size)
