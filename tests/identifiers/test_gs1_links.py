"""GS1 link CRUD over HTTP: validation, permissions, the reverse lookup by handle, tenant isolation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from iip.api.app import create_app
from iip.kernel.auth import AccessService, Role
from iip.kernel.runtime import Runtime
from iip.kernel.settings import Settings
from tests.api import test_tenant_isolation as isolation
from tests.api.support import api_routes, assert_problem
from tests.conftest import TenantFixture
from tests.identifiers.isolation_kinds_gs1 import OBJECT_KINDS, PUBLIC_ROUTES, random_gtin

GTIN = "09506000134352"
LINKS = "/api/gs1/links"


def post(client: TestClient, tenant: TenantFixture, role: Role = Role.ADMIN, **fields: Any) -> Any:
    body = {"gs1_key": f"01/{GTIN}", "link_type": "gs1:pip", "href": "https://example.com/", **fields}
    return client.post(LINKS, json=body, headers=tenant.headers(role))


def test_create_get_list_delete(client: TestClient, tenant_a: TenantFixture) -> None:
    response = post(
        client,
        tenant_a,
        gs1_key="01/9506000134352",
        qualifiers="10/L1",
        link_type="https://gs1.org/voc/epil",
        title="Leaflet",
        language="en",
        media_type="Application/PDF",
        handle="88.118.8/ABC",
    )
    assert response.status_code == 201, response.text
    link = response.json()
    assert link["gs1_key"] == f"01/{GTIN}"  # normalised to GTIN-14
    assert link["qualifiers"] == "10/L1"
    assert link["link_type"] == "gs1:epil"
    assert link["media_type"] == "application/pdf"
    assert link["is_default"] is True  # the first link of a key and qualifier level
    headers = tenant_a.headers(Role.VIEWER)
    assert client.get(f"{LINKS}/{link['id']}", headers=headers).json() == link
    assert client.get(LINKS, headers=headers).json() == [link]
    assert client.get(LINKS, params={"gs1_key": "01/9506000134352"}, headers=headers).json() == [link]
    assert client.get(LINKS, params={"link_type": "gs1:pip"}, headers=headers).json() == []
    assert client.delete(f"{LINKS}/{link['id']}", headers=tenant_a.headers()).status_code == 200
    assert_problem(client.get(f"{LINKS}/{link['id']}", headers=headers), 404, "not_found")


def test_links_of_an_iip_identifier(client: TestClient, tenant_a: TenantFixture) -> None:
    post(client, tenant_a, handle="88.118.8/ABC")
    post(client, tenant_a, link_type="gs1:epil", handle="88.118.8/ABC")
    post(client, tenant_a, link_type="gs1:sds", handle="88.118.8/OTHER")
    found = client.get(LINKS, params={"handle": "88.118.8/ABC"}, headers=tenant_a.headers()).json()
    assert sorted(link["link_type"] for link in found) == ["gs1:epil", "gs1:pip"]


def test_a_new_default_replaces_the_old_one_of_its_language(client: TestClient, tenant_a: TenantFixture) -> None:
    first = post(client, tenant_a, href="https://example.com/1").json()
    second = post(client, tenant_a, href="https://example.com/2", is_default=True).json()
    other_language = post(client, tenant_a, href="https://example.com/3", language="de", is_default=True).json()
    headers = tenant_a.headers()
    assert client.get(f"{LINKS}/{first['id']}", headers=headers).json()["is_default"] is False
    assert client.get(f"{LINKS}/{second['id']}", headers=headers).json()["is_default"] is True
    assert other_language["is_default"] is True


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"gs1_key": "01/09506000134353"}, "bad_check_digit"),
        ({"qualifiers": "21/S1/10/L1"}, "bad_qualifier_order"),
        ({"gs1_key": "99/ABC"}, "no_primary_key"),
        ({"href": "javascript:alert(1)"}, "bad_href"),
        ({"link_type": "not a type"}, "bad_link_type"),
        ({"link_type": "linkset"}, "invalid"),
        ({"language": "english!"}, "bad_language"),
        ({"media_type": "html"}, "bad_media_type"),
        ({"handle": "no-slash"}, "bad_handle"),
        ({"title": "bad\x00title"}, "invalid"),
        ({"unknown": 1}, "invalid"),
    ],
)
def test_invalid_links_are_refused(
    client: TestClient, tenant_a: TenantFixture, fields: dict[str, Any], code: str
) -> None:
    assert_problem(post(client, tenant_a, **fields), 422, code)


def test_duplicates_and_keys_of_another_tenant_conflict(
    client: TestClient, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    assert post(client, tenant_a).status_code == 201
    assert_problem(post(client, tenant_a), 409, "gs1_link_exists")
    assert_problem(post(client, tenant_b, href="https://b.example/"), 409, "gs1_key_taken")


def test_permissions(client: TestClient, tenant_a: TenantFixture) -> None:
    assert_problem(client.get(LINKS), 401)
    assert_problem(post(client, tenant_a, Role.VIEWER), 403)
    link = post(client, tenant_a, Role.ENGINEER).json()
    assert_problem(client.delete(f"{LINKS}/{link['id']}", headers=tenant_a.headers(Role.OPERATOR)), 403)
    assert client.get(f"{LINKS}/{link['id']}", headers=tenant_a.headers(Role.AUDITOR)).status_code == 200


@pytest.mark.parametrize("link_id", ["999999", "abc", "99999999999999999999", "-1"])
def test_missing_ids_are_404(client: TestClient, tenant_a: TenantFixture, link_id: str) -> None:
    assert_problem(client.get(f"{LINKS}/{link_id}", headers=tenant_a.headers()), 404, "not_found")


def test_another_tenants_link_is_invisible(
    client: TestClient, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    link = post(client, tenant_b, gs1_key=f"01/{random_gtin()}", title="b-secret").json()
    path = f"{LINKS}/{link['id']}"
    assert_problem(client.get(path, headers=tenant_a.headers()), 404, "not_found")
    assert_problem(client.delete(path, headers=tenant_a.headers()), 404, "not_found")
    assert "b-secret" not in client.get(LINKS, headers=tenant_a.headers()).text
    assert client.get(LINKS, params={"handle": link["handle"] or "x/y"}, headers=tenant_a.headers()).json() == []
    assert client.get(path, headers=tenant_b.headers()).status_code == 200  # untouched
    assert client.get(path, headers=tenant_a.headers(Role.PLATFORM_OPERATOR)).json()["title"] == "b-secret"


# --- the isolation walk, run on these routes with the entries of isolation_kinds_gs1 ---------------


@pytest.fixture
def world(client: TestClient, runtime: Runtime, tenant_a: TenantFixture, tenant_b: TenantFixture) -> isolation.World:
    sessions: dict[Role, isolation.ConsoleSession] = {}
    with runtime.db.session() as session:
        service = AccessService(session)
        for role in Role:
            user = service.create_user(tenant_a.id, f"a-gs1-{role.value.replace('_', '-')}", "console-pw-123", role)
            token, record = service.open_session(user, hours=1)
            sessions[role] = isolation.ConsoleSession(token, record.csrf_token)
    return isolation.World(client, runtime, tenant_a, tenant_b, sessions)


def test_isolation_walk_over_gs1_link_routes(world: isolation.World, monkeypatch: pytest.MonkeyPatch) -> None:
    for path, kind in OBJECT_KINDS.items():
        monkeypatch.setitem(isolation.OBJECT_KINDS, path, kind)
    failures = [
        f for method in ("GET", "DELETE") for f in isolation.walk_route(world, "/api/gs1/links/{link_id}", method)
    ]
    assert not failures, "\n".join(failures)


def test_every_parameterised_gs1_route_is_covered(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'routes.db'}", log_level="WARNING")
    app: FastAPI = create_app(settings, configure_logs=False)
    gs1_paths = {info.path for info in api_routes(app) if "{" in info.path and "gs1" in info.route.tags}
    assert gs1_paths == set(OBJECT_KINDS) | PUBLIC_ROUTES
    app.state.runtime.db.dispose()
