"""`WD_readPoint` and `WD_bizLocation` follow the `children` of the tenant's stored location master
data, on SQLite and PostgreSQL, wherever the standard query runs: `run_query`, `select_events`
(subscriptions), `GET /epcis/events`, named queries and `iip trace events`."""

from __future__ import annotations

import json
import uuid
import zlib
from typing import Any

import pytest
from fastapi.testclient import TestClient

from iip.kernel.auth import AccessService, Role
from iip.kernel.db import Database
from iip.kernel.errors import Invalid
from iip.traceability import location_hierarchy
from iip.traceability.capture import CaptureService
from iip.traceability.epcis.documents import read_document
from iip.traceability.epcis.identifiers import urn_to_dl
from iip.traceability.epcis.master_data import BUSINESS_LOCATION, READ_POINT
from iip.traceability.query import parse_query, parse_stored_query, run_query, select_events
from tests.cli.conftest import InProcessIip
from tests.conftest import CliDatabase, TenantFixture
from tests.traceability.query_support import capturer, epcis_document

SITE = "urn:epc:id:sgln:0614141.00001.0"
BUILDING = "urn:epc:id:sgln:0614141.00001.B1"
ROOM = "urn:epc:id:sgln:0614141.00001.R101"
ELSEWHERE = "urn:epc:id:sgln:0614141.00002.0"
DOCK = "urn:epc:id:sgln:0614141.00001.DOCK"
DOOR = "urn:epc:id:sgln:0614141.00001.DOOR1"


def element(element_id: str, children: list[str]) -> dict[str, Any]:
    return {"id": element_id, "attributes": [], "children": children}


def vocabulary(kind: str, *elements: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, "vocabularyElementList": list(elements)}


# Site > building > room as business locations (children written as Digital Link and URN alike);
# dock > door as read points. The site's children as read points would be another hierarchy.
HIERARCHY = [
    vocabulary(BUSINESS_LOCATION, element(SITE, [urn_to_dl(BUILDING)]), element(BUILDING, [ROOM]), element(ROOM, [])),
    vocabulary(READ_POINT, element(DOCK, [DOOR])),
]


def event(name: str, *, biz_location: str | None = None, read_point: str | None = None) -> dict[str, Any]:
    made: dict[str, Any] = {
        "type": "ObjectEvent",
        "eventTime": "2024-05-01T08:00:00+08:00",
        "eventTimeZoneOffset": "+08:00",
        "action": "OBSERVE",
        "epcList": [f"urn:epc:id:sgtin:0614141.107346.{zlib.crc32(name.encode())}"],
        "eventID": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, name)}",
    }
    if biz_location:
        made["bizLocation"] = {"id": biz_location}
    if read_point:
        made["readPoint"] = {"id": read_point}
    return made


def document(vocabularies: list[dict[str, Any]], *events: dict[str, Any]) -> bytes:
    made = epcis_document(events)
    if vocabularies:
        made["epcisHeader"] = {"epcisMasterData": {"vocabularyList": vocabularies}}
    return json.dumps(made).encode()


def capture(db: Database, tenant_id: str, data: bytes) -> None:
    with db.session() as session:
        job = CaptureService(session).capture(capturer(tenant_id), data)
        assert job.success, job.errors


# Tenant A's events: one per level, the building's written as a Digital Link, and one elsewhere.
A_EVENTS = {
    "site": event("a-site", biz_location=SITE),
    "building": event("a-building", biz_location=urn_to_dl(BUILDING)),
    "room": event("a-room", biz_location=ROOM),
    "elsewhere": event("a-elsewhere", biz_location=ELSEWHERE),
    "door": event("a-door", read_point=urn_to_dl(DOOR)),
    "dock": event("a-dock", read_point=DOCK),
}
B_EVENT = event("b-elsewhere", biz_location=ELSEWHERE)
# Tenant B puts ELSEWHERE under the same site; that must not widen tenant A's queries.
B_HIERARCHY = [vocabulary(BUSINESS_LOCATION, element(SITE, [ELSEWHERE]))]


@pytest.fixture
def seeded(migrated_db: Database, tenant_a: TenantFixture, tenant_b: TenantFixture) -> Database:
    capture(migrated_db, tenant_a.id, document(HIERARCHY, *A_EVENTS.values()))
    capture(migrated_db, tenant_b.id, document(B_HIERARCHY, B_EVENT))
    return migrated_db


def names(db: Database, tenant_id: str | None, params: dict[str, Any]) -> list[str]:
    by_id = {e["eventID"]: name for name, e in A_EVENTS.items()} | {B_EVENT["eventID"]: "B"}
    with db.session() as session:
        page = run_query(session, tenant_id, parse_query(params), None, 100)
    return sorted(by_id[e.event_id] for e in page.events)


def test_with_descendants_follows_children_through_every_level(seeded: Database, tenant_a: TenantFixture) -> None:
    a = tenant_a.id
    assert names(seeded, a, {"WD_bizLocation": SITE}) == ["building", "room", "site"]
    assert names(seeded, a, {"WD_bizLocation": urn_to_dl(SITE)}) == ["building", "room", "site"]  # either form
    assert names(seeded, a, {"WD_bizLocation": BUILDING}) == ["building", "room"]
    assert names(seeded, a, {"WD_bizLocation": ROOM}) == ["room"]  # a leaf: itself only
    assert names(seeded, a, {"EQ_bizLocation": SITE}) == ["site"]  # EQ_ stays exact
    # Read points follow the ReadPoint vocabulary only, business locations the BusinessLocation one.
    assert names(seeded, a, {"WD_readPoint": DOCK}) == ["dock", "door"]
    assert names(seeded, a, {"WD_readPoint": SITE}) == []
    assert names(seeded, a, {"WD_bizLocation": DOCK}) == []
    # Each parameter must hold: EQ_ and WD_ of one field narrow together.
    assert names(seeded, a, {"EQ_bizLocation": ROOM, "WD_bizLocation": SITE}) == ["room"]
    assert names(seeded, a, {"EQ_bizLocation": ELSEWHERE, "WD_bizLocation": SITE}) == []


