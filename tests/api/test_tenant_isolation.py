"""Every route that names an object by id keeps tenants apart.

The walk covers every parameterised route of the app, API and console alike. Each route needs an
entry in `OBJECT_KINDS` saying how to create such an object in tenant B; a route without one fails
the test, so routes added later are covered as soon as they exist. API routes are called with
tenant A's API keys, console routes with console sessions of tenant A's users.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response

from iip.api.app import create_app
from iip.api.deps import SESSION_COOKIE
from iip.console.web import CSRF_FIELD
from iip.kernel.auth import AccessService, Role, User
from iip.kernel.db import utcnow
from iip.kernel.runtime import Runtime
from iip.kernel.settings import Settings
from tests.api.support import RouteInfo, api_routes
from tests.conftest import TenantFixture

TENANT_ROLES = tuple(role for role in Role if role is not Role.PLATFORM_OPERATOR)
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclasses.dataclass(frozen=True)
class ConsoleSession:
    token: str
    csrf: str


EVENT_STREAMS = ("/events", "/api/alarms/feed")  # server-sent events: read up to the first event


def is_api(path: str) -> bool:
    return path.startswith(("/api/", "/epcis/"))  # the EPCIS REST binding is an API too


@dataclasses.dataclass(frozen=True)
class World:
    client: TestClient
    runtime: Runtime
    tenant_a: TenantFixture
    tenant_b: TenantFixture
    a_sessions: Mapping[Role, ConsoleSession]  # one signed-in console user of tenant A per role

    def as_b(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        response = self.client.request(method, path, json=body, headers=self.tenant_b.headers())
        assert response.is_success, f"{method} {path} as tenant B: {response.status_code} {response.text}"
        result: dict[str, Any] = response.json()
        return result

    def as_a(self, role: Role, method: str, path: str, body: Mapping[str, Any] | None = None) -> Response:
        """A request from tenant A's `role`, sent the way the route expects to be called."""
        if is_api(path):
            headers = self.tenant_a.headers(role)
            if method == "GET" and path.endswith(EVENT_STREAMS):
                return self.first_event(path, headers)
            return self.client.request(method, path, json=body, headers=headers, follow_redirects=False)
        session = self.a_sessions[role]
        form = None if method == "GET" else {**(body or {}), CSRF_FIELD: session.csrf}
        cookie = {"Cookie": f"{SESSION_COOKIE}={session.token}"}
        return self.client.request(method, path, data=form, headers=cookie, follow_redirects=False)

    def first_event(self, path: str, headers: Mapping[str, str]) -> Response:
        """An event stream does not end: its answer up to the first event (the twin's snapshot)."""
        with self.client.stream("GET", path, headers=headers) as response:
            if response.status_code != 200:
                response.read()
                return Response(response.status_code, headers=response.headers, content=response.content)
            lines = []
            for line in response.iter_lines():
                lines.append(line)
                if line.startswith("data:"):
                    break
            return Response(200, headers=response.headers, text="\n".join(lines))


@dataclasses.dataclass(frozen=True)
class Created:
    params: dict[str, str]  # path parameters naming the object
    marker: str  # a value only B's object carries; it must never reach tenant A
    aliases: tuple[dict[str, str], ...] = ()  # other names the route accepts for it


@dataclasses.dataclass(frozen=True)
class ObjectKind:
    create: Callable[[World], Created]
    read: str  # where B's admin re-reads the object to see whether it changed
    # A valid body per write method, so that only the tenant check can refuse the call.
    bodies: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # Whether the platform operator's successful call shows in the re-read (the control).
    control_changes: bool = True
    # Reads anyone may make (public resolution): they must succeed without showing the marker.
    public_read: bool = False


def marker() -> str:
    return f"b-only-{uuid.uuid4().hex[:12]}"


def tenant_b_itself(world: World) -> Created:
    mark = marker()
    world.as_b("PATCH", f"/api/tenants/{world.tenant_b.id}", {"display_name": mark})
    return Created({"tenant_id": world.tenant_b.id}, mark)


def locked_user(world: World) -> Created:
    mark = marker()
    username = f"u-{uuid.uuid4().hex[:10]}"
    user = world.as_b("POST", "/api/users", {"username": username, "password": "b-password-123", "display_name": mark})
    # Locked, so that an unlock would show.
    with world.runtime.db.session() as session:
        row = session.get(User, user["id"])
        assert row is not None
        row.failed_logins = 3
        row.locked_until = utcnow() + dt.timedelta(hours=1)
    return Created({"user_id": user["id"]}, mark)


