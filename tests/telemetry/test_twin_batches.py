"""Twins fed batch by batch: the newest point of each series, whatever order a batch holds its points in."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iip.kernel.bus import MemoryBus
from iip.kernel.runtime import Runtime
from iip.telemetry.public import PointBatch
from iip.telemetry.twin import LAST_SEEN_PERSIST_MS, TwinRegistry, newest_positions, now_ms
from tests.conftest import TenantFixture

BASE_MS = now_ms() - 3_600_000
DEVICES = ("d0", "d1", "d2")
METRICS = ("m0", "m1")
_examples = itertools.count()


def no_store(_tenant_id: str, _devices: Sequence[str]) -> Mapping[str, Mapping[str, tuple[int, float, int]]]:
    return {}


@dataclass(frozen=True)
class RawBatch:
    """A batch as a bus might carry it: series may repeat a pair or have no points."""

    series: list[tuple[str, str]]
    points: list[tuple[int, int, float]]  # (series index, ts offset, value), in batch order
    reported: dict[str, str]  # device -> firmware text
    gap_ms: int  # time since the previous batch was received

    def build(self, tenant_id: str, prefix: str) -> PointBatch:
        return PointBatch.model_construct(
            tenant_id=tenant_id,
            series=[(prefix + device, metric) for device, metric in self.series],
            series_index=[index for index, _, _ in self.points],
            ts_ms=[BASE_MS + offset for _, offset, _ in self.points],
            value=[value for _, _, value in self.points],
            quality=[0] * len(self.points),
            attributes={prefix + device: {"fw": text} for device, text in self.reported.items()},
            source="test",
        )


@st.composite
def raw_batches(draw: st.DrawFn) -> RawBatch:
    series = draw(st.lists(st.tuples(st.sampled_from(DEVICES), st.sampled_from(METRICS)), min_size=1, max_size=6))
    points = draw(
        st.lists(
            st.tuples(
                st.integers(0, len(series) - 1),
                st.integers(0, 6),  # few distinct times: ties and points out of order are common
                st.floats(-100, 100, allow_nan=False),
            ),
            max_size=14,
        )
    )
    reported = draw(st.dictionaries(st.sampled_from(DEVICES), st.sampled_from(["1.0", "1.1"]), max_size=1))
    gap = draw(st.sampled_from([0, 1, LAST_SEEN_PERSIST_MS // 2, LAST_SEEN_PERSIST_MS + 1]))
    return RawBatch(series, points, reported, gap)


def reference_positions(series_index: list[int], ts_ms: list[int]) -> dict[int, int]:
    newest: dict[int, int] = {}
    for position, (index, ts) in enumerate(zip(series_index, ts_ms, strict=True)):
        if index not in newest or ts >= ts_ms[newest[index]]:
            newest[index] = position
    return newest


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 5)), max_size=30))
def test_newest_position_of_each_series_in_any_order(points: list[tuple[int, int]]) -> None:
    series = [(f"d{i}", "m") for i in range(5)]
    batch = PointBatch.model_construct(
        tenant_id="t",
        series=series,
        series_index=[index for index, _ in points],
        ts_ms=[ts for _, ts in points],
        value=[float(n) for n in range(len(points))],
        quality=[0] * len(points),
    )
    assert newest_positions(batch) == reference_positions(batch.series_index, batch.ts_ms)


@dataclass
class ExpectedTwin:
    metrics: dict[str, tuple[int, float]] = field(default_factory=dict)
    reported: dict[str, Any] = field(default_factory=dict)
    seq: int = 0
    last_seen: int = 0
    persisted: int | None = None


def expect(twins: dict[str, ExpectedTwin], raw: RawBatch, at: int) -> dict[str, dict[str, tuple[int, float]]]:
    """Apply a batch the slow, obvious way; returns each touched device's metrics that moved forward."""
    newest: dict[tuple[str, str], tuple[int, float]] = {}
    for index, offset, value in raw.points:
        pair = raw.series[index]
        if pair not in newest or BASE_MS + offset >= newest[pair][0]:
            newest[pair] = (BASE_MS + offset, value)
    touched = {device for device, _ in newest} | set(raw.reported)
    moved: dict[str, dict[str, tuple[int, float]]] = {device: {} for device in touched}
    for (device, metric), state in newest.items():
        twin = twins.setdefault(device, ExpectedTwin())
        if metric not in twin.metrics or state[0] > twin.metrics[metric][0]:
            twin.metrics[metric] = state
            moved[device][metric] = state
    for device in touched:
        twin = twins.setdefault(device, ExpectedTwin())
        twin.seq += 1
        twin.last_seen = at
        if twin.persisted is None or at - twin.persisted >= LAST_SEEN_PERSIST_MS:
            twin.persisted = at
        if device in raw.reported:
            twin.reported["fw"] = raw.reported[device]
    return moved


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(raw_batches(), min_size=1, max_size=5), st.sets(st.sampled_from(DEVICES)))
def test_twins_show_the_newest_points_persist_their_connection_and_patch_watchers(
    runtime: Runtime, tenant_a: TenantFixture, raws: list[RawBatch], watched: set[str]
) -> None:
    prefix = f"x{next(_examples)}-"  # the database is shared by the examples
    asyncio.run(_check_twins(runtime, tenant_a.id, prefix, raws, watched))


