"""Remaining useful life: a known linear decay learnt, the stored form, bad input, and a quick FD001 check."""

from __future__ import annotations

import copy
import io
import json
import math

import numpy as np
import pytest
from bench import cmapss
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import LinearRegression
from threadpoolctl import threadpool_limits

from iip.analytics.monitoring.base import ModelStateError, ScoringDataError, TrainingDataError
from iip.analytics.rul import (
    RulModel,
    TreeEnsemble,
    capped_rul,
    conformal_offsets,
    cycle_features,
    histories_from_table,
)
from iip.kernel.errors import Invalid

VARIABLES = ("temperature", "pressure", "vibration")
CAP = 125.0
# Small trees and few folds keep the synthetic fits to a second or two.
QUICK = {"folds": 3, "max_iter": 60, "stride": 2}


def degrading_unit(rng: np.random.Generator, life: int) -> np.ndarray:
    """A unit whose temperature rises and pressure falls linearly over its last 125 cycles.

    Each unit starts from its own offsets (manufacturing variation); vibration is noise only.
    """
    wear = CAP - capped_rul(life, CAP)  # 0 until 125 cycles before failure, then 1, 2, ... 124
    temperature = 600.0 + rng.normal(0, 2.0) + 0.2 * wear + rng.normal(0, 0.5, life)
    pressure = 40.0 + rng.normal(0, 0.3) - 0.04 * wear + rng.normal(0, 0.1, life)
    vibration = rng.normal(1.0, 0.05, life)
    return np.column_stack([temperature, pressure, vibration])


@pytest.fixture(scope="module")
def fleet() -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(2024)
    units = [degrading_unit(rng, int(life)) for life in rng.integers(150, 260, size=36)]
    return units[:28], units[28:]


@pytest.fixture(scope="module")
def model(fleet: tuple[list[np.ndarray], list[np.ndarray]]) -> RulModel:
    # Module fixtures are set up before the per-test single-thread limit of conftest.py applies.
    with threadpool_limits(limits=1):
        return RulModel.fit(fleet[0], VARIABLES, cap=CAP, coverage=0.9, **QUICK)


def test_learns_a_linear_decay(model: RulModel, fleet: tuple[list[np.ndarray], list[np.ndarray]]) -> None:
    held_out = fleet[1]
    errors: list[np.ndarray] = []
    for unit in held_out:
        curve = model.predict_cycles(unit)
        truth = capped_rul(unit.shape[0], CAP)
        assert curve.valid.all()
        errors.append(curve.point - truth)
        # Over the degrading part the estimate follows the truth closely.
        assert np.corrcoef(curve.point[-100:], truth[-100:])[0, 1] > 0.98
    error = np.concatenate(errors)
    truth_all = np.concatenate([capped_rul(u.shape[0], CAP) for u in held_out])
    rmse = float(np.sqrt(np.mean(error**2)))
    naive = float(np.sqrt(np.mean((truth_all - truth_all.mean()) ** 2)))  # predicting the mean RUL
    assert rmse < 6.0
    assert rmse < 0.2 * naive
    # At the failure cycle the estimate is close to zero.
    assert all(model.predict(unit).point < 8.0 for unit in held_out)


def test_interval_covers_held_out_units_about_as_stated(
    model: RulModel, fleet: tuple[list[np.ndarray], list[np.ndarray]]
) -> None:
    inside = []
    for unit in fleet[1]:
        curve = model.predict_cycles(unit)
        truth = capped_rul(unit.shape[0], CAP)
        assert (curve.lower <= curve.point).all()
        assert (curve.point <= curve.upper).all()
        assert ((curve.lower >= 0) & (curve.upper <= CAP)).all()
        inside.append((truth >= curve.lower) & (truth <= curve.upper))
    coverage = float(np.concatenate(inside).mean())
    assert 0.8 <= coverage <= 0.99
    assert model.report["held_out_coverage"] == pytest.approx(0.9, abs=0.03)


def test_interval_holds_the_estimate_when_a_bin_is_one_sided(
    model: RulModel, fleet: tuple[list[np.ndarray], list[np.ndarray]]
) -> None:
    # Near the cap every residual of a bin can be positive: the interval still holds the estimate.
    one_sided = copy.copy(model)
    one_sided.lower_offsets = np.abs(model.lower_offsets) + 3.0
    one_sided.upper_offsets = np.abs(model.upper_offsets) + 6.0
    curve = one_sided.predict_cycles(fleet[1][0])
    assert (curve.lower <= curve.point).all()
    assert (curve.point <= curve.upper).all()
    assert (curve.upper > curve.point).any()


