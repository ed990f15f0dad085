from fastapi.testclient import TestClient
from iip.kernel.auth import Role
from tests.conftest import TenantFixture


def test_probe(runtime, tenant_a: TenantFixture, backend: str) -> None:
    from iip.api.app import create_app
    client = TestClient(create_app(runtime=runtime, configure_logs=False), raise_server_exceptions=False)
    h = tenant_a.headers()
    r = client.post("/api/api-keys", json={"name": "x", "expires_at": "2020-01-01T00:00:00"}, headers=h)
    print(backend, "naive past", r.status_code, r.text[:200])
    r = client.post("/api/api-keys", json={"name": "x", "expires_at": "2999-01-01T00:00:00"}, headers=h)
    print(backend, "naive future", r.status_code, r.text[:200])
    r = client.post("/api/users", json={"username": "abc", "password": "x" * 12, "display_name": "a\u0000b"}, headers=h)
    print(backend, "nul display", r.status_code, r.text[:200])
    r = client.get("/api/users/a%00b", headers=h)
    print(backend, "nul path", r.status_code, r.text[:200])
    r = client.get("/api/audit", params={"action": "a\x00b"}, headers=h)
    print(backend, "nul query", r.status_code, r.text[:200])
    r = client.post("/api/api-keys", json={"name": "\u0000"}, headers=h)
    print(backend, "nul keyname", r.status_code, r.text[:200])
    r = client.get("/api/users/" + "x" * 5000, headers=h)
    print(backend, "long path", r.status_code, r.text[:200])
    r = client.put("/api/users", headers=h)
    print(backend, "405", r.status_code, r.headers, r.text[:300])
    r = client.post("/api/tenants", json={"name": "zz"}, headers=tenant_a.headers(Role.PLATFORM_OPERATOR))
    print(backend, "tenant", r.status_code, r.text[:300])
    r = client.get("/api/audit", headers=h)
    for e in r.json()["items"][:5]:
        print(e)
