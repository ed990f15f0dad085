"""Process monitors on synthetic normal data with known faults, and their stored state."""

from __future__ import annotations

import io
import json
import pickle
from typing import Any

import numpy as np
import pytest

from iip.analytics.monitoring import (
    MONITOR_KINDS,
    ModelStateError,
    Monitor,
    ScoringDataError,
    TrainingDataError,
    load_monitor,
    monitor_from_bytes,
    monitor_to_bytes,
    state_from_bytes,
    state_to_bytes,
)
from iip.analytics.monitoring.base import persistent
from iip.analytics.monitoring.dpca import DpcaMonitor
from iip.analytics.monitoring.dynamic import DynamicMahalanobisMonitor
from iip.analytics.monitoring.ica import IcaMonitor
from iip.analytics.monitoring.pca import PcaMonitor

P = 8
VARIABLES = tuple(f"x{i}" for i in range(P))


def process(rows: int, seed: int, *, ar: float = 0.0) -> np.ndarray:
    """Correlated normal operation: 3 latent drivers (optionally AR(1) in time) plus sensor noise."""
    rng = np.random.default_rng(seed)
    mixing = np.random.default_rng(1).normal(size=(3, P))
    latent = rng.normal(size=(rows, 3))
    for t in range(1, rows):
        latent[t] += ar * latent[t - 1]
    return 10.0 + latent @ mixing + 0.3 * rng.normal(size=(rows, P))


FITS: dict[str, Any] = {
    "pca": lambda data, **kw: PcaMonitor.fit(data, VARIABLES, **kw),
    "dpca": lambda data, **kw: DpcaMonitor.fit(data, VARIABLES, lags=1, **kw),
    "ica": lambda data, **kw: IcaMonitor.fit(data, VARIABLES, components=3, **kw),
    "dynamic_mahalanobis": lambda data, **kw: DynamicMahalanobisMonitor.fit(data, VARIABLES, lags=1, **kw),
}


def test_every_registered_kind_is_exercised() -> None:
    from iip.analytics.monitoring import kinds  # noqa: F401

    assert set(MONITOR_KINDS) == set(FITS)


@pytest.mark.parametrize("method", ["empirical", "theoretical"])
def test_pca_limits_give_the_stated_false_alarm_rate(method: str) -> None:
    monitor = PcaMonitor.fit(process(3000, seed=2), VARIABLES, false_alarm_rate=0.05, limit_method=method)
    scores = monitor.score(process(40_000, seed=3))
    assert monitor.basis.components == 3  # three drivers carry over 90 % of the variance
    for statistic in ("t2", "spe"):
        rate = scores.exceeded(statistic).mean()
        assert 0.035 < rate < 0.065, (statistic, rate)
    assert scores.valid.all()


@pytest.mark.parametrize("kind", sorted(FITS))
def test_normal_data_stays_near_the_stated_rate(kind: str) -> None:
    monitor = FITS[kind](process(2000, seed=4), false_alarm_rate=0.02)
    scores = monitor.score(process(10_000, seed=5))
    for statistic in scores.statistics:
        rate = scores.exceeded(statistic)[monitor.history :].mean()
        assert rate < 0.05, (statistic, rate)


@pytest.mark.parametrize("kind", sorted(FITS))
def test_a_shift_in_one_variable_is_detected_and_named(kind: str) -> None:
    monitor = FITS[kind](process(2000, seed=6))
    faulty = process(400, seed=7)
    faulty[:, 5] += 3.0  # about 1.5 standard deviations of x5, against its correlation with the rest
    scores = monitor.score(faulty)
    assert scores.alarm[monitor.history :].mean() > 0.9
    contributions = monitor.contributions(faulty)
    assert set(contributions) == set(scores.statistics)
    # The statistic that carries the fault names x5 as the largest contributor.
    carrying = max(scores.statistics, key=lambda s: scores.exceeded(s).mean())
    assert max(contributions[carrying], key=contributions[carrying].__getitem__) == "x5"


