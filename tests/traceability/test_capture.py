"""Capture: documents validated, hashed and stored with their lookup rows, on SQLite and PostgreSQL."""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from iip.kernel.auth import AccessService, Principal, Role
from iip.kernel.db import Database
from iip.kernel.errors import Conflict, Forbidden, Invalid, NotFound
from iip.traceability import capture, capture_workers, indexing
from iip.traceability.capture import CaptureService, CaptureTooLarge, DocumentRejected
from iip.traceability.epcis.documents import read_document
from iip.traceability.epcis.event_hash import event_hash
from iip.traceability.epcis.identifiers import urn_to_dl
from iip.traceability.models import CaptureJob, Event, EventEpc, EventLink, SensorReport
from tests.traceability.conftest import DATASET, example_id

EVENT_TABLES = (Event, EventEpc, EventLink, SensorReport)
# The GS1 files under JSON/ and XML/ that are no capture: each with why, checked below.
NOT_CAPTURED = {
    # JSON-LD's CBV binding names vocabulary by bare name or web URI; this file writes CBV 1.x URNs
    # (bizStep, business transaction type), which GS1's JSON Schema refuses.
    "XML/WithEventHashID/event_with_identical_hash_id_7.json": "is not valid under any of the schemas",
    # EPCIS master data documents: vocabulary, not events (capture takes EPCISDocument and
    # EPCISQueryDocument, master data in an EPCISDocument's header).
    "XML/CBV/CBV-11.4-2020-06-16a.xml": "unknown XML root element 'EPCISMasterDataDocument'",
    "XML/Mimasu/Example-masterData.xml": "unknown XML root element 'EPCISMasterDataDocument'",
    # The REST binding's capture job documents: what GET /capture/{captureID} answers, not input.
    "XML/CaptureJob/Example-CaptureJobRunning.xml": "unknown XML root element 'EPCISCaptureJob'",
    "XML/CaptureJob/Example-CaptureJobSuccess.xml": "unknown XML root element 'EPCISCaptureJob'",
    "XML/CaptureJob/Example-CaptureJobWithErrorFile.xml": "unknown XML root element 'EPCISCaptureJob'",
    "XML/CaptureJob/Example-CaptureJobWithErrors.xml": "unknown XML root element 'EPCISCaptureJob'",
}
ALL_EXAMPLES = sorted(
    p for p in [*DATASET.glob("JSON/**/*"), *DATASET.glob("XML/**/*")] if p.suffix in (".json", ".jsonld", ".xml")
)


def actor(tenant_id: str, role: Role = Role.ENGINEER) -> Principal:
    return Principal("apikey", "capture-test", "capture-test", tenant_id, role)


def new_tenant(db: Database) -> str:
    with db.session() as session:
        return AccessService(session).create_tenant(f"t-{uuid.uuid4().hex[:10]}").id


def run(db: Database, tenant_id: str, data: bytes | str, **options: Any) -> CaptureJob:
    raw = data.encode() if isinstance(data, str) else data
    with db.session() as session:
        return CaptureService(session).capture(actor(tenant_id), raw, **options)


def counts(db: Database, tenant_id: str) -> dict[str, int]:
    with db.session() as session:
        return {
            table.__tablename__: session.scalar(
                select(func.count()).select_from(table).where(table.tenant_id == tenant_id)
            )
            or 0
            for table in EVENT_TABLES
        }


def stored_events(session: Session, tenant_id: str) -> list[Event]:
    return list(session.scalars(select(Event).where(Event.tenant_id == tenant_id).order_by(Event.id)))


def document(*events: dict[str, Any]) -> str:
    return json.dumps(
        {
            "@context": ["https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"],
            "type": "EPCISDocument",
            "schemaVersion": "2.0",
            "creationDate": "2024-01-01T00:00:00Z",
            "epcisBody": {"eventList": list(events)},
        }
    )


def object_event(serial: int = 1, **fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "ObjectEvent",
        "eventTime": f"2024-01-01T10:00:{serial % 60:02d}.000+01:00",
        "eventTimeZoneOffset": "+01:00",
        "epcList": [f"urn:epc:id:sgtin:0614141.107346.{serial}"],
        "action": "OBSERVE",
        "bizStep": "shipping",
        "readPoint": {"id": "urn:epc:id:sgln:0614141.07346.1234"},
    }
    event.update(fields)
    return {k: v for k, v in event.items() if v is not None}


# --- every GS1 example -------------------------------------------------------------------------