def test_latest_cycle_matches_every_cycle(model: RulModel, fleet: tuple[list[np.ndarray], list[np.ndarray]]) -> None:
    unit = fleet[1][0][:120]
    estimate = model.predict(unit)
    curve = model.predict_cycles(unit)
    assert estimate.point == pytest.approx(curve.point[-1])
    assert estimate.lower == pytest.approx(curve.lower[-1])
    assert estimate.upper == pytest.approx(curve.upper[-1])
    assert estimate.cycles == 120
    assert estimate.coverage == 0.9
    assert estimate.valid
    many = model.predict_many([unit, fleet[1][1]])
    assert many[0] == estimate
    assert many[1] == model.predict(fleet[1][1])


def test_features_use_no_future_cycles() -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(size=(80, 3))
    full = cycle_features(z, window=30, smoothing=0.3, baseline_cycles=20)
    prefix = cycle_features(z[:50], window=30, smoothing=0.3, baseline_cycles=20)
    np.testing.assert_allclose(full[:50], prefix)


def test_trees_as_arrays_predict_as_scikit_learn_does() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(400, 6))
    y = 3 * x[:, 0] - np.abs(x[:, 1]) + np.sin(3 * x[:, 2]) + 0.1 * rng.normal(size=400)
    boosters = [HistGradientBoostingRegressor(max_iter=30, random_state=s).fit(x[s::2], y[s::2]) for s in (0, 1)]
    trees = TreeEnsemble.from_boosters(boosters)
    fresh = rng.normal(size=(3000, 6))  # more rows than one prediction block
    expected = np.mean([b.predict(fresh) for b in boosters], axis=0)
    np.testing.assert_allclose(trees.predict(fresh), expected, rtol=1e-12, atol=1e-9)


def test_state_round_trip_without_pickle(model: RulModel, fleet: tuple[list[np.ndarray], list[np.ndarray]]) -> None:
    meta, arrays = model.to_state()
    json.dumps(meta)  # plain JSON
    assert all(a.dtype.kind in "fiub" for a in arrays.values())
    blob = model.to_bytes()
    # Every member of the archive loads with pickling disabled.
    with np.load(io.BytesIO(blob), allow_pickle=False) as archive:
        assert set(arrays) <= set(archive.files)
    restored = RulModel.from_bytes(blob)
    for unit in fleet[1][:3]:
        np.testing.assert_array_equal(restored.predict_cycles(unit).point, model.predict_cycles(unit).point)
        assert restored.predict(unit) == model.predict(unit)
    assert restored.variables == VARIABLES
    assert restored.params == model.params


def test_stored_state_is_checked(model: RulModel) -> None:
    meta, arrays = model.to_state()
    broken = dict(arrays)
    broken["tree_feature"] = arrays["tree_feature"].copy()
    inner = ~arrays["tree_leaf"].astype(bool)
    broken["tree_feature"][inner.nonzero()[0][0], inner.nonzero()[1][0]] = 10_000
    with pytest.raises(ModelStateError, match="out of range"):
        RulModel.from_state(meta, broken)
    with pytest.raises(ModelStateError, match="lacks the array 'mean'"):
        RulModel.from_state(meta, {k: v for k, v in arrays.items() if k != "mean"})
    with pytest.raises(ModelStateError, match="kind"):
        RulModel.from_state({**meta, "kind": "pca"}, arrays)
    objects = io.BytesIO()
    np.savez(objects, __meta__=np.array(json.dumps(meta)), mean=np.array([object()], dtype=object))
    with pytest.raises(ModelStateError):
        RulModel.from_bytes(objects.getvalue())


def test_histories_from_a_table_with_unit_ids(fleet: tuple[list[np.ndarray], list[np.ndarray]]) -> None:
    units = fleet[0][:3]
    table = np.vstack(units)
    ids = np.concatenate([np.full(u.shape[0], name) for u, name in zip(units, ("b", "a", "c"), strict=True)])
    split = histories_from_table(table, ids)
    assert len(split) == 3
    for got, want in zip(split, units, strict=True):  # in order of first appearance, not sorted
        np.testing.assert_array_equal(got, want)


# -- bad input ----------------------------------------------------------------------------------


def _fit_error(histories: list[np.ndarray], variables: tuple[str, ...] = VARIABLES, **params: object) -> str:
    with pytest.raises(TrainingDataError) as caught:
        RulModel.fit(histories, variables, **{**QUICK, **params})
    assert isinstance(caught.value, Invalid)
    assert caught.value.code == "training_data_invalid"
    return str(caught.value)


def test_training_data_with_missing_values(fleet: tuple[list[np.ndarray], list[np.ndarray]]) -> None:
    units = [u.copy() for u in fleet[0]]
    units[4][17, 1] = np.nan
    message = _fit_error(units)
    assert "missing or non-finite values in unit 5" in message
    assert "pressure" in message


def test_training_data_with_a_constant_column(fleet: tuple[list[np.ndarray], list[np.ndarray]]) -> None:
    units = [u.copy() for u in fleet[0]]
    for u in units:
        u[:, 2] = 1.0
    message = _fit_error(units)
    assert "constant columns" in message
    assert "vibration" in message


