"""`iip trace codes issue|verify|keys` in-process, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import json
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from iip.kernel.audit import AuditEntry
from iip.kernel.auth import AccessService
from iip.kernel.db import Database
from iip.kernel.settings import Settings
from iip.traceability.authenticity.codes import parse_uri
from iip.traceability.authenticity.models import CodeBatch, CodeScan
from tests.cli.conftest import InProcessIip, one_line

GTIN = "09506000134352"


@pytest.fixture
def iip(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, settings: Settings, migrated_db: Database) -> InProcessIip:
    monkeypatch.chdir(tmp_path)
    env = {"IIP_DATA_DIR": str(settings.data_dir), "IIP_DATABASE_URL": settings.database_url, "IIP_LOG_FORMAT": "text"}
    return InProcessIip(monkeypatch, env)


@pytest.fixture
def tenant(migrated_db: Database) -> str:
    name = f"t-{uuid.uuid4().hex[:10]}"
    with migrated_db.session() as session:
        AccessService(session).create_tenant(name)
    return name


def test_issue_writes_the_codes_and_verify_checks_them(
    iip: InProcessIip, tenant: str, tmp_path: Path, migrated_db: Database
) -> None:
    out = tmp_path / "codes.csv"
    result = iip(
        "trace", "codes", "issue", "--tenant", tenant, "--gtin", GTIN, "--count", "3", "--lot", "L1",
        "--expiry", "2027-03-31", "--market", "CN", "--market", "CN-GD 23.13 113.26",
        "--resolver", "https://trace.example.com/v", "--out", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    line = one_line(result.stdout)
    assert line.startswith(f"issued 3 codes for GTIN {GTIN} in batch ")
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert len(rows) == 3
    assert all(row["uri"].startswith(f"https://trace.example.com/v/01/{GTIN}/10/L1/21/") for row in rows)
    assert {row["expiry"] for row in rows} == {"2027-03-31"}
    with migrated_db.session() as session:
        batch = session.scalar(select(CodeBatch).where(CodeBatch.gtin == GTIN))
        assert batch is not None
        assert batch.markets == [{"code": "CN"}, {"code": "CN-GD", "latitude": 23.13, "longitude": 113.26}]
        assert batch.single_use is True
        audited = session.scalar(select(AuditEntry).where(AuditEntry.action == "cli traceability.codes.issue"))
        assert audited is not None
        assert audited.object_id == batch.id

    uri = rows[0]["uri"]
    checked = iip("trace", "codes", "verify", uri)
    assert checked.exit_code == 0, checked.output
    assert one_line(checked.stdout) == "genuine: the signature holds and the code was issued"
    twice = iip("trace", "codes", "verify", uri, "--json")
    assert json.loads(twice.stdout)["status"] == "genuine"  # checking records no scan, so no second one either
    with migrated_db.session() as session:
        assert session.scalar(select(func.count()).select_from(CodeScan)) == 0
    serial = parse_uri(uri).serial
    altered = iip("trace", "codes", "verify", uri.replace(serial, serial[::-1]))
    assert altered.exit_code == 1
    assert altered.stdout.startswith("unknown: ")


def test_offline_verification_with_the_printed_key_set(iip: InProcessIip, tenant: str, tmp_path: Path) -> None:
    result = iip(
        "trace", "codes", "issue", "--tenant", tenant, "--gtin", GTIN, "--count", "1",
        "--resolver", "https://trace.example.com/v", "--out", "-",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    uri = result.stdout.splitlines()[1].split(",")[0]
    keys = iip("trace", "codes", "keys")
    assert keys.exit_code == 0
    (tmp_path / "keys.json").write_text(keys.stdout, encoding="utf-8")
    offline = iip("trace", "codes", "verify", uri, "--keys", str(tmp_path / "keys.json"), "--json")
    assert offline.exit_code == 0, offline.output
    assert json.loads(offline.stdout) == {
        "ok": True,
        "status": "signed",
        "reason": "the signature holds",
        "key_id": parse_uri(uri).key_id,
    }
    forged = uri[:-3] + ("AAA" if not uri.endswith("AAA") else "BBB")
    assert iip("trace", "codes", "verify", forged, "--keys", str(tmp_path / "keys.json")).exit_code == 1


def test_issue_needs_a_resolver_base_and_a_known_tenant(iip: InProcessIip, tenant: str) -> None:
    missing = iip("trace", "codes", "issue", "--tenant", tenant, "--gtin", GTIN, "--count", "1")
    assert missing.exit_code == 1
    assert "no resolver base" in missing.output
    iip.env["IIP_IDENTIFIERS__BASE_URL"] = "https://iip.example.com"
    with_base = iip("trace", "codes", "issue", "--tenant", tenant, "--gtin", GTIN, "--count", "1", "--out", "-")
    assert with_base.exit_code == 0, with_base.output
    assert with_base.stdout.splitlines()[1].startswith(f"https://iip.example.com/v/01/{GTIN}/21/")
    unknown = iip("trace", "codes", "issue", "--tenant", "nobody", "--gtin", GTIN, "--count", "1")
    assert unknown.exit_code == 1
    bad = iip("trace", "codes", "issue", "--tenant", tenant, "--gtin", "9506000134353", "--count", "1")
    assert bad.exit_code == 1
    assert "check digit" in bad.output
