"""Three identifier nodes as separate `iip run` processes: root (88) -> secondary (88.118) -> enterprise (88.118.8).

A resolver that knows only the root follows the referrals down, checks every signature against the key
the delegation chain names, and caches answers for their TTL. SQLite only: each node has its own data dir.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from iip.identifiers.service import HandleService
from iip.identifiers.signing import register
from iip.kernel.auth import AccessService, Role
from iip.kernel.db import Database
from iip.kernel.settings import IdentifierSettings, NodeRole, Settings
from iip.migrations.runner import upgrade
from tests.cli.conftest import IIP, free_port, outer_environment

pytestmark = pytest.mark.slow

STARTUP_LIMIT_S = 60
TTL = 4  # seconds: of the records and the delegations, so expiry is seen within the test
SECRET = "node-prefix-secret"
TENANT = "operator"


@dataclass
class NodeProcess:
    name: str
    role: NodeRole
    prefix: str
    data_dir: Path
    port: int
    operator_key: str = ""
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {
            **outer_environment(),
            "IIP_DATA_DIR": str(self.data_dir),
            "IIP_LOG_FORMAT": "text",
            "IIP_LOG_LEVEL": "WARNING",
            "IIP_IDENTIFIERS__ROLE": self.role.value,
            "IIP_IDENTIFIERS__BASE_URL": self.url,
            "IIP_IDENTIFIERS__RESOLVER_TIMEOUT": "3",
        }

    @property
    def settings(self) -> Settings:
        identifiers = IdentifierSettings(role=self.role, base_url=self.url)
        return Settings(data_dir=self.data_dir, log_format="text", log_level="WARNING", identifiers=identifiers)

    def prepare(self) -> None:
        """Schema, an operator tenant with a platform operator key, and the prefix homed here (signed)."""
        settings = self.settings
        settings.ensure_data_dir()
        register(settings)
        db = Database(settings.effective_database_url)
        try:
            upgrade(db)
            with db.session() as session:
                access = AccessService(session)
                tenant = access.create_tenant(TENANT)
                self.operator_key = access.create_api_key(tenant.id, "ops", Role.PLATFORM_OPERATOR)[1]
                HandleService(session).create_prefix(tenant.id, self.prefix, SECRET, actor="test")
        finally:
            db.dispose()

    def iip(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(IIP), *args], capture_output=True, text=True, env=self.env, timeout=120, check=False, input=""
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def running(nodes: list[NodeProcess], workdir: Path) -> Iterator[None]:
    """Start every node's `iip run` at once; wait for all of them; stop them after."""
    with ExitStack() as stack:
        for node in nodes:
            log = stack.enter_context((workdir / f"{node.name}.log").open("wb"))
            node.process = subprocess.Popen(
                [str(IIP), "run", "--port", str(node.port)], env=node.env, stdout=log, stderr=subprocess.STDOUT
            )
            stack.callback(node.stop)
        deadline = time.monotonic() + STARTUP_LIMIT_S
        for node in nodes:
            while not healthy(node.url):
                assert node.process is not None
                log_text = (workdir / f"{node.name}.log").read_text(errors="replace")[-2000:]
                if node.process.poll() is not None:
                    pytest.fail(f"{node.name} exited with {node.process.returncode}: {log_text}")
                if time.monotonic() > deadline:
                    pytest.fail(f"{node.name} did not answer /healthz within {STARTUP_LIMIT_S} s: {log_text}")
                time.sleep(0.2)
        yield


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[tuple[NodeProcess, NodeProcess, NodeProcess]]:
    root = NodeProcess("root", NodeRole.ROOT, "88", tmp_path / "root", free_port())
    secondary = NodeProcess("secondary", NodeRole.SECONDARY, "88.118", tmp_path / "secondary", free_port())
    enterprise = NodeProcess("enterprise", NodeRole.ENTERPRISE, "88.118.8", tmp_path / "enterprise", free_port())
    for node in (root, secondary, enterprise):
        node.prepare()
    with running([root, secondary, enterprise], tmp_path):
        # Root -> secondary over the operators' API, the key fetched from the child's /api/node/key.
        for parent, child in ((root, secondary), (secondary, enterprise)):
            response = httpx.post(
                f"{parent.url}/api/delegations",
                json={"prefix": child.prefix, "node_url": child.url, "ttl": TTL},
                headers={"Authorization": f"Bearer {parent.operator_key}"},
                timeout=30,
            )
            assert response.status_code == 201, response.text
        yield root, secondary, enterprise


def register_handle(node: NodeProcess, suffix: str, url: str) -> str:
    handle = f"{node.prefix}/{suffix}"
    identity = urllib.parse.quote(f"300:0.NA/{node.prefix}", safe="")
    auth = "Basic " + base64.b64encode(f"{identity}:{SECRET}".encode()).decode()
    values = [{"index": 1, "type": "URL", "data": {"format": "string", "value": url}, "ttl": TTL}]
    response = httpx.put(
        f"{node.url}/api/handles/{handle}", json={"values": values}, headers={"Authorization": auth}, timeout=30
    )
    assert response.status_code == 200, response.text
    return handle


def resolve(node: NodeProcess, handle: str) -> tuple[int, dict[str, Any]]:
    response = httpx.get(f"{node.url}/api/resolve/{handle}", timeout=30)
    body: dict[str, Any] = response.json()
    return response.status_code, body


