"""Open alerts bounded per target: a flood from spoofed sources folds into one aggregate alert of
its kind, while a handful of sources is reported as before, one alert each."""

from __future__ import annotations

import pytest

from iip.kernel.runtime import Runtime
from iip.kernel.settings import SecuritySettings, Settings
from iip.security.baseline import Baseline, learn_baseline
from iip.security.detection import (
    KINDS,
    MANY_SOURCES,
    Alert,
    AlertKind,
    DetectionSettings,
    Detector,
    detect,
    to_alarm_event,
)
from iip.security.ingest import detection_settings
from iip.security.monitor import monitor_limits
from iip.security.service import SecurityService
from tests.conftest import TenantFixture
from tests.security.streams import PLC, PLC2, Stream, plant
from tests.security.support import engineer

TRAIN_S = 120
SPOOFED = 10_000


@pytest.fixture(scope="module")
def baseline() -> Baseline:
    return learn_baseline(plant(TRAIN_S).items)


def spoofed(count: int, *, start: float = TRAIN_S + 10, target: tuple[str, int] = PLC, step: float = 0.01) -> Stream:
    """Normal traffic, and `count` sources never seen writing register 5 of `target` once each."""
    stream = plant(30, start=start)
    for n in range(count):
        source = (f"172.16.{n // 250}.{n % 250 + 1}", 30000 + n % 1000)
        stream.modbus(start + 1 + n * step, source, target, 6, address=5, values=[150], name="WRITE_SINGLE_REGISTER")
    return stream


def of_kind(alerts: list[Alert], kind: AlertKind) -> list[Alert]:
    return [alert for alert in alerts if alert.kind is kind]


def test_a_spoofed_flood_gives_the_bound_and_one_aggregate(baseline: Baseline) -> None:
    alerts = detect(baseline, spoofed(SPOOFED).items)
    bound = DetectionSettings().max_sources
    for kind in (AlertKind.UNAUTHORIZED_WRITE, AlertKind.NEW_TALKER):
        found = of_kind(alerts, kind)
        assert len(found) == bound + 1, kind
        single = [alert for alert in found if alert.source != MANY_SOURCES]
        assert len({alert.source for alert in single}) == bound
        (aggregate,) = [alert for alert in found if alert.source == MANY_SOURCES]
        assert aggregate.destination == PLC[0]
        assert aggregate.source_count == SPOOFED - bound
        assert aggregate.count >= SPOOFED - bound  # a new talker's answers count too
        assert f"{SPOOFED - bound} more sources" in aggregate.message
        assert aggregate.severity is KINDS[kind].severity
        assert set(KINDS[kind].techniques) <= set(aggregate.techniques)
        # The sample names sources beyond the bound, never one reported on its own.
        assert 0 < len(aggregate.sources) <= 20
        assert not set(aggregate.sources) & {alert.source for alert in single}
        record = aggregate.to_record()
        assert record.details["source_count"] == [SPOOFED - bound]
        assert record.details["sources"] == aggregate.sources
        assert record.severity is KINDS[kind].severity
        assert record.techniques == list(aggregate.techniques)
    assert len(alerts) <= 2 * (bound + 1)
    event = to_alarm_event(of_kind(alerts, AlertKind.UNAUTHORIZED_WRITE)[-1], tenant_id="t")
    assert event.details["source"] == MANY_SOURCES
    assert event.details["source_count"] == [str(SPOOFED - bound)]


def test_a_handful_of_sources_is_reported_one_by_one(baseline: Baseline) -> None:
    alerts = detect(baseline, spoofed(5).items)
    writes = of_kind(alerts, AlertKind.UNAUTHORIZED_WRITE)
    assert sorted(alert.source for alert in writes) == [f"172.16.0.{n}" for n in range(1, 6)]
    assert all(alert.source_count == 0 and "more sources" not in alert.message for alert in alerts)
    assert "source_count" not in writes[0].to_record().details
    assert {alert.kind for alert in alerts} == {AlertKind.UNAUTHORIZED_WRITE, AlertKind.NEW_TALKER}


def test_the_bound_is_per_target_and_configurable(baseline: Baseline) -> None:
    stream = spoofed(8)
    for n in range(8):  # the same eight sources write to the second PLC too
        source = (f"172.16.0.{n + 1}", 30000 + n)
        stream.modbus(TRAIN_S + 20 + n * 0.01, source, PLC2, 6, address=5, values=[150], name="WRITE_SINGLE_REGISTER")
    alerts = detect(baseline, stream.items, DetectionSettings(max_sources=3))
    writes = of_kind(alerts, AlertKind.UNAUTHORIZED_WRITE)
    for target in (PLC[0], PLC2[0]):
        at_target = [alert for alert in writes if alert.destination == target]
        assert len(at_target) == 4
        (aggregate,) = [alert for alert in at_target if alert.source == MANY_SOURCES]
        assert aggregate.source_count == 5
        assert aggregate.sources == [f"172.16.0.{n}" for n in range(4, 9)]


