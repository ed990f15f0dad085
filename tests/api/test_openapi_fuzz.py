"""Property-based requests to every operation in /openapi.json: whatever arrives, never a 5xx.

Runs in-process on SQLite with a fixed seed and derandomised Hypothesis, so CI sees the same cases
every run; once as a tenant admin and once as a platform operator (who reaches every tenant).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis import Case
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.schemas import BaseSchema

from iip.api.app import create_app
from iip.kernel.auth import Role
from iip.kernel.runtime import Runtime
from tests.conftest import TenantFixture

SEED = 20240917
# Enough to reach past the schema's examples into odd inputs, small enough to stay well under a minute.
FUZZ_SETTINGS = settings(
    max_examples=15,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture
def backend() -> str:
    return "sqlite"


@pytest.fixture(autouse=True)
def _schemathesis_node_id(request: pytest.FixtureRequest) -> None:
    # schemathesis 4.32 renames the running test through `Node._nodeid`, which pytest 9.2 no longer has.
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


@pytest.fixture
def fuzz_app(runtime: Runtime) -> Iterator[FastAPI]:
    yield create_app(runtime=runtime, configure_logs=False)
    # Schemathesis keeps the app's lifespan running for the whole process unless told otherwise.
    shutdown_lifespans()


@pytest.fixture
def fuzz_schema(fuzz_app: FastAPI) -> BaseSchema:
    config = SchemathesisConfig.from_dict({"seed": SEED, "generation": {"mode": "all"}})
    # Building the schema of every route takes seconds on a busy machine; the client's 10 s default is tight.
    return schemathesis.openapi.from_asgi("/openapi.json", fuzz_app, config=config, timeout=120)


@pytest.fixture
def admin_headers(tenant_a: TenantFixture) -> dict[str, str]:
    return tenant_a.headers(Role.ADMIN)


@pytest.fixture
def platform_operator_headers(tenant_a: TenantFixture, tenant_b: TenantFixture) -> dict[str, str]:
    return tenant_a.headers(Role.PLATFORM_OPERATOR)


schema = schemathesis.pytest.from_fixture("fuzz_schema")


def call_and_check(case: Case, headers: dict[str, str]) -> None:
    # A generous read timeout: some valid requests do real work (99,999 codes made in one call), and a
    # slow machine running the suite on both cores takes more than the client's 10 s default.
    response = case.call(headers=headers, timeout=120)
    case.validate_response(response, checks=[not_a_server_error])


@FUZZ_SETTINGS
@schema.parametrize()
def test_no_server_errors_as_tenant_admin(case: Case, admin_headers: dict[str, str]) -> None:
    call_and_check(case, admin_headers)


@FUZZ_SETTINGS
@schema.parametrize()
def test_no_server_errors_as_platform_operator(case: Case, platform_operator_headers: dict[str, str]) -> None:
    call_and_check(case, platform_operator_headers)
