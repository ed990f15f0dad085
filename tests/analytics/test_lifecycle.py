"""The model lifecycle beyond monitors: sample-and-hold alignment, RUL scored live and trained on stored
telemetry, and the fault classifier in the registry and in a monitor's alarms."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iip.alarms.lifespan import alarms_lifespan
from iip.alarms.public import ALARM_EVENTS, AlarmEvent
from iip.alarms.rules import parse_rule
from iip.alarms.service import AlarmService
from iip.analytics.alignment import SampleAligner
from iip.analytics.fitting import load_model
from iip.analytics.models import Deployment
from iip.analytics.monitoring import TrainingDataError, monitor_to_bytes, state_from_bytes
from iip.analytics.monitoring.classify import FaultClassifier
from iip.analytics.monitoring.pca import PcaMonitor
from iip.analytics.public import LIMIT_EXCEEDED, RUL_LOW, score_metric
from iip.analytics.rul import RulModel
from iip.analytics.scoring import SCORING_SERVICE, LiveScorer, RulScorer, ScoringRunner, scoring_lifespan
from iip.analytics.service import AnalyticsService, DeployedVersion
from iip.kernel.auth import Principal, Role
from iip.kernel.bus import Delivery, MemoryBus
from iip.kernel.errors import Invalid
from iip.kernel.runtime import Runtime
from iip.telemetry.public import TELEMETRY_POINTS, PointBatch, PointBatchBuilder, store_points
from iip.telemetry.writer import writer_lifespan
from tests.analytics.support import (
    RUL_CAP,
    RUL_QUICK,
    RUL_VARIABLES,
    VARIABLES,
    csv_bytes,
    degrading_unit,
    engineer,
    faulty,
    normal_data,
    rul_fleet_csv,
)
from tests.analytics.test_live_scoring import eventually, stored
from tests.cli.conftest import InProcessIip, one_line
from tests.conftest import TenantFixture

DEVICE = "pump-1"
START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
START_MS = int(START.timestamp() * 1000)
STEP_MS = 1000
STAGGER_MS = 150  # each variable of a device arrives this much after the previous one


def deployed(monitor: Any, settings: dict[str, Any] | None = None, classifier: bytes | None = None) -> DeployedVersion:
    sources = [{"variable": v, "device": "", "metric": v} for v in monitor.variables]
    return DeployedVersion(
        uuid.uuid4().hex, "t", DEVICE, "m", 1, sources, monitor_to_bytes(monitor), "sha", "pca", settings or {},
        classifier,
    )  # fmt: skip


def staggered_points(rows: np.ndarray[Any, Any], first: int = 0) -> tuple[Any, Any, Any]:
    """Each sample's variables one after the other, STAGGER_MS apart (as separate reads stamp them)."""
    n, p = rows.shape
    ts = (START_MS + (first + np.arange(n))[:, None] * STEP_MS + np.arange(p)[None, :] * STAGGER_MS).reshape(-1)
    return ts.astype(np.int64), np.tile(np.arange(p, dtype=np.int64), n), rows.reshape(-1).astype(np.float64)


# --- sample-and-hold


def test_staggered_variables_make_one_sample_a_round_scored_as_the_aligned_rows() -> None:
    normal = normal_data(400)
    monitor = PcaMonitor.fit(normal[:300], VARIABLES)
    scorer = LiveScorer(deployed(monitor), monitor)
    rows = np.vstack([normal[300:340], faulty(normal[340:350], shift=4.0)])
    block = scorer.take(*staggered_points(rows), now=0.0)
    assert block is not None
    # One sample per round, stamped with its last variable's time; every variable fresh, nothing missing.
    last = (len(VARIABLES) - 1) * STAGGER_MS
    assert block.times_ms.tolist() == [START_MS + i * STEP_MS + last for i in range(rows.shape[0])]
    assert block.missing.tolist() == [0] * rows.shape[0]
    reference = monitor.score(rows)
    np.testing.assert_allclose(block.statistics["t2"], reference.statistics["t2"])
    assert block.alarm.tolist() == reference.alarm.tolist()
    assert block.alarm[40:].all()


