"""Delegations and referrals on one node, signed answers, and `/api/resolve` from this node (SQLite, PostgreSQL)."""

from __future__ import annotations

import base64
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from fastapi.testclient import TestClient
from sqlalchemy import select

from iip.identifiers.codec import load_values
from iip.identifiers.delegation import read_delegation
from iip.identifiers.models import Handle
from iip.identifiers.signing import canonical_record
from iip.kernel.auth import Role
from iip.kernel.db import Database
from iip.kernel.runtime import Runtime
from iip.kernel.settings import NodeRole
from tests.cli.conftest import InProcessIip, free_port
from tests.conftest import TenantFixture
from tests.identifiers.conftest import HomedPrefix, admin_entry, home_prefix, url_value

CHILD = "https://child.example.com:8443/idis"


def new_key() -> str:
    raw = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    return base64.b64encode(raw).decode()


def node_public_key(client: TestClient) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(client.get("/api/node/key").json()["public_key"]))


def verify(client: TestClient, handle: str, values: list[dict[str, Any]], signature: str) -> None:
    node_public_key(client).verify(base64.b64decode(signature), canonical_record(handle, values))


def delegate(client: TestClient, tenant: TenantFixture, prefix: str, key: str, **extra: Any) -> Any:
    body = {"prefix": prefix, "node_url": CHILD, "public_key": key, **extra}
    return client.post("/api/delegations", json=body, headers=tenant.headers(Role.PLATFORM_OPERATOR))