def test_every_gs1_example_is_captured_and_stored_as_read(migrated_db: Database) -> None:
    """Each document into a tenant of its own: every event stored (or a duplicate of one in the same
    document), its body what `read_document` gives, its lookup rows those of `index_event`."""
    # Guards the walk: a moved dataset would make this test pass on nothing.
    assert len(ALL_EXAMPLES) == 85  # 47 JSON-LD, 1 JSON and 37 XML files under JSON/ and XML/
    failures = []
    for path in ALL_EXAMPLES:
        name = example_id(path)
        if name in NOT_CAPTURED:
            continue
        tenant_id = new_tenant(migrated_db)
        job = run(migrated_db, tenant_id, path.read_bytes())
        read = read_document(path.read_bytes())
        if not job.success or job.captured_count + job.duplicate_count != len(read.events):
            failures.append(f"{name}: {job.errors[:3]} ({job.captured_count} of {len(read.events)})")
            continue
        with migrated_db.session() as session:
            rows = stored_events(session, tenant_id)
            hashes: dict[str, dict[str, Any]] = {}
            for e in read.events:  # of events hashing alike (an error declaration is not hashed), the first
                hashes.setdefault(event_hash(e, read.context), e)
            assert len(rows) == len(hashes) == job.captured_count, name
            for row in rows:
                assert row.body == hashes[row.event_hash], name  # as read, not normalised
                assert row.context == read.context, name
                assert row.event_id == (hashes[row.event_hash].get("eventID") or row.event_hash), name
                assert row.capture_job_id == job.id
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("name", sorted(NOT_CAPTURED))
def test_the_gs1_files_that_are_no_capture_are_refused_for_their_reason(migrated_db: Database, name: str) -> None:
    tenant_id = new_tenant(migrated_db)
    data = (DATASET / name).read_bytes()
    if name.endswith(".json"):  # a readable document whose event breaks the schema: a failed job
        job = run(migrated_db, tenant_id, data)
        assert not job.success
        assert any(NOT_CAPTURED[name] in e["message"] for e in job.errors), job.errors
    else:  # no EPCIS event document at all: refused whole
        with pytest.raises(DocumentRejected, match=re.escape(NOT_CAPTURED[name])):
            run(migrated_db, tenant_id, data)
    assert set(counts(migrated_db, tenant_id).values()) == {0}


def test_lookup_rows_are_stored_for_each_event(migrated_db: Database) -> None:
    tenant_id = new_tenant(migrated_db)
    job = run(migrated_db, tenant_id, (DATASET / "JSON/Example_9.6.1-ObjectEvent.jsonld").read_bytes())
    assert (job.success, job.captured_count) == (True, 2)
    with migrated_db.session() as session:
        rows = stored_events(session, tenant_id)
        epcs = session.execute(select(EventEpc.event_id, EventEpc.role, EventEpc.epc).order_by(EventEpc.id)).all()
        links = session.execute(
            select(EventLink.event_id, EventLink.type, EventLink.value).order_by(EventLink.id)
        ).all()
    first, second = rows
    assert [(e.event_id, e.role, e.epc) for e in epcs] == [
        (first.id, "epc", "https://id.gs1.org/01/10614141073464/21/2017"),
        (first.id, "epc", "https://id.gs1.org/01/10614141073464/21/2018"),
        (second.id, "epc", "https://id.gs1.org/01/10614141073464/21/2018"),
    ]
    assert (first.biz_step, first.read_point) == (
        "https://ref.gs1.org/cbv/BizStep-shipping",
        "https://id.gs1.org/414/0614141073467/254/1234",
    )
    assert [link.event_id for link in links] == [first.id, second.id, second.id]
    assert {link.type for link in links} == {"https://ref.gs1.org/cbv/BTT-po", "https://ref.gs1.org/cbv/BTT-desadv"}
    assert first.record_time == second.record_time  # one capture, one record time