def test_a_silent_variable_is_held_for_two_periods_then_flagged_missing() -> None:
    normal = normal_data(320)
    monitor = PcaMonitor.fit(normal[:300], VARIABLES)
    scorer = LiveScorer(deployed(monitor), monitor)
    ts, columns, values = staggered_points(normal[300:320])
    speed = VARIABLES.index("speed")
    # `speed` stops reporting after the 5th sample.
    keep = ~((columns == speed) & (ts >= START_MS + 5 * STEP_MS))
    block = scorer.take(ts[keep], columns[keep], values[keep], now=0.0)
    assert block is not None
    # Samples 0-4 complete; then speed is held while its value is at most 2 s old, then missing.
    assert block.missing.tolist()[:9] == [0, 0, 0, 0, 0, 0, 0, 1, 1]
    assert block.valid.tolist()[:9] == [True] * 7 + [False, False]
    held = normal[300:320].copy()
    held[5:7, speed] = held[4, speed]
    np.testing.assert_allclose(block.statistics["t2"][:7], monitor.score(held[:7]).statistics["t2"])
    assert block.missing_changes[-1] == (7, True, ["speed"])


def test_the_deployment_staleness_overrides_the_period() -> None:
    normal = normal_data(310)
    monitor = PcaMonitor.fit(normal[:300], VARIABLES)
    ts, columns, values = staggered_points(normal[300:310])
    keep = ~((columns == 0) & (ts >= START_MS + 3 * STEP_MS))  # `temp` stops after the 3rd sample
    strict = LiveScorer(deployed(monitor, {"staleness_s": 0.5}), monitor)
    lenient = LiveScorer(deployed(monitor, {"staleness_s": 60}), monitor)
    a = strict.take(ts[keep], columns[keep], values[keep], now=0.0)
    b = lenient.take(ts[keep], columns[keep], values[keep], now=0.0)
    assert a is not None
    assert b is not None
    assert a.missing[3:].tolist() == [1] * (a.missing.size - 3)
    assert b.missing.tolist() == [0] * b.missing.size


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cuts=st.lists(st.integers(min_value=1, max_value=119), max_size=6, unique=True),
    dropped=st.sets(st.integers(min_value=0, max_value=119), max_size=20),
)
def test_any_batching_of_the_points_gives_the_same_samples(cuts: list[int], dropped: set[int]) -> None:
    rng = np.random.default_rng(3)
    rows = rng.normal(size=(24, 5))
    ts, columns, values = staggered_points(rows)
    keep = np.ones(ts.size, dtype=bool)
    keep[sorted(dropped)] = False  # some values never arrive
    ts, columns, values = ts[keep], columns[keep], values[keep]
    whole = SampleAligner(5)
    times_a, rows_a = whole.take(ts, columns, values, now=0.0)
    parts = SampleAligner(5)
    bounds = [0, *sorted(c for c in cuts if c < ts.size), ts.size]
    got = [parts.take(ts[a:b], columns[a:b], values[a:b], now=0.0) for a, b in itertools.pairwise(bounds)]
    times_b = np.concatenate([g[0] for g in got])
    rows_b = np.vstack([g[1] for g in got])
    assert times_a.tolist() == times_b.tolist()
    np.testing.assert_array_equal(rows_a, rows_b)
    # Never a value that did not arrive: every finite cell is one of the values sent for its variable.
    for j in range(5):
        sent = set(values[columns == j].tolist())
        assert set(rows_a[np.isfinite(rows_a[:, j]), j].tolist()) <= sent


# --- RUL: trained on stored telemetry, scored live


@pytest.fixture(scope="module")
def rul_training() -> bytes:
    return rul_fleet_csv(12)[0]