def test_training_data_with_too_few_rows(fleet: tuple[list[np.ndarray], list[np.ndarray]]) -> None:
    assert "too few units" in _fit_error(fleet[0][:5])  # 3 folds need 6
    short = [u.copy() for u in fleet[0]]
    short[2] = short[2][:1]
    assert "unit 3 has 1 cycle" in _fit_error(short)
    tiny = [u[:3] for u in fleet[0][:8]]
    assert "too few rows: 24 cycles" in _fit_error(tiny)


def test_training_data_with_mismatched_columns(fleet: tuple[list[np.ndarray], list[np.ndarray]]) -> None:
    units = [u.copy() for u in fleet[0]]
    units[6] = units[6][:, :2]
    message = _fit_error(units)
    assert "mismatched columns: unit 7" in message
    assert "mismatched columns" in _fit_error(fleet[0], ("temperature", "pressure"))
    assert "one array per unit" in _fit_error(np.vstack(fleet[0]))  # type: ignore[arg-type]


def test_bad_parameters(fleet: tuple[list[np.ndarray], list[np.ndarray]]) -> None:
    assert "unknown RUL model parameters: depth" in _fit_error(fleet[0], depth=3)
    assert "smoothing" in _fit_error(fleet[0], smoothing=0.0)
    with pytest.raises(TrainingDataError, match="coverage"):
        RulModel.fit(fleet[0], VARIABLES, coverage=1.0)


def test_scoring_with_a_missing_variable_is_flagged_not_imputed(
    model: RulModel, fleet: tuple[list[np.ndarray], list[np.ndarray]]
) -> None:
    unit = fleet[1][0]
    partial = {"temperature": unit[:, 0], "vibration": unit[:, 2]}
    estimate = model.predict(partial)
    assert estimate.missing == ("pressure",)
    assert not estimate.valid
    assert math.isnan(estimate.point)
    assert math.isnan(estimate.lower)
    assert math.isnan(estimate.upper)
    # A gap part-way: the cycles before it are estimated, the ones from it on are not.
    gappy = unit.copy()
    gappy[90, 0] = np.nan
    curve = model.predict_cycles(gappy)
    assert curve.missing == ("temperature",)
    assert curve.valid[:90].all()
    assert not curve.valid[90:].any()
    assert np.isnan(curve.point[90:]).all()
    np.testing.assert_array_equal(curve.point[:90], model.predict_cycles(unit[:90]).point)
    assert model.predict(gappy).missing == ("temperature",)
    many = model.predict_many([gappy, unit])
    assert many[0].missing == ("temperature",)
    assert many[1].valid


def test_scoring_with_the_wrong_shape_is_refused(model: RulModel) -> None:
    with pytest.raises(ScoringDataError, match="mismatched columns"):
        model.predict(np.ones((40, 2)))
    with pytest.raises(ScoringDataError, match="unknown variables in the history: speed"):
        model.predict({"temperature": [1.0], "pressure": [1.0], "vibration": [1.0], "speed": [1.0]})
    with pytest.raises(ScoringDataError, match="no cycles"):
        model.predict(np.ones((0, 3)))


def test_conformal_offsets_on_known_residuals() -> None:
    predicted = np.full(199, 50.0)
    actual = predicted + np.arange(-99, 100, dtype=np.float64)  # residuals -99 .. 99
    edges, lower, upper = conformal_offsets(predicted, actual, coverage=0.9, bins=1)
    # n = 199, α/2 = 0.05: ranks ⌊200·0.05⌋ = 10 and ⌈200·0.95⌉ = 190 of the sorted residuals.
    assert edges.size == 0
    assert lower.tolist() == [-90.0]
    assert upper.tolist() == [90.0]


# -- NASA C-MAPSS FD001 -------------------------------------------------------------------------


@pytest.mark.skipif(not cmapss.available(), reason=f"C-MAPSS FD001 not found at {cmapss.CMAPSS_DIR}")
def test_fd001_reduced_model_beats_a_linear_baseline() -> None:
    train = cmapss.training()
    test, truth = cmapss.evaluation_units()
    capped = np.minimum(truth, CAP)
    model = RulModel.fit(train, cmapss.FD001_SENSORS, cap=CAP, folds=3, max_iter=60, stride=3)
    ours = cmapss.rmse(np.array([e.point for e in model.predict_many(test)]), capped)
    x = np.vstack(train)
    y = np.concatenate([capped_rul(u.shape[0], CAP) for u in train])
    last = np.vstack([u[-1:] for u in test])
    baseline = cmapss.rmse(np.clip(LinearRegression().fit(x, y).predict(last), 0, CAP), capped)
    # The full model reaches about 10.7 (bench/analytics_cmapss.py); the linear baseline about 20.6.
    assert ours < 14.0
    assert ours < 0.75 * baseline
