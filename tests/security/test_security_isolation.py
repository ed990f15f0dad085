"""The tenant-isolation walk of tests/api/test_tenant_isolation.py over the security context's
parameterised routes alone (API and console), with the entries of `isolation_kinds`."""

from __future__ import annotations

import pytest
from fastapi import FastAPI

from tests.api import test_tenant_isolation as isolation
from tests.api.test_tenant_isolation import ObjectKind, World, parameterised_routes, settings, walk_route, world
from tests.security.isolation_kinds import PUBLIC_ROUTES, SECURITY_KINDS

__all__ = ["settings", "world"]  # fixtures, used by name

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


def test_every_security_route_is_walked_and_keeps_tenants_apart(world: World) -> None:
    app = world.client.app
    assert isinstance(app, FastAPI)
    kinds = {path: ObjectKind(**kind) for path, kind in SECURITY_KINDS.items()}
    ours = {info.path for info in parameterised_routes(app) if "/security" in info.path}
    assert ours - PUBLIC_ROUTES == set(kinds), "every parameterised security route needs an entry"
    isolation.OBJECT_KINDS.update(kinds)
    walked = [
        (info.path, method)
        for info in parameterised_routes(app)
        if info.path in kinds
        for method in sorted(info.methods - {"HEAD", "OPTIONS"})
    ]
    failures = [failure for path, method in walked for failure in walk_route(world, path, method)]
    assert not failures, "\n".join(failures)