def store_unit(
    runtime: Runtime, tenant: TenantFixture, device: str, rows: np.ndarray[Any, Any], first: int = 0
) -> None:
    builder = PointBatchBuilder(tenant.id, "test")
    for i, row in enumerate(rows.tolist()):
        for name, value in zip(RUL_VARIABLES, row, strict=True):
            builder.add(device, name, START_MS + (first + i) * STEP_MS, value)
    store_points(runtime, builder.build())


def test_a_rul_model_trains_on_stored_telemetry_one_unit_per_device(runtime: Runtime, tenant_a: TenantFixture) -> None:
    rng = np.random.default_rng(4)
    lives = [int(rng.integers(150, 230)) for _ in range(10)]
    devices = [f"engine-{k}" for k in range(10)]
    for device, life in zip(devices, lives, strict=True):
        store_unit(runtime, tenant_a, device, degrading_unit(rng, life))
    # A unit with a hole in one variable is named, with the variable and the time.
    store_unit(runtime, tenant_a, "engine-gap", degrading_unit(rng, 60)[:, :1] @ np.ones((1, 3)))
    builder = PointBatchBuilder(tenant_a.id, "test")
    for i in range(61, 80):
        for name in RUL_VARIABLES:
            builder.add("engine-gap", name, START_MS + i * STEP_MS, 1.0)
    store_points(runtime, builder.build())
    end = START + dt.timedelta(seconds=300)
    with runtime.db.session() as session:
        svc = AnalyticsService(session, engineer(tenant_a), runtime=runtime)
        version = svc.train_from_telemetry(
            "engine", "rul", devices=devices, metrics=list(RUL_VARIABLES), start=START, end=end, interval_s=1,
            parameters=RUL_QUICK,
        )  # fmt: skip
        assert version.metrics["units"] == 10
        assert version.metrics["cycles"] == sum(lives)
        assert version.data_source["runs"]["engine-3"]["cycles"] == lives[3]
        assert version.data_source["interval_ms"] == 1000
        assert [s["device"] for s in version.sources] == ["", "", ""]
        with pytest.raises(TrainingDataError, match=r"gap in 'temperature' of unit 'engine-gap': no good point between "
                           r"2026-01-01T00:01:00.000Z"):  # fmt: skip
            svc.train_from_telemetry(
                "engine", "rul", devices=[*devices, "engine-gap"], metrics=list(RUL_VARIABLES), start=START,
                end=end, interval_s=1, parameters=RUL_QUICK,
            )  # fmt: skip
        with pytest.raises(TrainingDataError, match="no stored points of unit 'engine-none'"):
            svc.train_from_telemetry(
                "engine", "rul", devices=[*devices, "engine-none"], metrics=list(RUL_VARIABLES), start=START,
                end=end, interval_s=1, parameters=RUL_QUICK,
            )  # fmt: skip


def rul_deployed(model: RulModel, settings: dict[str, Any]) -> DeployedVersion:
    sources = [{"variable": v, "device": "", "metric": v} for v in model.variables]
    return DeployedVersion(
        uuid.uuid4().hex, "t", DEVICE, "engine", 1, sources, model.to_bytes(), "sha", "rul", settings
    )


def unit_batch(tenant_id: str, rows: np.ndarray[Any, Any], first: int) -> PointBatch:
    """One cycle a second; the variables of a cycle staggered inside it."""
    builder = PointBatchBuilder(tenant_id, "test")
    for i, row in enumerate(rows.tolist()):
        for j, (name, value) in enumerate(zip(RUL_VARIABLES, row, strict=True)):
            builder.add(DEVICE, name, START_MS + (first + i) * STEP_MS + j * STAGGER_MS, value)
    return builder.build()