def inactive_user(world: World) -> Created:
    created = locked_user(world)
    world.as_b("PATCH", fill("/api/users/{user_id}", created.params), {"active": False})
    return created


def api_key(world: World) -> Created:
    mark = marker()
    key = world.as_b("POST", "/api/api-keys", {"name": mark, "role": "engineer"})
    return Created({"key_id": key["id"]}, mark, aliases=({"key_id": key["prefix"]},))


USER = "/api/users/{user_id}"
API_KEY = "/api/api-keys/{key_id}"

OBJECT_KINDS: dict[str, ObjectKind] = {
    # API
    "/api/tenants/{tenant_id}": ObjectKind(
        tenant_b_itself, "/api/tenants/{tenant_id}", bodies={"PATCH": {"display_name": "renamed by A"}}
    ),
    USER: ObjectKind(locked_user, USER, bodies={"PATCH": {"display_name": "changed by A", "role": "admin"}}),
    "/api/users/{user_id}/unlock": ObjectKind(locked_user, USER),
    API_KEY: ObjectKind(api_key, API_KEY),
    # console
    "/access/users/{user_id}/role": ObjectKind(locked_user, USER, bodies={"POST": {"role": "engineer"}}),
    "/access/users/{user_id}/deactivate": ObjectKind(locked_user, USER),
    "/access/users/{user_id}/activate": ObjectKind(inactive_user, USER),
    "/access/users/{user_id}/unlock": ObjectKind(locked_user, USER),
    "/access/api-keys/{key_id}/revoke": ObjectKind(api_key, API_KEY),
}

# Other contexts' routes, kept beside their tests. Imported here, after the table's types exist.
from tests.identifiers.isolation_kinds import IDENTIFIER_KINDS  # noqa: E402
from tests.identifiers.isolation_kinds import PUBLIC_ROUTES as IDENTIFIER_PUBLIC_ROUTES  # noqa: E402
from tests.identifiers.isolation_kinds_gs1 import OBJECT_KINDS as GS1_OBJECT_KINDS  # noqa: E402
from tests.identifiers.isolation_kinds_gs1 import PUBLIC_ROUTES  # noqa: E402

OBJECT_KINDS.update({path: ObjectKind(**kind) for path, kind in IDENTIFIER_KINDS.items()})
OBJECT_KINDS.update(GS1_OBJECT_KINDS)
from tests.devices.isolation_kinds import DEVICE_KINDS  # noqa: E402
from tests.telemetry.isolation_kinds import TWIN_KINDS  # noqa: E402

OBJECT_KINDS.update({path: ObjectKind(**kind) for path, kind in DEVICE_KINDS.items()})
OBJECT_KINDS.update({path: ObjectKind(**kind) for path, kind in TWIN_KINDS.items()})
from tests.alarms.isolation_kinds import ALARM_KINDS  # noqa: E402
from tests.alarms.notify.isolation_kinds import NOTIFY_KINDS  # noqa: E402

OBJECT_KINDS.update({path: ObjectKind(**kind) for path, kind in ALARM_KINDS.items()})
OBJECT_KINDS.update({path: ObjectKind(**kind) for path, kind in NOTIFY_KINDS.items()})
from tests.traceability.capture_isolation_kinds import CAPTURE_KINDS  # noqa: E402
from tests.traceability.isolation_kinds import GENEALOGY_KINDS  # noqa: E402

OBJECT_KINDS.update({path: ObjectKind(**kind) for path, kind in GENEALOGY_KINDS.items()})
OBJECT_KINDS.update({path: ObjectKind(**kind) for path, kind in CAPTURE_KINDS.items()})
from tests.traceability.query_isolation_kinds import QUERY_KINDS  # noqa: E402

OBJECT_KINDS.update({path: ObjectKind(**kind) for path, kind in QUERY_KINDS.items()})
from tests.traceability.subscription_isolation_kinds import SUBSCRIPTION_KINDS  # noqa: E402

