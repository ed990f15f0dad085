"""The Handle REST API over HTTP, on SQLite and PostgreSQL: bodies, responseCodes and statuses as HANDLE.NET."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from iip.identifiers.codec import MAX_VALUE_BYTES
from iip.identifiers.models import Handle, HandleHistory
from iip.kernel.audit import AuditEntry
from iip.kernel.auth import Role
from iip.kernel.runtime import Runtime
from tests.conftest import TenantFixture
from tests.identifiers.conftest import HomedPrefix, admin_entry, basic, home_prefix, url_value

H = "/api/handles/88.118.8"


def create(client: TestClient, homed: HomedPrefix, suffix: str, *values: dict[str, Any]) -> None:
    body = {"values": list(values) or [url_value("https://example.com/a"), admin_entry()]}
    response = client.put(f"{H}/{suffix}?overwrite=false", json=body, headers=homed.auth)
    assert response.status_code == 201, response.text


def test_create_conflict_and_overwrite(client: TestClient, homed: HomedPrefix) -> None:
    body = {"values": [url_value("https://example.com/a"), admin_entry()]}
    first = client.put(f"{H}/JXDY2106023?overwrite=false", json=body, headers=homed.auth)
    assert (first.status_code, first.json()) == (201, {"responseCode": 1, "handle": "88.118.8/JXDY2106023"})
    again = client.put(f"{H}/JXDY2106023?overwrite=false", json=body, headers=homed.auth)
    assert (again.status_code, again.json()["responseCode"]) == (409, 101)
    body["values"][0] = url_value("https://example.com/b")
    replaced = client.put(f"{H}/JXDY2106023?overwrite=true", json=body, headers=homed.auth)
    assert (replaced.status_code, replaced.json()["responseCode"]) == (200, 1)
    record = client.get(f"{H}/JXDY2106023").json()
    assert record["values"][0]["data"]["value"] == "https://example.com/b"
    assert record["values"][0]["timestamp"].endswith("Z")


def test_unknown_handle_is_404_with_100(client: TestClient, homed: HomedPrefix) -> None:
    response = client.get(f"{H}/nothing-here")
    assert response.status_code == 404
    assert response.json()["responseCode"] == 100
    assert response.headers["content-type"].startswith("application/json")


def test_filters_by_type_and_index(client: TestClient, homed: HomedPrefix) -> None:
    create(client, homed, "F1", url_value("https://a"), {"index": 2, "type": "EMAIL", "data": "x@y"}, admin_entry())
    by_type = client.get(f"{H}/F1?type=EMAIL").json()
    assert [v["index"] for v in by_type["values"]] == [2]
    by_both = client.get(f"{H}/F1?type=URL&index=100").json()
    assert [v["index"] for v in by_both["values"]] == [1, 100]
    none = client.get(f"{H}/F1?type=NOPE")
    assert (none.status_code, none.json()["responseCode"], none.json()["values"]) == (200, 200, [])


def test_public_only_hides_admin_only_values(client: TestClient, homed: HomedPrefix) -> None:
    private = {"index": 5, "type": "COST", "data": "42", "permissions": "1100"}
    create(client, homed, "P1", url_value("https://a"), private, admin_entry())
    public = client.get(f"{H}/P1").json()
    assert 5 not in [v["index"] for v in public["values"]]
    as_admin = client.get(f"{H}/P1", headers=homed.auth).json()
    assert 5 in [v["index"] for v in as_admin["values"]]
    also_public = client.get(f"{H}/P1?publicOnly=true", headers=homed.auth).json()
    assert 5 not in [v["index"] for v in also_public["values"]]
    anonymous_all = client.get(f"{H}/P1?publicOnly=false")
    assert (anonymous_all.status_code, anonymous_all.json()["responseCode"]) == (401, 402)
    key_reader = client.get(f"{H}/P1", headers=homed.tenant.headers(Role.VIEWER)).json()
    assert 5 in [v["index"] for v in key_reader["values"]]


def test_modify_one_index_and_delete_one_index(client: TestClient, homed: HomedPrefix) -> None:
    create(client, homed, "M1", url_value("https://a"), {"index": 2, "type": "EMAIL", "data": "x@y"}, admin_entry())
    modified = client.put(f"{H}/M1?index=1", json={"values": [url_value("https://b")]}, headers=homed.auth)
    assert modified.status_code == 200
    values = {v["index"]: v for v in client.get(f"{H}/M1").json()["values"]}
    assert values[1]["data"]["value"] == "https://b"
    assert values[2]["data"]["value"] == "x@y"
    exists = client.put(
        f"{H}/M1?index=2&overwrite=false", json=[{"index": 2, "type": "X", "data": "z"}], headers=homed.auth
    )
    assert (exists.status_code, exists.json()["responseCode"]) == (409, 201)
    removed = client.delete(f"{H}/M1?index=2", headers=homed.auth)
    assert removed.status_code == 200
    assert 2 not in [v["index"] for v in client.get(f"{H}/M1").json()["values"]]
    missing = client.delete(f"{H}/M1?index=77", headers=homed.auth)
    assert (missing.status_code, missing.json()["responseCode"]) == (400, 200)


def test_delete_handle_keeps_history_and_audit(client: TestClient, homed: HomedPrefix, runtime: Runtime) -> None:
    create(client, homed, "D1")
    deleted = client.delete(f"{H}/D1", headers=homed.auth)
    assert (deleted.status_code, deleted.json()) == (200, {"responseCode": 1, "handle": "88.118.8/D1"})
    assert client.get(f"{H}/D1").status_code == 404
    with runtime.db.session() as session:
        changes = [h.change for h in session.scalars(select(HandleHistory).where(HandleHistory.key == "88.118.8/d1"))]
        actions = set(session.scalars(select(AuditEntry.action)))
    assert changes == ["create", "delete"]
    assert {"identifiers.handle.create", "identifiers.handle.delete"} <= actions


def test_list_by_prefix_paged(client: TestClient, homed: HomedPrefix) -> None:
    for n in range(5):
        create(client, homed, f"L{n}")
    first = client.get("/api/handles", params={"prefix": "88.118.8", "page": 0, "pageSize": 2}, headers=homed.auth)
    body = first.json()
    assert (first.status_code, body["totalCount"], body["handles"]) == (200, "5", ["88.118.8/L0", "88.118.8/L1"])
    last = client.get("/api/handles", params={"prefix": "88.118.8", "page": 2, "pageSize": 2}, headers=homed.auth)
    assert last.json()["handles"] == ["88.118.8/L4"]
    anonymous = client.get("/api/handles", params={"prefix": "88.118.8"})
    assert (anonymous.status_code, anonymous.json()["responseCode"]) == (401, 402)
    by_key = client.get("/api/handles", params={"prefix": "88.118.8"}, headers=homed.tenant.headers(Role.VIEWER))
    assert by_key.json()["totalCount"] == "5"
    assert client.get("/api/handles").json()["responseCode"] == 102


def test_mint_new_suffix(client: TestClient, homed: HomedPrefix) -> None:
    body = {"values": [url_value("https://example.com/minted"), admin_entry()]}
    response = client.put(f"{H}/JX-?mintNewSuffix=true", json=body, headers=homed.auth)
    assert response.status_code == 201
    minted = response.json()["handle"]
    assert minted.startswith("88.118.8/JX-")
    assert len(minted) > len("88.118.8/JX-")
    assert client.get(f"/api/handles/{minted}").status_code == 200


@pytest.mark.parametrize("path", ["/api/handles/88 118/x", "/api/handles/bad:prefix/x", "/api/handles/88.118.8/"])
def test_malformed_handle_is_400_with_102(client: TestClient, homed: HomedPrefix, path: str) -> None:
    response = client.get(path)
    assert (response.status_code, response.json()["responseCode"]) == (400, 102)


def test_oversized_or_duplicate_values_write_nothing(client: TestClient, homed: HomedPrefix, runtime: Runtime) -> None:
    big = {"index": 2, "type": "BLOB", "data": "x" * (MAX_VALUE_BYTES + 1)}
    response = client.put(f"{H}/BIG", json={"values": [url_value("https://a"), big]}, headers=homed.auth)
    assert (response.status_code, response.json()["responseCode"]) == (400, 202)
    duplicate = [url_value("https://a"), url_value("https://b")]
    response = client.put(f"{H}/DUP", json={"values": duplicate}, headers=homed.auth)
    assert (response.status_code, response.json()["responseCode"]) == (400, 202)
    assert "duplicate index 1" in response.json()["message"]
    with runtime.db.session() as session:
        assert session.scalar(select(Handle).where(Handle.key.in_(["88.118.8/big", "88.118.8/dup"]))) is None


def test_basic_auth_with_wrong_secret_is_401(client: TestClient, homed: HomedPrefix) -> None:
    response = client.put(f"{H}/W1", json=[url_value("https://a")], headers=basic(homed.identity, "wrong-secret"))
    assert (response.status_code, response.json()["responseCode"]) == (401, 402)
    assert response.headers["www-authenticate"].startswith("Basic")
    unknown = client.put(f"{H}/W1", json=[url_value("https://a")], headers=basic("300:0.NA/99.9", "whatever-1"))
    assert unknown.status_code == 401
    nobody = client.put(f"{H}/W1", json=[url_value("https://a")])
    assert (nobody.status_code, nobody.json()["responseCode"]) == (401, 402)


def test_identity_without_admin_rights_is_403(client: TestClient, homed: HomedPrefix) -> None:
    # A user handle with its own secret, named in no HS_ADMIN.
    create(client, homed, "user1", {"index": 300, "type": "HS_SECKEY", "data": "user-secret-1"}, admin_entry())
    outsider = basic("300:88.118.8/user1", "user-secret-1")
    response = client.put(f"{H}/X1", json=[url_value("https://a")], headers=outsider)
    assert (response.status_code, response.json()["responseCode"]) == (403, 400)
    create(client, homed, "owned")
    refused = client.delete(f"{H}/owned", headers=outsider)
    assert refused.status_code == 403
    # Granting it HS_ADMIN on one handle lets it modify that handle only.
    grant = {"values": [admin_entry("88.118.8/user1", 300) | {"index": 101}]}
    assert client.put(f"{H}/owned?index=101", json=grant, headers=homed.auth).status_code == 200
    modify = client.put(f"{H}/owned?index=1", json=[url_value("https://changed")], headers=outsider)
    assert modify.status_code == 200, modify.text


def test_secret_keys_are_stored_hashed_and_hidden(client: TestClient, homed: HomedPrefix) -> None:
    public = client.get("/api/handles/0.NA/88.118.8").json()
    assert 300 not in [v["index"] for v in public["values"]]
    admin = client.get("/api/handles/0.NA/88.118.8", headers=homed.auth).json()
    secret = next(v for v in admin["values"] if v["index"] == 300)
    assert secret["data"]["value"].startswith("$argon2")
    assert homed.secret not in str(admin)


def test_case_insensitive_lookup_and_utf8_suffix(client: TestClient, homed: HomedPrefix) -> None:
    create(client, homed, "MixedCase")
    response = client.get(f"{H}/mixedcase")
    assert (response.status_code, response.json()["handle"]) == (200, "88.118.8/MixedCase")
    create(client, homed, "产品-001")
    chinese = client.get("/api/handles/88.118.8/%E4%BA%A7%E5%93%81-001")
    assert (chinese.status_code, chinese.json()["handle"]) == (200, "88.118.8/产品-001")


def test_api_keys_write_in_their_own_tenant_only(
    client: TestClient, homed: HomedPrefix, runtime: Runtime, tenant_b: TenantFixture
) -> None:
    body = [url_value("https://a")]
    assert client.put(f"{H}/K1", json=body, headers=homed.tenant.headers(Role.ENGINEER)).status_code == 200
    viewer = client.put(f"{H}/K2", json=body, headers=homed.tenant.headers(Role.VIEWER))
    assert (viewer.status_code, viewer.json()["responseCode"]) == (403, 400)
    foreign = client.put(f"{H}/K3", json=body, headers=tenant_b.headers(Role.ADMIN))
    unknown = client.put("/api/handles/77.1/K3", json=body, headers=tenant_b.headers(Role.ADMIN))
    assert (foreign.status_code, foreign.json()["responseCode"]) == (
        unknown.status_code,
        unknown.json()["responseCode"],
    )
    assert foreign.status_code == 404
    home_prefix(runtime, tenant_b, "88.200.1", "b-secret-123")
    prefixes_a = client.get("/api/prefixes", headers=homed.tenant.headers(Role.VIEWER)).json()["prefixes"]
    prefixes_b = client.get("/api/prefixes", headers=tenant_b.headers(Role.VIEWER)).json()["prefixes"]
    assert (prefixes_a, prefixes_b) == (["88.118.8"], ["88.200.1"])
    everyone = client.get("/api/prefixes", headers=tenant_b.headers(Role.PLATFORM_OPERATOR)).json()["prefixes"]
    assert everyone == ["88.118.8", "88.200.1"]
