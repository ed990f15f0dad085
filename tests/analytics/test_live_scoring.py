"""Live scoring: deployed versions score point batches from the bus, write scores back and raise alarms.

The scorer itself is checked without I/O (a block scores exactly as its samples one by one; a missing
variable is flagged, never filled in); the whole path runs with the telemetry writer, the alarm
engine and the scorers on SQLite and PostgreSQL, over the in-process bus and the real NATS JetStream.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from iip.alarms.lifespan import alarms_lifespan
from iip.alarms.models import Alarm
from iip.alarms.public import ALARM_EVENTS, AlarmEvent
from iip.alarms.rules import parse_rule
from iip.alarms.service import AlarmService
from iip.analytics.monitoring import monitor_to_bytes
from iip.analytics.monitoring.dpca import DpcaMonitor
from iip.analytics.monitoring.pca import PcaMonitor
from iip.analytics.public import LIMIT_EXCEEDED, VARIABLE_MISSING, score_metric
from iip.analytics.scoring import SCORING_SERVICE, LiveScorer, ScoredBlock, ScoringRunner, scoring_lifespan
from iip.analytics.service import AnalyticsService, DeployedVersion
from iip.kernel.auth import Principal, Role
from iip.kernel.bus import Bus, Delivery, MemoryBus
from iip.kernel.runtime import Runtime
from iip.telemetry.public import TELEMETRY_POINTS, PointBatch, PointBatchBuilder, points_between
from iip.telemetry.writer import writer_lifespan
from tests.analytics.support import VARIABLES, csv_bytes, faulty, normal_data
from tests.conftest import TenantFixture
from tests.services import NATS_URL, require_service

DEVICE = "pump-1"
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
STEP_MS = 1000


def deployed(monitor: Any, name: str = "m", device: str = DEVICE) -> DeployedVersion:
    state = monitor_to_bytes(monitor)
    sources = [{"variable": v, "device": "", "metric": v} for v in monitor.variables]
    return DeployedVersion(uuid.uuid4().hex, "t", device, name, 1, sources, state, "sha")


def points(scorer: LiveScorer, rows: np.ndarray[Any, Any], first: int) -> tuple[Any, Any, Any]:
    """The rows as the scorer's point columns: ts, column, value, sample after sample."""
    n, p = rows.shape
    ts = np.repeat(START_MS + (first + np.arange(n, dtype=np.int64)) * STEP_MS, p)
    columns = np.tile(np.arange(p, dtype=np.int64), n)
    return ts, columns, rows.reshape(-1).astype(np.float64)


def blocks_concatenated(blocks: list[ScoredBlock]) -> dict[str, Any]:
    return {
        "t2": np.concatenate([b.statistics["t2"] for b in blocks]),
        "spe": np.concatenate([b.statistics["spe"] for b in blocks]),
        "alarm": np.concatenate([b.alarm for b in blocks]),
        "valid": np.concatenate([b.valid for b in blocks]),
        "changes": [(int(b.times_ms[row]), active) for b in blocks for row, active, _, _ in b.limit_changes],
    }


# --- the scorer, without I/O


def test_a_block_scores_exactly_as_its_samples_one_by_one() -> None:
    normal = normal_data(400)
    monitor = DpcaMonitor.fit(normal[:300], VARIABLES, lags=2, persistence=2)
    stream = np.vstack([normal[300:340], faulty(normal[340:360], shift=4.0), normal[360:400]])
    whole = LiveScorer(deployed(monitor), monitor)
    single = LiveScorer(deployed(monitor), monitor)
    [block] = [whole.take(*points(whole, stream, 0), now=0.0)]
    assert block is not None
    one_by_one = []
    for i in range(stream.shape[0]):
        got = single.take(*points(single, stream[i : i + 1], i), now=0.0)
        assert got is not None
        one_by_one.append(got)
    a, b = blocks_concatenated([block]), blocks_concatenated(one_by_one)
    np.testing.assert_allclose(a["t2"], b["t2"], equal_nan=True)
    np.testing.assert_allclose(a["spe"], b["spe"], equal_nan=True)
    assert a["alarm"].tolist() == b["alarm"].tolist()
    assert a["valid"].tolist() == b["valid"].tolist()
    assert a["changes"] == b["changes"]
    # The lagged model needs two samples of history; the fault raises the alarm and its end clears it.
    assert a["valid"][:2].tolist() == [False, False]
    assert a["alarm"][40:60].mean() > 0.8
    assert [active for _, active in a["changes"]][:3] == [False, True, False]
    assert whole.scored == single.scored == stream.shape[0]


