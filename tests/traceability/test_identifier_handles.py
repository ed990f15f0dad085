"""IIP identifiers (handles) as EPCs: their forms, capture, and one object to queries, genealogy and recall.

The database tests run on SQLite and PostgreSQL (the `migrated_db` fixture).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select

from iip.kernel.auth import Principal, Role
from iip.kernel.db import Database
from iip.kernel.errors import Invalid
from iip.traceability import indexing
from iip.traceability.capture import CaptureService
from iip.traceability.epcis import event_hash
from iip.traceability.epcis.identifiers import canonical, check, is_gs1_identifier, same_object
from iip.traceability.epcis.validation import validate_events
from iip.traceability.genealogy import trace
from iip.traceability.models import Event, EventEpc
from iip.traceability.query import parse_query, run_query
from iip.traceability.recall import recall
from tests.conftest import TenantFixture
from tests.traceability.query_support import capture_events, capturer, epcis_document

PART = "hdl:88.118.8/part-7"
RAW = "hdl:88.118.8/raw-1"
LINE = "hdl:88.118.8/line-1"


@pytest.mark.parametrize(
    "written",
    [
        "hdl:88.118.8/Part-7",
        "HDL:88.118.8/PART-7",
        " hdl:88.118.8/part-7 ",
        "https://hdl.handle.net/88.118.8/Part-7",
        "http://HDL.Handle.Net/88.118.8/part-7?noredirect",
        "https://iip.example.com/api/handles/88.118.8/Part-7",
        "http://127.0.0.1:8000/api/handles/88.118.8/PART-7?index=1",
        "hdl:88.118.8/Part%2D7",  # percent-encoded, as a URI may be
    ],
)
def test_every_accepted_form_names_one_object(written: str) -> None:
    assert canonical(written) == PART
    assert same_object(written, "hdl:88.118.8/part-7")
    assert check(written) is None
    assert not is_gs1_identifier(written)


def test_a_handle_keeps_its_slashes_and_its_prefix_case_folds() -> None:
    assert canonical("hdl:88.118.8/Batch/2024/07") == "hdl:88.118.8/batch/2024/07"
    assert canonical("https://hdl.handle.net/88.118.8/Batch%2F2024") == "hdl:88.118.8/batch/2024"
    assert canonical("hdl:0.NA/88.118.8") == "hdl:0.na/88.118.8"
    assert not same_object("hdl:88.118.8/part-7", "hdl:88.118.9/part-7")


def test_a_handle_whose_path_looks_like_a_gs1_key_stays_a_handle() -> None:
    # On the Handle proxy the path is a handle, whatever AIs it seems to hold.
    assert canonical("https://hdl.handle.net/88.118.8/01/09506000134352") == "hdl:88.118.8/01/09506000134352"
    assert canonical("https://hdl.handle.net/414/9506000134352") == "hdl:414/9506000134352"
    # Elsewhere the same path is a Digital Link, as before.
    assert canonical("https://brand.example/01/09506000134352") == "https://id.gs1.org/01/09506000134352"
    assert canonical("https://brand.example/414/9506000134352") == "https://id.gs1.org/414/9506000134352"


@pytest.mark.parametrize(
    ("written", "reason"),
    [("hdl:88.118.8", "prefix/suffix"), ("hdl:/part-7", "prefix"), ("https://hdl.handle.net/88.118.8/", "suffix")],
)
def test_a_value_written_as_a_handle_that_names_none_is_refused(written: str, reason: str) -> None:
    problem = check(written)
    assert problem is not None
    assert reason in problem
    event = {**object_event(written), "eventID": "urn:uuid:6b5e64a4-6f2c-4c8f-8d0e-2f0c1e7f3a11"}
    issues = validate_events([event])
    assert [i.location for i in issues] == ["/epcList/0"]


def test_other_uris_stay_as_written() -> None:
    for value in ("urn:uuid:0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "https://example.com/handles/88.118.8/x"):
        assert canonical(value) == value
        assert check(value) is None


def test_the_event_hash_keeps_a_handle_as_written() -> None:
    # A handle is no GS1 key: the CBV hash algorithm takes other URIs as they are.
    upper, lower = object_event("hdl:88.118.8/PART-7"), object_event("hdl:88.118.8/part-7")
    assert event_hash.event_hash(upper) != event_hash.event_hash(lower)


def test_stored_and_asked_identifiers_differ_only_in_what_a_broken_identifier_gives() -> None:
    # As stored, a broken value stays as written (validation reports it); asked about, it is refused.
    for value in ("hdl:88.118.8/Part-7", " urn:epc:id:sgtin:0614141.107346.2017 ", "urn:uuid:x"):
        assert indexing.canonical_identifier(value) == indexing.checked_identifier(value)
    assert indexing.canonical_identifier("hdl:88.118.8") == "hdl:88.118.8"
    with pytest.raises(Invalid, match="prefix/suffix") as refused:
        indexing.checked_identifier("hdl:88.118.8")
    assert refused.value.instance_code == "invalid_identifier"
    with pytest.raises(Invalid) as empty:
        indexing.checked_identifier("  ")
    assert empty.value.instance_code == "identifier_required"


# --- in the repository ------------------------------------------------------------------------


def object_event(epc: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": "ObjectEvent",
        "eventTime": "2024-06-01T08:00:00.000+08:00",
        "eventTimeZoneOffset": "+08:00",
        "action": "OBSERVE",
        "epcList": [epc],
        **fields,
    }


def handle_events() -> list[dict[str, Any]]:
    """A raw part machined into a finished part, then shipped: each handle written another way each time."""
    return [
        {
            "type": "TransformationEvent",
            "eventID": "urn:uuid:5d6c7b8a-0000-4000-8000-000000000001",
            "eventTime": "2024-06-01T08:00:00.000+08:00",
            "eventTimeZoneOffset": "+08:00",
            "inputEPCList": ["hdl:88.118.8/RAW-1"],
            "outputEPCList": ["https://hdl.handle.net/88.118.8/Part-7"],
            "bizStep": "commissioning",
            "readPoint": {"id": "https://plant.example.com/api/handles/88.118.8/Line-1"},
        },
        {
            **object_event("HDL:88.118.8/PART-7", bizStep="shipping"),
            "eventID": "urn:uuid:5d6c7b8a-0000-4000-8000-000000000002",
            "eventTime": "2024-06-02T08:00:00.000+08:00",
            "readPoint": {"id": "hdl:88.118.8/LINE-1"},
        },
    ]


@pytest.fixture
def captured(migrated_db: Database, tenant_a: TenantFixture) -> str:
    with migrated_db.session() as session:
        capture_events(session, tenant_a.id, handle_events())
    return tenant_a.id


def admin(tenant_id: str) -> Principal:
    return Principal("user", "handles-test", "handles-test", tenant_id, Role.ADMIN)


def test_handles_are_captured_and_indexed_in_canonical_form_with_the_body_as_written(
    migrated_db: Database, captured: str
) -> None:
    with migrated_db.session() as session:
        rows = set(session.execute(select(EventEpc.role, EventEpc.epc).where(EventEpc.tenant_id == captured)))
        points = set(session.scalars(select(Event.read_point).where(Event.tenant_id == captured)))
        bodies = [e.body for e in session.scalars(select(Event).where(Event.tenant_id == captured).order_by(Event.id))]
    assert rows == {("input", RAW), ("output", PART), ("epc", PART)}
    assert points == {LINE}
    assert bodies[0]["inputEPCList"] == ["hdl:88.118.8/RAW-1"]
    assert bodies[0]["outputEPCList"] == ["https://hdl.handle.net/88.118.8/Part-7"]
    assert bodies[1]["epcList"] == ["HDL:88.118.8/PART-7"]


@pytest.mark.parametrize(
    "asked",
    ["hdl:88.118.8/part-7", "hdl:88.118.8/PART-7", "https://iip.example.com/api/handles/88.118.8/Part-7"],
)
def test_queries_find_a_handle_by_any_of_its_forms(migrated_db: Database, captured: str, asked: str) -> None:
    with migrated_db.session() as session:
        both = run_query(session, captured, parse_query({"MATCH_anyEPC": asked}), None, 10).events
        outputs = run_query(session, captured, parse_query({"MATCH_outputEPC": asked}), None, 10).events
        at_line = run_query(
            session, captured, parse_query({"EQ_readPoint": "https://hdl.handle.net/88.118.8/LINE-1"}), None, 10
        ).events
    assert [e.event_id for e in both] == [e["eventID"] for e in handle_events()]
    assert [e.event_type for e in outputs] == ["TransformationEvent"]
    assert len(at_line) == 2


def test_genealogy_and_recall_follow_a_handle_whatever_its_spelling(migrated_db: Database, captured: str) -> None:
    with migrated_db.session() as session:
        backward = trace(session, admin(captured), "https://hdl.handle.net/88.118.8/PART-7", "backward")
        forward = trace(session, admin(captured), "HDL:88.118.8/Raw-1", "forward")
        recalled = recall(session, admin(captured), serial="https://iip.example.com/api/handles/88.118.8/RAW-1")
    assert backward.root == PART
    assert {n.id for n in backward.nodes} == {PART, RAW}
    assert [(e.source, e.target, e.relation) for e in backward.edges] == [(RAW, PART, "input_of")]
    assert {n.id for n in forward.nodes} == {RAW, PART}
    assert recalled.root == RAW
    assert recalled.kind == "instance"
    assert {row.affected_identifier for row in recalled.rows} >= {PART}


def test_a_broken_handle_refuses_its_event_and_says_where(migrated_db: Database, tenant_a: TenantFixture) -> None:
    document = epcis_document([object_event("hdl:88.118.8/fine"), object_event("hdl:88.118.8")])
    with migrated_db.session() as session:
        job = CaptureService(session).capture(capturer(tenant_a.id), json.dumps(document).encode())
        stored = session.scalar(select(Event.id).where(Event.tenant_id == tenant_a.id))
    assert not job.success
    assert [e["location"] for e in job.errors] == ["/epcisBody/eventList/1/epcList/0"]
    assert "prefix/suffix" in job.errors[0]["message"]
    assert stored is None  # the default mode stores nothing of a refused document
