"""`iip devices import|export|list|show|token` on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from iip.devices.models import Device
from iip.devices.service import token_digest
from tests.cli.conftest import InProcessIip, one_line
from tests.conftest import CliDatabase
from tests.devices.test_registry import sample_document


@pytest.fixture
def tenant(iip: InProcessIip) -> str:
    name = f"t-{uuid.uuid4().hex[:12]}"
    assert iip("tenant", "create", name).exit_code == 0
    return name


def write(path: Path, document: Any) -> Path:
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    return path


def test_import_export_list_show_and_tokens(
    iip: InProcessIip, tenant: str, tmp_path: Path, cli_database: CliDatabase
) -> None:
    document = sample_document()
    source = write(tmp_path / "plant.yaml", document)
    first = iip("devices", "import", str(source), "--tenant", tenant)
    assert first.exit_code == 0, first.output
    assert "created profile pump" in first.stdout
    assert "created gateway gw-1" in first.stdout
    assert "created device pump-01" in first.stdout
    assert first.stdout.strip().endswith("5 created, 0 updated, 0 unchanged")
    again = iip("devices", "import", str(source), "--tenant", tenant)
    assert again.exit_code == 0, again.output
    assert again.stdout.strip().splitlines() == [f"imported {source}: 0 created, 0 updated, 5 unchanged"]

    assert iip("devices", "export", "out.json", "--tenant", tenant).exit_code == 0
    exported = json.loads((tmp_path / "out.json").read_text())
    assert [d["key"] for d in exported["devices"]] == ["meter-01", "pump-01"]
    on_stdout = iip("devices", "export", "--tenant", tenant)
    assert yaml.safe_load(on_stdout.stdout) == exported
    document["devices"][0]["site"] = "plant-c"
    changed = iip("devices", "import", "-", "--tenant", tenant, stdin=yaml.safe_dump(document))
    assert changed.exit_code == 0, changed.output
    assert "updated device pump-01" in changed.stdout

    listed = iip("devices", "list", "--tenant", tenant, "--site", "plant-c")
    assert listed.exit_code == 0, listed.output
    assert "pump-01" in listed.stdout
    assert "meter-01" not in listed.stdout
    as_json = json.loads(iip("devices", "list", "--tenant", tenant, "--profile", "meter", "--json").stdout)
    assert [d["key"] for d in as_json] == ["meter-01"]
    shown = iip("devices", "show", "pump-01", "--tenant", tenant)
    assert shown.exit_code == 0, shown.output
    assert "10.0.4.21" in shown.stdout
    assert "gw-1" in shown.stdout

    rotated = iip("devices", "token", "rotate", "pump-01", "--tenant", tenant)
    assert rotated.exit_code == 0, rotated.output
    token = one_line(rotated.stdout)
    assert token.startswith("iipd_")
    with cli_database.db.session() as session:
        device = session.scalar(select(Device).where(Device.key == "pump-01", Device.token_hash == token_digest(token)))
        assert device is not None
    assert device.token_prefix is not None
    assert device.token_prefix in iip("devices", "show", "pump-01", "--tenant", tenant).stdout
    assert iip("devices", "token", "revoke", "pump-01", "--tenant", tenant).exit_code == 0
    with cli_database.db.session() as session:
        assert session.scalar(select(Device.token_hash).where(Device.id == device.id)) is None


def test_errors_are_readable_lines_and_change_nothing(iip: InProcessIip, tenant: str, tmp_path: Path) -> None:
    document = sample_document()
    document["devices"].append({"key": "pump-02", "profile": "pumpx"})
    document["devices"].append({"key": "pump-03", "profile": "pump", "connection": {"port": 502}})
    refused = iip("devices", "import", str(write(tmp_path / "bad.yaml", document)), "--tenant", tenant)
    assert refused.exit_code == 1
    lines = refused.stderr.strip().splitlines()
    assert lines[:2] == ["devices[2].profile: unknown profile 'pumpx'", "devices[3].connection.host: Field required"]
    assert lines[-1] == "error: 2 errors, the first: devices[2].profile: unknown profile 'pumpx'"
    assert json.loads(iip("devices", "list", "--tenant", tenant, "--json").stdout) == []

    document["devices"].pop()
    single = iip("devices", "import", str(write(tmp_path / "bad.yaml", document)), "--tenant", tenant)
    assert one_line(single.stderr) == "error: devices[2].profile: unknown profile 'pumpx'"
    (tmp_path / "broken.yaml").write_text("devices: [\n")
    broken = iip("devices", "import", str(tmp_path / "broken.yaml"), "--tenant", tenant)
    assert one_line(broken.stderr).startswith("error: not valid YAML")
    assert one_line(iip("devices", "import", "missing.yaml", "--tenant", tenant).stderr).startswith(
        "error: cannot read missing.yaml"
    )
    assert one_line(iip("devices", "list", "--tenant", "nobody").stderr) == "error: tenant 'nobody' not found"
    assert one_line(iip("devices", "show", "nope", "--tenant", tenant).stderr) == "error: device 'nope' not found"
    assert iip("devices", "token", "rotate", "nope", "--tenant", tenant).exit_code == 1
    assert json.loads(iip("devices", "list", "--tenant", tenant, "--json").stdout) == []