def test_a_missing_variable_is_flagged_not_filled_in() -> None:
    normal = normal_data(300)
    monitor = PcaMonitor.fit(normal, VARIABLES)
    scorer = LiveScorer(deployed(monitor), monitor, grace_s=5.0)
    sample = normal[:3].copy()
    ts, columns, values = points(scorer, sample, 0)
    keep = ~((ts == START_MS + STEP_MS) & (columns == VARIABLES.index("speed")))  # the 2nd sample lacks speed
    first = scorer.take(ts[keep][:5], columns[keep][:5], values[keep][:5], now=0.0)
    assert first is not None
    assert first.times_ms.tolist() == [START_MS]
    # The second sample waits for its last variable ...
    assert scorer.take(ts[keep][5:9], columns[keep][5:9], values[keep][5:9], now=1.0) is None
    # ... and is final, unscored, once a later sample completes.
    block = scorer.take(ts[keep][9:], columns[keep][9:], values[keep][9:], now=2.0)
    assert block is not None
    assert block.times_ms.tolist() == [START_MS + STEP_MS, START_MS + 2 * STEP_MS]
    assert block.valid.tolist() == [False, True]
    assert np.isnan(block.statistics["t2"][0])
    assert np.isfinite(block.statistics["t2"][1])
    assert block.missing.tolist() == [1, 0]
    assert block.missing_changes == [(0, True, ["speed"]), (1, False, [])]
    # A point for a sample already scored is ignored; an incomplete one is final after the grace period,
    # the others' last values held while they are not older than twice their period (1 s here) ...
    assert scorer.take(np.array([START_MS]), np.array([0]), np.array([1.0]), now=3.0) is None
    late = START_MS + 3 * STEP_MS
    assert scorer.take(np.array([late]), np.array([0]), np.array([80.0]), now=3.0) is None
    assert scorer.expire(now=7.0) is None
    expired = scorer.expire(now=8.0)
    assert expired is not None
    assert expired.times_ms.tolist() == [late]
    assert expired.missing.tolist() == [0]
    assert expired.valid.tolist() == [True]
    # ... and flagged missing once older than that.
    later = START_MS + 10 * STEP_MS
    assert scorer.take(np.array([later]), np.array([0]), np.array([80.0]), now=9.0) is None
    stale = scorer.expire(now=14.0)
    assert stale is not None
    assert stale.missing.tolist() == [4]
    assert stale.valid.tolist() == [False]
    assert stale.missing_changes == [(0, True, ["pressure", "flow", "level", "speed"])]