def node_key(node: NodeProcess) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{node.url}/api/node/key", timeout=10).json()
    return body


def test_a_client_knowing_only_the_root_resolves_through_two_referrals(
    nodes: tuple[NodeProcess, NodeProcess, NodeProcess], tmp_path: Path
) -> None:
    root, secondary, enterprise = nodes
    handle = register_handle(enterprise, "JXDY2106023", "https://example.com/p/1")

    # The root itself refers to the secondary: a Handle-style referral with the signed prefix handle.
    referral = httpx.get(f"{root.url}/api/handles/{handle}", timeout=10)
    assert referral.status_code == 307
    assert referral.headers["location"] == f"{secondary.url}/api/handles/{handle}"
    assert referral.json()["responseCode"] == 302
    assert referral.json()["referral"]["handle"] == "0.NA/88.118"

    status, first = resolve(root, handle)
    assert status == 200, first
    assert first["values"][0]["data"]["value"] == "https://example.com/p/1"
    assert (first["node"], first["fromCache"]) == (enterprise.url, False)
    assert first["referrals"] == [
        {"prefix": "88.118", "node": secondary.url},
        {"prefix": "88.118.8", "node": enterprise.url},
    ]
    assert first["keyId"] == node_key(enterprise)["key_id"]
    cached_at = time.monotonic()
    status, second = resolve(root, handle)
    assert (status, second["fromCache"], second["values"]) == (200, True, first["values"])

    # A client process with only the root's URL and pinned key.
    client_env = {
        "IIP_DATA_DIR": str(tmp_path / "client"),
        "IIP_IDENTIFIERS__ROOT_URL": root.url,
        "IIP_IDENTIFIERS__ROOT_PUBLIC_KEY": node_key(root)["public_key"],
    }
    cli = subprocess.run(
        [str(IIP), "id", "resolve", handle, "--recursive", "--json"],
        capture_output=True,
        text=True,
        env={**outer_environment(), **client_env},
        timeout=120,
        check=False,
    )
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["node"] == enterprise.url

    # Unknown handles answer as Handle servers do.
    status, missing = resolve(root, "88.118.8/NO-SUCH-THING")
    assert (status, missing["responseCode"]) == (404, 100)

    # After the TTL the resolver asks again; with the enterprise node gone, the cache still answers.
    time.sleep(max(0.0, TTL - (time.monotonic() - cached_at)) + 0.5)
    status, third = resolve(root, handle)
    assert (status, third["fromCache"]) == (200, False)
    cached_at = time.monotonic()
    enterprise.stop()
    status, fourth = resolve(root, handle)
    assert time.monotonic() - cached_at < TTL, "too slow to check the cache within the TTL"
    assert (status, fourth["fromCache"], fourth["node"]) == (200, True, enterprise.url)

    time.sleep(max(0.0, TTL - (time.monotonic() - cached_at)) + 0.5)
    status, unreachable = resolve(root, handle)
    assert (status, unreachable["code"]) == (502, "node_unreachable")
    assert enterprise.url in unreachable["message"]


def test_tampered_and_rekeyed_records_are_refused_until_delegated_again(
    nodes: tuple[NodeProcess, NodeProcess, NodeProcess],
) -> None:
    root, secondary, enterprise = nodes
    good = register_handle(enterprise, "GOOD-1", "https://example.com/good")
    bad = register_handle(enterprise, "BAD-1", "https://example.com/bad")

    # A signature corrupted in the enterprise node's database.
    with sqlite3.connect(enterprise.data_dir / "iip.db") as conn:
        signature = conn.execute("SELECT signature FROM identifiers_handle WHERE key = ?", (bad.lower(),)).fetchone()[0]
        forged = base64.b64encode(bytes(64 - 1) + base64.b64decode(signature)[-1:]).decode()
        conn.execute("UPDATE identifiers_handle SET signature = ? WHERE key = ?", (forged, bad.lower()))
    conn.close()
    for _ in range(2):  # refused each time: never cached as good
        status, refused = resolve(root, bad)
        assert (status, refused["code"]) == (502, "signature_refused"), refused
        assert "does not match" in refused["message"]
    status, body = resolve(root, good)
    assert status == 200, body
    old_key_id = body["keyId"]

    # The enterprise node re-keys: its records are re-signed, but the secondary still names the old key.
    rotated = enterprise.iip("id", "node-key", "--rotate")
    assert rotated.returncode == 0, rotated.stderr
    new_key = node_key(enterprise)
    assert new_key["key_id"] != old_key_id
    assert "iip id prefix delegate 88.118.8" in rotated.stdout
    verified = enterprise.iip("id", "verify", good)
    assert verified.returncode == 0, verified.stderr
    fresh = register_handle(enterprise, "AFTER-ROTATION", "https://example.com/new")
    status, refused = resolve(root, fresh)
    assert (status, refused["code"]) == (502, "signature_refused"), refused

    # The secondary delegates again, fetching the new key; resolution holds at once.
    delegated = secondary.iip(
        "id", "prefix", "delegate", "88.118.8", "--node-url", enterprise.url, "--tenant", TENANT, "--ttl", str(TTL)
    )
    assert delegated.returncode == 0, delegated.stderr
    assert new_key["public_key"] in delegated.stdout
    status, body = resolve(root, fresh)
    assert status == 200, body
    assert (body["keyId"], body["fromCache"]) == (new_key["key_id"], False)