@pytest.mark.parametrize("kind", sorted(FITS))
def test_state_round_trips_exactly(kind: str) -> None:
    monitor = FITS[kind](process(600, seed=8, ar=0.5))
    blob = monitor_to_bytes(monitor)
    loaded = monitor_from_bytes(blob)
    assert type(loaded) is type(monitor)
    assert loaded.variables == monitor.variables
    assert loaded.limits == monitor.limits
    assert loaded.params() == monitor.params()
    data = process(300, seed=9, ar=0.5)
    before, after = monitor.score(data), loaded.score(data)
    for name in before.statistics:
        np.testing.assert_array_equal(before.statistics[name], after.statistics[name])
    np.testing.assert_array_equal(before.alarm, after.alarm)
    assert loaded.contributions(data) == monitor.contributions(data)
    meta, arrays = monitor.to_state()
    json.dumps(meta)  # plain JSON
    assert all(isinstance(a, np.ndarray) and a.dtype == np.float64 for a in arrays.values())


def test_loading_never_unpickles(monkeypatch: pytest.MonkeyPatch) -> None:
    monitor = PcaMonitor.fit(process(300, seed=10), VARIABLES)
    blob = monitor_to_bytes(monitor)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    assert monitor_from_bytes(blob).limits == monitor.limits

    # A file carrying a pickled object array is refused, not loaded.
    meta, arrays = monitor.to_state()
    buffer = io.BytesIO()
    np.savez(
        buffer,
        __meta__=np.array(json.dumps(meta)),
        loadings=np.array([object()], dtype=object),
        **{k: v for k, v in arrays.items() if k != "loadings"},
    )
    with pytest.raises(ModelStateError, match="cannot be read"):
        state_from_bytes(buffer.getvalue())


def test_malformed_state_is_refused() -> None:
    monitor = PcaMonitor.fit(process(300, seed=11), VARIABLES)
    meta, arrays = monitor.to_state()
    with pytest.raises(ModelStateError, match="unknown monitor kind"):
        load_monitor({**meta, "kind": "os.system"}, arrays)
    with pytest.raises(ModelStateError, match="lacks the array 'loadings'"):
        load_monitor(meta, {k: v for k, v in arrays.items() if k != "loadings"})
    with pytest.raises(ModelStateError, match="has shape"):
        load_monitor(meta, {**arrays, "loadings": arrays["loadings"][:, :1]})
    with pytest.raises(ModelStateError, match="non-finite"):
        load_monitor(meta, {**arrays, "mean": np.full(P, np.nan)})
    with pytest.raises(ModelStateError, match="not numeric"):
        load_monitor(meta, {**arrays, "mean": np.array(["a"] * P)})
    with pytest.raises(ModelStateError, match="no metadata"):
        state_from_bytes(state_to_bytes({}, arrays).replace(b"__meta__", b"__xxxx__"))
    with pytest.raises(ModelStateError, match="cannot be read"):
        state_from_bytes(b"not an npz file")
    with pytest.raises(ModelStateError, match="would need pickling"):
        state_to_bytes(meta, {"loadings": np.array([object()], dtype=object)})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.__setitem__((5, 2), np.nan), "missing or non-finite values in training data, variables: x2"),
        (lambda d: d.__setitem__((slice(None), 4), 1.5), "constant columns in training data .*variables: x4"),
    ],
)
def test_bad_training_data_is_named(change: Any, message: str) -> None:
    data = process(300, seed=12)
    change(data)
    with pytest.raises(TrainingDataError, match=message):
        PcaMonitor.fit(data, VARIABLES)


def test_training_shape_errors_are_named() -> None:
    data = process(300, seed=13)
    with pytest.raises(TrainingDataError, match="too few rows in training data: 5"):
        PcaMonitor.fit(data[:5], VARIABLES)
    with pytest.raises(TrainingDataError, match="mismatched columns: the data has 8 columns but 7 variable names"):
        PcaMonitor.fit(data, VARIABLES[:7])
    with pytest.raises(TrainingDataError, match="duplicate variable names: x1"):
        PcaMonitor.fit(data, ("x1", *VARIABLES[1:]))
    with pytest.raises(TrainingDataError, match="not numeric"):
        PcaMonitor.fit([["a"] * P] * 20, VARIABLES)
    bad = process(50, seed=14)
    bad[0, 3] = np.inf
    with pytest.raises(TrainingDataError, match="validation data, variables: x3"):
        PcaMonitor.fit(data, VARIABLES, validation=bad)
    with pytest.raises(TrainingDataError, match="unknown parameters for pca: lags"):
        PcaMonitor.fit(data, VARIABLES, lags=2)
    with pytest.raises(TrainingDataError, match="persistence must be at least 1"):
        PcaMonitor.fit(data, VARIABLES, persistence=0)
    with pytest.raises(TrainingDataError, match="false_alarm_rate"):
        PcaMonitor.fit(data, VARIABLES, false_alarm_rate=0.0)
    with pytest.raises(TrainingDataError, match="too few rows in training data: 40"):
        DynamicMahalanobisMonitor.fit(data[:40], VARIABLES, lags=4)


