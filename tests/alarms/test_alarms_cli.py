"""`iip alarms list|ack|shelve` and `iip rules import|list|test` end to end, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from iip.alarms.models import Alarm
from iip.alarms.rules import ConditionChange
from iip.alarms.service import AlarmService, time_ms
from iip.kernel.audit import AuditEntry
from iip.kernel.auth import AccessService
from iip.kernel.bus import MemoryBus
from iip.kernel.db import Database
from iip.kernel.runtime import Runtime
from iip.kernel.settings import Settings
from iip.telemetry.public import PointBatchBuilder, store_points
from tests.cli.conftest import InProcessIip, one_line
from tests.conftest import CliDatabase

END = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)
RULE: dict[str, Any] = {
    "key": "boiler.pressure.high",
    "kind": "threshold",
    "title": "Boiler pressure high",
    "scope": {"profile": "boiler"},
    "metric": "pressure",
    "high": 1.6,
    "priority": "high",
}


@pytest.fixture
def tenant(iip: InProcessIip) -> str:
    name = f"t-{uuid.uuid4().hex[:12]}"
    assert iip("tenant", "create", name).exit_code == 0
    return name


def tenant_id(db: Database, name: str) -> str:
    with db.session() as session:
        return AccessService(session).tenant_by_name(name).id


def write(path: Path, document: Any) -> Path:
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    return path


def raise_alarms(db: Database, tenant: str, *devices: str) -> dict[str, str]:
    """What evaluation would report: the rule active on each device. Returns device -> alarm id."""
    owner = tenant_id(db, tenant)
    changes = [ConditionChange(owner, RULE["key"], 1, device, time_ms(END), active=True) for device in devices]
    with db.session() as session:
        AlarmService(session).apply(changes)
        rows = session.scalars(select(Alarm).where(Alarm.tenant_id == owner))
        return {row.device: row.id for row in rows}


def imported(iip: InProcessIip, tenant: str, tmp_path: Path) -> None:
    result = iip("rules", "import", str(write(tmp_path / "rules.yaml", [RULE])), "--tenant", tenant)
    assert result.exit_code == 0, result.output


def test_rules_import_and_list(iip: InProcessIip, tenant: str, tmp_path: Path, cli_database: CliDatabase) -> None:
    source = write(tmp_path / "rules.yaml", [RULE, {**RULE, "key": "boiler.pressure.low", "high": None, "low": 0.2}])
    first = iip("rules", "import", str(source), "--tenant", tenant)
    assert first.exit_code == 0, first.output
    assert first.stdout.splitlines() == [
        "created rule boiler.pressure.high",
        "created rule boiler.pressure.low",
        f"imported {source}: 2 created, 0 updated, 0 unchanged",
    ]
    again = iip("rules", "import", str(source), "--tenant", tenant)
    assert one_line(again.stdout) == f"imported {source}: 0 created, 0 updated, 2 unchanged"
    from_stdin = iip(
        "rules", "import", "-", "--tenant", tenant, "--format", "json", stdin=json.dumps([{**RULE, "high": 2.0}])
    )
    assert from_stdin.stdout.splitlines()[0] == "updated rule boiler.pressure.high"

    listed = iip("rules", "list", "--tenant", tenant, "--json")
    assert listed.exit_code == 0, listed.output
    assert [(r["key"], r["version"], r["enabled"]) for r in json.loads(listed.stdout)] == [
        ("boiler.pressure.high", 2, True),
        ("boiler.pressure.low", 1, True),
    ]
    table = iip("rules", "list", "--tenant", tenant)
    assert "boiler.pressure.low" in table.stdout

    with cli_database.db.session() as session:
        owner = AccessService(session).tenant_by_name(tenant).id
        actions = session.scalars(
            select(AuditEntry.action).where(AuditEntry.tenant_id == owner).order_by(AuditEntry.seq)
        )
        assert list(actions) == [
            "cli tenant.create",
            "alarms.rule.import",
            "alarms.rule.import",
            "cli rules.import",
            "cli rules.import",
            "alarms.rule.import",
            "cli rules.import",
        ]


def test_rules_import_errors_change_nothing(iip: InProcessIip, tenant: str, tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.yaml", [RULE, {**RULE, "key": "two", "low": 3, "high": 2}, {"key": "three"}])
    result = iip("rules", "import", str(bad), "--tenant", tenant)
    assert result.exit_code == 1
    assert "[1]: low must be below high" in result.stderr
    assert "error:" in result.stderr
    assert "(and " in result.stderr
    assert json.loads(iip("rules", "list", "--tenant", tenant, "--json").stdout) == []
    missing = iip("rules", "import", str(tmp_path / "nowhere.yaml"), "--tenant", tenant)
    assert missing.exit_code == 1
    assert "cannot read" in missing.stderr
    unknown = iip("rules", "import", str(bad), "--tenant", "no-such-tenant")
    assert unknown.exit_code == 1
    assert "tenant" in unknown.stderr


def test_alarms_list_ack_and_shelve(iip: InProcessIip, tenant: str, tmp_path: Path, cli_database: CliDatabase) -> None:
    imported(iip, tenant, tmp_path)
    ids = raise_alarms(cli_database.db, tenant, "boiler-1", "boiler-2")
    listed = iip("alarms", "list", "--tenant", tenant, "--json")
    assert listed.exit_code == 0, listed.output
    assert sorted((a["device"], a["state"]) for a in json.loads(listed.stdout)) == [
        ("boiler-1", "unack_active"),
        ("boiler-2", "unack_active"),
    ]
    table = iip("alarms", "list", "--tenant", tenant)
    assert ids["boiler-1"] in table.stdout
    assert "unack_active" in table.stdout

    acked = iip("alarms", "ack", ids["boiler-1"], ids["boiler-2"], "--tenant", tenant, "--comment", "shift start")
    assert acked.exit_code == 0, acked.output
    assert acked.stdout.splitlines() == [f"acknowledged {ids['boiler-1']}", f"acknowledged {ids['boiler-2']}"]
    again = iip("alarms", "ack", ids["boiler-1"], "--tenant", tenant)
    assert one_line(again.stdout) == f"skipped {ids['boiler-1']}: nothing to acknowledge"
    unknown = iip("alarms", "ack", uuid.uuid4().hex, "--tenant", tenant)
    assert unknown.exit_code == 1
    assert "not found" in unknown.stderr

    shelved = iip(
        "alarms", "shelve", ids["boiler-2"], "--tenant", tenant, "--minutes", "90", "--reason", "recalibration"
    )
    assert shelved.exit_code == 0, shelved.output
    assert one_line(shelved.stdout).startswith(f"shelved {ids['boiler-2']} until ")
    too_long = iip("alarms", "shelve", ids["boiler-1"], "--tenant", tenant, "--minutes", "2000", "--reason", "x")
    assert too_long.exit_code == 1
    assert "at most 24 hours" in too_long.stderr
    twice = iip("alarms", "shelve", ids["boiler-2"], "--tenant", tenant, "--minutes", "5", "--reason", "x")
    assert twice.exit_code == 1
    assert "already shelved" in twice.stderr

    state = {a["device"]: a for a in json.loads(iip("alarms", "list", "--tenant", tenant, "--json").stdout)}
    assert (state["boiler-1"]["state"], state["boiler-1"]["acknowledged_by"].startswith("cli:")) == ("ack_active", True)
    assert (state["boiler-2"]["shelved"], state["boiler-2"]["announced"]) == (True, False)
    only_shelved = iip("alarms", "list", "--tenant", tenant, "--state", "normal", "--json")
    assert json.loads(only_shelved.stdout) == []
    with cli_database.db.session() as session:
        owner = tenant_id(cli_database.db, tenant)
        actions = session.scalars(select(AuditEntry.action).where(AuditEntry.tenant_id == owner))
        assert {"cli alarms.acknowledge", "cli alarms.shelve"} <= set(actions)


def test_rules_test_replays_stored_points(
    iip: InProcessIip, tenant: str, tmp_path: Path, cli_database: CliDatabase
) -> None:
    imported(iip, tenant, tmp_path)
    owner = tenant_id(cli_database.db, tenant)
    settings = Settings(data_dir=cli_database.folder / "var", database_url=cli_database.url)
    runtime = Runtime(settings=settings, db=cli_database.db, bus=MemoryBus())
    builder = PointBatchBuilder(owner, "test")
    start_ms = time_ms(END - dt.timedelta(hours=6))
    # Every 10 minutes for 6 hours: above the limit for 30 minutes twice, and once before the day.
    for step in range(36):
        value = 1.8 if step in (6, 7, 8, 20, 21, 22) else 1.2
        builder.add("boiler-1", "pressure", start_ms + step * 600_000, value)
    builder.add("boiler-1", "pressure", time_ms(END - dt.timedelta(hours=30)), 1.9)
    builder.add("boiler-2", "pressure", start_ms, 5.0)  # another device: not replayed
    store_points(runtime, builder.build())

    result = iip(
        "rules",
        "test",
        "boiler.pressure.high",
        "--tenant",
        tenant,
        "--device",
        "boiler-1",
        "--end",
        END.isoformat(),
        "--json",
    )
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert (answer["points"], answer["activations"], answer["active_ms"]) == (36, 2, 2 * 30 * 60_000)
    assert answer["start"] == (END - dt.timedelta(hours=24)).isoformat()
    text = iip(
        "rules", "test", "boiler.pressure.high", "--tenant", tenant, "--device", "boiler-1", "--end", END.isoformat()
    )
    assert "would have fired 2 time(s), active for 1h00m00s" in one_line(text.stdout)
    quiet = iip(
        "rules", "test", "boiler.pressure.high", "--tenant", tenant, "--device", "boiler-3", "--end", END.isoformat()
    )
    assert "(0 points): would have fired 0 time(s)" in one_line(quiet.stdout)
    missing = iip("rules", "test", "no.rule", "--tenant", tenant, "--device", "boiler-1")
    assert missing.exit_code == 1
    assert "not found" in missing.stderr
    naive = iip(
        "rules", "test", "boiler.pressure.high", "--tenant", tenant, "--device", "boiler-1", "--end", "2026-03-02T12:00"
    )
    assert naive.exit_code == 1
    assert "zone" in naive.stderr
