"""The EPCIS query endpoints on SQLite and PostgreSQL: events captured through `/epcis/capture` come
back equivalent in JSON-LD and XML, pages follow the Link header, the top-level resources and
named queries answer in the REST binding's shapes, and tenants stay apart."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import select

from iip.api.app import create_app
from iip.kernel.auth import Role
from iip.kernel.db import Database
from iip.kernel.runtime import Runtime
from iip.kernel.settings import Settings
from iip.migrations.runner import upgrade
from iip.traceability.epcis.documents import normalise_event, read_document
from iip.traceability.epcis.event_hash import event_hash
from iip.traceability.epcis.identifiers import urn_to_dl
from iip.traceability.epcis.writer import JSONLD_PREFIXES
from iip.traceability.models import Event
from tests.api.support import assert_problem
from tests.conftest import BACKENDS, TenantFixture, database_url, make_tenant
from tests.traceability.conftest import VALID_DOCUMENTS
from tests.traceability.query_support import epcis_document
from tests.traceability.test_writer import _textual

EVENTS = "/epcis/events"
SGTIN = "urn:epc:id:sgtin:0614141.107346.{}"
MDA_JSON = "urn:epcglobal:cbv:mda:"


@dataclass(frozen=True)
class Api:
    client: TestClient
    db: Database


@pytest.fixture(scope="module", params=BACKENDS)
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One app over one migrated database per backend for the module; tests use tenants of their own."""
    folder = tmp_path_factory.mktemp("query-api")
    with database_url(str(request.param), folder) as url:
        settings = Settings(data_dir=folder / "var", database_url=url, log_format="text", log_level="WARNING")
        db = Database(settings.effective_database_url)
        upgrade(db)
        runtime = Runtime.build(settings)
        runtime.db.dispose()
        runtime.db = db
        with TestClient(create_app(runtime=runtime, configure_logs=False)) as client:
            yield Api(client, db)
        db.dispose()


@pytest.fixture
def tenant(api: Api) -> TenantFixture:
    return make_tenant(api.db, f"q-{uuid.uuid4().hex[:10]}")


@pytest.fixture
def other(api: Api) -> TenantFixture:
    return make_tenant(api.db, f"q-{uuid.uuid4().hex[:10]}")


def capture(api: Api, tenant: TenantFixture, document: bytes | dict[str, Any], *, xml: bool = False) -> None:
    data = json.dumps(document).encode() if isinstance(document, dict) else document
    kind = "application/xml" if xml else "application/json"
    response = api.client.post("/epcis/capture", content=data, headers={**tenant.headers(), "Content-Type": kind})
    assert response.status_code == 202, response.text
    assert response.json()["success"], response.json()["errors"]


def event(n: int, **fields: Any) -> dict[str, Any]:
    return {
        "type": "ObjectEvent",
        "eventTime": f"2024-05-01T08:{n:02d}:00+08:00",
        "eventTimeZoneOffset": "+08:00",
        "action": "OBSERVE",
        "epcList": [SGTIN.format(1000 + n)],
        "bizStep": "shipping",
        **fields,
    }


