from fastapi.testclient import TestClient

from tests.conftest import TenantFixture


def test_health_and_me(client: TestClient, tenant_a: TenantFixture) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    me = client.get("/api/me", headers=tenant_a.headers())
    assert me.status_code == 200, me.text
    assert me.json()["tenant_id"] == tenant_a.id
    r = client.get("/api/me")
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == "unauthenticated"