def test_times_are_stored_as_the_orm_stores_them(migrated_db: Database) -> None:
    """Rows are written with plain SQL: a time must compare equal to the same time the ORM binds."""
    tenant_id = new_tenant(migrated_db)
    run(migrated_db, tenant_id, document(object_event(1, eventTime="2024-01-01T10:00:00.000005+01:00")))
    run(migrated_db, tenant_id, (DATASET / "JSON/WithSensorData/SensorDataExample1.jsonld").read_bytes())
    moment = dt.datetime(2024, 1, 1, 9, 0, 0, 5, tzinfo=dt.UTC)
    with migrated_db.session() as session:
        found = session.scalars(select(Event.event_time).where(Event.event_time == moment)).all()
        assert found == [moment]
        [row] = session.scalars(select(Event).where(Event.event_time == moment)).all()
        assert session.scalar(select(func.count()).select_from(Event).where(Event.record_time == row.record_time)) == 1
        report = session.scalars(select(SensorReport).where(SensorReport.tenant_id == tenant_id)).first()
        assert report is not None
        assert report.time is not None
        same_time = select(func.count()).select_from(SensorReport).where(SensorReport.time == report.time)
        assert (session.scalar(same_time) or 0) >= 1


def test_sensor_reports_are_stored(migrated_db: Database) -> None:
    tenant_id = new_tenant(migrated_db)
    job = run(migrated_db, tenant_id, (DATASET / "JSON/WithSensorData/SensorDataExample1.jsonld").read_bytes())
    assert job.success
    with migrated_db.session() as session:
        reports = list(session.scalars(select(SensorReport).where(SensorReport.tenant_id == tenant_id)))
    assert len(reports) > 1
    assert {r.type for r in reports} >= {"https://gs1.org/voc/Temperature"}
    assert all(r.time is not None and r.time.utcoffset() is not None for r in reports)


# --- invalid events: rollback and proceed ------------------------------------------------------


def broken_document() -> str:
    return document(
        object_event(1),
        object_event(2, action="WHATEVER"),  # the schema's enum and the rules refuse it
        object_event(3, epcList=["https://id.gs1.org/01/10614141073465/21/3"]),  # check digit should be 4
        object_event(4),
    )


def test_rollback_stores_nothing_of_a_document_with_an_invalid_event(migrated_db: Database) -> None:
    tenant_id = new_tenant(migrated_db)
    job = run(migrated_db, tenant_id, broken_document())
    assert (job.success, job.running, job.mode) == (False, False, "rollback")
    assert (job.event_count, job.captured_count) == (4, 0)
    locations = {e["location"] for e in job.errors}
    assert {"/epcisBody/eventList/1/action", "/epcisBody/eventList/2/epcList/0"} <= locations
    assert all(loc.startswith(("/epcisBody/eventList/1", "/epcisBody/eventList/2")) for loc in locations)
    assert any("check digit" in e["message"] for e in job.errors)
    assert counts(migrated_db, tenant_id) == dict.fromkeys((t.__tablename__ for t in EVENT_TABLES), 0)
    with migrated_db.session() as session:  # the failed job is kept, to be read back
        kept = session.get(CaptureJob, job.id)
        assert kept is not None
        assert (kept.success, kept.errors) == (False, job.errors)


def test_proceed_stores_the_valid_events_and_reports_the_others(migrated_db: Database) -> None:
    tenant_id = new_tenant(migrated_db)
    job = run(migrated_db, tenant_id, broken_document(), mode="proceed")
    assert (job.success, job.running, job.mode) == (False, False, "proceed")
    assert (job.event_count, job.captured_count, job.duplicate_count) == (4, 2, 0)
    assert {e["location"].split("/")[3] for e in job.errors} == {"1", "2"}
    with migrated_db.session() as session:
        stored = [row.body["epcList"][0] for row in stored_events(session, tenant_id)]
    assert stored == ["urn:epc:id:sgtin:0614141.107346.1", "urn:epc:id:sgtin:0614141.107346.4"]
    assert counts(migrated_db, tenant_id)["traceability_event_epc"] == 2


def test_an_xml_event_the_xsd_refuses_is_located_and_only_it_is_dropped_in_proceed(migrated_db: Database) -> None:
    tenant_id = new_tenant(migrated_db)
    xml = (DATASET / "XML/Example_9.6.1-ObjectEvent-2020_06_18a.xml").read_text()
    second = xml.index("<ObjectEvent>", xml.index("</ObjectEvent>"))
    broken = xml[:second] + xml[second:].replace("<action>OBSERVE</action>", "<action>LOOK</action>", 1)
    job = run(migrated_db, tenant_id, broken, mode="proceed")
    assert (job.success, job.captured_count) == (False, 1)
    locations = [e["location"] for e in job.errors]
    assert "/epcis:EPCISDocument/EPCISBody/EventList/ObjectEvent[2]/action" in locations  # the XSD's finding
    assert "/epcisBody/eventList/1/action" in locations  # the rule's, on the internal form
    with migrated_db.session() as session:
        [row] = stored_events(session, tenant_id)
    assert row.body["action"] == "OBSERVE"


