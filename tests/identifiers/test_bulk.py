"""Bulk registration over the API and with `iip id import`, on SQLite and PostgreSQL: all rows or none."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from iip.identifiers.models import Handle, HandleHistory
from iip.kernel.audit import AuditEntry
from iip.kernel.auth import Role
from iip.kernel.db import Database
from iip.kernel.runtime import Runtime
from tests.cli.conftest import IipCommand, iip  # noqa: F401 - the `iip` subprocess fixture
from tests.conftest import TenantFixture
from tests.identifiers.conftest import HomedPrefix, home_prefix

BATCH = "/api/identifiers/batch"


def rows(count: int, prefix: str = "88.118.8", start: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "handle": f"{prefix}/PART-{n:05d}",
            "url": f"https://example.com/parts/{n}",
            "values": {"SERIAL": f"SN-{n}"},
            "template": "part",
            "attributes": {"part_number": f"P-{n:05d}", "material": "GCr15", "supplier": "精密轴承厂"},
        }
        for n in range(start, start + count)
    ]


def handle_count(db: Database, prefix: str = "88.118.8") -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(Handle).where(Handle.prefix == prefix)) or 0


def test_a_batch_registers_every_row(client: TestClient, runtime: Runtime, homed: HomedPrefix) -> None:
    response = client.post(BATCH, json=rows(100), headers=homed.tenant.headers(Role.ENGINEER))
    assert (response.status_code, response.json()) == (200, {"registered": 100}), response.text
    assert handle_count(runtime.db) == 100
    record = client.get("/api/handles/88.118.8/PART-00042").json()
    values = {v["type"]: v["data"]["value"] for v in record["values"]}
    assert values["URL"] == "https://example.com/parts/42"
    assert values["SERIAL"] == "SN-42"
    assert values["HS_ADMIN"]["handle"] == "0.NA/88.118.8"
    assert all(v["timestamp"].endswith("Z") for v in record["values"])
    # Written like any other handle: history, search, and editable by the prefix's admin identity.
    with runtime.db.session() as session:
        assert session.scalar(select(func.count()).select_from(HandleHistory).where(HandleHistory.change == "create"))
        entries = list(session.scalars(select(AuditEntry).where(AuditEntry.action == "identifiers.handle.batch")))
    assert len(entries) == 1
    assert entries[0].tenant_id == homed.tenant.id
    search = client.get(
        "/api/identifiers/search", params={"q": "精密轴承 P-00042"}, headers=homed.tenant.headers(Role.VIEWER)
    )
    assert [i["handle"] for i in search.json()["items"]] == ["88.118.8/PART-00042"]
    modified = client.put(
        "/api/handles/88.118.8/PART-00042?index=1",
        json={"values": [{"index": 1, "type": "URL", "data": "https://example.com/moved"}]},
        headers=homed.auth,
    )
    assert modified.status_code == 200, modified.text


def test_one_bad_row_in_a_hundred_writes_nothing(client: TestClient, runtime: Runtime, homed: HomedPrefix) -> None:
    batch = rows(100)
    batch[36]["attributes"] = {"material": "steel"}  # part_number is required
    response = client.post(BATCH, json=batch, headers=homed.tenant.headers())
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "batch_rejected"
    assert [(e["line"], e["handle"]) for e in body["errors"]] == [(37, "88.118.8/PART-00036")]
    assert "/part_number" in body["errors"][0]["message"]
    assert "37" in body["detail"]
    assert handle_count(runtime.db) == 0


def test_every_bad_row_is_reported(
    client: TestClient, runtime: Runtime, homed: HomedPrefix, tenant_b: TenantFixture
) -> None:
    home_prefix(runtime, tenant_b, "88.999.1", "b-prefix-secret")
    assert client.post(BATCH, json=rows(1, start=500), headers=homed.tenant.headers()).status_code == 200
    batch = rows(10)
    batch[1]["handle"] = "88.999.1/TAKEN"  # tenant B's prefix
    batch[3]["handle"] = "77.1/NOWHERE"  # not homed here
    batch[4]["handle"] = batch[0]["handle"]  # twice in the batch
    batch[5]["handle"] = "88.118.8/PART-00500"  # already registered
    batch[6]["url"] = ""
    batch[7]["handle"] = "no-slash"
    batch[8]["template"] = "vehicle"
    response = client.post(BATCH, json=batch, headers=homed.tenant.headers())
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert [e["line"] for e in errors] == [2, 4, 5, 6, 7, 8, 9]
    messages = {e["line"]: e["message"] for e in errors}
    assert "not homed" in messages[2]
    assert messages[2] == "prefix '88.999.1' is not homed on this server"  # answers as for an unknown prefix
    assert "twice" in messages[5]
    assert "already exists" in messages[6]
    assert handle_count(runtime.db) == 1
    assert handle_count(runtime.db, "88.999.1") == 0


def test_json_lines_and_permissions(client: TestClient, runtime: Runtime, homed: HomedPrefix) -> None:
    lines = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows(3)).encode()
    viewer = client.post(BATCH, content=lines, headers=homed.tenant.headers(Role.VIEWER))
    assert viewer.status_code == 403
    assert client.post(BATCH, content=lines).status_code == 401
    ok = client.post(BATCH, content=lines, headers=homed.tenant.headers())
    assert ok.json() == {"registered": 3}
    broken = client.post(
        BATCH, content=b'{"handle": "88.118.8/X1", "url": "https://x"}\nnot json\n[1]\n', headers=homed.tenant.headers()
    )
    assert [e["line"] for e in broken.json()["errors"]] == [2, 3]
    assert client.post(BATCH, content=b"[]", headers=homed.tenant.headers()).status_code == 422
    assert client.post(BATCH, content=b'{"a": 1', headers=homed.tenant.headers()).status_code == 422
    assert handle_count(runtime.db) == 3


CSV_HEADER = "handle,url,template,attr.part_number,attr.material,value.SERIAL\n"


def test_import_csv_with_the_iip_command(iip: IipCommand, cli_db: Database, tmp_path: Path) -> None:  # noqa: F811
    assert iip("db", "upgrade").returncode == 0
    assert iip("tenant", "create", "acme").returncode == 0
    created = iip("id", "prefix", "create", "88.118.8", "--tenant", "acme", stdin="prefix-secret-1\n")
    assert created.returncode == 0, created.stderr

    good = tmp_path / "good.csv"
    body = "".join(f"88.118.8/C-{n},https://example.com/c/{n},part,C-{n},铸铁,SN{n}\n" for n in range(25))
    good.write_text(CSV_HEADER + body, encoding="utf-8")
    imported = iip("id", "import", str(good), "--tenant", "acme")
    assert imported.returncode == 0, imported.stderr
    assert "registered 25 handles" in imported.stdout
    assert handle_count(cli_db) == 25

    bad = tmp_path / "bad.csv"
    bad_rows = [
        "88.118.8/D-1,https://example.com/d/1,part,D-1,steel,S1",
        "88.118.8/D-2,https://example.com/d/2,part,,steel,S2",  # no part number
        "88.118.8/D-3,https://example.com/d/3,part,D-3,steel,S3",
        "99.9/D-4,https://example.com/d/4,part,D-4,steel,S4",  # unknown prefix
        "88.118.8/C-1,https://example.com/d/5,part,D-5,steel,S5",  # already registered
    ]
    bad.write_text(CSV_HEADER + "\n".join(bad_rows) + "\n", encoding="utf-8")
    refused = iip("id", "import", str(bad), "--tenant", "acme")
    assert refused.returncode == 1
    assert "Traceback" not in refused.stderr
    assert "3 rows have errors (lines 3, 5, 6)" in refused.stderr
    assert "line 3:" in refused.stdout
    assert "line 5:" in refused.stdout
    assert "line 6:" in refused.stdout
    assert handle_count(cli_db) == 25

    jsonl = tmp_path / "more.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows(4)) + "\n", encoding="utf-8")
    assert iip("id", "import", str(jsonl), "--tenant", "acme").returncode == 0
    assert handle_count(cli_db) == 29
    searched = iip("id", "search", "GCr15", "--tenant", "acme", "--json")
    assert searched.returncode == 0, searched.stderr
    assert json.loads(searched.stdout)["total"] == 4