def test_the_runner_writes_scores_and_raises_one_shared_condition_per_device() -> None:
    normal = normal_data(300)
    monitor = PcaMonitor.fit(normal, VARIABLES)
    runner = ScoringRunner(Runtime.__new__(Runtime))
    a, b = deployed(monitor, "a"), deployed(monitor, "b")
    runner._install([a, b])
    center = normal.mean(axis=0)
    builder = PointBatchBuilder("t", "test")
    for i, row in enumerate([center, center + np.array([0, 0, 4.0, 0, 0]), center]):
        for name, value in zip(VARIABLES, row.tolist(), strict=True):
            builder.add(DEVICE, name, START_MS + i * STEP_MS, value)
    outcome = runner.take(builder.build(), now=0.0)
    assert outcome is not None
    batch = outcome.batch()
    assert batch is not None
    assert batch.source == "analytics"
    series = {batch.series[i] for i in batch.series_index}
    assert {(DEVICE, score_metric(m, s)) for m in "ab" for s in ("t2", "spe", "alarm", "missing")} == series

    def seen(kind: str) -> list[tuple[str, bool, int]]:
        at = [(e.details["model"], e.active, int(e.at.timestamp() * 1000) - START_MS) for e in outcome.events]
        return [item for item, e in zip(at, outcome.events, strict=True) if e.kind == kind]

    limit = seen(LIMIT_EXCEEDED)
    # Each model's first state is published (a clear); both raise at the fault; the shared condition
    # of the device clears once, when the last model in alarm clears it.
    assert limit == [("a", False, 0), ("b", False, 0), ("a", True, 1000), ("b", True, 1000), ("b", False, 2000)]
    assert seen(VARIABLE_MISSING) == [("a", False, 0), ("b", False, 0)]  # every variable present from the start
    assert all((e.subject, e.source) == (DEVICE, "analytics") for e in outcome.events)
    [first_raise] = [e for e in outcome.events if e.active][:1]
    assert first_raise.details["top_variables"][0]["variable"] == "flow"
    assert first_raise.details["statistic"] in {"t2", "spe"}
    assert first_raise.severity > 1.0
    # Its own batches come back on the bus: they are not scored again.
    assert runner.take(batch, now=1.0) is None


# --- the whole path: bus, scorer, telemetry store, alarm engine

EVENT_RULE = {
    "key": "pump.model",
    "kind": "event",
    "title": "Pump off its normal operation",
    "scope": {"device": DEVICE},
    "source": "analytics",
    "event_kind": LIMIT_EXCEEDED,
    "priority": "high",
}


@pytest.fixture(params=["memory", "nats"])
def bus_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextlib.asynccontextmanager
async def bus_of(kind: str) -> AsyncIterator[Bus]:
    """A bus of that kind; on NATS, a stream and subject prefix of this test's own, deleted afterwards."""
    if kind == "memory":
        yield MemoryBus()
        return
    require_service("NATS", "127.0.0.1", 4222)
    import nats
    import nats.js.errors

    from iip.kernel.bus_nats import NatsBus

    token = uuid.uuid4().hex[:12]
    try:
        yield NatsBus(NATS_URL, stream=f"IIPTEST_{token}", connect_timeout=2.0, subject_prefix=f"iiptest{token}.")
    finally:
        connection = await nats.connect(NATS_URL, connect_timeout=2, allow_reconnect=False)
        try:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await connection.jetstream().delete_stream(f"IIPTEST_{token}")
        finally:
            await connection.close()


async def eventually(check: Callable[[], bool], within_s: float = 20.0) -> None:
    deadline = time.monotonic() + within_s
    while not await asyncio.to_thread(check):
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def batch_of(tenant: TenantFixture, rows: np.ndarray[Any, Any], first: int, *, skip: str | None = None) -> PointBatch:
    builder = PointBatchBuilder(tenant.id, "test")
    for i, row in enumerate(rows.tolist()):
        for name, value in zip(VARIABLES, row, strict=True):
            if name != skip:
                builder.add(DEVICE, name, START_MS + (first + i) * STEP_MS, value)
    return builder.build()


def stored(runtime: Runtime, tenant: TenantFixture, metric: str) -> dict[int, float]:
    found = points_between(runtime, tenant.id, DEVICE, metric, START_MS, START_MS + 3_600_000)
    return {p.ts_ms - START_MS: p.value for p in found}


def alarm_state(runtime: Runtime, tenant: TenantFixture) -> str | None:
    with runtime.db.session() as session:
        alarm = session.scalar(select(Alarm).where(Alarm.tenant_id == tenant.id, Alarm.rule_key == EVENT_RULE["key"]))
        return None if alarm is None else alarm.state