def test_a_deployed_rul_model_estimates_each_cycle_and_warns_below_its_threshold(rul_training: bytes) -> None:
    from iip.analytics.training import read_file

    table = read_file(rul_training, "fleet.csv", purpose="training", unit_column="unit", variables=RUL_VARIABLES)
    from iip.analytics.rul import histories_from_table

    model = RulModel.fit(histories_from_table(table.data, np.asarray(table.units)), RUL_VARIABLES, cap=RUL_CAP,
                         **RUL_QUICK)  # fmt: skip
    unit = degrading_unit(np.random.default_rng(21), 200)
    runner = ScoringRunner(Runtime.__new__(Runtime))
    item = rul_deployed(model, {"interval_ms": STEP_MS, "since_ms": START_MS, "rul_threshold": 30.0})
    runner._install([item])
    outcomes = [runner.take(unit_batch("t", unit[i : i + 20], i), now=0.0) for i in range(0, 200, 20)]
    series: dict[str, dict[int, float]] = {}
    events = []
    for outcome in outcomes:
        assert outcome is not None
        events += outcome.events
        batch = outcome.batch()
        if batch is None:
            continue
        for k, ts, value in zip(batch.series_index, batch.ts_ms, batch.value, strict=True):
            series.setdefault(batch.series[k][1], {})[(ts - START_MS) // STEP_MS] = value
    # The last cycle stays open (nothing later has arrived); every earlier one is estimated as the
    # model estimates the same history cycle by cycle.
    curve = model.predict_cycles(unit[:199])
    for name, values in (("rul", curve.point), ("rul_low", curve.lower), ("rul_high", curve.upper)):
        got = series[score_metric("engine", name)]
        assert sorted(got) == list(range(199))
        np.testing.assert_allclose([got[c] for c in range(199)], values)
    low = [e for e in events if e.kind == RUL_LOW]
    first_low = int(np.flatnonzero(curve.lower < 30.0)[0])
    assert [e.active for e in low][:2] == [False, True]
    raised = low[1]
    assert raised.at == START + dt.timedelta(seconds=first_low)
    assert raised.details["rul_low"] < 30.0 <= raised.details["threshold"]
    assert raised.details["cycles"] == first_low + 1
    assert "below 30" in raised.message
    # Near its failure the unit's estimate is low and its interval holds the truth most of the time.
    truth = np.minimum(199 - np.arange(199), RUL_CAP)
    assert np.mean((curve.lower <= truth) & (truth <= curve.upper)) > 0.6
    assert curve.point[-1] < 40


def test_a_live_rul_unit_keeps_a_bounded_state_and_estimates_as_from_its_whole_history(
    rul_training: bytes,
) -> None:
    from iip.analytics.rul import histories_from_table
    from iip.analytics.training import read_file

    table = read_file(rul_training, "fleet.csv", purpose="training", unit_column="unit", variables=RUL_VARIABLES)
    model = RulModel.fit(histories_from_table(table.data, np.asarray(table.units)), RUL_VARIABLES, cap=RUL_CAP,
                         **RUL_QUICK)  # fmt: skip
    rng = np.random.default_rng(4)
    # A long-lived unit: three lives end to end, 600 cycles fed in batches of uneven size.
    unit = np.vstack([degrading_unit(rng, 200) for _ in range(3)])
    scorer = RulScorer(rul_deployed(model, {"interval_ms": STEP_MS, "since_ms": START_MS}), model)
    got: dict[int, float] = {}
    held: list[int] = []
    first = 0
    for size in itertools.cycle([1, 7, 30, 2, 61]):
        if first >= unit.shape[0]:
            break
        batch = unit_batch("t", unit[first : first + size], first)
        columns = np.array([RUL_VARIABLES.index(s[1]) for s in batch.series], dtype=np.int64)[batch.series_index]
        block = scorer.take(np.asarray(batch.ts_ms), columns, np.asarray(batch.value), now=0.0)
        if block is not None:
            got.update(
                zip(((block.times_ms - START_MS) // STEP_MS).tolist(), block.statistics["rul"].tolist(), strict=True)
            )
        held.append(scorer.tracker.held_values)
        first += size
    # What it keeps does not grow with the unit's age: the window's look-back and two rows, no more.
    window = int(model.params["window"])
    assert scorer.tracker.cycles == unit.shape[0] - 1  # the last cycle stays open
    assert max(held) == (window + 1) * len(RUL_VARIABLES)
    assert not hasattr(scorer, "history")
    # Every estimate is the one of the whole history up to that cycle, to the last bit.
    reference = model.predict_cycles(unit[:-1])
    assert sorted(got) == list(range(unit.shape[0] - 1))
    np.testing.assert_array_equal([got[c] for c in range(unit.shape[0] - 1)], reference.point)


async def test_rul_live_through_the_bus_and_a_restart_keeps_the_units_age(
    runtime: Runtime, tenant_a: TenantFixture, rul_training: bytes
) -> None:
    admin = Principal("user", "admin", "admin", tenant_a.id, Role.ADMIN)
    rule = {"key": "engine.life", "kind": "event", "title": "Engine near its end of life",
            "scope": {"device": DEVICE}, "source": "analytics", "event_kind": RUL_LOW, "priority": "high"}  # fmt: skip
    with runtime.db.session() as session:
        svc = AnalyticsService(session, admin, runtime=runtime)
        version = svc.train_from_file(
            "engine", "rul", rul_training, "fleet.csv", unit_column="unit", variables=list(RUL_VARIABLES),
            parameters=RUL_QUICK,
        )  # fmt: skip
        with pytest.raises(Invalid, match="classifier goes with a process monitor"):
            svc.deploy(version, DEVICE, interval_s=1, classifier=version)
        svc.deploy(version, DEVICE, rul_threshold=30, interval_s=1, since=START)
        AlarmService(session, admin).import_rules([parse_rule(rule)], tenant_id=tenant_a.id)
        model = svc.rul_model(version)
    unit = degrading_unit(np.random.default_rng(21), 200)
    heard: list[AlarmEvent] = []

    async def listen(delivery: Delivery[AlarmEvent]) -> None:
        heard.append(delivery.payload)

    bus = MemoryBus()
    runtime.bus = bus
    await bus.start()
    await bus.subscribe(ALARM_EVENTS, listen, durable="test-listener")
    metric = score_metric("engine", "rul")
    async with writer_lifespan(runtime), alarms_lifespan(runtime):
        async with scoring_lifespan(runtime):
            runner: ScoringRunner = runtime.services[SCORING_SERVICE]
            for first in range(0, 120, 40):
                await bus.publish(TELEMETRY_POINTS, unit_batch(tenant_a.id, unit[first : first + 40], first))
            await eventually(lambda: 118_000 in stored(runtime, tenant_a, metric))
        # A restart: the new scorer reads the unit's 120 stored cycles back, then goes on live.
        async with scoring_lifespan(runtime):
            runner = runtime.services[SCORING_SERVICE]
            [scorer] = runner.scorers.values()
            assert scorer.tracker.cycles == 120  # type: ignore[union-attr]
            for first in range(120, 200, 40):
                await bus.publish(TELEMETRY_POINTS, unit_batch(tenant_a.id, unit[first : first + 40], first))
            await eventually(lambda: 198_000 in stored(runtime, tenant_a, metric))
            await eventually(lambda: any(e.kind == RUL_LOW and e.active for e in heard))
    got = stored(runtime, tenant_a, metric)
    curve = model.predict_cycles(unit[:199])
    np.testing.assert_allclose([got[c * STEP_MS] for c in range(199)], curve.point)
    lows = stored(runtime, tenant_a, score_metric("engine", "rul_low"))
    assert min(lows.values()) < 30
    raised = [e for e in heard if e.kind == RUL_LOW and e.active]
    assert raised[0].subject == DEVICE
    with runtime.db.session() as session:
        [deployment] = session.query(Deployment).all()
        assert deployment.settings == {"rul_threshold": 30.0, "interval_ms": 1000, "since_ms": START_MS}


# --- the fault classifier


def labelled_csv(seed: int = 7, rows: int = 200) -> bytes:
    """Normal rows, then rows with `flow` shifted, then rows with `speed` shifted, each labelled."""
    data = normal_data(3 * rows, seed=seed)
    blocks = [data[:rows], faulty(data[rows : 2 * rows], "flow", 3.0), faulty(data[2 * rows :], "speed", 3.0)]
    labels = ["normal"] * rows + ["flow"] * rows + ["speed"] * rows
    return csv_bytes(np.vstack(blocks), labels=labels)


def test_a_classifier_is_trained_versioned_and_evaluated_without_pickle(
    runtime: Runtime, tenant_a: TenantFixture
) -> None:
    with runtime.db.session() as session:
        svc = AnalyticsService(session, engineer(tenant_a), runtime=runtime)
        with pytest.raises(Invalid, match="needs the label column"):
            svc.train_from_file("faults", "classifier", labelled_csv(), "faults.csv")
        with pytest.raises(TrainingDataError, match="unknown parameters for classifier: components"):
            svc.train_from_file(
                "faults", "classifier", labelled_csv(), "faults.csv", label_column="label",
                parameters={"components": 2},
            )  # fmt: skip
        version = svc.train_from_file(
            "faults", "classifier", labelled_csv(), "faults.csv", label_column="label", parameters={"lags": 1}
        )
        assert (version.kind, version.variables) == ("classifier", list(VARIABLES))
        metrics = version.metrics
        assert metrics["classes"] == ["flow", "normal", "speed"]
        assert metrics["training_rows"] == 3 * 160
        assert metrics["held_out_rows"] == 3 * 40
        matrix = np.array(metrics["confusion"]["matrix"])
        assert matrix.sum() == 120
        assert matrix.sum(axis=1).tolist() == [40, 40, 40]
        assert metrics["accuracy"] == pytest.approx(np.trace(matrix) / 120)
        assert all(recall > 0.9 for recall in metrics["per_class_recall"].values())
        # Plain arrays and JSON; it loads as a classifier.
        meta, arrays = state_from_bytes(version.state)
        assert meta["kind"] == FaultClassifier.kind
        assert all(a.dtype.kind in "fiub" for a in arrays.values())
        assert isinstance(load_model(version.state), FaultClassifier)
        # Not a monitor, not deployable on its own, no telemetry training.
        with pytest.raises(Invalid, match="not deployed on its own"):
            svc.deploy(version, DEVICE)
        with pytest.raises(Invalid, match="not a process monitor"):
            svc.score(version, [{"flow": 1.0}])
        again = svc.train_from_file("faults", "classifier", labelled_csv(seed=8), "faults.csv", label_column="label")
        assert again.version == 2


def test_a_monitors_alarm_names_the_likely_fault_class(runtime: Runtime, tenant_a: TenantFixture) -> None:
    normal = normal_data(300)
    with runtime.db.session() as session:
        svc = AnalyticsService(session, engineer(tenant_a), runtime=runtime)
        monitor_version = svc.train_from_file("pump", "pca", csv_bytes(normal), "normal.csv")
        classifier = svc.train_from_file("faults", "classifier", labelled_csv(), "faults.csv", label_column="label")
        narrow = svc.train_from_file("narrow", "pca", csv_bytes(normal[:, :3], VARIABLES[:3]), "narrow.csv")
        with pytest.raises(Invalid, match="reads variables the monitor does not: level, speed"):
            svc.deploy(narrow, DEVICE, classifier=classifier)
        deployment = svc.deploy(monitor_version, DEVICE, classifier=svc.version_by_reference("faults@1"))
        assert deployment.settings["classifier"] == "faults@1"
        from iip.analytics.service import deployed_versions

        [item] = deployed_versions(session)
        assert item.classifier_state == classifier.state
    runner = ScoringRunner(Runtime.__new__(Runtime))
    runner._install([item])
    center = normal.mean(axis=0)
    builder = PointBatchBuilder(tenant_a.id, "test")
    rows = [center, center + np.array([0, 0, 0, 0, 3.0]), center]  # speed off its correlations
    for i, row in enumerate(rows):
        for name, value in zip(VARIABLES, row.tolist(), strict=True):
            builder.add(DEVICE, name, START_MS + i * STEP_MS, value)
    outcome = runner.take(builder.build(), now=0.0)
    assert outcome is not None
    [raised] = [e for e in outcome.events if e.kind == LIMIT_EXCEEDED and e.active]
    assert raised.details["fault_class"] == "speed"
    assert raised.details["classifier"] == "faults@1"
    assert next(iter(raised.details["fault_probabilities"])) == "speed"
    assert "likely speed" in raised.message


def test_classifier_over_the_api(client: TestClient, tenant_a: TenantFixture) -> None:
    headers = tenant_a.headers(Role.ENGINEER)
    files = {"file": ("faults.csv", labelled_csv(), "text/csv")}
    form = {"name": "faults", "kind": "classifier", "label_column": "label"}
    created = client.post("/api/analytics/models/file", files=files, data=form, headers=headers)
    assert created.status_code == 201, created.text
    assert created.json()["metrics"]["per_class_recall"].keys() == {"flow", "normal", "speed"}
    missing = client.post("/api/analytics/models/file", files=files, data={**form, "label_column": ""}, headers=headers)
    assert missing.status_code == 422
    assert missing.json()["code"] == "label_required"
    monitor = client.post(
        "/api/analytics/models/file",
        files={"file": ("normal.csv", csv_bytes(normal_data(300)), "text/csv")},
        data={"name": "pump", "kind": "pca"},
        headers=headers,
    )
    assert monitor.status_code == 201
    deployed_out = client.post(
        "/api/analytics/models/pump/versions/1/deployments",
        json={"device": DEVICE, "classifier": "faults", "staleness_s": 5},
        headers=headers,
    )
    assert deployed_out.status_code == 201, deployed_out.text
    assert deployed_out.json()["settings"] == {"classifier_version_id": created.json()["id"],
                                               "classifier": "faults@1", "staleness_s": 5.0}  # fmt: skip
    alone = client.post("/api/analytics/models/faults/versions/1/deployments", json={"device": DEVICE}, headers=headers)
    assert alone.status_code == 422
    assert alone.json()["code"] == "not_deployable"


def test_classifier_on_the_command_line(iip: InProcessIip, tmp_path: Path) -> None:
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    assert iip("tenant", "create", tenant).exit_code == 0
    source = tmp_path / "faults.csv"
    source.write_bytes(labelled_csv())
    result = iip("analytics", "train", "--tenant", tenant, "--name", "faults", "--kind", "classifier",
                 "--csv", str(source), "--label-column", "label")  # fmt: skip
    assert result.exit_code == 0, result.output
    line = one_line(result.stdout)
    assert line.startswith("trained faults@1 (classifier, 5 variables, 480 rows, classes flow, normal, speed)")
    assert "accuracy on 120 held-out rows" in line
    listed = json.loads(iip("analytics", "list", "--tenant", tenant, "--json").stdout)
    assert listed[0]["kind"] == "classifier"
    normal = tmp_path / "normal.csv"
    normal.write_bytes(csv_bytes(normal_data(300)))
    assert iip("analytics", "train", "--tenant", tenant, "--name", "pump", "--csv", str(normal)).exit_code == 0
    deployed_line = iip(
        "analytics", "deploy", "pump", "--tenant", tenant, "--device", DEVICE, "--classifier", "faults@1"
    )
    assert one_line(deployed_line.stdout) == f"deployed pump@1 to {DEVICE}"
