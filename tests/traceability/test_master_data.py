"""EPCIS master data from document headers: read (JSON and XML), stored per tenant on SQLite and
PostgreSQL (newest capture wins per attribute), refused when malformed, and read back by the API and
`iip trace masterdata`."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, select

from iip.kernel.auth import AccessService
from iip.kernel.db import Database
from iip.kernel.settings import Settings
from iip.traceability.capture import CaptureService, DocumentRejected
from iip.traceability.epcis.documents import parse_xml
from iip.traceability.epcis.identifiers import urn_to_dl
from iip.traceability.epcis.master_data import describe, json_master_data, merge_attributes, xml_master_data
from iip.traceability.models import CaptureJob, Event, MasterDataElement
from tests.api.support import assert_problem
from tests.cli.conftest import InProcessIip
from tests.conftest import TenantFixture
from tests.traceability.conftest import gs1_example
from tests.traceability.test_capture import actor, document, new_tenant, object_event

ALL_FIELDS = "XML/WithFullCombinationOfFields/masterdata_all_possible_fields.xml"
MIMASU = "XML/Mimasu/Example-masterData.xml"
ROMAINE = Path(__file__).parent / "data" / "fsma204_romaine.jsonld"
YOGURT = Path(__file__).parent / "data" / "food_cn_yogurt.xml"
SITE = "urn:epc:id:sgln:0037000.00729.0"
LOCATION = "urn:epcglobal:epcis:vtype:BusinessLocation"
NAME = "urn:epcglobal:cbv:mda#name"
CITY = "urn:epcglobal:cbv:mda#city"
MALFORMED_POINTER = "/epcisHeader/epcisMasterData/vocabularyList/0/vocabularyElementList/0"


@pytest.fixture
def iip_in_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, settings: Settings) -> InProcessIip:
    """`iip` in this process, on the test's database (SQLite or PostgreSQL) and data dir."""
    monkeypatch.chdir(tmp_path)
    env = {"IIP_DATA_DIR": str(settings.data_dir), "IIP_DATABASE_URL": settings.database_url, "IIP_LOG_FORMAT": "text"}
    return InProcessIip(monkeypatch, env)


def with_master_data(vocabularies: list[dict[str, Any]], *events: dict[str, Any]) -> bytes:
    parsed = json.loads(document(*events))
    parsed["epcisHeader"] = {"epcisMasterData": {"vocabularyList": vocabularies}}
    return json.dumps(parsed).encode()


def location(element_id: str, *attributes: tuple[str, Any], children: list[str] | None = None) -> dict[str, Any]:
    element: dict[str, Any] = {"id": element_id, "attributes": [{"id": i, "attribute": v} for i, v in attributes]}
    if children is not None:
        element["children"] = children
    return {"type": LOCATION, "vocabularyElementList": [element]}


def capture(db: Database, tenant_id: str, data: bytes, mode: str = "rollback") -> CaptureJob:
    with db.session() as session:
        return CaptureService(session).capture(actor(tenant_id), data, mode=mode)


def elements(db: Database, tenant_id: str) -> dict[tuple[str, str], MasterDataElement]:
    with db.session() as session:
        rows = session.scalars(select(MasterDataElement).where(MasterDataElement.tenant_id == tenant_id))
        return {(row.vocabulary_type, row.element_key): row for row in rows}


def events_of(db: Database, tenant_id: str) -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(Event).where(Event.tenant_id == tenant_id)) or 0


# --- reading (pure)