async def test_a_deployed_model_scores_the_live_stream_and_its_alarms_reach_the_alarm_list(
    runtime: Runtime, tenant_a: TenantFixture, bus_kind: str
) -> None:
    admin = Principal("user", "admin", "admin", tenant_a.id, Role.ADMIN)
    normal = normal_data(300)
    with runtime.db.session() as session:
        service = AnalyticsService(session, admin, runtime=runtime)
        version = service.train_from_file("pump", "pca", csv_bytes(normal), "normal.csv")
        AlarmService(session, admin).import_rules([parse_rule(EVENT_RULE)], tenant_id=tenant_a.id)
    center = np.repeat(normal.mean(axis=0)[None, :], 5, axis=0)
    heard: list[AlarmEvent] = []

    async def listen(delivery: Delivery[AlarmEvent]) -> None:
        heard.append(delivery.payload)

    async with bus_of(bus_kind) as bus:
        runtime.bus = bus
        await bus.start()
        await bus.subscribe(ALARM_EVENTS, listen, durable="test-listener")
        async with writer_lifespan(runtime), alarms_lifespan(runtime), scoring_lifespan(runtime):
            runner: ScoringRunner = runtime.services[SCORING_SERVICE]
            assert runner.scorers == {}
            with runtime.db.session() as session:
                # No value is held (staleness 0): a sample lacking a variable is final as soon as the next begins.
                AnalyticsService(session, admin, runtime=runtime).deploy(version, DEVICE, staleness_s=0)
            await runner.reload()
            assert len(runner.scorers) == 1
            # Normal samples in one batch (a backlog), then the flow drifts off its correlations.
            await bus.publish(TELEMETRY_POINTS, batch_of(tenant_a, center, 0))
            await bus.publish(TELEMETRY_POINTS, batch_of(tenant_a, faulty(center[:3], shift=4.0), 5))
            await eventually(lambda: alarm_state(runtime, tenant_a) == "unack_active")
            # A sample without `speed` is not scored: it is counted missing, and named in an event.
            await bus.publish(TELEMETRY_POINTS, batch_of(tenant_a, center[:1], 8, skip="speed"))
            await bus.publish(TELEMETRY_POINTS, batch_of(tenant_a, center[:2], 9))
            await eventually(lambda: alarm_state(runtime, tenant_a) == "unack_rtn")
            await eventually(lambda: 10_000 in stored(runtime, tenant_a, score_metric("pump", "alarm")))
            t2 = stored(runtime, tenant_a, score_metric("pump", "t2"))
            alarm = stored(runtime, tenant_a, score_metric("pump", "alarm"))
            missing = stored(runtime, tenant_a, score_metric("pump", "missing"))
            await eventually(lambda: any(e.kind == VARIABLE_MISSING and not e.active for e in heard))
            # Retired, the scorer goes.
            with runtime.db.session() as session:
                AnalyticsService(session, admin, runtime=runtime).retire(version)
            await runner.reload()
            assert runner.scorers == {}
    seconds = sorted(t2)
    assert seconds == [0, 1000, 2000, 3000, 4000, 5000, 6000, 7000, 9000, 10_000]  # 8 s lacked a variable
    assert [alarm[s] for s in seconds] == [0, 0, 0, 0, 0, 1, 1, 1, 0, 0]
    assert missing[8000] == 1
    assert missing[9000] == 0
    assert all(t2[s] > t2[0] for s in (5000, 6000, 7000))
    raised = [e for e in heard if e.kind == LIMIT_EXCEEDED and e.active]
    assert len(raised) == 1
    assert raised[0].subject == DEVICE
    assert raised[0].details["top_variables"][0]["variable"] == "flow"
    assert raised[0].details["model"] == "pump"
    assert raised[0].details["version"] == 1
    lacking = [e for e in heard if e.kind == VARIABLE_MISSING and e.active]
    assert [e.details["variables"] for e in lacking] == [["speed"]]