def test_values_the_tables_cannot_hold_make_the_event_invalid(migrated_db: Database) -> None:
    tenant_id = new_tenant(migrated_db)
    job = run(migrated_db, tenant_id, document(object_event(1, eventID="urn:uuid:" + "0" * 600)), mode="proceed")
    assert job.captured_count == 0
    assert job.errors == [{"location": "/epcisBody/eventList/0/eventID", "message": job.errors[0]["message"]}]
    assert "500 characters" in job.errors[0]["message"]


@pytest.mark.parametrize(
    ("data", "location", "fragment"),
    [
        ("{not json", "", "malformed JSON"),
        ("hello", "", "neither JSON nor XML"),
        ('{"type": "EPCISDocument", "epcisBody": {"eventList": []}}', "", "required property"),
        ("<Inventory><EventList/></Inventory>", "", "unknown XML root element"),
        ("<EPCISDocument><EPCISBody/></EPCISDocument>", "/EPCISDocument", "is not an element of the schema"),
    ],
)
def test_a_document_broken_outside_its_events_is_refused_whole(
    migrated_db: Database, data: str, location: str, fragment: str
) -> None:
    tenant_id = new_tenant(migrated_db)
    with pytest.raises(DocumentRejected) as refused:
        run(migrated_db, tenant_id, data)
    assert refused.value.issues
    assert all(issue.location == location for issue in refused.value.issues)
    assert fragment in " ".join(i.message for i in refused.value.issues)
    with migrated_db.session() as session:  # no job for a document refused whole
        assert (
            session.scalar(select(func.count()).select_from(CaptureJob).where(CaptureJob.tenant_id == tenant_id)) == 0
        )


def test_a_header_breaking_the_schema_is_located(migrated_db: Database) -> None:
    broken = json.loads(document(object_event(1)))
    broken["creationDate"] = 20240101
    with pytest.raises(DocumentRejected) as refused:
        run(migrated_db, new_tenant(migrated_db), json.dumps(broken))
    assert [i.location for i in refused.value.issues] == ["/creationDate"]


def test_the_declared_syntax_must_be_the_bodys(migrated_db: Database) -> None:
    with pytest.raises(DocumentRejected, match="the body is JSON but was declared as XML"):
        run(migrated_db, new_tenant(migrated_db), document(object_event(1)), syntax="xml")


def test_a_document_over_the_capture_limit_is_refused(migrated_db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capture, "CAPTURE_LIMIT", 2)
    tenant_id = new_tenant(migrated_db)
    with pytest.raises(CaptureTooLarge, match="3 events"):
        run(migrated_db, tenant_id, document(object_event(1), object_event(2), object_event(3)))
    assert run(migrated_db, tenant_id, document(object_event(1), object_event(2))).success


# --- duplicates ---------------------------------------------------------------------------------


def test_an_event_captured_again_is_a_counted_duplicate(migrated_db: Database) -> None:
    tenant_id = new_tenant(migrated_db)
    first = run(migrated_db, tenant_id, document(object_event(1), object_event(2)))
    again = run(migrated_db, tenant_id, document(object_event(2), object_event(3)))
    assert (first.captured_count, first.duplicate_count) == (2, 0)
    assert (again.success, again.captured_count, again.duplicate_count) == (True, 1, 1)
    assert counts(migrated_db, tenant_id)["traceability_event"] == 3
    # Another tenant holds its own copy: duplicates are per tenant.
    other = new_tenant(migrated_db)
    assert run(migrated_db, other, document(object_event(1))).captured_count == 1


def test_an_event_twice_in_one_document_is_stored_once(migrated_db: Database) -> None:
    tenant_id = new_tenant(migrated_db)
    job = run(migrated_db, tenant_id, document(object_event(1), object_event(1), object_event(2)))
    assert (job.event_count, job.captured_count, job.duplicate_count) == (3, 2, 1)


def test_the_same_event_as_urns_and_as_digital_links_is_a_duplicate(migrated_db: Database) -> None:
    as_urns = object_event(1)
    as_links = copy.deepcopy(as_urns)
    as_links["epcList"] = [urn_to_dl(e) for e in as_urns["epcList"]]
    as_links["readPoint"] = {"id": urn_to_dl(as_urns["readPoint"]["id"])}
    assert event_hash(as_urns) == event_hash(as_links)  # CBV 2.0 hashes canonical Digital Links
    tenant_id = new_tenant(migrated_db)
    first = run(migrated_db, tenant_id, document(as_urns))
    second = run(migrated_db, tenant_id, document(as_links))
    assert (first.captured_count, second.captured_count, second.duplicate_count) == (1, 0, 1)


