"""The console's capture by paste, and master data names beside identifiers on the trace, event and
recall pages and in the recall spreadsheet, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import re
from html import unescape

from fastapi.testclient import TestClient
from httpx import Response

from iip.kernel.runtime import Runtime
from tests.console.support import assert_html, section, text_of
from tests.traceability import genealogy_support as bakery
from tests.traceability.conftest import gs1_example
from tests.traceability.test_console_pages import engineer, jobs, stored

OBJECT_EVENTS = "JSON/Example_9.6.1-ObjectEvent.jsonld"
OBJECT_EVENTS_XML = "XML/Example_9.6.1-ObjectEvent-2020_06_18a.xml"
LOCATION = "urn:epcglobal:epcis:vtype:BusinessLocation"
MDA = "urn:epcglobal:cbv:mda#"
STORE, STORE_ADDRESS, OWNER = "Retailer B, Market Street store", "1 Market Street, Shanghai, CN", "Retailer B Ltd"


def paste(client: TestClient, token: str, text: str, mode: str = "rollback", file: bytes | None = None) -> Response:
    """The capture form as a browser posts it: multipart, with an empty file part when no file is chosen."""
    chosen = ("doc.json", file, "application/json") if file is not None else ("", b"", "application/octet-stream")
    return client.post(
        "/traceability/capture",
        data={"csrf_token": token, "mode": mode, "text": text},
        files={"document": chosen},
        follow_redirects=False,
    )


def test_a_pasted_document_is_captured_as_an_upload_is(client: TestClient, runtime: Runtime) -> None:
    tenant, token = engineer(client, runtime)
    page = assert_html(client.get("/traceability/capture"), 200)
    assert 'name="text"' in section(page, "upload-form")
    expected = json.loads(gs1_example(OBJECT_EVENTS).read_text())["epcisBody"]["eventList"]

    pasted = paste(client, token, gs1_example(OBJECT_EVENTS).read_text())
    assert pasted.status_code == 303, pasted.text
    job = assert_html(client.get(pasted.headers["location"]), 200)
    assert 'data-state="success"' in job
    assert stored(runtime, tenant) == len(expected)
    xml = paste(client, token, gs1_example(OBJECT_EVENTS_XML).read_text())
    assert 'data-state="success"' in assert_html(client.get(xml.headers["location"]), 200)
    assert jobs(runtime, tenant) == 2


def test_a_pasted_document_is_refused_with_every_problem_located_and_kept_for_editing(
    client: TestClient, runtime: Runtime
) -> None:
    tenant, token = engineer(client, runtime)
    envelope = json.loads(gs1_example(OBJECT_EVENTS).read_text())
    envelope["schemaVersion"] = 7
    del envelope["creationDate"]
    text = json.dumps(envelope)
    page = assert_html(paste(client, token, text), 422)
    problems = text_of(section(page, "capture-errors"))
    assert "/schemaVersion" in problems
    assert "creationDate" in problems
    assert 'id="text-error"' in page
    kept = re.search(r'<textarea[^>]*name="text"[^>]*>(.*?)</textarea>', page, re.DOTALL)
    assert kept
    assert unescape(kept.group(1)) == text  # the text comes back to be corrected
    assert (stored(runtime, tenant), jobs(runtime, tenant)) == (0, 0)

    blank = assert_html(paste(client, token, "  \n "), 422)
    assert "Choose an EPCIS document to upload, or paste one" in blank
    both = assert_html(paste(client, token, text, file=b"{}"), 422)
    assert "Upload a file or paste a document, not both." in both
    half = assert_html(paste(client, token, '{"type": "EPCISDocument", '), 422)
    assert "malformed JSON" in text_of(section(half, "capture-errors"))
    refused = paste(client, "wrong-token", gs1_example(OBJECT_EVENTS).read_text())
    assert_html(refused, 403)
    assert (stored(runtime, tenant), jobs(runtime, tenant)) == (0, 0)


# --- names from master data


def master_data_document() -> str:
    """Retailer B's store and company, as a master data document of its own (no events)."""

    def element(identifier: str, **attributes: str) -> dict[str, object]:
        return {"id": identifier, "attributes": [{"id": MDA + k, "attribute": v} for k, v in attributes.items()]}

    store = element(
        bakery.place(bakery.RETAIL_B),
        name=STORE,
        streetAddressOne="1 Market Street",
        city="Shanghai",
        countryCode="CN",
    )
    return json.dumps(
        {
            "@context": ["https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"],
            "type": "EPCISDocument",
            "schemaVersion": "2.0",
            "creationDate": "2024-03-01T00:00:00Z",
            "epcisHeader": {
                "epcisMasterData": {
                    "vocabularyList": [
                        {"type": LOCATION, "vocabularyElementList": [store]},
                        {
                            "type": "urn:epcglobal:epcis:vtype:Party",
                            "vocabularyElementList": [element(bakery.party(bakery.RETAIL_B), name=OWNER)],
                        },
                    ]
                }
            },
            "epcisBody": {"eventList": []},
        }
    )