def test_gs1_xml_examples_are_read_in_the_json_bindings_form() -> None:
    everything, problems = xml_master_data(parse_xml(gs1_example(ALL_FIELDS).read_bytes()))
    assert problems == []
    assert [(e.type, e.id) for e in everything] == [(LOCATION, SITE), ("urn:epcglobal:epcis:vtype:ReadPoint", SITE)]
    site = everything[0]
    assert site.key == urn_to_dl(SITE)
    assert site.children == ("urn:epc:id:sgln:0037000.00729.8201",)
    arrays = [a["attribute"] for a in site.attributes if a["id"] == "http://example.com/ext1#array"]
    assert arrays == ["string1InArray", "string2InArray"]  # a repeated attribute keeps every value, in order
    nested = next(a["attribute"] for a in site.attributes if a["id"] == "http://example.com/ext1#object1")
    assert nested == {"ext1:object2": {"inner1": "val1", "inner2": "val2"}, "ext1:string": "string"}

    # The 1.x master data document (not captured, but the same vocabulary list): an address as XML.
    mimasu, problems = xml_master_data(parse_xml(gs1_example(MIMASU).read_bytes()))
    assert problems == []
    assert len(mimasu) == 7
    address = {"Street": "100 Nowhere Street", "City": "Fancy", "State": "DC", "Zip": "99999"}
    assert mimasu[0].attributes[2] == {
        "id": "http://epcis.example.com/mda/address",
        "attribute": {"example:Address": address},
    }
    assert mimasu[0].attributes[0] == {"id": "http://epcis.example.com/mda/latitude", "attribute": "+18.0000"}
    described = describe(mimasu[0].attributes)
    assert described is not None
    assert described.address == "100 Nowhere Street, Fancy, DC, 99999"


def test_json_and_xml_of_one_vocabulary_read_alike() -> None:
    xml, _ = xml_master_data(parse_xml(gs1_example(MIMASU).read_bytes()))
    header = {
        "epcisMasterData": {
            "vocabularyList": [
                {
                    "type": LOCATION,
                    "vocabularyElementList": [
                        {"id": e.id, "attributes": list(e.attributes), "children": list(e.children or [])}
                        for e in xml
                        if e.type == LOCATION
                    ],
                }
            ]
        }
    }
    from_json, problems = json_master_data(header)
    assert problems == []
    assert [(e.id, e.attributes, e.children or ()) for e in from_json] == [
        (e.id, e.attributes, e.children or ()) for e in xml if e.type == LOCATION
    ]


@pytest.mark.parametrize(
    ("element", "where", "says"),
    [
        ({"id": "https://id.gs1.org/414/0037000007297", "attributes": []}, "/id", "check digit"),
        ({"id": SITE, "attributes": [{"id": "name", "attribute": "x"}]}, "/attributes/0/id", "not a URI"),
        ({"id": SITE, "attributes": [{"id": NAME, "attribute": "a\x00b"}]}, "/attributes/0/attribute", "NUL"),
        ({"id": SITE, "children": ["hdl:88.118.8"]}, "/children/0", "prefix/suffix"),
        ({"id": SITE, "attributes": "name"}, "/attributes", "must be a list"),
        ({"id": "x" * 600 + ":y"}, "/id", "at most 500"),
    ],
)
def test_malformed_master_data_is_located(element: dict[str, Any], where: str, says: str) -> None:
    found, problems = json_master_data(
        {"epcisMasterData": {"vocabularyList": [{"type": LOCATION, "vocabularyElementList": [element]}]}}
    )
    assert found == []
    assert [p.location for p in problems] == [MALFORMED_POINTER + where]
    assert says in problems[0].message


@given(
    st.lists(st.tuples(st.sampled_from("abcd"), st.integers()), max_size=8),
    st.lists(st.tuples(st.sampled_from("abcd"), st.integers()), max_size=8),
)
def test_the_newest_capture_wins_per_attribute(old: list[tuple[str, int]], new: list[tuple[str, int]]) -> None:
    merged = merge_attributes([{"id": i, "attribute": v} for i, v in old], [{"id": i, "attribute": v} for i, v in new])
    given_ids = {i for i, _ in new}
    for name in {i for i, _ in old} | given_ids:
        expected = [v for i, v in (new if name in given_ids else old) if i == name]
        assert [a["attribute"] for a in merged if a["id"] == name] == expected
    assert len(merged) == len(new) + sum(1 for i, _ in old if i not in given_ids)


# --- capture


def test_a_gs1_document_of_master_data_alone_is_captured(migrated_db: Database) -> None:
    tenant = new_tenant(migrated_db)
    job = capture(migrated_db, tenant, gs1_example(ALL_FIELDS).read_bytes())
    assert (job.success, job.event_count, job.errors) == (True, 0, [])
    stored = elements(migrated_db, tenant)
    expected, _ = xml_master_data(parse_xml(gs1_example(ALL_FIELDS).read_bytes()))
    assert set(stored) == {(e.type, e.key) for e in expected}
    for element in expected:
        row = stored[(element.type, element.key)]
        assert (row.element_id, row.attributes, row.children) == (
            element.id,
            list(element.attributes),
            ["urn:epc:id:sgln:0037000.00729.8201"],
        )
        assert row.capture_job_id == job.id
    assert stored[(LOCATION, urn_to_dl(SITE))].context == {
        "ext1": "http://example.com/ext1/",
        "ext2": "http://example.com/ext2/",
        "ext3": "http://example.com/ext3/",
    }