def test_event_id_is_the_given_one_or_the_hash(migrated_db: Database) -> None:
    tenant_id = new_tenant(migrated_db)
    named = object_event(1, eventID="urn:uuid:5a3e8b8c-3a1d-4d4f-9f5d-1c2b3a4d5e6f")
    unnamed = object_event(2)
    run(migrated_db, tenant_id, document(named, unnamed))
    with migrated_db.session() as session:
        ids = [(row.event_id, row.event_hash) for row in stored_events(session, tenant_id)]
    assert ids[0][0] == "urn:uuid:5a3e8b8c-3a1d-4d4f-9f5d-1c2b3a4d5e6f"
    assert ids[1][0] == ids[1][1] == event_hash(unnamed)
    assert ids[1][0].startswith("ni:///sha-256;")


# --- one event, jobs ------------------------------------------------------------------------------


def test_one_event_is_captured_alone_and_conflicts_when_captured_again(migrated_db: Database) -> None:
    tenant_id = new_tenant(migrated_db)
    event = {"@context": ["https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"], **object_event(7)}
    with migrated_db.session() as session:
        row = CaptureService(session).capture_event(actor(tenant_id), json.dumps(event).encode())
        assert (row.event_id, row.capture_job_id, row.body) == (row.event_hash, None, event)
    with migrated_db.session() as session, pytest.raises(Conflict, match="captured already"):
        CaptureService(session).capture_event(actor(tenant_id), json.dumps(event).encode())
    with migrated_db.session() as session, pytest.raises(DocumentRejected, match="one event is expected"):
        CaptureService(session).capture_event(actor(tenant_id), document(object_event(8)).encode())


def test_jobs_are_listed_newest_first_a_page_at_a_time_within_the_tenant(migrated_db: Database) -> None:
    tenant_id, other = new_tenant(migrated_db), new_tenant(migrated_db)
    made = [run(migrated_db, tenant_id, document(object_event(n))).id for n in range(5)]
    run(migrated_db, other, document(object_event(1)))
    seen: list[str] = []
    token = None
    with migrated_db.session() as session:
        service = CaptureService(session)
        while True:
            page = service.jobs(actor(tenant_id, Role.VIEWER), per_page=2, page_token=token)
            seen += [job.id for job in page.jobs]
            if page.next_token is None:
                break
            token = page.next_token
        assert seen == list(reversed(made))
        with pytest.raises(NotFound):
            service.job(actor(other, Role.VIEWER), made[0])
        with pytest.raises(Invalid, match="nextPageToken"):
            service.jobs(actor(tenant_id), page_token="not-a-token")
        operator = Principal("apikey", "op", "op", other, Role.PLATFORM_OPERATOR)
        assert service.job(operator, made[0]).tenant_id == tenant_id
        assert len(service.jobs(operator, per_page=100).jobs) == 6


def test_capturing_needs_the_write_permission(migrated_db: Database) -> None:
    tenant_id = new_tenant(migrated_db)
    with migrated_db.session() as session, pytest.raises(Forbidden, match=r"traceability\.write"):
        CaptureService(session).capture(actor(tenant_id, Role.VIEWER), document(object_event(1)).encode())


