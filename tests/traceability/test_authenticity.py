"""Anti-counterfeit codes over the API, on SQLite and PostgreSQL: issue, verify, recall, alerts, keys, tenants."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import functools
import hashlib
import io
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from iip.alarms.lifespan import alarms_lifespan
from iip.alarms.models import Alarm
from iip.alarms.public import ALARM_EVENTS, AlarmEvent
from iip.alarms.rules import parse_rule
from iip.alarms.service import AlarmService
from iip.kernel.auth import Principal, Role
from iip.kernel.bus import Delivery
from iip.kernel.runtime import Runtime
from iip.traceability.authenticity import geo
from iip.traceability.authenticity.codes import (
    CodeLink,
    build_uri,
    keys_from_jwks,
    parse_uri,
    sign_codes,
    verify_offline,
)
from iip.traceability.authenticity.keys import active_key
from iip.traceability.authenticity.models import CodeScan
from iip.traceability.authenticity.service import (
    CodeService,
    IssueRequest,
    ScanContext,
    VerificationService,
    batch_uris,
    keyed_hash,
    publish_alarm_events,
)
from iip.traceability.models import Event, EventEpc
from tests.api.support import assert_problem
from tests.conftest import TenantFixture

API = "/api/traceability"
GTIN = "09506000134352"
OTHER_GTIN = "09506000134376"
GUANGZHOU = (23.13, 113.26)
SHENZHEN = (22.54, 114.06)
BEIJING = (39.9042, 116.4074)
SHANGHAI = (31.2304, 121.4737)
NEW_YORK = (40.7128, -74.0060)


# --- helpers


def issue(client: TestClient, tenant: TenantFixture, count: int = 3, role: Role = Role.ENGINEER, **body: Any) -> Any:
    response = client.post(
        f"{API}/code-batches", json={"gtin": GTIN, "count": count, **body}, headers=tenant.headers(role)
    )
    assert response.status_code == 201, response.text
    return response.json()


def codes(client: TestClient, tenant: TenantFixture, batch_id: str) -> list[dict[str, str]]:
    response = client.get(f"{API}/code-batches/{batch_id}/codes.csv", headers=tenant.headers(Role.ENGINEER))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(response.text)))


def verify(client: TestClient, uri: str, **params: Any) -> Any:
    response = client.get(f"{API}/verify", params={"uri": uri, **params})
    assert response.status_code == 200, response.text
    return response.json()


def alerts(client: TestClient, tenant: TenantFixture, **params: Any) -> list[dict[str, Any]]:
    response = client.get(f"{API}/alerts", params=params, headers=tenant.headers(Role.VIEWER))
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def first_uri(client: TestClient, tenant: TenantFixture, **body: Any) -> tuple[dict[str, Any], str]:
    batch = issue(client, tenant, **body)
    return batch, codes(client, tenant, batch["id"])[0]["uri"]


def store_event(
    runtime: Runtime,
    tenant: TenantFixture,
    epcs: list[tuple[str, str]],
    *,
    when: dt.datetime,
    biz_step: str | None = None,
    disposition: str | None = None,
    action: str = "OBSERVE",
) -> None:
    """An event as the repository holds it: the event row and its identifiers, canonical."""
    with runtime.db.session() as session:
        event = Event(
            tenant_id=tenant.id,
            event_id=f"urn:uuid:{uuid.uuid4()}",
            event_hash=f"ni:///sha-256;{uuid.uuid4().hex}?ver=CBV2.0",
            event_type="ObjectEvent",
            event_time=when,
            event_time_zone_offset="+00:00",
            action=action,
            biz_step=biz_step,
            disposition=disposition,
            body={"type": "ObjectEvent", "eventTime": when.isoformat(), "action": action},
            context={},
        )
        session.add(event)
        session.flush()
        session.add_all(EventEpc(event_id=event.id, tenant_id=tenant.id, role=role, epc=epc) for role, epc in epcs)


def collect_alarm_events(client: TestClient, runtime: Runtime, tenant: TenantFixture) -> tuple[list[AlarmEvent], Any]:
    heard: list[AlarmEvent] = []

    async def collect(delivery: Delivery[AlarmEvent]) -> None:
        if delivery.payload.tenant_id == tenant.id:
            heard.append(delivery.payload)

    assert client.portal is not None
    subscription = client.portal.call(
        functools.partial(runtime.bus.subscribe, ALARM_EVENTS, collect, durable=f"test-{uuid.uuid4().hex[:8]}")
    )
    return heard, subscription


def wait_until(check: Callable[[], bool], within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


# --- issue and verify


def test_issued_codes_are_exported_and_a_first_scan_is_genuine(client: TestClient, tenant_a: TenantFixture) -> None:
    batch = issue(
        client,
        tenant_a,
        count=5,
        lot="L2406/A",
        expiry="2027-06-30",
        markets=[{"code": "CN"}, {"code": "cn-gd", "latitude": GUANGZHOU[0], "longitude": GUANGZHOU[1]}],
        resolver="https://trace.brand.example/v/",
        note="spring run",
    )
    assert (batch["gtin"], batch["lot"], batch["expiry"], batch["count"], batch["single_use"]) == (
        GTIN,
        "L2406/A",
        "2027-06-30",
        5,
        True,
    )
    assert batch["markets"] == [
        {"code": "CN", "latitude": None, "longitude": None},
        {"code": "CN-GD", "latitude": GUANGZHOU[0], "longitude": GUANGZHOU[1]},
    ]
    assert batch["resolver"] == "https://trace.brand.example/v"
    rows = codes(client, tenant_a, batch["id"])
    assert len(rows) == 5
    assert len({row["serial"] for row in rows}) == 5
    assert rows[0]["uri"] == batch["example_uri"]
    assert all(row["uri"].startswith(f"https://trace.brand.example/v/01/{GTIN}/10/L2406%2FA/21/") for row in rows)
    assert {(row["gtin"], row["lot"], row["expiry"]) for row in rows} == {(GTIN, "L2406/A", "2027-06-30")}

    answer = verify(client, rows[2]["uri"], place="CN-GD", lat=SHENZHEN[0], lon=SHENZHEN[1])
    assert answer["status"] == "genuine"
    assert answer["genuine"] is True
    assert (answer["gtin"], answer["serial"], answer["lot"], answer["expiry"]) == (
        GTIN,
        rows[2]["serial"],
        "L2406/A",
        "2027-06-30",
    )
    assert answer["scan_count"] == 1
    assert answer["first_scan_at"] is not None
    assert answer["first_scan_place"] == {"place": "CN-GD", "latitude": SHENZHEN[0], "longitude": SHENZHEN[1]}
    again = client.get(f"{API}/code-batches/{batch['id']}", headers=tenant_a.headers(Role.VIEWER)).json()
    assert again["scanned"] == 1
    assert alerts(client, tenant_a) == []  # in the market, near its point


def test_the_scan_is_recorded_with_its_client_hashed(
    client: TestClient, runtime: Runtime, tenant_a: TenantFixture
) -> None:
    _, uri = first_uri(client, tenant_a)
    params = {"uri": uri, "place": "CN", "lat": 39.904211, "lon": 116.407395}
    answer = client.get(f"{API}/verify", params=params, headers={"User-Agent": "phone/1.0"}).json()
    # Anyone holding the code sees where it was first scanned, to about a kilometre.
    assert answer["first_scan_place"] == {"place": "CN", "latitude": 39.9, "longitude": 116.41}
    with runtime.db.session() as session:
        [scan] = session.scalars(select(CodeScan).where(CodeScan.tenant_id == tenant_a.id))
    assert (scan.status, scan.place, scan.user_agent) == ("genuine", "CN", "phone/1.0")
    assert (scan.latitude, scan.longitude) == (39.904211, 116.407395)  # kept whole for the owner's checks
    # A keyed hash of the client's address (the test client's is "testclient"), not the address.
    assert scan.address_hash == keyed_hash(runtime.settings, "traceability.scan-address", "testclient")
    assert scan.address_hash != hashlib.sha256(b"testclient").hexdigest()


def test_forged_altered_and_never_issued_codes_are_unknown(
    client: TestClient, runtime: Runtime, tenant_a: TenantFixture
) -> None:
    _, uri = first_uri(client, tenant_a, lot="L1")
    link = parse_uri(uri)
    altered = uri.replace(f"/21/{link.serial}", f"/21/{link.serial[:-1]}{'A' if link.serial[-1] != 'A' else 'B'}")
    answer = verify(client, altered)
    assert answer["status"] == "unknown"
    assert answer["genuine"] is False
    assert "altered or forged" in answer["reason"]
    # A signature made with a key of the forger's own, under the tenant's key id.
    forged_sig = sign_codes(bytes(32), link.key_id, GTIN, "L1", None, [link.serial])[0]
    forged = build_uri(
        "https://x.example", CodeLink(link.gtin, link.serial, link.lot, link.expiry, link.key_id, forged_sig)
    )
    assert verify(client, forged)["status"] == "unknown"
    # A key nobody here holds.
    assert "does not know" in verify(client, uri.replace(f"k={link.key_id}", "k=AAAAAAAA"))["reason"]
    assert verify(client, "https://example.com/not/a/code")["status"] == "unknown"
    # Signed with the tenant's own key, but never issued (a leaked key would look like this).
    with runtime.db.session() as session:
        key = active_key(session, runtime.settings, tenant_a.id, create=False)
        assert key is not None
        serial = "NEVERISSUED23456"
        [signature] = sign_codes(key.seed, key.key_id, GTIN, "L1", None, [serial])
    never = build_uri("https://x.example", CodeLink(GTIN, serial, "L1", None, key.key_id, signature))
    answer = verify(client, never)
    assert answer["status"] == "unknown"
    assert "never issued" in answer["reason"]
    # The genuine code is untouched by all that.
    assert verify(client, uri)["status"] == "genuine"
    with runtime.db.session() as session:
        statuses = sorted(s.status for s in session.scalars(select(CodeScan).where(CodeScan.tenant_id == tenant_a.id)))
    # Altered, forged and never issued are recorded (their key is the tenant's); the others name no key.
    assert statuses == ["genuine", "unknown", "unknown", "unknown"]


def test_a_single_use_code_scanned_twice_is_already_used_and_raises_an_alert(
    client: TestClient, runtime: Runtime, tenant_a: TenantFixture
) -> None:
    heard, subscription = collect_alarm_events(client, runtime, tenant_a)
    try:
        batch, uri = first_uri(client, tenant_a, lot="L9")
        first = verify(client, uri)
        second = verify(client, uri)
        wait_until(lambda: len(heard) == 1)
    finally:
        assert client.portal is not None
        client.portal.call(subscription.stop)
    assert first["status"] == "genuine"
    assert (second["status"], second["scan_count"], second["first_scan_at"]) == (
        "already_used",
        2,
        first["first_scan_at"],
    )
    [alert] = alerts(client, tenant_a)
    serial = parse_uri(uri).serial
    assert (alert["kind"], alert["batch_id"], alert["gtin"], alert["serial"]) == (
        "repeated_scan",
        batch["id"],
        GTIN,
        serial,
    )
    assert alert["details"] == {"scan_count": 2}
    [event] = heard
    assert (event.source, event.kind, event.subject, event.active, event.severity) == (
        "traceability",
        "authenticity.repeated_scan",
        GTIN,
        True,
        2.0,
    )
    assert event.details["alert_id"] == alert["id"]
    assert event.details["serial"] == serial
    assert event.details["lot"] == "L9"


def test_a_multi_use_code_stays_genuine(client: TestClient, tenant_a: TenantFixture) -> None:
    _, uri = first_uri(client, tenant_a, single_use=False)
    answers = [verify(client, uri) for _ in range(3)]
    assert [(a["status"], a["scan_count"]) for a in answers] == [("genuine", 1), ("genuine", 2), ("genuine", 3)]
    assert alerts(client, tenant_a) == []


# --- recall and decommission


def test_a_recalled_lot_answers_recalled_until_the_mark_is_withdrawn(
    client: TestClient, tenant_a: TenantFixture
) -> None:
    batch, uri = first_uri(client, tenant_a, lot="L5", single_use=False)
    _, other_lot = first_uri(client, tenant_a, lot="L6", single_use=False)
    headers = tenant_a.headers(Role.ENGINEER)
    response = client.post(
        f"{API}/code-marks",
        json={"kind": "recall", "gtin": GTIN, "lot": "L5", "reason": "seal defect"},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    mark = response.json()
    assert (mark["kind"], mark["lot"], mark["active"]) == ("recall", "L5", True)
    answer = verify(client, uri)
    assert answer["status"] == "recalled"
    assert answer["reason"] == "recalled by the brand owner: seal defect"
    assert verify(client, other_lot)["status"] == "genuine"
    assert client.get(f"{API}/code-batches/{batch['id']}", headers=headers).json()["recalled"] is True
    withdrawn = client.delete(f"{API}/code-marks/{mark['id']}", headers=headers).json()
    assert withdrawn["active"] is False
    assert withdrawn["withdrawn_by"] == "apikey:engineer"
    assert verify(client, uri)["status"] == "genuine"
    listed = client.get(f"{API}/code-marks", params={"active": "false"}, headers=headers).json()
    assert [m["id"] for m in listed] == [mark["id"]]


def test_a_decommissioned_serial_and_batch_marks(client: TestClient, tenant_a: TenantFixture) -> None:
    batch = issue(client, tenant_a, count=2, single_use=False)
    one, two = codes(client, tenant_a, batch["id"])
    headers = tenant_a.headers(Role.ENGINEER)
    client.post(
        f"{API}/code-marks", json={"kind": "decommission", "gtin": GTIN, "serial": one["serial"]}, headers=headers
    )
    assert verify(client, one["uri"])["status"] == "decommissioned"
    assert verify(client, two["uri"])["status"] == "genuine"
    response = client.post(
        f"{API}/code-marks", json={"kind": "recall", "gtin": OTHER_GTIN, "batch_id": batch["id"]}, headers=headers
    )
    assert_problem(response, 422, "mark_mismatch")
    client.post(f"{API}/code-marks", json={"kind": "recall", "gtin": GTIN, "batch_id": batch["id"]}, headers=headers)
    assert verify(client, two["uri"])["status"] == "recalled"
    assert verify(client, one["uri"])["status"] == "decommissioned"  # decommissioned outranks recalled


def test_repository_events_decommission_and_recall(
    client: TestClient, runtime: Runtime, tenant_a: TenantFixture
) -> None:
    batch = issue(client, tenant_a, count=3, lot="LOT7", single_use=False)
    first, second, third = codes(client, tenant_a, batch["id"])
    now = dt.datetime.now(dt.UTC)
    sgtin = parse_uri(first["uri"]).sgtin
    # Shipped, then decommissioned: the latest event of the item decides.
    store_event(runtime, tenant_a, [("epc", sgtin)], when=now - dt.timedelta(days=2), biz_step="shipping")
    store_event(
        runtime,
        tenant_a,
        [("epc", sgtin)],
        when=now - dt.timedelta(days=1),
        biz_step="https://ref.gs1.org/cbv/BizStep-decommissioning",
        action="DELETE",
    )
    answer = verify(client, first["uri"])
    assert answer["status"] == "decommissioned"
    assert "EPCIS event" in answer["reason"]
    # Destroyed, as a CBV 1.x URN.
    store_event(
        runtime,
        tenant_a,
        [("child", parse_uri(second["uri"]).sgtin)],
        when=now,
        disposition="urn:epcglobal:cbv:disp:destroyed",
    )
    assert verify(client, second["uri"])["status"] == "decommissioned"
    assert verify(client, third["uri"])["status"] == "genuine"
    # The lot recalled by a class-level event: every code of the lot answers recalled.
    lgtin = parse_uri(third["uri"]).lgtin
    assert lgtin is not None
    store_event(runtime, tenant_a, [("quantity", lgtin)], when=now, disposition="recalled")
    assert verify(client, third["uri"])["status"] == "recalled"


def test_another_tenants_events_do_not_touch_a_code(
    client: TestClient, runtime: Runtime, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    _, uri = first_uri(client, tenant_a, single_use=False)
    store_event(
        runtime, tenant_b, [("epc", parse_uri(uri).sgtin)], when=dt.datetime.now(dt.UTC), disposition="recalled"
    )
    assert verify(client, uri)["status"] == "genuine"


# --- place alerts


def test_scans_outside_or_far_from_the_market_raise_alerts(client: TestClient, tenant_a: TenantFixture) -> None:
    market = {"code": "CN-GD", "latitude": GUANGZHOU[0], "longitude": GUANGZHOU[1]}
    batch = issue(client, tenant_a, count=3, single_use=False, markets=[market])
    near, abroad, far = codes(client, tenant_a, batch["id"])
    verify(client, near["uri"], place="CN-GD", lat=SHENZHEN[0], lon=SHENZHEN[1])  # 100 km away: fine
    verify(client, abroad["uri"], place="US")
    verify(client, far["uri"], lat=BEIJING[0], lon=BEIJING[1])
    found = {(a["serial"], a["kind"]) for a in alerts(client, tenant_a)}
    assert found == {(abroad["serial"], "outside_market"), (far["serial"], "far_from_market")}
    [far_alert] = alerts(client, tenant_a, kind="far_from_market")
    assert far_alert["details"]["market"] == "CN-GD"
    assert far_alert["details"]["distance_km"] == pytest.approx(1890, abs=20)
    assert far_alert["details"]["limit_km"] == 500
    # A tighter policy makes the Shenzhen scan far too.
    policy = client.put(f"{API}/code-policy", json={"far_km": 50}, headers=tenant_a.headers(Role.ADMIN))
    assert policy.status_code == 200, policy.text
    verify(client, near["uri"], lat=SHENZHEN[0], lon=SHENZHEN[1])
    assert len(alerts(client, tenant_a, kind="far_from_market")) == 2


def test_impossible_travel_raises_an_alert_and_plausible_travel_does_not(
    client: TestClient, runtime: Runtime, tenant_a: TenantFixture
) -> None:
    batch = issue(client, tenant_a, count=2, single_use=False)
    jumping, travelling = codes(client, tenant_a, batch["id"])
    verify(client, jumping["uri"], lat=BEIJING[0], lon=BEIJING[1])
    verify(client, jumping["uri"], lat=NEW_YORK[0], lon=NEW_YORK[1])  # at once, 11,000 km away
    [alert] = alerts(client, tenant_a)
    assert (alert["kind"], alert["serial"]) == ("impossible_travel", jumping["serial"])
    assert alert["details"]["distance_km"] == pytest.approx(10990, abs=50)

    # The same journeys with time between them, through the service and a clock.
    start = dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.UTC)
    moments = iter([start, start + dt.timedelta(hours=3), start + dt.timedelta(hours=4)])
    places = [geo.Place(None, BEIJING), geo.Place(None, SHANGHAI), geo.Place(None, NEW_YORK)]
    found: list[list[str]] = []
    for place in places:
        moment = next(moments)
        with runtime.db.session() as session:
            service = VerificationService(session, runtime.settings, clock=lambda moment=moment: moment)
            result = service.verify(travelling["uri"], ScanContext(place))
            found.append([a.kind for a in result.alerts])
    # Beijing -> Shanghai in 3 h is a flight; Shanghai -> New York in 1 h is not.
    assert found == [[], [], ["impossible_travel"]]


def test_a_bad_place_is_refused(client: TestClient, tenant_a: TenantFixture) -> None:
    _, uri = first_uri(client, tenant_a)
    assert_problem(client.get(f"{API}/verify", params={"uri": uri, "place": "QQ"}), 422, "invalid_place")
    assert_problem(client.get(f"{API}/verify", params={"uri": uri, "lat": 10}), 422, "invalid_place")
    assert verify(client, uri)["status"] == "genuine"  # refused requests counted nothing


# --- the alarms context


@pytest.mark.asyncio
async def test_alerts_become_alarms_through_an_event_rule(runtime: Runtime, tenant_a: TenantFixture) -> None:
    rule = {
        "key": "codes.copied",
        "kind": "event",
        "title": "Copied codes",
        "scope": {"device": GTIN},
        "source": "traceability",
        "event_kind": "authenticity.*",
        "priority": "high",
    }
    admin = Principal("user", "admin", "admin", tenant_a.id, Role.ADMIN)
    with runtime.db.session() as session:
        AlarmService(session, admin).import_rules([parse_rule(rule)], tenant_id=tenant_a.id)
        batch = CodeService(session, admin, runtime.settings).issue(
            IssueRequest(GTIN, 1), default_resolver="https://iip.example.com/v"
        )
        [(_, uri)] = list(batch_uris(session, batch))

    def scan() -> list[AlarmEvent]:
        with runtime.db.session() as session:
            service = VerificationService(session, runtime.settings)
            service.verify(uri)
        return service.events

    await runtime.bus.start()
    async with alarms_lifespan(runtime):
        assert scan() == []
        await publish_alarm_events(runtime.bus, scan())  # the second scan of a single-use code

        def raised() -> bool:
            with runtime.db.session() as session:
                alarm = session.scalar(select(Alarm).where(Alarm.tenant_id == tenant_a.id, Alarm.device == GTIN))
                return alarm is not None and alarm.state == "unack_active"

        deadline = time.monotonic() + 10
        while not await asyncio.to_thread(raised):
            assert time.monotonic() < deadline, "no alarm was raised"
            await asyncio.sleep(0.05)


# --- keys


def test_codes_verify_offline_with_the_published_keys_and_survive_a_rotation(
    client: TestClient, tenant_a: TenantFixture
) -> None:
    before, uri = first_uri(client, tenant_a, single_use=False)
    published = client.get(f"{API}/keys")
    assert published.status_code == 200
    document = published.json()
    [entry] = [k for k in document["keys"] if k["kid"] == before["key_id"]]
    assert (entry["kty"], entry["crv"], entry["alg"], entry["active"]) == ("OKP", "Ed25519", "EdDSA", True)
    keys = keys_from_jwks(document)
    assert verify_offline(uri, keys)
    link = parse_uri(uri)
    assert not verify_offline(uri.replace(link.serial, link.serial[::-1]), keys)

    rotated = client.post(f"{API}/keys/rotate", headers=tenant_a.headers(Role.ADMIN))
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["retired_key_id"] == before["key_id"]
    after, new_uri = first_uri(client, tenant_a, single_use=False)
    assert after["key_id"] == rotated.json()["key_id"] != before["key_id"]
    document = client.get(f"{API}/keys").json()
    states = {k["kid"]: k["active"] for k in document["keys"]}
    assert (states[before["key_id"]], states[after["key_id"]]) == (False, True)
    keys = keys_from_jwks(document)
    assert verify_offline(uri, keys)  # the retired key still vouches for its codes
    assert verify_offline(new_uri, keys)
    assert verify(client, uri)["status"] == "genuine"
    assert_problem(client.post(f"{API}/keys/rotate", headers=tenant_a.headers(Role.ENGINEER)), 403)


# --- operators


def test_issuing_needs_write_and_a_valid_request(client: TestClient, tenant_a: TenantFixture) -> None:
    body = {"gtin": GTIN, "count": 2}
    assert_problem(client.post(f"{API}/code-batches", json=body, headers=tenant_a.headers(Role.VIEWER)), 403)
    assert_problem(client.post(f"{API}/code-batches", json=body), 401)
    for bad, code in (
        ({"gtin": "09506000134353", "count": 2}, "invalid_code_value"),  # check digit
        ({"gtin": GTIN, "count": 2, "lot": "bad lot"}, "invalid_code_value"),  # a space is not in set 82
        ({"gtin": GTIN, "count": 2, "markets": [{"code": "ZZ"}]}, "invalid_place"),
        ({"gtin": GTIN, "count": 2, "resolver": "ftp://x"}, "invalid"),
        ({"gtin": GTIN, "count": 100_001}, "invalid"),
    ):
        assert_problem(client.post(f"{API}/code-batches", json=bad, headers=tenant_a.headers()), 422, code)
    batch = issue(client, tenant_a, count=1, role=Role.ENGINEER)
    assert_problem(
        client.get(f"{API}/code-batches/{batch['id']}/codes.csv", headers=tenant_a.headers(Role.VIEWER)), 403
    )
    listed = client.get(f"{API}/code-batches", params={"gtin": GTIN}, headers=tenant_a.headers(Role.VIEWER)).json()
    assert [b["id"] for b in listed["items"]] == [batch["id"]]
    assert listed["total"] == 1


def test_tenants_see_only_their_own_codes(client: TestClient, tenant_a: TenantFixture, tenant_b: TenantFixture) -> None:
    b_batch, b_uri = first_uri(client, tenant_b, single_use=False, lot="BLOT")
    verify(client, b_uri, place="US")  # no market, no alert ...
    verify(client, b_uri, lat=BEIJING[0], lon=BEIJING[1])
    verify(client, b_uri, lat=NEW_YORK[0], lon=NEW_YORK[1])  # ... but an impossible journey: B's alert
    assert len(alerts(client, tenant_b)) == 1
    a_headers = tenant_a.headers(Role.ADMIN)
    assert_problem(client.get(f"{API}/code-batches/{b_batch['id']}", headers=a_headers), 404, "code_batch_not_found")
    assert_problem(client.get(f"{API}/code-batches/{b_batch['id']}/codes.csv", headers=a_headers), 404)
    assert client.get(f"{API}/code-batches", headers=a_headers).json()["total"] == 0
    assert alerts(client, tenant_a) == []
    assert alerts(client, tenant_a, batch_id=b_batch["id"]) == []
    # A mark naming B's batch is refused; one on the same GTIN and lot in A's tenant leaves B's codes alone.
    mark = {"kind": "recall", "gtin": GTIN, "batch_id": b_batch["id"]}
    assert_problem(client.post(f"{API}/code-marks", json=mark, headers=a_headers), 404)
    response = client.post(f"{API}/code-marks", json={"kind": "recall", "gtin": GTIN, "lot": "BLOT"}, headers=a_headers)
    assert response.status_code == 201
    assert verify(client, b_uri)["status"] == "genuine"
    b_mark = client.post(
        f"{API}/code-marks", json={"kind": "recall", "gtin": GTIN}, headers=tenant_b.headers(Role.ENGINEER)
    ).json()
    assert_problem(client.get(f"{API}/code-marks/{b_mark['id']}", headers=a_headers), 404, "code_mark_not_found")
    assert_problem(client.delete(f"{API}/code-marks/{b_mark['id']}", headers=a_headers), 404)
    assert verify(client, b_uri)["status"] == "recalled"
    assert [m["id"] for m in client.get(f"{API}/code-marks", headers=a_headers).json()] == [response.json()["id"]]