def test_a_source_folded_once_stays_in_the_aggregate(baseline: Baseline) -> None:
    stream = spoofed(6)
    for n in range(6):  # every source writes again
        source = (f"172.16.0.{n + 1}", 30000 + n)
        stream.modbus(TRAIN_S + 25 + n * 0.01, source, PLC, 6, address=5, values=[150], name="WRITE_SINGLE_REGISTER")
    writes = of_kind(detect(baseline, stream.items, DetectionSettings(max_sources=2)), AlertKind.UNAUTHORIZED_WRITE)
    by_source = {alert.source: alert for alert in writes}
    assert set(by_source) == {"172.16.0.1", "172.16.0.2", MANY_SOURCES}
    assert by_source["172.16.0.1"].count == 2
    assert (by_source[MANY_SOURCES].source_count, by_source[MANY_SOURCES].count) == (4, 8)


def test_a_new_window_opens_new_alerts(baseline: Baseline) -> None:
    stream = spoofed(5)
    later = TRAIN_S + 10 + 700  # past the alert window of the first ones
    plant(5, start=later, stream=stream)
    for n in range(5):
        source = (f"172.16.1.{n + 1}", 31000 + n)
        stream.modbus(later + 1 + n * 0.01, source, PLC, 6, address=5, values=[150], name="WRITE_SINGLE_REGISTER")
    writes = of_kind(detect(baseline, stream.items, DetectionSettings(max_sources=3)), AlertKind.UNAUTHORIZED_WRITE)
    aggregates = [alert for alert in writes if alert.source == MANY_SOURCES]
    assert len(writes) == 8
    assert [alert.source_count for alert in aggregates] == [2, 2]
    assert [a.sources for a in aggregates] == [["172.16.0.4", "172.16.0.5"], ["172.16.1.4", "172.16.1.5"]]


def test_the_detector_memory_for_folding_stays_bounded(baseline: Baseline) -> None:
    settings = DetectionSettings(max_flows=300, max_sources=10)
    detector = Detector(baseline, settings)
    for packet, messages in spoofed(3000).items:
        detector.check(packet, messages)
        assert detector.tracked["folded sources"] <= 300
        assert detector.tracked["alert targets"] <= 300
    assert detector.evictions["folded sources over limit"] > 0
    writes = of_kind(detector.finish(), AlertKind.UNAUTHORIZED_WRITE)
    assert len(writes) == 11
    aggregate = next(alert for alert in writes if alert.source == MANY_SOURCES)
    assert aggregate.source_count == 2990  # each spoofed source came once: nothing counted twice


def test_live_take_keeps_folding_into_the_open_aggregate(baseline: Baseline) -> None:
    detector = Detector(baseline, DetectionSettings(max_sources=2))
    items = spoofed(6).items
    half = len(items) - 6  # the first three sources' writes and answers, then the last three
    for packet, messages in items[:half]:
        detector.check(packet, messages)
    first = of_kind(detector.take(), AlertKind.UNAUTHORIZED_WRITE)
    for packet, messages in items[half:]:
        detector.check(packet, messages)
    second = of_kind(detector.take(), AlertKind.UNAUTHORIZED_WRITE)
    aggregates = [alert for alert in first + second if alert.source == MANY_SOURCES]
    assert len({alert.first_time for alert in aggregates}) == 1  # one aggregate handed over in parts
    assert sum(alert.count for alert in aggregates) == 4
    assert aggregates[-1].source_count == 4
    assert len([alert for alert in first + second if alert.source != MANY_SOURCES]) == 2


def test_settings_give_the_bound() -> None:
    settings = SecuritySettings(detection_max_sources=7)
    assert monitor_limits(settings)[1].max_sources == 7
    assert SecuritySettings().detection_max_sources == DetectionSettings().max_sources == 100
    with pytest.raises(ValueError, match="detection_max_sources"):
        SecuritySettings(detection_max_sources=0)


def test_capture_checks_use_the_platform_bound(runtime: Runtime, tenant_a: TenantFixture) -> None:
    with runtime.db.session() as session:
        service = SecurityService(session, engineer(tenant_a), settings=Settings(security=SecuritySettings(
            detection_max_sources=9)))  # fmt: skip
        assert detection_settings(service).max_sources == 9
        assert detection_settings(SecurityService(session, engineer(tenant_a))) == DetectionSettings()


def test_a_stored_aggregate_names_the_sources_it_holds_by_now(
    baseline: Baseline, runtime: Runtime, tenant_a: TenantFixture
) -> None:
    """Live, an aggregate is handed over in parts; the stored alert's message follows its count."""
    detector = Detector(baseline, DetectionSettings(max_sources=2))
    items = spoofed(6).items
    half = len(items) - 6
    parts = []
    for chunk in (items[:half], items[half:]):
        for packet, messages in chunk:
            detector.check(packet, messages)
        parts.append([a for a in of_kind(detector.take(), AlertKind.UNAUTHORIZED_WRITE) if a.source == MANY_SOURCES])
    assert all(parts)
    with runtime.db.session() as session:
        service = SecurityService(session, engineer(tenant_a))
        for part in parts:
            stored = service.record_alerts(tenant_a.id, "cell-1", [alert.to_record() for alert in part])
        (row,) = stored
        assert row.message == parts[-1][-1].message
        assert "4 more sources" in row.message
        assert row.evidence["details"]["source_count"] == [4]  # details are kept as lists of values
