"""`/epcis/capture` and `POST /epcis/events` over HTTP, with API keys, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from iip.kernel.auth import Role
from iip.traceability import capture, document_body
from tests.api.support import assert_problem
from tests.conftest import TenantFixture
from tests.traceability.conftest import DATASET
from tests.traceability.test_capture import document, object_event

JSON_LD = {"Content-Type": "application/ld+json"}


def post(
    client: TestClient, tenant: TenantFixture, body: str | bytes, role: Role = Role.ENGINEER, **headers: str
) -> Response:
    return client.post(
        "/epcis/capture",
        content=body.encode() if isinstance(body, str) else body,
        headers={**tenant.headers(role), **JSON_LD, **headers},
    )


def job_at(client: TestClient, tenant: TenantFixture, location: str) -> dict[str, Any]:
    response = client.get(location, headers=tenant.headers(Role.VIEWER))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_a_document_is_captured_202_with_the_jobs_location(client: TestClient, tenant_a: TenantFixture) -> None:
    response = post(client, tenant_a, (DATASET / "JSON/Example_9.6.1-ObjectEvent.jsonld").read_bytes())
    assert response.status_code == 202, response.text
    location = response.headers["location"]
    assert location == f"/epcis/capture/{response.json()['captureID']}"
    assert response.headers["gs1-epcis-version"] == "2.0.0"
    job = job_at(client, tenant_a, location)
    assert job == response.json()
    assert {k: job[k] for k in ("running", "success", "captureErrorBehaviour", "errors")} == {
        "running": False,
        "success": True,
        "captureErrorBehaviour": "rollback",
        "errors": [],
    }
    assert (job["eventCount"], job["capturedCount"], job["duplicateCount"]) == (2, 2, 0)
    assert job["createdAt"].endswith("Z")
    assert job["finishedAt"] >= job["createdAt"]


def test_xml_is_told_by_content_type_or_by_its_first_character(client: TestClient, tenant_a: TenantFixture) -> None:
    xml = (DATASET / "XML/Example-PersistentDisposition.xml").read_bytes()
    declared = post(client, tenant_a, xml, **{"Content-Type": "application/xml"})
    assert declared.status_code == 202, declared.text
    assert job_at(client, tenant_a, declared.headers["location"])["capturedCount"] == 2
    sniffed = client.post("/epcis/capture", content=xml, headers=tenant_a.headers(Role.ENGINEER))
    assert sniffed.status_code == 202, sniffed.text
    assert job_at(client, tenant_a, sniffed.headers["location"])["duplicateCount"] == 2


def test_proceed_is_asked_for_by_the_bindings_header(client: TestClient, tenant_a: TenantFixture) -> None:
    body = document(object_event(1), object_event(2, action="WHATEVER"))
    rollback = job_at(client, tenant_a, post(client, tenant_a, body).headers["location"])
    assert (rollback["success"], rollback["capturedCount"]) == (False, 0)
    response = post(client, tenant_a, body, **{"GS1-Capture-Error-Behaviour": "proceed"})
    proceed = job_at(client, tenant_a, response.headers["location"])
    assert (proceed["success"], proceed["captureErrorBehaviour"], proceed["capturedCount"]) == (False, "proceed", 1)
    [first, *_] = proceed["errors"]
    assert first["type"] == "epcisException:ValidationException"
    assert first["location"].startswith("/epcisBody/eventList/1/action")
    assert "WHATEVER" in first["detail"]
    bad_mode = post(client, tenant_a, body, **{"GS1-Capture-Error-Behaviour": "sometimes"})
    assert_problem(bad_mode, 422, "bad_mode")


def test_a_document_refused_whole_is_a_400_problem_locating_every_issue(
    client: TestClient, tenant_a: TenantFixture
) -> None:
    broken = json.loads(document(object_event(1)))
    del broken["schemaVersion"]
    broken["creationDate"] = 1
    problem = assert_problem(post(client, tenant_a, json.dumps(broken)), 400, "epcis_validation")
    assert {e["location"] for e in problem["errors"]} == {"", "/creationDate"}
    assert all(e["message"] for e in problem["errors"])
    unreadable = assert_problem(post(client, tenant_a, "{"), 400, "epcis_validation")
    assert "malformed JSON" in unreadable["detail"]


def test_a_body_in_neither_json_nor_xml_is_415(client: TestClient, tenant_a: TenantFixture) -> None:
    response = post(client, tenant_a, "a,b\n1,2\n", **{"Content-Type": "text/csv"})
    assert_problem(response, 415, "unsupported_media_type")


def test_too_large_is_413_with_the_limits(
    client: TestClient, tenant_a: TenantFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(document_body, "CAPTURE_FILE_SIZE_LIMIT", 100)
    too_big = post(client, tenant_a, document(object_event(1)))
    assert_problem(too_big, 413, "payload_too_large")
    assert too_big.headers["gs1-epcis-capture-file-size-limit"] == str(capture.CAPTURE_FILE_SIZE_LIMIT)
    assert too_big.headers["gs1-epcis-capture-limit"] == str(capture.CAPTURE_LIMIT)
    monkeypatch.undo()
    monkeypatch.setattr(capture, "CAPTURE_LIMIT", 1)
    too_many = post(client, tenant_a, document(object_event(1), object_event(2)))
    assert "2 events" in assert_problem(too_many, 413, "payload_too_large")["detail"]


def test_discovery_answers_the_capture_settings(client: TestClient, tenant_a: TenantFixture) -> None:
    response = client.options("/epcis/capture", headers=tenant_a.headers(Role.VIEWER))
    assert response.status_code == 204
    assert response.headers["allow"] == "OPTIONS, POST, GET"
    assert response.headers["gs1-capture-error-behaviour"] == "all"
    assert response.headers["gs1-epcis-capture-limit"] == str(capture.CAPTURE_LIMIT)
    assert response.headers["gs1-epcis-capture-file-size-limit"] == str(capture.CAPTURE_FILE_SIZE_LIMIT)


def test_capture_needs_a_key_and_the_write_permission(client: TestClient, tenant_a: TenantFixture) -> None:
    body = document(object_event(1)).encode()
    assert_problem(client.post("/epcis/capture", content=body, headers=JSON_LD), 401)
    assert_problem(post(client, tenant_a, body, role=Role.VIEWER), 403, "forbidden")
    assert_problem(client.get("/epcis/capture"), 401)


def test_jobs_are_listed_newest_first_with_a_link_to_the_next_page(client: TestClient, tenant_a: TenantFixture) -> None:
    ids = [post(client, tenant_a, document(object_event(n))).json()["captureID"] for n in range(3)]
    headers = tenant_a.headers(Role.VIEWER)
    first = client.get("/epcis/capture", params={"perPage": 2}, headers=headers)
    assert [j["captureID"] for j in first.json()] == [ids[2], ids[1]]
    link = first.headers["link"]
    assert link.endswith('>; rel="next"')
    second = client.get(link[1 : link.index(">")], headers=headers)
    assert [j["captureID"] for j in second.json()] == [ids[0]]
    assert "link" not in second.headers
    assert_problem(client.get("/epcis/capture", params={"nextPageToken": "x"}, headers=headers), 422, "bad_page_token")


def test_another_tenant_cannot_read_a_job(client: TestClient, tenant_a: TenantFixture, tenant_b: TenantFixture) -> None:
    location = post(client, tenant_a, document(object_event(1))).headers["location"]
    for role in (Role.ADMIN, Role.VIEWER):
        assert_problem(client.get(location, headers=tenant_b.headers(role)), 404, "not_found")
    assert client.get("/epcis/capture", headers=tenant_b.headers()).json() == []
    assert client.get(location, headers=tenant_b.headers(Role.PLATFORM_OPERATOR)).status_code == 200


def test_a_platform_operator_captures_into_a_named_tenant(
    client: TestClient, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    response = client.post(
        "/epcis/capture",
        params={"tenant_id": tenant_b.id},
        content=document(object_event(1)).encode(),
        headers={**tenant_a.headers(Role.PLATFORM_OPERATOR), **JSON_LD},
    )
    assert response.status_code == 202, response.text
    assert job_at(client, tenant_b, response.headers["location"])["capturedCount"] == 1
    assert_problem(client.get(response.headers["location"], headers=tenant_a.headers()), 404)


def test_one_event_is_created_201_then_conflicts(client: TestClient, tenant_a: TenantFixture) -> None:
    event = {"@context": ["https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"], **object_event(9)}
    headers = {**tenant_a.headers(Role.ENGINEER), **JSON_LD}
    created = client.post("/epcis/events", content=json.dumps(event).encode(), headers=headers)
    assert created.status_code == 201, created.text
    event_id = created.json()["eventID"]
    assert event_id.startswith("ni:///sha-256;")
    assert unquote(created.headers["location"]) == f"/epcis/events/{event_id}"
    assert {k: v for k, v in created.json().items() if k != "eventID"} == event
    again = client.post("/epcis/events", content=json.dumps(event).encode(), headers=headers)
    assert assert_problem(again, 409, "event_exists")["eventID"] == event_id
    invalid = client.post("/epcis/events", content=json.dumps({**event, "action": "NOPE"}).encode(), headers=headers)
    assert "/action" in {e["location"] for e in assert_problem(invalid, 400, "epcis_validation")["errors"]}
    whole = client.post("/epcis/events", content=document(object_event(10)).encode(), headers=headers)
    assert_problem(whole, 400, "epcis_validation")