async def _check_twins(runtime: Runtime, tenant_id: str, prefix: str, raws: list[RawBatch], watched: set[str]) -> None:
    twins = TwinRegistry(runtime.db, MemoryBus(), no_store)
    expected: dict[str, ExpectedTwin] = {}
    at = BASE_MS
    for raw in raws:
        at += raw.gap_ms
        moved = expect(expected, raw, at)
        await twins.apply_batch(raw.build(tenant_id, prefix), received_ms=at)
        for device in moved:
            twin = twins.cached(tenant_id, prefix + device)
            assert twin is not None
            if twin.ring is not None:  # watched: the patch names exactly what moved
                seq, data = twin.ring[-1]
                patch = json.loads(data)
                assert seq == expected[device].seq
                shown = {name: doc["value"] for name, doc in patch.get("metrics", {}).items()}
                assert shown == {name: value for name, (_, value) in moved[device].items()}
                assert patch["connection"]["online"] is True
        for device in watched:
            twin = twins.cached(tenant_id, prefix + device)
            if twin is not None and twin.ring is None:
                twins.listen(twin)
    for device, want in expected.items():
        twin = twins.cached(tenant_id, prefix + device)
        assert twin is not None
        assert {name: (ts, value) for name, (ts, value, _) in twin.metrics.items()} == want.metrics
        assert (twin.seq, twin.last_seen_ms, twin.online, twin.reported) == (
            want.seq,
            want.last_seen,
            True,
            want.reported,
        )
        assert twin.persisted_seen_ms == want.persisted
    # What another process loads: the connection as last persisted, the reported attributes.
    fresh = TwinRegistry(runtime.db, MemoryBus(), no_store)
    for device, want in expected.items():
        loaded = await fresh.get(tenant_id, prefix + device)
        assert loaded is not None
        assert (loaded.online, loaded.last_seen_ms, loaded.reported) == (True, want.persisted, want.reported)


async def test_out_of_order_points_in_one_batch_and_across_batches(runtime: Runtime, tenant_a: TenantFixture) -> None:
    twins = TwinRegistry(runtime.db, MemoryBus(), no_store)
    series = [("pump", "flow"), ("pump", "temp")]

    def columns(*points: tuple[int, int, float]) -> PointBatch:
        return PointBatch.model_construct(
            tenant_id=tenant_a.id,
            series=series,
            series_index=[index for index, _, _ in points],
            ts_ms=[BASE_MS + ts for _, ts, _ in points],
            value=[value for _, _, value in points],
            quality=[0] * len(points),
        )

    first = BASE_MS + 10_000
    await twins.apply_batch(columns((0, 10, 1.0)), received_ms=first)  # a new twin: its row is written
    twin = twins.cached(tenant_a.id, "pump")
    assert twin is not None
    assert twin.persisted_seen_ms == first
    # The next batches take the path that writes nothing: newest point per series, the later one at equal times.
    await twins.apply_batch(
        columns((0, 30, 3.0), (1, 5, 7.0), (0, 20, 2.0), (0, 30, 4.0), (1, 4, 6.0)), received_ms=first + 1
    )
    assert twin.metrics == {"flow": (BASE_MS + 30, 4.0, 0), "temp": (BASE_MS + 5, 7.0, 0)}
    await twins.apply_batch(columns((0, 25, 9.0), (1, 6, 8.0)), received_ms=first + 2)
    assert twin.metrics == {"flow": (BASE_MS + 30, 4.0, 0), "temp": (BASE_MS + 6, 8.0, 0)}
    assert (twin.seq, twin.last_seen_ms, twin.persisted_seen_ms) == (3, first + 2, first)
    # A minute on, the connection row is written again.
    await twins.apply_batch(columns((1, 7, 1.0)), received_ms=first + LAST_SEEN_PERSIST_MS)
    assert twin.persisted_seen_ms == first + LAST_SEEN_PERSIST_MS
    loaded = await TwinRegistry(runtime.db, MemoryBus(), no_store).get(tenant_a.id, "pump")
    assert loaded is not None
    assert loaded.last_seen_ms == first + LAST_SEEN_PERSIST_MS


async def test_a_batch_with_columns_of_different_lengths_changes_nothing(
    runtime: Runtime, tenant_a: TenantFixture
) -> None:
    twins = TwinRegistry(runtime.db, MemoryBus(), no_store)
    broken = PointBatch.model_construct(
        tenant_id=tenant_a.id, series=[("pump", "flow")], series_index=[0, 0], ts_ms=[BASE_MS], value=[1.0], quality=[0]
    )
    with pytest.raises(ValueError, match="same length"):
        await twins.apply_batch(broken)
    assert await twins.get(tenant_a.id, "pump") is None
