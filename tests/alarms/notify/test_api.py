"""The notification API: configuration round trips, permissions, problems, tenants, test messages, the log."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx2 import Response

from iip.alarms.notify import router as notify_router
from iip.alarms.notify.router import PREFIX
from iip.api.app import create_app
from iip.kernel.auth import Role
from iip.kernel.runtime import Runtime
from tests.alarms.notify.conftest import HookReceiver
from tests.api.support import api_routes
from tests.conftest import TenantFixture

P = PREFIX


@pytest.fixture
def api(runtime: Runtime) -> Iterator[TestClient]:
    app = create_app(runtime=runtime, configure_logs=False)
    if not any(info.path.startswith(PREFIX) for info in api_routes(app)):  # until the module mounts it
        app.include_router(notify_router)
    with TestClient(app) as client:
        yield client


def ok(response: Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


def problem(response: Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    return body


def setup_channels(api: TestClient, tenant: TenantFixture, hook_url: str) -> dict[str, Any]:
    headers = tenant.headers()
    hook = ok(
        api.post(f"{P}/channels", json={"kind": "webhook", "name": "scada", "url": hook_url}, headers=headers), 201
    )
    mail = ok(
        api.post(
            f"{P}/channels", json={"kind": "email", "name": "room", "addresses": ["room@example.com"]}, headers=headers
        ),
        201,
    )
    return {"hook": hook, "mail": mail}


def test_channels_contacts_and_routes_round_trip(api: TestClient, tenant_a: TenantFixture) -> None:
    headers = tenant_a.headers(Role.ENGINEER)
    created = setup_channels(api, tenant_a, "https://ops.example.com/hook")
    hook = created["hook"]
    assert hook["secret"].startswith("whsec_")
    assert hook["secret_set"] is True
    listed = ok(api.get(f"{P}/channels", headers=headers))
    assert [c["name"] for c in listed] == ["room", "scada"]
    assert all("secret" not in c for c in listed)
    assert ok(api.get(f"{P}/channels/scada", headers=headers))["id"] == hook["id"]
    assert ok(api.get(f"{P}/channels", params={"kind": "email"}, headers=headers))[0]["addresses"] == [
        "room@example.com"
    ]

    changed = ok(api.patch(f"{P}/channels/{hook['id']}", json={"rate_limit": 5, "enabled": False}, headers=headers))
    assert (changed["rate_limit"], changed["enabled"]) == (5, False)
    assert ok(api.patch(f"{P}/channels/scada", json={"rate_limit": None}, headers=headers))["rate_limit"] is None
    rotated = ok(api.post(f"{P}/channels/scada/secret", headers=headers))
    assert rotated["secret"] != hook["secret"]

    contact = {"name": "王芳", "email": "wang@example.com", "role": "shift_engineer", "site": "plant-a"}
    wang = ok(api.post(f"{P}/contacts", json=contact, headers=headers), 201)
    assert ok(api.get(f"{P}/contacts", params={"role": "shift_engineer"}, headers=headers)) == [wang]
    assert ok(api.patch(f"{P}/contacts/{wang['id']}", json={"site": ""}, headers=headers))["site"] == ""

    route = {
        "name": "engineers",
        "priorities": ["critical", "high"],
        "sites": ["plant-a"],
        "actions": ["activate", "clear"],
        "audience_role": "shift_engineer",
        "channels": ["room", hook["id"]],
        "escalate_after_min": 15,
        "escalation_channels": ["room"],
    }
    made = ok(api.post(f"{P}/routes", json=route, headers=headers), 201)
    assert made["channels"] == ["room", "scada"]  # by name, whichever way they were given
    assert made["escalation_channels"] == ["room"]
    assert ok(api.get(f"{P}/routes/engineers", headers=headers)) == made
    replaced = ok(
        api.put(f"{P}/routes/{made['id']}", json={"name": "engineers", "channels": ["scada"]}, headers=headers)
    )
    assert (replaced["channels"], replaced["actions"], replaced["escalate_after_min"]) == (
        ["scada"],
        ["activate"],
        None,
    )

    ok(api.delete(f"{P}/routes/engineers", headers=headers), 204)
    ok(api.delete(f"{P}/channels/scada", headers=headers), 204)
    ok(api.delete(f"{P}/contacts/{wang['id']}", headers=headers), 204)
    problem(api.get(f"{P}/channels/scada", headers=headers), 404, "channel_not_found")
    problem(api.get(f"{P}/routes/engineers", headers=headers), 404, "route_not_found")


@pytest.mark.parametrize(("role", "can_write"), [(Role.VIEWER, False), (Role.OPERATOR, False), (Role.ENGINEER, True)])
def test_reading_needs_alarms_read_and_changing_alarms_write(
    api: TestClient, tenant_a: TenantFixture, hook_receiver: HookReceiver, role: Role, can_write: bool
) -> None:
    headers = tenant_a.headers(role)
    for path in ("/channels", "/routes", "/contacts", "/deliveries", "/escalations"):
        assert ok(api.get(f"{P}{path}", headers=headers)) == []
    body = {"kind": "webhook", "name": "scada", "url": hook_receiver.url}
    answer = api.post(f"{P}/channels", json=body, headers=headers)
    if can_write:
        ok(answer, 201)
        assert ok(api.post(f"{P}/channels/scada/test", headers=headers))["status"] == "sent"
    else:
        problem(answer, 403, "forbidden")
        problem(api.post(f"{P}/channels/scada/test", headers=headers), 403, "forbidden")


def test_without_credentials_nothing_is_answered(api: TestClient) -> None:
    problem(api.get(f"{P}/channels"), 401, "unauthenticated")


def test_bad_input_is_answered_with_a_readable_problem(api: TestClient, tenant_a: TenantFixture) -> None:
    headers = tenant_a.headers()
    bad_url = problem(
        api.post(f"{P}/channels", json={"kind": "webhook", "name": "x", "url": "ftp://host/x"}, headers=headers),
        422,
        "invalid",
    )
    assert "http:// or https://" in json.dumps(bad_url)
    problem(
        api.post(f"{P}/channels", json={"kind": "email", "name": "x", "addresses": ["nobody"]}, headers=headers),
        422,
        "invalid",
    )
    setup_channels(api, tenant_a, "https://ops.example.com/hook")
    problem(api.post(f"{P}/channels", json={"kind": "email", "name": "room"}, headers=headers), 409, "channel_exists")
    problem(
        api.patch(f"{P}/channels/room", json={"url": "https://ops.example.com/other"}, headers=headers),
        422,
        "not_a_webhook",
    )
    unknown = problem(
        api.post(f"{P}/routes", json={"name": "r", "channels": ["nowhere"]}, headers=headers), 422, "unknown_channel"
    )
    assert unknown["detail"] == "channels: unknown notification channel 'nowhere'"
    problem(api.post(f"{P}/routes", json={"name": "r"}, headers=headers), 422, "no_channels")
    problem(
        api.post(
            f"{P}/routes", json={"name": "r", "channels": ["scada"], "audience_role": "shift_engineer"}, headers=headers
        ),
        422,
        "audience_needs_email",
    )
    problem(
        api.post(f"{P}/routes", json={"name": "r", "channels": ["scada"], "escalate_after_min": 5}, headers=headers),
        422,
        "escalation_incomplete",
    )
    problem(
        api.post(f"{P}/routes", json={"name": "r", "channels": ["scada"], "priorities": ["urgent"]}, headers=headers),
        422,
        "invalid",
    )
    ok(api.post(f"{P}/routes", json={"name": "r", "channels": ["scada"]}, headers=headers), 201)
    in_use = problem(api.delete(f"{P}/channels/scada", headers=headers), 409, "channel_in_use")
    assert "route(s) r" in in_use["detail"]


def test_another_tenants_objects_are_not_found(
    api: TestClient, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    created = setup_channels(api, tenant_a, "https://ops.example.com/hook")
    hook_id = created["hook"]["id"]
    as_b = tenant_b.headers()
    assert ok(api.get(f"{P}/channels", headers=as_b)) == []
    problem(api.get(f"{P}/channels/{hook_id}", headers=as_b), 404, "channel_not_found")
    problem(api.get(f"{P}/channels/scada", headers=as_b), 404, "channel_not_found")
    problem(api.patch(f"{P}/channels/{hook_id}", json={"enabled": False}, headers=as_b), 404, "channel_not_found")
    problem(api.post(f"{P}/channels/{hook_id}/test", headers=as_b), 404, "channel_not_found")
    problem(api.delete(f"{P}/channels/{hook_id}", headers=as_b), 404, "channel_not_found")
    # Tenant B's route cannot name tenant A's channel either.
    problem(api.post(f"{P}/routes", json={"name": "r", "channels": [hook_id]}, headers=as_b), 422, "unknown_channel")
    assert ok(api.get(f"{P}/channels/{hook_id}", headers=tenant_a.headers()))["enabled"] is True


def test_a_test_notification_is_sent_signed_once_and_logged(
    api: TestClient, tenant_a: TenantFixture, tenant_b: TenantFixture, hook_receiver: HookReceiver
) -> None:
    headers = tenant_a.headers(Role.ENGINEER)
    secret = setup_channels(api, tenant_a, hook_receiver.url)["hook"]["secret"]

    sent = ok(api.post(f"{P}/channels/scada/test", json={"message": "试一试 trying"}, headers=headers))
    assert (sent["status"], sent["attempts"], sent["kind"], sent["channel"]) == ("sent", 1, "test", "scada")
    [hook] = hook_receiver.verified(secret, dt.datetime.now(dt.UTC))
    body = json.loads(hook.body)
    assert (body["kind"], body["message"], body["delivery_id"]) == ("test", "试一试 trying", sent["id"])
    assert body["link"] == "/alarms/test"

    hook_receiver.statuses.append(500)
    failed = ok(api.post(f"{P}/channels/scada/test", headers=headers))
    assert (failed["status"], failed["attempts"]) == ("failed", 1)  # a test is tried once
    assert failed["last_error"].startswith("the receiver answered 500")

    log = ok(api.get(f"{P}/deliveries", params={"channel": "scada"}, headers=tenant_a.headers(Role.VIEWER)))
    assert {d["id"] for d in log} == {sent["id"], failed["id"]}
    assert [d["id"] for d in ok(api.get(f"{P}/deliveries", params={"status": "failed"}, headers=headers))] == [
        failed["id"]
    ]
    assert ok(api.get(f"{P}/deliveries/{sent['id']}", headers=headers))["status"] == "sent"
    problem(api.get(f"{P}/deliveries/{sent['id']}", headers=tenant_b.headers()), 404, "delivery_not_found")
    assert ok(api.get(f"{P}/deliveries", headers=tenant_b.headers())) == []


def test_an_email_channel_without_addresses_has_nowhere_to_send_a_test(
    api: TestClient, tenant_a: TenantFixture
) -> None:
    headers = tenant_a.headers()
    ok(api.post(f"{P}/channels", json={"kind": "email", "name": "people"}, headers=headers), 201)
    problem(api.post(f"{P}/channels/people/test", headers=headers), 422, "no_addresses")
