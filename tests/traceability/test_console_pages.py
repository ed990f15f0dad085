"""The EPCIS workbench pages, on SQLite and PostgreSQL: capture by upload, event search, a product's
trace (timeline and genealogy graph), the recall workbench and its spreadsheets, in Chinese and
English, and what a role without `traceability.write` may do."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import zipfile
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from playwright.sync_api import sync_playwright
from sqlalchemy import func, select

from iip.api.app import create_app
from iip.kernel.auth import Role
from iip.kernel.runtime import Runtime
from iip.traceability.epcis.identifiers import canonical
from iip.traceability.genealogy import Edge, Genealogy, Node
from iip.traceability.models import CaptureJob, Event
from iip.traceability.workbench.graph import MAX_PER_COLUMN, NODE_WIDTH, layout
from tests.conftest import TenantFixture
from tests.console.support import (
    PASSWORD,
    assert_html,
    heading_text,
    section,
    sign_in_as,
    tenant_with_users,
    text_of,
)
from tests.console.test_browser import CHROMIUM_ARGS, chromium, serve
from tests.traceability import genealogy_support as bakery
from tests.traceability.conftest import DATASET

__all__ = ["chromium"]  # a fixture, used by name

OBJECT_EVENTS = DATASET / "JSON" / "Example_9.6.1-ObjectEvent.jsonld"
OBJECT_EVENTS_XML = DATASET / "XML" / "Example_9.6.1-ObjectEvent-2020_06_18a.xml"
TRANSFORMATION = DATASET / "JSON" / "Example_9.6.4-TransformationEvent.jsonld"
EVENT_ID_RE = re.compile(r'<tr data-event-id="([^"]+)"')


def engineer(client: TestClient, runtime: Runtime, language: str = "en") -> tuple[TenantFixture, str]:
    """A new tenant with an engineer and a viewer; the engineer signed in. Its CSRF token."""
    tenant = tenant_with_users(runtime, [Role.ENGINEER, Role.VIEWER])
    return tenant, sign_in_as(client, tenant, Role.ENGINEER, language)


def upload(client: TestClient, token: str, name: str, content: bytes, mode: str = "rollback") -> Response:
    return client.post(
        "/traceability/capture",
        data={"csrf_token": token, "mode": mode},
        files={"document": (name, content, "application/octet-stream")},
        follow_redirects=False,
    )


def upload_file(client: TestClient, token: str, path: Path, mode: str = "rollback") -> Response:
    return upload(client, token, path.name, path.read_bytes(), mode)


def stored(runtime: Runtime, tenant: TenantFixture) -> int:
    with runtime.db.session() as session:
        return session.scalar(select(func.count()).select_from(Event).where(Event.tenant_id == tenant.id)) or 0


def jobs(runtime: Runtime, tenant: TenantFixture) -> int:
    with runtime.db.session() as session:
        query = select(func.count()).select_from(CaptureJob).where(CaptureJob.tenant_id == tenant.id)
        return session.scalar(query) or 0


def event_ids(html: str) -> list[str]:
    return [unescape(value) for value in EVENT_ID_RE.findall(html)]


def data_identifiers(html: str, element_id: str) -> set[str]:
    return {unescape(v) for v in re.findall(r'data-identifier="([^"]+)"', section(html, element_id))}


def graph_identifiers(html: str) -> set[str]:
    start = html.index('id="trace-graph"')
    svg = html[start : html.index("</svg>", start)]
    return {unescape(v) for v in re.findall(r'data-identifier="([^"]+)"', svg)}


def document_events(path: Path) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = json.loads(path.read_text())["epcisBody"]["eventList"]
    return events


def inner(html: str, element_id: str) -> str:
    """The text inside the element with that id (one holding no other element of its kind)."""
    match = re.search(rf'id="{element_id}"[^>]*>(.*?)</(dd|div|pre|span|td)>', html, re.DOTALL)
    assert match, f"no #{element_id}"
    return unescape(match.group(1))


def wrong_check_digit(digits: str) -> str:
    return digits[:-1] + str((int(digits[-1]) + 1) % 10)


BROKEN_LINK = f"https://id.gs1.org/01/{wrong_check_digit(bakery.gtin(bakery.FLOUR))}/10/F1"
U1_URN = f"urn:epc:id:sgtin:{bakery.COMPANY}.0{bakery.CAKE_SERIAL:05d}.1"


def capture_bakery(runtime: Runtime, tenant: TenantFixture) -> None:
    with runtime.db.session() as session:
        bakery.capture(session, tenant.id, bakery.bakery_events())


# --- capture and search


def test_an_uploaded_gs1_document_is_captured_and_found_by_search(client: TestClient, runtime: Runtime) -> None:
    tenant, token = engineer(client, runtime)
    page = assert_html(client.get("/traceability/capture"), 200)
    assert 'id="upload-form"' in page
    assert 'enctype="multipart/form-data"' in page
    expected = document_events(OBJECT_EVENTS)

    response = upload_file(client, token, OBJECT_EVENTS)
    assert response.status_code == 303, response.text
    job_path = response.headers["location"]
    assert job_path.startswith("/traceability/capture/")
    job = assert_html(client.get(job_path), 200)
    assert 'id="job-outcome" data-state="success"' in job
    assert inner(job, "job-stored") == str(len(expected))
    assert "The document was captured." in job  # the notice, once
    assert stored(runtime, tenant) == len(expected)

    # The job's link finds exactly its events; a filter on the event type finds them too.
    link = re.search(r'href="([^"]+)" id="job-events"', job)
    assert link
    found = assert_html(client.get(unescape(link.group(1))), 200)
    assert sorted(event_ids(found)) == sorted(str(e["eventID"]) for e in expected)
    by_type = assert_html(client.get("/traceability/events", params={"eventType": "ObjectEvent"}), 200)
    assert sorted(event_ids(by_type)) == sorted(str(e["eventID"]) for e in expected)
    none = assert_html(client.get("/traceability/events", params={"eventType": "AggregationEvent"}), 200)
    assert event_ids(none) == []
    assert "No events match." in none

    # Filtered by an EPC (as a URN) and a business step, newest first.
    epc = "urn:epc:id:sgtin:0614141.107346.2018"
    named = [str(e["eventID"]) for e in expected if epc in json.dumps(e)]
    by_epc = assert_html(client.get("/traceability/events", params={"MATCH_epc": epc}), 200)
    assert set(event_ids(by_epc)) == set(named)
    shipping = [str(e["eventID"]) for e in expected if e.get("bizStep") == "shipping"]
    assert event_ids(client.get("/traceability/events", params={"EQ_bizStep": "shipping"}).text) == shipping

    # The same document again: its events are duplicates, stored once. The XML binding is taken too.
    again = assert_html(client.get(upload_file(client, token, OBJECT_EVENTS).headers["location"]), 200)
    assert 'data-state="success"' in again
    assert (inner(again, "job-stored"), inner(again, "job-duplicates")) == ("0", str(len(expected)))
    xml = assert_html(client.get(upload_file(client, token, OBJECT_EVENTS_XML).headers["location"]), 200)
    assert 'data-state="success"' in xml
    assert inner(xml, "job-event-count") == "2"
    assert stored(runtime, tenant) == len(expected) + int(inner(xml, "job-stored"))
    listed = assert_html(client.get("/traceability/capture"), 200)
    assert len(re.findall(r'<tr data-job="', section(listed, "jobs-table"))) == 3

    # One event: its fields, its raw JSON-LD, and links from its EPCs to their trace page.
    first = str(expected[0]["eventID"])
    detail = assert_html(client.get("/traceability/events/view", params={"id": first}), 200)
    raw = json.loads(inner(detail, "raw-json"))
    [event] = raw["epcisBody"]["eventList"]
    assert event["eventID"] == first
    assert event["epcList"] == expected[0]["epcList"]
    assert "@context" in raw
    assert f'href="/traceability/trace?epc={quote(epc, safe="")}"' in detail
    assert "Shipping" in text_of(section(detail, "event-facts"))


def test_search_pages_through_results_with_the_query_page_tokens(client: TestClient, runtime: Runtime) -> None:
    tenant, _token = engineer(client, runtime)
    capture_bakery(runtime, tenant)
    total = len(bakery.bakery_events())
    first = assert_html(client.get("/traceability/events", params={"perPage": "10", "orderDirection": "ASC"}), 200)
    assert len(event_ids(first)) == 10
    link = re.search(r'href="([^"]+)" id="next-page"', first)
    assert link
    following = unescape(link.group(1))
    assert "nextPageToken=" in following
    second = assert_html(client.get(following), 200)
    assert len(event_ids(second)) == total - 10
    assert not set(event_ids(first)) & set(event_ids(second))
    assert 'id="next-page"' not in second
    # Oldest first: the page starts with the first receipt of ingredients.
    assert "2024-03-01 08:00:00 +01:00" in section(first, "events-table").split("</tr>", 2)[1]
    # A token altered by hand: the first page again, said so.
    tampered = client.get(
        "/traceability/events", params={"perPage": "10", "orderDirection": "ASC", "nextPageToken": "x"}
    )
    assert "here is the first page again" in assert_html(tampered, 200)
    assert event_ids(tampered.text) == event_ids(first)


def test_a_search_with_a_bad_parameter_says_which(client: TestClient, runtime: Runtime) -> None:
    engineer(client, runtime)
    page = assert_html(client.get("/traceability/events", params={"GE_eventTime": "yesterday"}), 422)
    assert 'aria-describedby="GE_eventTime-error"' in page
    assert "Enter a time such as 2024-03-02T09:00 (UTC)." in page
    wrong_digit = assert_html(client.get("/traceability/events", params={"MATCH_epc": BROKEN_LINK}), 422)
    assert 'id="MATCH_epc-error"' in wrong_digit
    assert "Not a valid search" in wrong_digit
    assert f'value="{BROKEN_LINK}"' in wrong_digit  # the form keeps what was typed


# --- refused documents


def two_events(second: dict[str, object]) -> bytes:
    good = bakery.receiving("01T08:00", [bakery.U1], bakery.PLANT)
    return bakery.document([good, second])


def test_a_refused_document_shows_where_it_is_wrong_and_stores_nothing(client: TestClient, runtime: Runtime) -> None:
    tenant, token = engineer(client, runtime)
    # Broken outside its events: refused whole, no job, every problem located.
    envelope = json.loads(OBJECT_EVENTS.read_text())
    envelope["schemaVersion"] = 7
    del envelope["creationDate"]
    page = assert_html(upload(client, token, "broken.jsonld", json.dumps(envelope).encode()), 422)
    problems = text_of(section(page, "capture-errors"))
    assert "/schemaVersion" in problems
    assert "creationDate" in problems
    assert "The document was refused and nothing was stored" in page
    assert (stored(runtime, tenant), jobs(runtime, tenant)) == (0, 0)
    unreadable = assert_html(upload(client, token, "half.json", b'{"type": "EPCISDocument", '), 422)
    assert 'id="document-error"' in unreadable
    assert (stored(runtime, tenant), jobs(runtime, tenant)) == (0, 0)

    # One invalid event (no eventTime) in rollback mode: the job fails, nothing is stored.
    invalid = {k: v for k, v in bakery.receiving("01T09:00", [bakery.U2], bakery.PLANT).items() if k != "eventTime"}
    failed = upload(client, token, "two.jsonld", two_events(invalid))
    assert failed.status_code == 303
    job = assert_html(client.get(failed.headers["location"]), 200)
    assert 'data-state="failed"' in job
    locations = [text_of(m) for m in re.findall(r'<td class="mono">(.*?)</td>', section(job, "job-errors"))]
    assert any(location.startswith("/epcisBody/eventList/1") for location in locations), locations
    assert "eventTime" in text_of(section(job, "job-errors"))
    assert stored(runtime, tenant) == 0

    # The same document in proceed mode: the valid event is stored, the other reported.
    partial = client.get(upload(client, token, "two.jsonld", two_events(invalid), mode="proceed").headers["location"])
    assert 'data-state="partial"' in partial.text
    assert stored(runtime, tenant) == 1


def test_an_upload_without_a_file_is_refused(client: TestClient, runtime: Runtime) -> None:
    _tenant, token = engineer(client, runtime)
    empty = client.post("/traceability/capture", data={"csrf_token": token, "mode": "rollback"}, follow_redirects=False)
    assert "Choose an EPCIS document to upload" in assert_html(empty, 422)
    blank = assert_html(upload(client, token, "empty.json", b""), 422)
    assert "The file is empty." in blank


# --- a product's trace


def test_the_trace_of_a_transformed_product_shows_its_inputs(client: TestClient, runtime: Runtime) -> None:
    _tenant, token = engineer(client, runtime)
    assert client.get(upload_file(client, token, TRANSFORMATION).headers["location"]).status_code == 200
    [transformation] = document_events(TRANSFORMATION)
    output = "urn:epc:id:sgtin:4012345.077889.25"
    page = assert_html(client.get("/traceability/trace", params={"epc": output}), 200)
    inputs = {canonical(v) for v in transformation["inputEPCList"]}
    inputs |= {canonical(q["epcClass"]) for q in transformation["inputQuantityList"]}
    assert data_identifiers(page, "inputs-table") == inputs
    assert graph_identifiers(page) == inputs | {canonical(output)}
    assert "10 KGM" in text_of(section(page, "inputs-table"))  # the lot's quantity consumed
    assert f'data-event-id="{transformation["eventID"]}"' in section(page, "events")
    # The Digital Link of the same product traces the same.
    by_link = assert_html(client.get("/traceability/trace", params={"epc": canonical(output)}), 200)
    assert data_identifiers(by_link, "inputs-table") == inputs
    # Forward from an input: the four outputs.
    forward = assert_html(client.get("/traceability/trace", params={"epc": "urn:epc:id:sgtin:4012345.011122.25"}), 200)
    outputs = {canonical(v) for v in transformation["outputEPCList"]}
    assert data_identifiers(forward, "outputs-table") == outputs


def test_the_trace_follows_packing_and_shows_where_the_product_is(client: TestClient, runtime: Runtime) -> None:
    tenant, _token = engineer(client, runtime)
    capture_bakery(runtime, tenant)
    page = assert_html(client.get("/traceability/trace", params={"epc": bakery.U1}), 200)
    assert data_identifiers(page, "inputs-table") == {bakery.F1, bakery.E1}
    assert data_identifiers(page, "outputs-table") == {bakery.C3, bakery.PAL2}
    assert text_of(section(page, "whereabouts")).count(f"GLN {bakery.gln(bakery.RETAIL_B)}") == 2  # place and owner
    assert f'title="{bakery.party(bakery.RETAIL_B)}"' in section(page, "whereabouts")
    # The timeline: its own events, then those of its case and pallet once it was packed in them.
    timeline = section(page, "events")
    items = re.findall(r'<li class="timeline-item( timeline-related)?"', timeline)
    own = [i for i in items if not i]
    assert len(own) == 2  # made, packed into C3
    assert len(items) == 7  # and C3 onto PAL2, PAL2 shipped, received, shipped to retailer B, received there
    assert "Through the container it was in:" in timeline
    # A lot: every case it was packed in, and the pallets those went onto.
    lot = assert_html(client.get("/traceability/trace", params={"epc": bakery.lot_urn(bakery.CAKE, "P1")}), 200)
    assert data_identifiers(lot, "outputs-table") == {bakery.C1, bakery.C2, bakery.C4, bakery.PAL1, bakery.PAL2}
    assert data_identifiers(lot, "inputs-table") == {bakery.F1, bakery.S1}


def test_a_trace_of_an_unknown_or_broken_identifier_is_a_clear_page(client: TestClient, runtime: Runtime) -> None:
    tenant, _token = engineer(client, runtime)
    capture_bakery(runtime, tenant)
    for handle in ("88.118.8/X-1", "hdl:88.118.8/X-1"):
        page = assert_html(client.get("/traceability/trace", params={"epc": handle}), 404)
        assert 'id="trace-form"' in page
        assert f'value="{handle}"' in page
        assert "No trace: no event names this EPC" in page
    broken = assert_html(client.get("/traceability/trace", params={"epc": BROKEN_LINK}), 422)
    assert 'id="epc-error"' in broken
    assert heading_text(assert_html(client.get("/traceability/trace"), 200)) == "Product trace"


def test_a_wide_genealogy_draws_a_bounded_column_and_counts_the_rest() -> None:
    root = "urn:example:pallet"
    made = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
    cases = [f"urn:example:case:{n:02d}" for n in range(MAX_PER_COLUMN + 5)]
    forward = Genealogy(
        root,
        "forward",
        [Node(root, "instance", 0), *(Node(c, "instance", 1) for c in cases)],
        [Edge(root, c, "contained_in", f"e{n}", "AggregationEvent", made) for n, c in enumerate(cases)],
        via=dict.fromkeys(cases, root),
    )
    backward = Genealogy(
        root,
        "backward",
        [Node(root, "instance", 0), Node("urn:example:lot", "class", 1)],
        [Edge("urn:example:lot", root, "input_of", "t", "TransformationEvent", made)],
    )
    drawn = layout(root, backward, forward)
    assert [n.column for n in drawn.nodes].count(1) == MAX_PER_COLUMN
    assert drawn.hidden == 5
    assert len(drawn.edges) == MAX_PER_COLUMN + 1  # none to a node left out
    by_id = {n.identifier: n for n in drawn.nodes}
    assert by_id["urn:example:lot"].x < by_id[root].x < by_id[cases[0]].x  # inputs left, where it went right
    assert drawn.width >= 3 * NODE_WIDTH
    assert all(0 <= n.y <= drawn.height - drawn.node_height for n in drawn.nodes)


# --- recall


def xlsx_strings(content: bytes) -> list[str]:
    with zipfile.ZipFile(io.BytesIO(content)) as book:
        shared = book.read("xl/sharedStrings.xml").decode()
    return [unescape(s) for s in re.findall(r"<t[^>]*>([^<]*)</t>", shared)]


def test_the_recall_lists_affected_units_and_exports_them(client: TestClient, runtime: Runtime) -> None:
    tenant, _token = engineer(client, runtime)
    capture_bakery(runtime, tenant)
    query = {"gtin": bakery.gtin(bakery.FLOUR), "lot": "F1"}
    page = assert_html(client.get("/traceability/recall", params=query), 200)
    api = client.get("/api/traceability/recall", params={"lot": bakery.F1}, headers=tenant.headers()).json()
    affected = {row["identifier"] for row in api["affected"]}
    assert {bakery.U1, bakery.U2, bakery.U3, bakery.P1, bakery.C1, bakery.PAL2} <= affected
    assert data_identifiers(page, "recall-table") == affected
    assert inner(page, "affected-count") == str(len(affected))
    owners = text_of(section(page, "counts-by-owner"))
    assert f"GLN {bakery.gln(bakery.RETAIL_A)}" in owners  # C1 went on to retailer A
    assert f"GLN {bakery.gln(bakery.RETAIL_B)}" in owners

    csv_link = re.search(r'href="([^"]+)" id="export-csv"', page)
    xlsx_link = re.search(r'href="([^"]+)" id="export-xlsx"', page)
    assert csv_link
    assert xlsx_link
    exported = client.get(unescape(csv_link.group(1)))
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    assert re.fullmatch(r'attachment; filename="recall-F1-\d{8}\.csv"', exported.headers["content-disposition"])
    rows = list(csv.DictReader(io.StringIO(exported.content.decode("utf-8-sig"))))
    assert {row["Affected Identifier"] for row in rows} == affected
    u1 = next(row for row in rows if row["Affected Identifier"] == bakery.U1)
    assert (u1["Owner"], u1["Traceability Lot Code"]) == (bakery.party(bakery.RETAIL_B), "F1")
    workbook = client.get(unescape(xlsx_link.group(1)))
    assert workbook.headers["content-type"] == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    strings = xlsx_strings(workbook.content)
    assert "Traceability Lot Code" in strings
    assert affected <= set(strings)

    # A serial: what it was packed into; named by its URN.
    serial = assert_html(client.get("/traceability/recall", params={"identifier": U1_URN}), 200)
    assert data_identifiers(serial, "recall-table") == {bakery.U1, bakery.C3, bakery.PAL2}
    assert "Recall of serial" in serial


def test_the_recall_form_says_what_is_wrong(client: TestClient, runtime: Runtime) -> None:
    tenant, _token = engineer(client, runtime)
    capture_bakery(runtime, tenant)
    short = assert_html(client.get("/traceability/recall", params={"gtin": "123", "lot": "F1"}), 422)
    assert 'id="gtin-error"' in short
    no_lot = assert_html(client.get("/traceability/recall", params={"gtin": bakery.gtin(bakery.FLOUR)}), 422)
    assert 'id="lot-error"' in no_lot
    digit = wrong_check_digit(bakery.gtin(bakery.FLOUR))
    wrong = assert_html(client.get("/traceability/recall", params={"gtin": digit, "lot": "F1"}), 422)
    assert "No recall" in wrong
    unknown = assert_html(
        client.get("/traceability/recall", params={"gtin": bakery.gtin(bakery.FLOUR), "lot": "F9"}), 404
    )
    assert 'id="identifier-error"' in unknown
    assert_html(client.get("/traceability/recall/export", params={"format": "csv"}), 422)


# --- languages and permissions


def test_the_pages_speak_chinese(client: TestClient, runtime: Runtime) -> None:
    tenant, token = engineer(client, runtime, language="zh_CN")
    capture_bakery(runtime, tenant)
    headings = {
        "/traceability/capture": "EPCIS 采集",
        "/traceability/events": "事件查询",
        f"/traceability/trace?epc={quote(bakery.U1, safe='')}": "产品追溯",
        f"/traceability/recall?identifier={quote(bakery.F1, safe='')}": "召回工作台",
    }
    for path, expected in headings.items():
        page = assert_html(client.get(path), 200)
        assert '<html lang="zh-CN">' in page
        assert heading_text(page) == expected
    nav = client.get("/traceability/events").text.split("</nav>", 1)[0]
    assert all(title in nav for title in ("EPCIS 采集", "事件查询", "产品追溯", "召回工作台"))
    trace = client.get("/traceability/trace", params={"epc": bakery.U1}).text
    assert "最后已知位置" in trace
    assert "投入物" in trace
    assert "时间线" in trace
    assert "收货" in text_of(section(trace, "events"))  # a CBV business step by its Chinese name
    events = client.get("/traceability/events").text
    assert "业务步骤" in events
    assert "对象事件" in events
    recall_page = client.get("/traceability/recall", params={"identifier": bakery.F1}).text
    assert "下载 CSV" in recall_page
    assert "受影响的产品" in recall_page
    refused = upload(client, token, "half.json", b"{")
    assert "文档被拒绝，未存储任何内容" in assert_html(refused, 422)


def test_a_viewer_reads_but_cannot_upload(client: TestClient, runtime: Runtime) -> None:
    tenant = tenant_with_users(runtime, [Role.VIEWER])
    capture_bakery(runtime, tenant)
    token = sign_in_as(client, tenant, Role.VIEWER, "en")
    page = assert_html(client.get("/traceability/capture"), 200)
    assert 'id="upload-form"' not in page
    assert 'id="read-only"' in page
    refused = upload_file(client, token, OBJECT_EVENTS)
    assert_html(refused, 403)
    assert (stored(runtime, tenant), jobs(runtime, tenant)) == (len(bakery.bakery_events()), 1)  # the bakery's own
    for path in ("/traceability/events", "/traceability/trace", "/traceability/recall"):
        assert_html(client.get(path), 200)
    assert data_identifiers(client.get("/traceability/trace", params={"epc": bakery.U1}).text, "inputs-table")


def test_another_tenants_objects_are_not_found(client: TestClient, runtime: Runtime) -> None:
    other, other_token = engineer(client, runtime)
    capture_bakery(runtime, other)
    job = upload_file(client, other_token, TRANSFORMATION).headers["location"]
    _tenant, _token = engineer(client, runtime)  # signed in as another tenant's engineer now
    assert_html(client.get(job), 404)
    assert_html(client.get("/traceability/trace", params={"epc": bakery.U1}), 404)
    assert_html(client.get("/traceability/recall", params={"identifier": bakery.F1}), 404)
    [transformation] = document_events(TRANSFORMATION)
    assert_html(client.get("/traceability/events/view", params={"id": str(transformation["eventID"])}), 404)
    assert event_ids(client.get("/traceability/events").text) == []
    assert 'data-job="' not in client.get("/traceability/capture").text


def test_an_upload_without_the_csrf_token_is_refused(client: TestClient, runtime: Runtime) -> None:
    tenant, _token = engineer(client, runtime)
    response = upload(client, "wrong-token", OBJECT_EVENTS.name, OBJECT_EVENTS.read_bytes())
    assert_html(response, 403)
    assert jobs(runtime, tenant) == 0


# --- in a browser


@pytest.mark.browser
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_in_chromium_an_upload_leads_to_a_drawn_genealogy_and_a_paste_is_captured(
    runtime: Runtime, chromium: str
) -> None:
    tenant = tenant_with_users(runtime, [Role.ENGINEER])
    app = create_app(runtime=runtime, configure_logs=False)
    problems: list[str] = []
    [transformation] = document_events(TRANSFORMATION)
    first_input = transformation["inputEPCList"][0]
    with serve(app) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN").new_page()
            page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.goto(f"{base}/login")
            page.fill("input[name=username]", f"{tenant.name}-engineer")
            page.fill("input[name=password]", PASSWORD)
            page.click("form[action='/login'] button[type=submit]")
            page.wait_for_url(f"{base}/")
            page.click("nav a[href='/traceability/capture']")
            page.set_input_files("#upload-form input[type=file]", str(TRANSFORMATION))
            page.click("#upload-form button[type=submit]")
            page.wait_for_selector("#job-outcome[data-state=success]")
            # Pasted beside the upload: the browser posts the text with an empty file part.
            page.goto(f"{base}/traceability/capture")
            page.fill("#paste-text", OBJECT_EVENTS.read_text())
            page.click("#upload-form button[type=submit]")
            page.wait_for_selector("#job-outcome[data-state=success]")
            assert page.locator("#job-stored").inner_text().strip() == str(len(document_events(OBJECT_EVENTS)))
            page.goto(f"{base}/traceability/trace?epc={quote('urn:epc:id:sgtin:4012345.077889.25', safe='')}")
            assert page.locator("h1").first.inner_text().strip() == "产品追溯"
            nodes = page.locator("#trace-graph a.graph-node")
            assert nodes.count() == 6  # the product and its five inputs
            box = page.locator("#trace-graph").bounding_box()
            assert box is not None
            assert box["width"] > 400  # drawn, not collapsed
            page.locator(f'#trace-graph a.graph-node[data-identifier="{canonical(first_input)}"]').click()
            page.wait_for_selector("#trace-root")
            assert page.locator("#trace-root").inner_text().strip() == canonical(first_input)
            assert page.locator("#outputs-table tbody tr").count() == len(transformation["outputEPCList"])
        finally:
            browser.close()
    assert problems == []