def test_large_documents_are_prepared_in_worker_processes_alike(
    migrated_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A document past PARALLEL_MIN_EVENTS is prepared in chunks by worker processes: what is stored
    and reported must be what the calling process alone stores and reports."""
    events = [object_event(n) for n in range(12)]
    events[4]["action"] = "WHATEVER"
    events[9] = copy.deepcopy(events[2])  # a duplicate across chunks
    data = document(*events)
    alone, pooled = new_tenant(migrated_db), new_tenant(migrated_db)
    here = run(migrated_db, alone, data, mode="proceed")
    monkeypatch.setattr(capture_workers, "PARALLEL_MIN_EVENTS", 5)
    monkeypatch.setattr(capture_workers, "CHUNK_EVENTS", 3)
    assert capture_workers.worker_count() > 0, "needs two cores"
    there = run(migrated_db, pooled, data, mode="proceed")
    assert capture_workers._pool is not None  # the workers did it
    assert (there.captured_count, there.duplicate_count, there.errors) == (
        here.captured_count,
        here.duplicate_count,
        here.errors,
    )
    assert (here.captured_count, here.duplicate_count) == (10, 1)

    def rows(tenant_id: str) -> list[tuple[Any, ...]]:
        with migrated_db.session() as session:
            events = stored_events(session, tenant_id)
            number = {row.id: n for n, row in enumerate(events)}
            epcs = session.execute(select(EventEpc).where(EventEpc.tenant_id == tenant_id)).scalars()
            return [
                *((r.event_hash, r.event_id, r.body, r.event_time, r.biz_step, r.read_point) for r in events),
                *sorted((number[e.event_id], e.role, e.epc) for e in epcs),
            ]

    assert rows(pooled) == rows(alone)


def _mutations(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Broken copies of a document: each one change the schema may or may not allow."""
    changes = [
        ("action", "SOMETIMES"),
        ("eventTime", None),
        ("epcList", "not-a-list"),
        ("bizStep", "urn:epcglobal:cbv:bizstep:shipping"),
        ("quantityList", [{"epcClass": "urn:epc:class:lgtin:4012345.012345.998877", "quantity": "ten"}]),
        ("readPoint", {"id": 42}),
        ("someUnprefixedField", 1),
    ]
    out = []
    for name, value in changes:
        broken = copy.deepcopy(document)
        event = broken["epcisBody"]["eventList"][-1]
        if value is None:
            event.pop(name, None)
        else:
            event[name] = value
        out.append(broken)
    envelope = copy.deepcopy(document)
    envelope["creationDate"] = 7
    out.append(envelope)
    return out


def test_capture_validates_the_same_schema_as_jsonschema_does() -> None:
    """The envelope against the whole schema plus each event against `EPCIS-Document-Event` (with
    jsonschema-rs) refuses exactly the envelopes and events the whole schema (with jsonschema) refuses."""
    import jsonschema

    from iip.traceability.capture_validation import check_document, event_validator

    schema = json.loads((Path(capture.__file__).parent / "epcis/schemas/EPCIS-JSON-Schema.json").read_text())
    whole = jsonschema.validators.validator_for(schema)(schema)
    documents = [json.loads(p.read_bytes()) for p in ALL_EXAMPLES if p.suffix == ".jsonld"]
    documents = [d for d in documents if d.get("type") == "EPCISDocument"]
    assert len(documents) > 30
    refusals = {"events": 0, "envelopes": 0}  # so the comparison is not only of valid documents
    for original in documents:
        for document in [original, *_mutations(original)]:
            paths = [list(e.absolute_path) for e in whole.iter_errors(document)]
            in_events = {int(p[2]) for p in paths if p[:2] == ["epcisBody", "eventList"] and len(p) > 2}
            outside = [p for p in paths if p[:2] != ["epcisBody", "eventList"]]
            check = check_document(json.dumps(document).encode())
            refused = {i for i, e in enumerate(check.document.events) if not event_validator().is_valid(e)}
            assert refused == in_events, (document["epcisBody"]["eventList"][-1], paths)
            assert bool(check.document_issues) == bool(outside), (check.document_issues, outside)
            refusals["events"] += len(refused)
            refusals["envelopes"] += bool(outside)
    assert refusals["events"] > 100
    assert refusals["envelopes"] == len(documents)


def test_a_write_the_database_refuses_fails_the_job_which_is_kept(
    migrated_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL enforces the identifier column's length; with indexing's own check lifted, a long
    identifier reaches the database, which refuses it: nothing of the job is stored, the job says why."""
    monkeypatch.setattr(indexing, "IDENTIFIER_LENGTH", 10_000)
    tenant_id = new_tenant(migrated_db)
    long_epc = "urn:example:" + "x" * 600
    job = run(migrated_db, tenant_id, document(object_event(1), object_event(2, epcList=[long_epc])), mode="proceed")
    if migrated_db.backend == "sqlite":  # SQLite does not enforce VARCHAR lengths
        assert (job.success, job.captured_count) == (True, 2)
        return
    assert (job.success, job.captured_count) == (False, 0)
    assert "the repository refused the events: " in job.errors[-1]["message"]
    assert counts(migrated_db, tenant_id)["traceability_event"] == 0
    with migrated_db.session() as session:
        kept = session.get(CaptureJob, job.id)
        assert kept is not None
        assert kept.errors == job.errors