OBJECT_KINDS.update({path: ObjectKind(**kind) for path, kind in SUBSCRIPTION_KINDS.items()})
from tests.traceability.authenticity_isolation_kinds import AUTHENTICITY_KINDS  # noqa: E402
from tests.traceability.authenticity_isolation_kinds import PUBLIC_ROUTES as CODE_PUBLIC_ROUTES  # noqa: E402

OBJECT_KINDS.update({path: ObjectKind(**kind) for path, kind in AUTHENTICITY_KINDS.items()})
PUBLIC_ROUTES = PUBLIC_ROUTES | IDENTIFIER_PUBLIC_ROUTES | CODE_PUBLIC_ROUTES
from tests.traceability.profiles_isolation_kinds import PUBLIC_ROUTES as PROFILE_ROUTES  # noqa: E402

PUBLIC_ROUTES = PUBLIC_ROUTES | PROFILE_ROUTES
from tests.traceability.master_data_isolation_kinds import MASTER_DATA_KINDS  # noqa: E402

OBJECT_KINDS.update({path: ObjectKind(**kind) for path, kind in MASTER_DATA_KINDS.items()})
from tests.security.isolation_kinds import PUBLIC_ROUTES as SECURITY_PUBLIC_ROUTES  # noqa: E402
from tests.security.isolation_kinds import SECURITY_KINDS  # noqa: E402

OBJECT_KINDS.update({path: ObjectKind(**kind) for path, kind in SECURITY_KINDS.items()})
PUBLIC_ROUTES = PUBLIC_ROUTES | SECURITY_PUBLIC_ROUTES
from tests.analytics.isolation_kinds import ANALYTICS_KINDS  # noqa: E402

OBJECT_KINDS.update({path: ObjectKind(**kind) for path, kind in ANALYTICS_KINDS.items()})
from tests.analytics.pages_isolation_kinds import PAGE_KINDS as ANALYTICS_PAGE_KINDS  # noqa: E402

OBJECT_KINDS.update({path: ObjectKind(**kind) for path, kind in ANALYTICS_PAGE_KINDS.items()})


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Commands go to polled devices: this process polls (simulated devices; no broker is started).
    return settings.model_copy(update={"devices": settings.devices.model_copy(update={"polling_enabled": True})})


@pytest.fixture
def world(client: TestClient, runtime: Runtime, tenant_a: TenantFixture, tenant_b: TenantFixture) -> World:
    sessions: dict[Role, ConsoleSession] = {}
    with runtime.db.session() as session:
        service = AccessService(session)
        for role in Role:
            user = service.create_user(tenant_a.id, f"a-console-{role.value.replace('_', '-')}", "console-pw-123", role)
            token, record = service.open_session(user, hours=1)
            sessions[role] = ConsoleSession(token, record.csrf_token)
    return World(client, runtime, tenant_a, tenant_b, sessions)


def parameterised_routes(app: FastAPI) -> list[RouteInfo]:
    return [info for info in api_routes(app) if "{" in info.path]


def fill(path: str, params: Mapping[str, str]) -> str:
    # Drop convertors such as {suffix:path}, which str.format_map cannot read.
    return re.sub(r"\{(\w+):[^}]+\}", r"{\1}", path).format_map(params)


def problem_code(response: Response) -> str | None:
    if response.headers.get("content-type", "").startswith(("application/json", "application/problem+json")):
        body = response.json()
        return body.get("code") if isinstance(body, dict) else None
    return None


def test_every_parameterised_route_has_an_object_factory(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'routes.db'}", log_level="WARNING")
    app = create_app(settings, configure_logs=False)
    paths = {info.path for info in parameterised_routes(app)}
    # Guards the walk itself: if routes stop being found, the isolation test would pass vacuously.
    assert "/api/users/{user_id}" in paths
    missing = sorted(paths - OBJECT_KINDS.keys() - PUBLIC_ROUTES)
    assert not (PUBLIC_ROUTES - paths), f"routes listed as public no longer exist: {PUBLIC_ROUTES - paths}"
    assert not missing, f"add these routes to OBJECT_KINDS in {__name__}: {missing}"
    stale = sorted(OBJECT_KINDS.keys() - paths)
    assert not stale, f"OBJECT_KINDS names routes that no longer exist: {stale}"
    app.state.runtime.db.dispose()


def answer(response: Response) -> str:
    return f"{response.status_code} {problem_code(response)}"


