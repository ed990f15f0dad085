"""Tenant A cannot see or touch tenant B's channels, routes, contacts or deliveries, by id or by name.

Runs the platform's tenant-isolation walk (tests/api/test_tenant_isolation.py) over the routes of
`NOTIFY_KINDS` on an app with the notification router mounted.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from iip.alarms.notify import router as notify_router
from iip.alarms.notify.router import PREFIX
from iip.api.app import create_app
from iip.kernel.auth import AccessService, Role
from iip.kernel.runtime import Runtime
from tests.alarms.notify.isolation_kinds import NOTIFY_KINDS
from tests.api import test_tenant_isolation as isolation
from tests.api.support import api_routes
from tests.conftest import TenantFixture


@pytest.fixture
def world(runtime: Runtime, tenant_a: TenantFixture, tenant_b: TenantFixture) -> Iterator[isolation.World]:
    app = create_app(runtime=runtime, configure_logs=False)
    if not any(info.path.startswith(PREFIX) for info in api_routes(app)):  # until the module mounts it
        app.include_router(notify_router)
    sessions: dict[Role, isolation.ConsoleSession] = {}
    with runtime.db.session() as session:
        service = AccessService(session)
        for role in Role:
            user = service.create_user(tenant_a.id, f"a-console-{role.value.replace('_', '-')}", "console-pw-123", role)
            token, record = service.open_session(user, hours=1)
            sessions[role] = isolation.ConsoleSession(token, record.csrf_token)
    with TestClient(app) as client:
        yield isolation.World(client, runtime, tenant_a, tenant_b, sessions)


def test_every_parameterised_notification_route_is_walked(world: isolation.World) -> None:
    app = world.client.app
    assert isinstance(app, FastAPI)
    ours = {info.path for info in api_routes(app) if info.path.startswith(PREFIX) and "{" in info.path}
    assert ours == set(NOTIFY_KINDS)


def test_tenant_a_cannot_see_or_touch_tenant_b_notification_objects(
    world: isolation.World, monkeypatch: pytest.MonkeyPatch
) -> None:
    kinds = {path: isolation.ObjectKind(**kind) for path, kind in NOTIFY_KINDS.items()}
    # For this test only: the walk's own table must not name routes its app may not have.
    monkeypatch.setattr(isolation, "OBJECT_KINDS", {**isolation.OBJECT_KINDS, **kinds})
    app = world.client.app
    assert isinstance(app, FastAPI)
    walked = [
        (info.path, method)
        for info in api_routes(app)
        if info.path in NOTIFY_KINDS
        for method in sorted(info.methods - {"HEAD", "OPTIONS"})
    ]
    assert len(walked) == 12
    failures = [failure for path, method in walked for failure in isolation.walk_route(world, path, method)]
    assert not failures, "\n".join(failures)