def named(html: str, identifier: str) -> list[str]:
    """The names shown beside an identifier on a page."""
    spans = re.findall(rf'<span class="described" data-described="{re.escape(identifier)}">(.*?)</span></span>', html)
    return [text_of(span + "</span>") for span in spans]


def test_names_and_addresses_show_beside_locations_and_owners(client: TestClient, runtime: Runtime) -> None:
    tenant, token = engineer(client, runtime)
    with runtime.db.session() as session:
        bakery.capture(session, tenant.id, bakery.bakery_events())
    assert paste(client, token, master_data_document()).status_code == 303
    store_id, owner_id = bakery.place(bakery.RETAIL_B), bakery.party(bakery.RETAIL_B)

    trace = assert_html(client.get("/traceability/trace", params={"epc": bakery.U1}), 200)
    whereabouts = section(trace, "whereabouts")
    assert named(whereabouts, store_id) == [f"{STORE} · {STORE_ADDRESS}"]
    assert named(whereabouts, owner_id) == [OWNER]
    assert f"GLN {bakery.gln(bakery.RETAIL_B)}" in text_of(whereabouts)  # the id stays beside the name
    assert STORE in section(trace, "events")  # the timeline's events at the store
    # Another place of the chain, without master data, shows no name.
    plant = assert_html(client.get("/traceability/trace", params={"epc": bakery.F1}), 200)
    assert named(plant, bakery.place(bakery.PLANT)) == []

    at_store = [
        unescape(event_id)
        for event_id, item in re.findall(r'data-event-id="([^"]+)">(.*?)</li>', section(trace, "events"), re.DOTALL)
        if STORE in item
    ]
    assert at_store
    event = assert_html(client.get("/traceability/events/view", params={"id": at_store[0]}), 200)
    assert named(section(event, "event-facts"), store_id) == [f"{STORE} · {STORE_ADDRESS}"] * 2  # read point, location

    recall = assert_html(client.get("/traceability/recall", params={"identifier": bakery.U1}), 200)
    assert OWNER in text_of(section(recall, "counts-by-owner"))
    assert STORE in text_of(section(recall, "counts-by-location"))
    assert STORE in text_of(section(recall, "recall-table"))
    exported = client.get("/traceability/recall/export", params={"identifier": bakery.U1, "format": "csv"})
    rows = {
        row["Affected Identifier"]: row for row in csv.DictReader(io.StringIO(exported.content.decode("utf-8-sig")))
    }
    assert rows[bakery.U1]["Location Description"] == f"{STORE}, {STORE_ADDRESS}"
    assert (rows[bakery.U1]["Owner"], rows[bakery.U1]["Owner Name"]) == (owner_id, OWNER)
    api = client.get("/api/traceability/recall", params={"serial": bakery.U1}, headers=tenant.headers()).json()
    [u1] = [row for row in api["affected"] if row["identifier"] == bakery.U1]
    assert (u1["locationDescription"], u1["ownerName"]) == (f"{STORE}, {STORE_ADDRESS}", OWNER)