def refusal_failures(response: Response, reference: Response, role: Role, created: Created) -> list[str]:
    """Why an answer to tenant A about B's object is wrong; empty when it is right."""
    if response.status_code < 400 or created.marker in response.text:
        return [f"B's object reached A ({response.status_code} {response.text[:200]})"]
    if role is Role.ADMIN and response.status_code != 404:
        return [f"expected 404, got {response.status_code} {response.text[:200]}"]
    if response.status_code not in (403, 404):
        return [f"expected 403 or 404, got {response.status_code} {response.text[:200]}"]
    if answer(response) != answer(reference):
        return [f"answers {answer(response)} but {answer(reference)} for a missing id, which reveals existence"]
    return []


def walk_route(world: World, path: str, method: str) -> list[str]:
    kind = OBJECT_KINDS[path]
    created = kind.create(world)
    read_path = fill(kind.read, created.params)
    before = world.as_b("GET", read_path)
    body = kind.bodies.get(method)
    nowhere = fill(path, {name: uuid.uuid4().hex for name in created.params})
    failures: list[str] = []
    for params in (created.params, *created.aliases):
        for role in TENANT_ROLES:
            # How the route answers for an id that exists nowhere: B's object must look the same.
            reference = world.as_a(role, method, nowhere, body)
            response = world.as_a(role, method, fill(path, params), body)
            label = f"{method} {fill(path, params)} as A's {role}"
            if method == "GET" and kind.public_read:
                if response.status_code != 200 or created.marker in response.text:
                    failures.append(f"{label}: public read answered {response.status_code} {response.text[:200]}")
                continue
            failures += [f"{label}: {f}" for f in refusal_failures(response, reference, role, created)]
    after = world.as_b("GET", read_path)
    if after != before:
        failures.append(f"{method} {path}: tenant A changed B's object: {before} -> {after}")

    # The control: a platform operator reaches the same object with the same call, so the checks can fail.
    control = world.as_a(Role.PLATFORM_OPERATOR, method, fill(path, created.params), body)
    if control.status_code >= 400:
        failures.append(f"{method} {path}: platform operator got {control.status_code} {control.text[:200]}")
    elif method == "GET" and created.marker not in control.text:
        failures.append(f"{method} {path}: platform operator did not get B's object: {control.text[:200]}")
    elif method in WRITE_METHODS and kind.control_changes and world.as_b("GET", read_path) == before:
        failures.append(f"{method} {path}: the platform operator's call changed nothing, so the check is blind")
    return failures


def test_tenant_a_cannot_see_or_touch_tenant_b_objects(world: World) -> None:
    app = world.client.app
    assert isinstance(app, FastAPI)
    walked = [
        (info.path, method)
        for info in parameterised_routes(app)
        if info.path in OBJECT_KINDS  # a missing entry fails test_every_parameterised_route_has_an_object_factory
        for method in sorted(info.methods - {"HEAD", "OPTIONS"})
    ]
    assert ("/api/api-keys/{key_id}", "DELETE") in walked
    failures = [failure for path, method in walked for failure in walk_route(world, path, method)]
    assert not failures, "\n".join(failures)


def test_unparameterised_reads_show_nothing_of_another_tenant(world: World) -> None:
    kinds = {id(k.create): k for k in OBJECT_KINDS.values()}.values()
    created = [kind.create(world) for kind in kinds]
    tenant_b = world.tenant_b
    b_values = {tenant_b.id} | {c.marker for c in created} | {v for c in created for v in c.params.values()}
    app = world.client.app
    assert isinstance(app, FastAPI)
    reads = sorted(
        info.path
        for info in api_routes(app)
        if "GET" in info.methods and "{" not in info.path and not info.path.startswith("/static/")
    )
    assert {"/api/audit", "/access/audit"} <= set(reads)
    leaks: list[str] = []
    for path in reads:
        for role in TENANT_ROLES:
            response = world.as_a(role, "GET", path)
            leaked = sorted(value for value in b_values if value in response.text)
            if leaked:
                leaks.append(f"GET {path} as A's {role} shows {leaked}")
    assert not leaks, "\n".join(leaks)
    # The control: the platform operator's views do include B's objects.
    for path in ("/api/audit?limit=1000", "/api/users", "/access/users", "/access/api-keys"):
        text = world.as_a(Role.PLATFORM_OPERATOR, "GET", path).text
        assert any(value in text for value in b_values), f"the platform operator sees nothing of B at {path}"
