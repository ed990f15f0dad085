"""Record signatures: signed on every write, verified over the API and the CLI, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import stat
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi.testclient import TestClient
from sqlalchemy import select

from iip.identifiers.models import Handle
from iip.identifiers.signing import NODE_KEY_FILE, canonical_record
from iip.kernel.db import Database
from iip.kernel.runtime import Runtime
from tests.cli.conftest import InProcessIip
from tests.identifiers.conftest import HomedPrefix, admin_entry, url_value

H = "/api/handles/88.118.8"


def verify(client: TestClient, handle: str) -> dict[str, Any]:
    response = client.get("/api/verify", params={"handle": handle})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def tamper(db: Database, key: str, value: str) -> None:
    """Change a stored value behind the service's back."""
    with db.session() as session:
        row = session.scalar(select(Handle).where(Handle.key == key))
        assert row is not None
        values = [dict(v) for v in row.values]
        values[0] = {**values[0], "data": {"format": "string", "value": value}}
        row.values = values


def test_signature_holds_after_every_write(client: TestClient, homed: HomedPrefix) -> None:
    body = {"values": [url_value("https://example.com/a"), admin_entry()]}
    assert client.put(f"{H}/S1", json=body, headers=homed.auth).status_code == 200
    created = verify(client, "88.118.8/S1")
    assert (created["ok"], created["reason"]) == (True, "signed by this node")
    changed = client.put(f"{H}/S1?index=1", json={"values": [url_value("https://example.com/b")]}, headers=homed.auth)
    assert changed.status_code == 200
    after_change = verify(client, "88.118.8/S1")
    assert after_change["ok"]
    assert after_change["signature"] != created["signature"]
    extra = {"values": [{"index": 2, "type": "EMAIL", "data": "x@example.com"}]}
    assert client.put(f"{H}/S1?index=2", json=extra, headers=homed.auth).status_code == 200
    assert client.delete(f"{H}/S1?index=2", headers=homed.auth).status_code == 200
    assert verify(client, "88.118.8/S1")["ok"]


def test_published_key_verifies_the_canonical_record(client: TestClient, runtime: Runtime, homed: HomedPrefix) -> None:
    body = {"values": [url_value("https://example.com/产品"), admin_entry()]}
    assert client.put(f"{H}/S2", json=body, headers=homed.auth).status_code == 200
    published = client.get("/api/node/key").json()
    assert published["algorithm"] == "Ed25519"
    public_key = Ed25519PublicKey.from_public_bytes(base64.b64decode(published["public_key"]))
    with runtime.db.session() as session:
        row = session.scalar(select(Handle).where(Handle.key == "88.118.8/s2"))
        assert row is not None
        payload = canonical_record(row.handle, row.values)
        public_key.verify(base64.b64decode(row.signature), payload)  # raises if it does not hold
    assert b'"handle":"88.118.8/S2"' in payload
    assert "产品".encode() in payload  # ensure_ascii=False
    key_file = runtime.settings.data_dir / NODE_KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_values_changed_in_the_database_fail(client: TestClient, runtime: Runtime, homed: HomedPrefix) -> None:
    body = {"values": [url_value("https://example.com/a"), admin_entry()]}
    assert client.put(f"{H}/T1", json=body, headers=homed.auth).status_code == 200
    tamper(runtime.db, "88.118.8/t1", "https://evil.example.com")
    result = verify(client, "88.118.8/T1")
    assert result["ok"] is False
    assert "does not match" in result["reason"]
    # Another handle's values and signature copied over do not verify either: the handle is signed too.
    assert client.put(f"{H}/T2", json=body, headers=homed.auth).status_code == 200
    with runtime.db.session() as session:
        rows = {r.key: r for r in session.scalars(select(Handle).where(Handle.prefix == "88.118.8"))}
        rows["88.118.8/t1"].values = rows["88.118.8/t2"].values
        rows["88.118.8/t1"].signature = rows["88.118.8/t2"].signature
    assert verify(client, "88.118.8/T1")["ok"] is False
    assert verify(client, "88.118.8/T2")["ok"] is True


def test_verify_errors(client: TestClient, runtime: Runtime, homed: HomedPrefix) -> None:
    missing = client.get("/api/verify", params={"handle": "88.118.8/none"})
    assert (missing.status_code, missing.json()["code"]) == (404, "handle_not_found")
    malformed = client.get("/api/verify", params={"handle": "no-slash"})
    assert malformed.status_code == 422
    body = {"values": [url_value("https://example.com/a"), admin_entry()]}
    assert client.put(f"{H}/U1", json=body, headers=homed.auth).status_code == 200
    with runtime.db.session() as session:
        row = session.scalar(select(Handle).where(Handle.key == "88.118.8/u1"))
        assert row is not None
        row.signature = ""
    assert verify(client, "88.118.8/U1")["reason"] == "the record is not signed"


def test_cli_verify_exit_codes(iip_in_process: InProcessIip, cli_db: Database) -> None:
    iip = iip_in_process
    assert iip("db", "upgrade").exit_code == 0
    assert iip("tenant", "create", "acme").exit_code == 0
    assert iip("id", "prefix", "create", "88.118.8", "--tenant", "acme", stdin="prefix-secret-1\n").exit_code == 0
    registered = iip("id", "register", "88.118.8/V1", "--url", "https://example.com/p", "--tenant", "acme")
    assert registered.exit_code == 0, registered.output
    good = iip("id", "verify", "88.118.8/V1")
    assert good.exit_code == 0, good.output
    assert "signature ok" in good.stdout
    assert iip("id", "verify", "0.NA/88.118.8").exit_code == 0
    tamper(cli_db, "88.118.8/v1", "https://evil.example.com")
    bad = iip("id", "verify", "88.118.8/V1")
    assert bad.exit_code == 1
    assert "does not match" in bad.stderr
    as_json = iip("id", "verify", "88.118.8/V1", "--json")
    assert (as_json.exit_code, '"ok": false' in as_json.stdout) == (1, True)
    assert iip("id", "verify", "88.118.8/none").exit_code == 1
    shown = iip("id", "node-key")
    assert shown.exit_code == 0
    assert "BEGIN PUBLIC KEY" in shown.stdout