def test_json_and_xml_documents_with_events_store_their_master_data(migrated_db: Database) -> None:
    tenant = new_tenant(migrated_db)
    for path in (ROMAINE, YOGURT):
        job = capture(migrated_db, tenant, path.read_bytes())
        assert job.success, job.errors
    stored = elements(migrated_db, tenant)
    romaine = json.loads(ROMAINE.read_text())["epcisHeader"]["epcisMasterData"]["vocabularyList"]
    assert sum(len(v["vocabularyElementList"]) for v in romaine) + 6 == len(stored)  # the yogurt has six
    canteen = stored[(LOCATION, urn_to_dl("urn:epc:id:sgln:6956789.00007.0"))]
    assert canteen.attributes == [{"id": NAME, "attribute": "某科技园职工食堂"}]


def test_the_newest_capture_wins_per_attribute_and_other_tenants_are_untouched(migrated_db: Database) -> None:
    tenant, other = new_tenant(migrated_db), new_tenant(migrated_db)
    capture(migrated_db, other, with_master_data([location(SITE, (NAME, "Theirs"))]))
    capture(migrated_db, tenant, with_master_data([location(SITE, (NAME, "Old DC"), (CITY, "Fancy"))]))
    dl = urn_to_dl(SITE)
    latest = capture(migrated_db, tenant, with_master_data([location(dl, (NAME, "New DC"), children=[dl + "/254/1"])]))

    row = elements(migrated_db, tenant)[(LOCATION, dl)]
    assert row.attributes == [{"id": NAME, "attribute": "New DC"}, {"id": CITY, "attribute": "Fancy"}]
    assert (row.element_id, row.children, row.capture_job_id) == (dl, [dl + "/254/1"], latest.id)
    capture(migrated_db, tenant, with_master_data([location(SITE, (CITY, "Plain"))]))
    row = elements(migrated_db, tenant)[(LOCATION, dl)]
    assert row.attributes == [{"id": NAME, "attribute": "New DC"}, {"id": CITY, "attribute": "Plain"}]
    assert row.children == [dl + "/254/1"]  # a capture that lists no children keeps them
    assert elements(migrated_db, other)[(LOCATION, dl)].attributes == [{"id": NAME, "attribute": "Theirs"}]


def test_malformed_master_data_refuses_the_document_and_stores_nothing(migrated_db: Database) -> None:
    tenant = new_tenant(migrated_db)
    bad = with_master_data([location(SITE, ("name", "not a URI"))], object_event(1))
    with pytest.raises(DocumentRejected) as refused:
        capture(migrated_db, tenant, bad)
    assert [i.location for i in refused.value.issues] == [MALFORMED_POINTER + "/attributes/0/id"]
    xml = (
        gs1_example(ALL_FIELDS)
        .read_bytes()
        .replace(b'<attribute id="http://example.com/ext1#string">', b'<attribute id="string">', 1)
    )
    with pytest.raises(DocumentRejected) as refused_xml:
        capture(migrated_db, tenant, xml)
    assert [i.location for i in refused_xml.value.issues] == [
        "/EPCISDocument/EPCISHeader/extension/EPCISMasterData/VocabularyList/Vocabulary[1]"
        "/VocabularyElementList/VocabularyElement[1]/attribute[1]/@id"
    ]
    with migrated_db.session() as session:
        assert session.scalar(select(func.count()).select_from(CaptureJob).where(CaptureJob.tenant_id == tenant)) == 0
    assert (elements(migrated_db, tenant), events_of(migrated_db, tenant)) == ({}, 0)