@pytest.mark.parametrize("kind", sorted(FITS))
def test_a_missing_variable_is_flagged_not_imputed(kind: str) -> None:
    monitor: Monitor = FITS[kind](process(600, seed=15))
    data = process(50, seed=16)
    data[10:13, 6] = np.nan
    scores = monitor.score(data)
    assert scores.missing == ["x6"]
    history = monitor.history
    unscored = np.zeros(50, dtype=bool)
    unscored[:history] = True
    unscored[10 : 13 + history] = True
    np.testing.assert_array_equal(scores.valid, ~unscored)
    for values in scores.statistics.values():
        assert np.isnan(values[unscored]).all()
        assert np.isfinite(values[~unscored]).all()
    assert not scores.alarm[unscored].any()

    # A mapping lacking a variable: every row unscored, the variable named.
    columns = {name: data[:, j] for j, name in enumerate(VARIABLES) if name != "x0"}
    scores = monitor.score(columns)
    assert scores.missing == ["x0", "x6"]
    assert not scores.valid.any()
    with pytest.raises(ScoringDataError, match="missing: x0, x6"):
        monitor.contributions(columns)


def test_scoring_shape_errors() -> None:
    monitor = PcaMonitor.fit(process(300, seed=17), VARIABLES)
    with pytest.raises(ScoringDataError, match="mismatched columns: the monitor has 8 variables"):
        monitor.score(np.zeros((3, 7)))
    with pytest.raises(ScoringDataError, match="unknown variables in scoring data: y"):
        monitor.score({"y": [1.0]})
    single = monitor.score(process(1, seed=18)[0])
    assert single.alarm.shape == (1,)


def test_persistence_filter_needs_consecutive_exceedances() -> None:
    flags = np.array([1, 1, 0, 1, 1, 1, 0, 1], dtype=bool)
    np.testing.assert_array_equal(persistent(flags, 3), [0, 0, 0, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(persistent(flags, 1), flags)
    monitor = PcaMonitor.fit(process(600, seed=19), VARIABLES, persistence=3)
    data = process(20, seed=20)
    data[[4, 10, 11, 12, 13], 5] += 6.0
    scores = monitor.score(data)
    assert scores.exceeded("spe")[4]
    np.testing.assert_array_equal(np.flatnonzero(scores.alarm), [12, 13])
    assert monitor.score(data, persistence=1).alarm[4]


@pytest.mark.parametrize("kind", sorted(FITS))
def test_a_long_block_scores_as_its_pieces_do(kind: str) -> None:
    """Blocks longer than a scoring chunk are worked through in chunks; every row gets its own figures."""
    from iip.analytics.monitoring.base import chunk_rows

    monitor = FITS[kind](process(400, seed=3))
    step = chunk_rows(P * (monitor.history + 1))
    rows = process(2 * step + 77, seed=4)
    rows[step + 5, 2] += 30.0  # one outlier just past the first chunk
    whole = monitor.score(rows)
    history = monitor.history
    for statistic in whole.statistics:
        pieces = [
            monitor.score(rows[max(0, s - history) : s + 100]).statistics[statistic] for s in range(0, len(rows), 100)
        ]
        joined = np.concatenate(
            [piece if s == 0 else piece[history:] for s, piece in zip(range(0, len(rows), 100), pieces, strict=True)]
        )
        np.testing.assert_allclose(whole.statistics[statistic], joined, rtol=1e-12, atol=1e-12)
    assert whole.alarm[step + 5]