def test_a_delegated_prefix_is_referred_with_its_signed_prefix_handle(
    client: TestClient, runtime: Runtime, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    home_prefix(runtime, tenant_a, "88.118", "parent-secret-1")
    key = new_key()
    created = delegate(client, tenant_a, "88.118.8", key, ttl=600)
    assert created.status_code == 201, created.text
    assert (created.json()["node_url"], created.json()["public_key"], created.json()["ttl"]) == (CHILD, key, 600)

    referral = client.get("/api/handles/88.118.8/JXDY2106023?type=URL", follow_redirects=False)
    assert referral.status_code == 307
    assert referral.headers["location"] == f"{CHILD}/api/handles/88.118.8/JXDY2106023?type=URL"
    body = referral.json()
    assert (body["responseCode"], body["handle"]) == (302, "88.118.8/JXDY2106023")
    prefix_handle = body["referral"]
    assert prefix_handle["handle"] == "0.NA/88.118.8"
    verify(client, prefix_handle["handle"], prefix_handle["values"], prefix_handle["signature"])
    delegation = read_delegation(load_values(prefix_handle["values"]))
    assert (delegation.node_url, base64.b64encode(delegation.public_key).decode()) == (CHILD, key)
    site = next(v for v in prefix_handle["values"] if v["type"] == "HS_SITE")
    assert site["index"] == 1
    assert site["data"]["format"] == "site"
    assert site["data"]["value"]["servers"][0]["interfaces"] == [
        {"query": True, "admin": False, "protocol": "HTTPS", "port": 8443}
    ]
    # The prefix handle itself is held here and resolves as any record.
    held = client.get("/api/handles/0.NA/88.118.8").json()
    assert {v["type"] for v in held["values"]} == {"HS_SITE", "HS_PUBKEY"}

    # Writes under a delegated prefix are not taken here; nor are handles under prefixes nobody delegated.
    put = client.put("/api/handles/88.118.8/X", json={"values": [url_value("https://a")]}, headers=tenant_a.headers())
    assert (put.status_code, put.json()["responseCode"]) == (404, 301)
    unknown = client.get("/api/handles/88.119/X")
    assert (unknown.status_code, unknown.json()["responseCode"]) == (404, 100)

    # Listing and reading: the owning tenant and operators; another tenant sees nothing.
    listed = client.get("/api/delegations", headers=tenant_a.headers(Role.VIEWER)).json()
    assert [d["prefix"] for d in listed] == ["88.118.8"]
    assert client.get("/api/delegations", headers=tenant_b.headers()).json() == []
    assert client.get("/api/delegations/88.118.8", headers=tenant_b.headers()).status_code == 404

    # Delegating again replaces the key (after the child's rotation), keeping one prefix handle.
    rotated = new_key()
    again = delegate(client, tenant_a, "88.118.8", rotated)
    assert again.status_code == 201, again.text
    assert client.get("/api/delegations/88.118.8", headers=tenant_a.headers()).json()["public_key"] == rotated

    # Withdrawn: the node no longer refers.
    assert client.delete("/api/delegations/88.118.8", headers=tenant_a.headers()).status_code == 403
    removed = client.delete("/api/delegations/88.118.8", headers=tenant_a.headers(Role.PLATFORM_OPERATOR))
    assert removed.status_code == 204
    gone = client.get("/api/handles/88.118.8/JXDY2106023", follow_redirects=False)
    assert (gone.status_code, gone.json()["responseCode"]) == (404, 100)


def test_who_may_delegate_what(client: TestClient, runtime: Runtime, tenant_a: TenantFixture) -> None:
    home_prefix(runtime, tenant_a, "88.118", "parent-secret-1")
    key = new_key()
    not_below = delegate(client, tenant_a, "86.1", key)
    assert (not_below.status_code, not_below.json()["code"]) == (422, "parent_not_homed")
    homed = delegate(client, tenant_a, "88.118", key)
    assert (homed.status_code, homed.json()["code"]) == (409, "prefix_exists")
    bad_key = delegate(client, tenant_a, "88.118.8", "bm90IGEga2V5")
    assert (bad_key.status_code, bad_key.json()["code"]) == (422, "invalid_public_key")
    bad_url = client.post(
        "/api/delegations",
        json={"prefix": "88.118.8", "node_url": "ftp://child.example.com"},
        headers=tenant_a.headers(Role.PLATFORM_OPERATOR),
    )
    assert (bad_url.status_code, bad_url.json()["code"]) == (422, "invalid_node_url")
    by_admin = client.post(
        "/api/delegations",
        json={"prefix": "88.118.8", "node_url": CHILD, "public_key": key},
        headers=tenant_a.headers(),
    )
    assert by_admin.status_code == 403
    runtime.settings.identifiers.role = NodeRole.ROOT
    assert delegate(client, tenant_a, "86.1", key).status_code == 201  # the root delegates any prefix
    runtime.settings.identifiers.role = NodeRole.ENTERPRISE
    leaf = delegate(client, tenant_a, "88.118.9", key)
    assert (leaf.status_code, leaf.json()["code"]) == (422, "node_role")
    # No key given and the child does not answer: the request names a URL that leads nowhere.
    runtime.settings.identifiers.role = NodeRole.SECONDARY
    runtime.settings.identifiers.resolver_timeout = 2
    silent = client.post(
        "/api/delegations",
        json={"prefix": "88.118.9", "node_url": f"http://127.0.0.1:{free_port()}"},
        headers=tenant_a.headers(Role.PLATFORM_OPERATOR),
    )
    assert (silent.status_code, silent.json()["code"]) == (422, "node_unreachable")


def test_signed_answers(client: TestClient, runtime: Runtime, homed: HomedPrefix) -> None:
    hidden = {"index": 2, "type": "NOTE", "data": "internal", "permissions": "1100"}
    assert client.put("/api/handles/88.118.8/S1", json=[url_value("https://a"), admin_entry()], headers=homed.auth)
    assert client.put("/api/handles/88.118.8/S2", json=[url_value("https://b"), hidden], headers=homed.auth)
    plain = client.get("/api/handles/88.118.8/S1").json()
    assert "signature" not in plain  # only when asked for
    whole = client.get("/api/handles/88.118.8/S1?signed=true").json()
    verify(client, whole["handle"], whole["values"], whole["signature"])
    with runtime.db.session() as session:
        stored = session.scalar(select(Handle.signature).where(Handle.key == "88.118.8/s1"))
    assert whole["signature"] == stored
    # Values that are not public are left out: the signature covers what is shown, made on the spot.
    shown = client.get("/api/handles/88.118.8/S2?signed=true").json()
    assert [v["index"] for v in shown["values"]] == [1]
    verify(client, shown["handle"], shown["values"], shown["signature"])
    # ... but only while the stored signature holds.
    with runtime.db.session() as session:
        row = session.scalar(select(Handle).where(Handle.key == "88.118.8/s2"))
        assert row is not None
        row.values = [{**row.values[0], "data": {"format": "string", "value": "https://evil"}}, row.values[1]]
    tampered = client.get("/api/handles/88.118.8/S2?signed=true").json()
    assert tampered["signature"] == row.signature


def test_resolve_starting_at_this_node(client: TestClient, runtime: Runtime, homed: HomedPrefix) -> None:
    body = [{**url_value("https://example.com/p"), "ttl": 600}, admin_entry()]
    assert client.put("/api/handles/88.118.8/R1", json=body, headers=homed.auth).status_code == 200
    first = client.get("/api/resolve/88.118.8/R1").json()
    assert (first["responseCode"], first["fromCache"], first["referrals"]) == (1, False, [])
    assert first["keyId"] == client.get("/api/node/key").json()["key_id"]
    second = client.get("/api/resolve/88.118.8/R1", params={"type": "URL"}).json()
    assert second["fromCache"] is True
    assert [v["type"] for v in second["values"]] == ["URL"]
    missing = client.get("/api/resolve/88.118.8/none")
    assert (missing.status_code, missing.json()["responseCode"], missing.json()["code"]) == (
        404,
        100,
        "handle_not_found",
    )
    assert client.get("/api/resolve/no-slash").json()["responseCode"] == 102
    # A prefix delegated to a node that does not answer.
    runtime.settings.identifiers.resolver_timeout = 2
    dead = f"http://127.0.0.1:{free_port()}"
    with runtime.db.session() as session:
        from iip.identifiers.delegation import DelegationService

        DelegationService(session).delegate(
            homed.tenant.id, "88.118.8.1", dead, bytes(32), role=NodeRole.SECONDARY, actor="test"
        )
    unreachable = client.get("/api/resolve/88.118.8.1/X")
    assert (unreachable.status_code, unreachable.json()["code"]) == (502, "node_unreachable")
    assert dead in unreachable.json()["message"]
    node = client.get("/api/node").json()
    assert (node["role"], node["root_url"]) == ("secondary", "")


def test_cli_delegation_and_key_rotation(iip_in_process: InProcessIip, cli_db: Database) -> None:
    iip = iip_in_process
    assert iip("db", "upgrade").exit_code == 0
    assert iip("tenant", "create", "acme").exit_code == 0
    assert iip("id", "prefix", "create", "88.118", "--tenant", "acme", stdin="prefix-secret-1\n").exit_code == 0
    key = new_key()
    delegated = iip(
        "id", "prefix", "delegate", "88.118.8", "--node-url", CHILD, "--public-key", key, "--tenant", "acme"
    )
    assert delegated.exit_code == 0, delegated.output
    assert "https://child" in iip("id", "prefix", "list").stdout  # the table cuts long cells
    referred = iip("id", "resolve", "88.118.8/X")
    assert referred.exit_code == 1
    assert CHILD in referred.stderr

    assert iip("id", "register", "88.118/A", "--url", "https://example.com/a", "--tenant", "acme").exit_code == 0
    assert iip("id", "register", "88.118/B", "--url", "https://example.com/b", "--tenant", "acme").exit_code == 0
    with cli_db.session() as session:  # B changed behind the node's back: not vouched for by the new key
        row = session.scalar(select(Handle).where(Handle.key == "88.118/b"))
        assert row is not None
        row.values = [{**row.values[0], "data": {"format": "string", "value": "https://evil"}}, *row.values[1:]]
    before = iip("id", "node-key").stdout
    rotated = iip("id", "node-key", "--rotate")
    assert rotated.exit_code == 0, rotated.output
    assert "not re-signed" in rotated.stderr
    assert "88.118/B" in rotated.stderr
    assert "iip id prefix delegate 88.118" in rotated.stdout
    assert before.split("BEGIN PUBLIC KEY")[1] != rotated.stdout.split("BEGIN PUBLIC KEY")[1]
    assert iip("id", "verify", "88.118/A").exit_code == 0
    assert iip("id", "verify", "0.NA/88.118.8").exit_code == 0  # the delegation record too
    assert iip("id", "verify", "88.118/B").exit_code == 1

    assert iip("id", "prefix", "undelegate", "88.118.8").exit_code == 0
    assert "not found" in iip("id", "resolve", "88.118.8/X").stderr
