"""Situational awareness: the risk score's parts and bounds, and what the service counts per tenant
(open alerts, unpatched assets per CVSS band, honeypot windows, overdue bulletins)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iip.kernel.db import Database
from iip.security.bulletins import BulletinService
from iip.security.records import NewAlert, Severity, Sighting
from iip.security.service import SecurityService, risk_breakdown, severity_of
from tests.conftest import TenantFixture
from tests.security.support import engineer, operator, seed_matches

NOW = dt.datetime(2030, 5, 1, 12, 0, tzinfo=dt.UTC)
SEVERITIES = [s.value for s in Severity]
counts = st.dictionaries(st.sampled_from(SEVERITIES), st.integers(0, 10_000))


@given(counts, counts, st.integers(0, 10_000), st.integers(0, 10_000), st.integers(0, 10_000))
def test_the_score_stays_within_0_and_100_and_each_part_within_its_cap(
    alerts: dict[str, int], vulnerable: dict[str, int], day: int, week: int, overdue: int
) -> None:
    parts = risk_breakdown(alerts, vulnerable, day, max(day, week), overdue)
    caps = {"alerts": 40, "vulnerabilities": 30, "honeypot": 15, "bulletins": 15}
    assert set(parts) == set(caps)
    assert all(0 <= parts[name] <= cap for name, cap in caps.items())
    assert 0 <= sum(parts.values()) <= 100


@given(counts, st.sampled_from(SEVERITIES))
def test_one_more_open_alert_never_lowers_the_score(alerts: dict[str, int], severity: str) -> None:
    more = {**alerts, severity: alerts.get(severity, 0) + 1}
    assert risk_breakdown(more, {}, 0, 0, 0)["alerts"] >= risk_breakdown(alerts, {}, 0, 0, 0)["alerts"]


@pytest.mark.parametrize(
    ("cvss", "band"), [(None, "low"), (3.9, "low"), (4.0, "medium"), (6.9, "medium"), (7.0, "high"), (9.0, "critical")]
)
def test_cvss_bands(cvss: float | None, band: str) -> None:
    assert severity_of(cvss).value == band


def alert(kind: str, severity: Severity, target: str) -> NewAlert:
    return NewAlert(kind=kind, severity=severity, first_time=NOW, last_time=NOW, source="10.0.0.5", destination=target)


def test_awareness_counts_per_tenant(migrated_db: Database, tenant_a: TenantFixture, tenant_b: TenantFixture) -> None:
    seed_matches(
        migrated_db,
        tenant_a,
        ("ICSA-30-001-01", "CVE-2030-0001", 9.8, "10.3.0.1"),
        ("ICSA-30-002-01", "CVE-2030-0002", 7.5, "10.3.0.2"),
    )
    with migrated_db.session() as session:
        service = SecurityService(session, engineer(tenant_a), clock=lambda: NOW)
        stored = service.record_alerts(
            tenant_a.id,
            "",
            [
                alert("unauthorized_write", Severity.CRITICAL, "10.3.0.1"),
                alert("new_talker", Severity.HIGH, "10.3.0.2"),
                alert("malformed", Severity.LOW, "10.3.0.2"),
            ],
        )
        service.close_alert(stored[2].id)
        service.record_sightings(
            tenant_a.id,
            [
                Sighting("198.51.100.1", NOW - dt.timedelta(hours=2), "modbus", "read_holding_registers"),
                Sighting("198.51.100.2", NOW - dt.timedelta(days=3), "modbus", "write_single_coil", notable=True),
                Sighting("198.51.100.3", NOW - dt.timedelta(days=9), "s7comm", "connected"),
            ],
        )
        BulletinService(session, operator(tenant_a), clock=lambda: NOW - dt.timedelta(days=2)).publish_bulletin(
            kind="warning",
            title="Do it",
            severity="high",
            body_en="Now.",
            deadline=NOW - dt.timedelta(days=1),
            tenant_ids=[tenant_a.id],
        )
        view = service.awareness()
        other = SecurityService(session, engineer(tenant_b), clock=lambda: NOW).awareness()
        platform = SecurityService(session, operator(tenant_a), clock=lambda: NOW).awareness()
    assert view.open_alerts == {"low": 0, "medium": 0, "high": 1, "critical": 1}
    assert view.vulnerable_assets == {"low": 0, "medium": 0, "high": 1, "critical": 1}
    assert (view.honeypot_24h, view.honeypot_7d, view.sightings_24h) == (1, 2, 1)
    assert (view.bulletins_open, view.bulletins_overdue) == (1, 1)
    # alerts 10 + 5; vulnerabilities 6 + 3; honeypot 3 (last day) + 1 (the rest of the week); bulletins 5
    assert view.breakdown == {"alerts": 15.0, "vulnerabilities": 9.0, "honeypot": 4.0, "bulletins": 5.0}
    assert view.risk == 33
    assert other.risk == 0
    assert other.open_alerts == {"low": 0, "medium": 0, "high": 0, "critical": 0}
    assert platform.tenant_id is None
    assert platform.risk == view.risk  # the platform's view spans every tenant; only tenant A has anything


def test_a_repeated_finding_grows_the_open_alert_and_raises_one_event(
    migrated_db: Database, tenant_a: TenantFixture
) -> None:
    with migrated_db.session() as session:
        service = SecurityService(session, engineer(tenant_a), clock=lambda: NOW)
        first = service.record_alerts(tenant_a.id, "", [alert("new_function", Severity.MEDIUM, "10.4.0.1")])
        later = alert("new_function", Severity.HIGH, "10.4.0.1")
        later.last_time = NOW + dt.timedelta(minutes=5)
        again = service.record_alerts(tenant_a.id, "", [later])
        assert [a.id for a in again] == [a.id for a in first]
        assert (again[0].count, again[0].severity, again[0].last_time) == (2, "high", later.last_time)
        assert len(service.events) == 1
        assert service.events[0].kind == "ics.new_function"
        service.close_alert(first[0].id)
        third = service.record_alerts(tenant_a.id, "", [alert("new_function", Severity.MEDIUM, "10.4.0.1")])
        assert third[0].id != first[0].id  # a closed alert is not reopened: a new one starts
        assert len(service.events) == 2
