"""Fixtures for the Handle API: a prefix homed in tenant A with its admin identity, and request helpers."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from urllib.parse import quote

import pytest

from iip.identifiers.service import HandleService
from iip.kernel.runtime import Runtime
from tests.conftest import TenantFixture

PREFIX = "88.118.8"
PREFIX_SECRET = "prefix-secret-123"
ADMIN_IDENTITY = f"300:0.NA/{PREFIX}"


def basic(identity: str, secret: str) -> dict[str, str]:
    """HTTP Basic as Handle clients send it: the `index:handle` user name percent-encoded."""
    token = base64.b64encode(f"{quote(identity, safe='')}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@dataclass(frozen=True)
class HomedPrefix:
    prefix: str
    identity: str
    secret: str
    tenant: TenantFixture

    @property
    def auth(self) -> dict[str, str]:
        return basic(self.identity, self.secret)


def home_prefix(runtime: Runtime, tenant: TenantFixture, prefix: str, secret: str) -> HomedPrefix:
    with runtime.db.session() as session:
        HandleService(session).create_prefix(tenant.id, prefix, secret, actor="test")
    return HomedPrefix(prefix, f"300:0.NA/{prefix}", secret, tenant)


@pytest.fixture
def homed(runtime: Runtime, tenant_a: TenantFixture) -> HomedPrefix:
    return home_prefix(runtime, tenant_a, PREFIX, PREFIX_SECRET)


def url_value(url: str, index: int = 1) -> dict[str, object]:
    return {"index": index, "type": "URL", "data": {"format": "string", "value": url}}


def admin_entry(handle: str = f"0.NA/{PREFIX}", index: int = 200) -> dict[str, object]:
    value = {"handle": handle, "index": index, "permissions": "011111110011"}
    return {"index": 100, "type": "HS_ADMIN", "data": {"format": "admin", "value": value}}


# The CLI fixtures (an `iip` in-process runner over the test database).
from tests.cli.conftest import cli_db, cli_env, cli_settings, iip_in_process  # noqa: E402, F401