def test_a_job_that_rolls_back_stores_no_master_data_and_one_that_proceeds_does(migrated_db: Database) -> None:
    tenant = new_tenant(migrated_db)
    data = with_master_data([location(SITE, (NAME, "DC"))], object_event(1), object_event(2, action="WHATEVER"))
    rolled_back = capture(migrated_db, tenant, data)
    assert not rolled_back.success
    assert (elements(migrated_db, tenant), events_of(migrated_db, tenant)) == ({}, 0)
    proceeded = capture(migrated_db, tenant, data, mode="proceed")
    assert (proceeded.success, proceeded.captured_count) == (False, 1)
    assert elements(migrated_db, tenant)[(LOCATION, urn_to_dl(SITE))].attributes == [{"id": NAME, "attribute": "DC"}]


# --- the API and the CLI


def test_the_api_lists_by_type_and_gets_one_element(
    client: TestClient, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    headers = tenant_a.headers()
    created = client.post(
        "/epcis/capture",
        content=gs1_example(ALL_FIELDS).read_bytes(),
        headers={**headers, "Content-Type": "application/xml"},
    )
    assert created.status_code == 202, created.text
    listed = client.get("/api/traceability/masterdata", headers=headers)
    assert [(e["type"], e["id"]) for e in listed.json()] == [
        (LOCATION, SITE),
        ("urn:epcglobal:epcis:vtype:ReadPoint", SITE),
    ]
    by_type = client.get("/api/traceability/masterdata", params={"type": "ReadPoint"}, headers=headers).json()
    assert [e["type"] for e in by_type] == ["urn:epcglobal:epcis:vtype:ReadPoint"]
    assert (
        client.get("/api/traceability/masterdata", params={"type": LOCATION}, headers=headers).json()
        == listed.json()[:1]
    )
    first = client.get("/api/traceability/masterdata", params={"perPage": 1}, headers=headers)
    assert 'rel="next"' in first.headers["link"]
    assert len(first.json()) == 1

    one = client.get(
        f"/api/traceability/masterdata/{urn_to_dl(SITE)}", params={"type": "BusinessLocation"}, headers=headers
    )
    assert one.status_code == 200, one.text
    body = one.json()
    assert (body["id"], body["children"], body["captureID"]) == (
        SITE,
        ["urn:epc:id:sgln:0037000.00729.8201"],
        created.json()["captureID"],
    )
    assert body["attributes"][:3] == [
        {"id": "http://example.com/ext1#string", "attribute": "stringValue"},
        {"id": "http://example.com/ext1#array", "attribute": "string1InArray"},
        {"id": "http://example.com/ext1#array", "attribute": "string2InArray"},
    ]
    assert body["@context"]["ext1"] == "http://example.com/ext1/"
    ambiguous = assert_problem(
        client.get(f"/api/traceability/masterdata/{SITE}", headers=headers), 409, "ambiguous_element"
    )
    assert "ReadPoint" in ambiguous["detail"]
    assert_problem(client.get("/api/traceability/masterdata/urn:epc:id:sgln:0037000.00729.9", headers=headers), 404)
    assert_problem(client.get(f"/api/traceability/masterdata/{SITE}", headers=tenant_b.headers()), 404)
    assert client.get("/api/traceability/masterdata", headers=tenant_b.headers()).json() == []
    assert_problem(
        client.get("/api/traceability/masterdata", params={"nextPageToken": "garbled"}, headers=headers), 422
    )


def test_iip_trace_masterdata(iip_in_process: InProcessIip, migrated_db: Database) -> None:
    name = f"t-{uuid.uuid4().hex[:10]}"
    assert iip_in_process("tenant", "create", name).exit_code == 0
    with migrated_db.session() as session:
        tenant = AccessService(session).tenant_by_name(name).id
    assert capture(migrated_db, tenant, with_master_data([location(SITE, (NAME, "North DC"), (CITY, "Fancy"))])).success

    listed = iip_in_process("trace", "masterdata", "--tenant", name, "--type", "BusinessLocation")
    assert listed.exit_code == 0, listed.output
    assert SITE in listed.stdout
    assert "name, city" in listed.stdout
    one = iip_in_process("trace", "masterdata", urn_to_dl(SITE), "--tenant", name, "--json")
    assert one.exit_code == 0, one.output
    assert json.loads(one.stdout)["attributes"] == [
        {"id": NAME, "attribute": "North DC"},
        {"id": CITY, "attribute": "Fancy"},
    ]
    missing = iip_in_process("trace", "masterdata", "urn:epc:id:sgln:0037000.00729.9", "--tenant", name)
    assert missing.exit_code != 0
    assert "no master data" in missing.output