def test_another_tenants_master_data_never_widens_a_query(
    seeded: Database, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    assert names(seeded, tenant_a.id, {"WD_bizLocation": SITE}) == ["building", "room", "site"]
    assert names(seeded, tenant_b.id, {"WD_bizLocation": SITE}) == ["B"]
    # Every tenant at once (a platform operator): each tenant's events by its own hierarchy.
    assert names(seeded, None, {"WD_bizLocation": SITE}) == ["B", "building", "room", "site"]
    with seeded.session() as session:
        below = location_hierarchy.descendants(session, None, BUSINESS_LOCATION, [urn_to_dl(SITE)], parameter="x")
    assert below == {
        tenant_a.id: frozenset({urn_to_dl(BUILDING), urn_to_dl(ROOM)}),
        tenant_b.id: frozenset({urn_to_dl(ELSEWHERE)}),
    }


def test_a_cycle_in_children_ends(seeded: Database, tenant_a: TenantFixture) -> None:
    # The room now lists the site, and the building itself: every level reaches every other.
    cycle = [vocabulary(BUSINESS_LOCATION, element(ROOM, [SITE]), element(BUILDING, [BUILDING, ROOM]))]
    capture(seeded, tenant_a.id, document(cycle))
    assert names(seeded, tenant_a.id, {"WD_bizLocation": ROOM}) == ["building", "room", "site"]
    assert names(seeded, tenant_a.id, {"WD_bizLocation": SITE}) == ["building", "room", "site"]


def test_the_hierarchy_is_read_when_the_query_runs(seeded: Database, tenant_a: TenantFixture) -> None:
    query = parse_query({"WD_bizLocation": SITE})
    with seeded.session() as session:
        page = run_query(session, tenant_a.id, query, None, 100)
    assert len(page.events) == 3
    capture(seeded, tenant_a.id, document([vocabulary(BUSINESS_LOCATION, element(ROOM, [ELSEWHERE]))]))
    assert names(seeded, tenant_a.id, {"WD_bizLocation": SITE}) == ["building", "elsewhere", "room", "site"]


def test_too_wide_a_hierarchy_is_refused_by_name(
    seeded: Database, tenant_a: TenantFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(location_hierarchy, "MAX_DESCENDANTS", 1)
    with pytest.raises(Invalid) as refused:
        names(seeded, tenant_a.id, {"WD_bizLocation": SITE})
    assert (refused.value.instance_code, refused.value.details["parameter"]) == ("query_too_large", "WD_bizLocation")


def test_subscriptions_select_with_descendants(seeded: Database, tenant_a: TenantFixture) -> None:
    query = parse_stored_query({"WD_bizLocation": [BUILDING]})
    with seeded.session() as session:
        found = select_events(session, tenant_a.id, query, after_id=0, limit=None)
    assert sorted(e.event_id for e in found) == sorted(A_EVENTS[n]["eventID"] for n in ("building", "room"))


def test_rest_events_and_named_queries_follow_children(
    client: TestClient, seeded: Database, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    def ids(response: Any) -> list[str]:
        assert response.status_code == 200, response.text
        events = response.json()["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
        return sorted(e["eventID"] for e in events)

    at_site = sorted(A_EVENTS[n]["eventID"] for n in ("site", "building", "room"))
    found = client.get("/epcis/events", params={"WD_bizLocation": SITE}, headers=tenant_a.headers(Role.VIEWER))
    assert ids(found) == at_site
    theirs = client.get("/epcis/events", params={"WD_bizLocation": SITE}, headers=tenant_b.headers(Role.VIEWER))
    assert ids(theirs) == [B_EVENT["eventID"]]
    definition = {"name": "at-site", "query": {"WD_bizLocation": [urn_to_dl(SITE)]}}
    created = client.post("/epcis/queries", json=definition, headers=tenant_a.headers())
    assert created.status_code == 201, created.text
    assert ids(client.get("/epcis/queries/at-site/events", headers=tenant_a.headers())) == at_site


def test_iip_trace_events_location_takes_the_locations_under_it(iip: InProcessIip, cli_database: CliDatabase) -> None:
    name = f"t-{uuid.uuid4().hex[:12]}"
    assert iip("tenant", "create", name).exit_code == 0
    with cli_database.db.session() as session:
        owner = AccessService(session).tenant_by_name(name).id
    capture(cli_database.db, owner, document(HIERARCHY, *A_EVENTS.values()))
    result = iip("trace", "events", "--tenant", name, "--location", BUILDING, "--json")
    assert result.exit_code == 0, result.stderr
    found = sorted(e["eventID"] for e in read_document(result.stdout).events)
    assert found == sorted(A_EVENTS[n]["eventID"] for n in ("building", "room"))
    docked = iip("trace", "events", "--tenant", name, "--read-point", urn_to_dl(DOCK), "--json")
    assert docked.exit_code == 0, docked.stderr
    assert len(read_document(docked.stdout).events) == 2