def event_list(response: Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["type"] == "EPCISQueryDocument"
    events: list[dict[str, Any]] = body["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
    return events


def epcs(response: Response) -> list[str]:
    return [e["epcList"][0] for e in event_list(response)]


def follow(api: Api, tenant: TenantFixture, url: str, params: dict[str, Any]) -> Iterator[Response]:
    """Every page of a result, by its Link headers (event pages say when their token expires)."""
    response = api.client.get(url, params=params, headers=tenant.headers())
    while True:
        yield response
        link = response.headers.get("link")
        if link is None:
            return
        assert link.endswith('>; rel="next"')
        if url.endswith("/events"):
            assert response.headers["gs1-next-page-token-expires"].endswith("Z")
        response = api.client.get(link[1 : link.index(">")], headers=tenant.headers())


# --- events captured come back


def comparable(event: dict[str, Any], context: dict[str, str]) -> dict[str, Any]:
    """An event's normal form, extension keys by namespace (prefixes may be renamed), without recordTime."""

    # GS1's JSON-LD context declares some prefixes (cbvmda, gs1, ...); XML spells the ILMD one without ':'.
    namespaces = {**JSONLD_PREFIXES, **context}
    namespaces = {k: MDA_JSON if v == MDA_JSON.rstrip(":") else v for k, v in namespaces.items()}

    def expanded(value: Any) -> Any:
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                prefix, colon, local = key.partition(":")
                out[f"{{{namespaces[prefix]}}}{local}" if colon and prefix in namespaces else key] = expanded(item)
            return out
        if isinstance(value, list):
            return [expanded(item) for item in value]
        return value

    normal = normalise_event({k: v for k, v in event.items() if k != "recordTime"})
    return dict(expanded(normal))


def test_gs1_examples_come_back_as_captured_in_json_and_in_xml(api: Api, tenant: TenantFixture) -> None:
    captured: dict[str, tuple[dict[str, Any], dict[str, str], str]] = {}
    for path in VALID_DOCUMENTS:
        capture(api, tenant, path.read_bytes(), xml=path.suffix == ".xml")
        document = read_document(path.read_bytes())
        for source in document.events:
            binding = "xml" if path.suffix == ".xml" else "json"
            captured.setdefault(event_hash(source, document.context), (source, document.context, binding))
    listed = [e["eventID"] for page in follow(api, tenant, EVENTS, {"perPage": 40}) for e in event_list(page)]
    with api.db.session() as session:
        rows = list(session.scalars(select(Event).where(Event.tenant_id == tenant.id).order_by(Event.id)))
    assert listed == [row.event_id for row in rows]
    assert {row.event_hash for row in rows} == captured.keys()
    by_id: dict[str, list[Event]] = {}
    for row in rows:
        by_id.setdefault(row.event_id, []).append(row)
    for identifier, stored in by_id.items():  # events may share an id: one request answers them all, in order
        for binding in ("json", "xml"):
            accept = "application/xml" if binding == "xml" else "application/json"
            one = api.client.get(
                f"{EVENTS}/{quote(identifier, safe='')}", headers={**tenant.headers(), "Accept": accept}
            )
            assert one.status_code == 200, one.text
            assert one.headers["content-type"].startswith(accept)
            assert one.headers["gs1-epcis-version"] == "2.0.0"
            document = read_document(one.content)
            assert document.type == "EPCISQueryDocument"
            assert len(document.events) == len(stored)
            for back, row in zip(document.events, stored, strict=True):
                source, context, source_binding = captured[row.event_hash]
                assert back["eventID"] == identifier
                assert back["recordTime"] == row.record_time.isoformat(timespec="milliseconds").replace("+00:00", "Z")
                expected = comparable({"eventID": identifier, **source}, context)
                got = comparable(back, document.context)
                if binding == source_binding:
                    assert got == expected, identifier
                else:  # XML carries extension numbers and booleans as text (see test_writer)
                    assert _textual(got) == _textual(expected), identifier


def test_pages_follow_the_link_header_and_give_each_event_once(api: Api, tenant: TenantFixture) -> None:
    capture(api, tenant, epcis_document([event(n) for n in range(11)]))
    for params in ({}, {"orderBy": "eventTime"}, {"orderBy": "eventTime", "orderDirection": "ASC"}):
        pages = [epcs(page) for page in follow(api, tenant, EVENTS, {**params, "perPage": 4})]
        assert [len(p) for p in pages] == [4, 4, 3]
        flat = [epc for page in pages for epc in page]
        assert sorted(flat) == sorted(SGTIN.format(1000 + n) for n in range(11))
        if params.get("orderDirection") == "ASC" or not params:
            assert flat == [SGTIN.format(1000 + n) for n in range(11)]
        else:
            assert flat == [SGTIN.format(1010 - n) for n in range(11)]
    first = api.client.get(EVENTS, params={"perPage": 4, "orderBy": "eventTime"}, headers=tenant.headers())
    token = first.headers["link"].split("nextPageToken=")[1].split(">")[0]
    replayed = api.client.get(
        EVENTS, params={"perPage": 4, "orderBy": "recordTime", "nextPageToken": token}, headers=tenant.headers()
    )
    assert_problem(replayed, 422, "page_token")


def test_a_bad_parameter_is_a_problem_naming_it(api: Api, tenant: TenantFixture) -> None:
    for params, name in (
        ({"EQ_bizstep": "shipping"}, "EQ_bizstep"),
        ({"GE_eventTime": "noon"}, "GE_eventTime"),
        ({"MATCH_epc": "urn:epc:idpat:sgtin:0614141.*.*"}, "MATCH_epc"),
        ({"eventCountLimit": "2"}, "eventCountLimit"),
    ):
        body = assert_problem(api.client.get(EVENTS, params=params, headers=tenant.headers()), 422, "query_parameter")
        assert body["parameter"] == name
        assert name in body["detail"]
    capture(api, tenant, epcis_document([event(1), event(2)]))
    too_many = api.client.get(EVENTS, params={"maxEventCount": "1"}, headers=tenant.headers())
    assert_problem(too_many, 422, "query_too_large")
    assert len(event_list(api.client.get(EVENTS, params={"maxEventCount": "2"}, headers=tenant.headers()))) == 2


def test_parameters_in_the_query_string(api: Api, tenant: TenantFixture) -> None:
    capture(
        api,
        tenant,
        epcis_document(
            [
                event(1, bizTransactionList=[{"type": "po", "bizTransaction": "urn:epcglobal:cbv:bt:0614141073467:1"}]),
                event(2, bizStep="receiving", readPoint={"id": "urn:epc:id:sgln:0614141.07346.1234"}),
                event(3, epcList=[urn_to_dl(SGTIN.format(1001))]),
            ]
        ),
    )
    headers = tenant.headers()

    def found(params: Any) -> list[int]:
        return [int(e["eventTime"][14:16]) for e in event_list(api.client.get(EVENTS, params=params, headers=headers))]

    assert found({"MATCH_epc": SGTIN.format(1001)}) == [1, 3]  # one as URN, one as Digital Link
    assert found({"MATCH_epc": urn_to_dl(SGTIN.format(1001))}) == [1, 3]
    assert found([("EQ_bizStep", "receiving"), ("EQ_bizStep", "shipping")]) == [1, 2, 3]  # repeated
    assert found({"EQ_bizStep": "receiving|urn:epcglobal:cbv:bizstep:shipping"}) == [1, 2, 3]
    assert found({"EQ_bizStep": "receiving"}) == [2]
    assert found({"EQ_readPoint": "https://id.gs1.org/414/0614141073467/254/1234"}) == [2]
    assert found({"EQ_bizTransaction_po": "urn:epcglobal:cbv:bt:0614141073467:1"}) == [1]
    assert found({"GE_eventTime": "2024-05-01T00:02:00Z", "orderBy": "eventTime", "eventCountLimit": "1"}) == [3]


# --- top-level resources


def members(api: Api, tenant: TenantFixture, resource: str, **params: Any) -> list[str]:
    response = api.client.get(f"/epcis/{resource}", params=params, headers=tenant.headers())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["type"] == "Collection"
    assert body["@context"]
    result: list[str] = body["member"]
    return result


def test_top_level_resources_and_their_events(api: Api, tenant: TenantFixture, other: TenantFixture) -> None:
    ours = [
        event(1, bizLocation={"id": "urn:epc:id:sgln:0614141.07346.0"}, disposition="in_transit"),
        event(2, bizStep="urn:example:step:weighing", readPoint={"id": "urn:epc:id:sgln:0614141.07346.1234"}),
        {**event(3), "type": "urn:x:Inspection"},
        {**event(5, bizStep="inspecting"), "type": "https://example.com/Recount"},
    ]
    capture(api, tenant, epcis_document(ours))
    capture(api, other, epcis_document([event(4, bizLocation={"id": "urn:epc:id:sgln:4012345.00001.0"})]))
    headers = tenant.headers()

    steps = members(api, tenant, "bizSteps", perPage=1000)
    assert {"shipping", "receiving", "urn:example:step:weighing"} <= set(steps)
    assert steps == sorted(steps)
    assert members(api, tenant, "bizLocations") == ["https://id.gs1.org/414/0614141073467"]
    assert members(api, tenant, "readPoints") == ["https://id.gs1.org/414/0614141073467/254/1234"]
    assert "in_transit" in members(api, tenant, "dispositions", perPage=1000)
    assert members(api, tenant, "eventTypes") == [
        "AggregationEvent",
        "AssociationEvent",
        "ObjectEvent",
        "TransactionEvent",
        "TransformationEvent",
        "https://example.com/Recount",
        "urn:x:Inspection",
    ]

    def minutes(path: str, **params: Any) -> list[int]:
        response = api.client.get(path, params=params, headers=headers)
        return [int(e["eventTime"][14:16]) for e in event_list(response)]

    location = quote("urn:epc:id:sgln:0614141.07346.0", safe="")
    assert minutes(f"/epcis/bizLocations/{location}/events") == [1]
    assert minutes("/epcis/bizLocations/https://id.gs1.org/414/0614141073467/events") == [1]  # slashes as they are
    assert minutes("/epcis/readPoints/urn:epc:id:sgln:0614141.07346.1234/events") == [2]
    assert minutes("/epcis/bizSteps/shipping/events") == [1, 3]
    assert minutes("/epcis/bizSteps/shipping/events", EQ_bizStep="receiving") == []  # both must hold
    assert minutes("/epcis/bizSteps/urn%3Aexample%3Astep%3Aweighing/events") == [2]
    assert minutes("/epcis/bizSteps/receiving/events") == []  # a CBV step no event has yet
    assert minutes("/epcis/dispositions/in_transit/events") == [1]
    assert minutes("/epcis/eventTypes/ObjectEvent/events", GE_eventTime="2024-05-01T00:02:00Z") == [2]
    assert minutes("/epcis/eventTypes/urn:x:Inspection/events") == [3]
    assert minutes("/epcis/eventTypes/https://example.com/Recount/events") == [5]  # a URI with slashes
    assert minutes(f"/epcis/epcs/{quote(SGTIN.format(1002), safe='')}/events") == [2]
    assert minutes(f"/epcis/epcs/{urn_to_dl(SGTIN.format(1002))}/events") == [2]

    for missing in (
        "/epcis/bizSteps/urn:example:step:unknown/events",
        "/epcis/bizLocations/urn:epc:id:sgln:4012345.00001.0/events",  # the other tenant's
        "/epcis/readPoints/urn:epc:id:sgln:0614141.07346.9/events",
        "/epcis/eventTypes/Inspection/events",
        f"/epcis/epcs/{SGTIN.format(1004)}/events",  # the other tenant's
        f"{EVENTS}/urn:uuid:{uuid.uuid4()}",
    ):
        assert_problem(api.client.get(missing, headers=headers), 404)
    assert_problem(api.client.get("/epcis/epcs/urn:epc:id:sgtin:0614141.10734.1/events", headers=headers), 422)


def test_collections_page_by_member(api: Api, tenant: TenantFixture) -> None:
    places = [{"id": f"urn:epc:id:sgln:0614141.07346.{n}"} for n in range(1, 6)]
    capture(api, tenant, epcis_document([event(n, readPoint=place) for n, place in enumerate(places)]))
    pages = [page.json()["member"] for page in follow(api, tenant, "/epcis/readPoints", {"perPage": 2})]
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [m for p in pages for m in p] == sorted(f"https://id.gs1.org/414/0614141073467/254/{n}" for n in range(1, 6))
    steps = [page.json()["member"] for page in follow(api, tenant, "/epcis/bizSteps", {"perPage": 7})]
    flat = [m for p in steps for m in p]
    assert flat == sorted(set(flat))
    assert "void_shipping" in flat


# --- named queries


def test_named_queries(api: Api, tenant: TenantFixture) -> None:
    capture(api, tenant, epcis_document([event(1), event(2, bizStep="receiving"), event(3)]))
    headers = tenant.headers()
    definition = {"name": "shipped", "query": {"EQ_bizStep": ["shipping"], "orderBy": "eventTime"}}
    created = api.client.post("/epcis/queries", json=definition, headers=headers)
    assert created.status_code == 201, created.text
    assert created.headers["location"] == "/epcis/queries/shipped"
    assert created.json()["query"] == definition["query"]
    assert_problem(api.client.post("/epcis/queries", json=definition, headers=headers), 409, "query_exists")
    bad = api.client.post("/epcis/queries", json={"name": "bad", "query": {"EQ_bizstep": ["x"]}}, headers=headers)
    assert assert_problem(bad, 422, "query_parameter")["parameter"] == "EQ_bizstep"
    refused = api.client.post("/epcis/queries", json={**definition, "name": "v"}, headers=tenant.headers(Role.VIEWER))
    assert_problem(refused, 403)

    second = {"name": "everything", "query": {}}
    assert api.client.post("/epcis/queries", json=second, headers=headers).status_code == 201
    listed = api.client.get("/epcis/queries", params={"perPage": 1}, headers=headers)
    assert [q["name"] for q in listed.json()] == ["everything"]
    assert "link" in listed.headers
    assert [q["name"] for q in api.client.get("/epcis/queries", headers=headers).json()] == ["everything", "shipped"]

    got = api.client.get("/epcis/queries/shipped", headers=headers).json()
    assert got["query"] == definition["query"]
    assert api.client.get(f"/epcis/queries/{got['id']}", headers=headers).json()["name"] == "shipped"  # by id

    result = api.client.get("/epcis/queries/shipped/events", headers=headers)
    assert result.json()["epcisBody"]["queryResults"]["queryName"] == "shipped"
    assert [int(e["eventTime"][14:16]) for e in event_list(result)] == [3, 1]
    paged = api.client.get("/epcis/queries/shipped/events", params={"perPage": 1}, headers=headers)
    assert len(event_list(paged)) == 1
    assert "nextPageToken=" in paged.headers["link"]
    as_xml = api.client.get("/epcis/queries/shipped/events", headers={**headers, "Accept": "application/xml"})
    assert as_xml.headers["content-type"].startswith("application/xml")
    assert len(read_document(as_xml.content).events) == 2

    assert api.client.delete("/epcis/queries/shipped", headers=headers).status_code == 204
    assert_problem(api.client.get("/epcis/queries/shipped", headers=headers), 404, "query_not_found")
    assert_problem(api.client.get("/epcis/queries/shipped/events", headers=headers), 404, "query_not_found")


# --- tenants


def test_tenants_see_their_own_events_and_the_platform_operator_every_tenant(
    api: Api, tenant: TenantFixture, other: TenantFixture
) -> None:
    capture(api, tenant, epcis_document([event(1, eventID="urn:uuid:" + str(uuid.uuid4()))]))
    theirs = event(2, eventID=f"urn:uuid:{uuid.uuid4()}")
    capture(api, other, epcis_document([theirs]))
    assert epcs(api.client.get(EVENTS, headers=tenant.headers())) == [SGTIN.format(1001)]
    assert_problem(api.client.get(f"{EVENTS}/{theirs['eventID']}", headers=tenant.headers()), 404)
    assert epcs(api.client.get(EVENTS, params={"MATCH_epc": SGTIN.format(1002)}, headers=tenant.headers())) == []
    operator = tenant.headers(Role.PLATFORM_OPERATOR)
    everyone = event_list(api.client.get(EVENTS, params={"perPage": 1000}, headers=operator))
    assert {SGTIN.format(1001), SGTIN.format(1002)} <= {epc for e in everyone for epc in e.get("epcList", [])}
    only_theirs = api.client.get(EVENTS, params={"tenant_id": other.id}, headers=operator)
    assert epcs(only_theirs) == [SGTIN.format(1002)]
    assert epcs(api.client.get(f"{EVENTS}/{theirs['eventID']}", headers=operator)) == [SGTIN.format(1002)]
    # The tenant parameter is the platform operator's only: anyone else reads their own tenant.
    assert epcs(api.client.get(EVENTS, params={"tenant_id": other.id}, headers=tenant.headers())) == [
        SGTIN.format(1001)
    ]


def test_every_query_route_needs_a_principal(api: Api) -> None:
    for path in (EVENTS, "/epcis/bizSteps", "/epcis/queries", "/epcis/eventTypes/ObjectEvent/events"):
        assert_problem(api.client.get(path), 401)
