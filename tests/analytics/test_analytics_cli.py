"""`iip analytics train|evaluate|score|list|deploy|retire` end to end, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import uuid
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from iip.kernel.audit import AuditEntry
from iip.kernel.auth import AccessService
from iip.kernel.bus import MemoryBus
from iip.kernel.runtime import Runtime
from iip.kernel.settings import Settings
from iip.telemetry.public import PointBatchBuilder, store_points
from tests.analytics.support import RUL_QUICK, RUL_VARIABLES, VARIABLES, csv_bytes, faulty, normal_data, rul_fleet_csv
from tests.cli.conftest import InProcessIip, one_line
from tests.conftest import CliDatabase

START = dt.datetime(2026, 1, 5, 8, 0, tzinfo=dt.UTC)


@pytest.fixture
def tenant(iip: InProcessIip) -> str:
    name = f"t-{uuid.uuid4().hex[:12]}"
    assert iip("tenant", "create", name).exit_code == 0
    return name


def write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def trained(iip: InProcessIip, tenant: str, tmp_path: Path, name: str = "reactor") -> None:
    source = write(tmp_path / "normal.csv", csv_bytes(normal_data(300)))
    result = iip("analytics", "train", "--tenant", tenant, "--name", name, "--csv", str(source))
    assert result.exit_code == 0, result.output


def test_train_list_and_audit(iip: InProcessIip, tenant: str, tmp_path: Path, cli_database: CliDatabase) -> None:
    source = write(tmp_path / "normal.csv", csv_bytes(normal_data(300)))
    result = iip(
        "analytics", "train", "--tenant", tenant, "--name", "reactor", "--csv", str(source), "--param", "components=2"
    )
    assert result.exit_code == 0, result.output
    line = one_line(result.stdout)
    assert line.startswith("trained reactor@1 (pca, 5 variables, 240 rows): limits t2 ")
    assert "false-alarm rate on 60 held-out rows" in line
    again = iip(
        "analytics", "train", "--tenant", tenant, "--name", "reactor", "--csv", str(source), "--kind", "dpca", "--json"
    )
    assert json.loads(again.stdout)["version"] == 2
    listed = json.loads(iip("analytics", "list", "--tenant", tenant, "--json").stdout)
    assert [(m["name"], m["version"], m["kind"], m["status"], m["variables"]) for m in listed] == [
        ("reactor", 2, "dpca", "trained", 5)
    ]
    table = iip("analytics", "list", "--tenant", tenant)
    assert "reactor" in table.stdout
    assert "dpca" in table.stdout
    with cli_database.db.session() as session:
        owner = AccessService(session).tenant_by_name(tenant).id
        actions = session.scalars(
            select(AuditEntry.action).where(AuditEntry.tenant_id == owner).order_by(AuditEntry.seq)
        ).all()
    assert actions == ["cli tenant.create", "analytics.model.train", "analytics.model.train"]


def test_bad_training_input_is_one_readable_line(iip: InProcessIip, tenant: str, tmp_path: Path) -> None:
    gap = write(tmp_path / "gap.csv", b"temp,flow\n1,2\n3,\n")
    cases = [
        (["--csv", str(gap)], "error: missing value at row 2 (line 3), column 'flow'"),
        (["--csv", str(tmp_path / "nowhere.csv")], "error: cannot read"),
        (["--csv", str(gap), "--device", "d"], "error: train on one source"),
        ([], "error: name the training data"),
        (["--device", "d", "--metrics", "a,b", "--from", "yesterday", "--to", "2026-01-05T08:00:00Z"], "--from:"),
        (["--csv", str(gap), "--param", "oops"], "--param 'oops': write it as NAME=VALUE"),
    ]
    for options, message in cases:
        result = iip("analytics", "train", "--tenant", tenant, "--name", "m", *options)
        assert result.exit_code == 1, (options, result.output)
        assert message in one_line(result.stderr), result.stderr
    assert json.loads(iip("analytics", "list", "--tenant", tenant, "--json").stdout) == []
    unknown = iip("analytics", "list", "--tenant", "no-such-tenant")
    assert unknown.exit_code == 1
    assert "tenant" in unknown.stderr


def test_train_on_stored_telemetry(iip: InProcessIip, tenant: str, cli_database: CliDatabase, tmp_path: Path) -> None:
    with cli_database.db.session() as session:
        owner = AccessService(session).tenant_by_name(tenant).id
    builder = PointBatchBuilder(owner, "test")
    for i, row in enumerate(normal_data(120).tolist()):
        for name, value in zip(VARIABLES, row, strict=True):
            builder.add("r-101", name, int(START.timestamp() * 1000) + i * 10_000, value)
    settings = Settings(data_dir=tmp_path / "var", database_url=cli_database.url, log_level="WARNING")
    store_points(Runtime(settings=settings, db=cli_database.db, bus=MemoryBus()), builder.build())
    common = ["analytics", "train", "--tenant", tenant, "--name", "r101", "--device", "r-101"]
    span = ["--from", "2026-01-05T08:00:00Z", "--to", "2026-01-05T08:20:00Z", "--interval", "10"]
    result = iip(*common, "--metrics", ",".join(VARIABLES), *span, "--json")
    assert result.exit_code == 0, result.output
    version = json.loads(result.stdout)
    assert version["data_source"]["devices"] == ["r-101"]
    assert version["data_source"]["rows"] == 120
    longer = iip(*common, "--metrics", "temp,flow", *span[:3], "2026-01-05T08:30:00Z", *span[4:])
    assert longer.exit_code == 1
    assert "gap in 'temp': no good point between 2026-01-05T08:20:00.000Z" in one_line(longer.stderr)


def test_evaluate_and_score_a_file(iip: InProcessIip, tenant: str, tmp_path: Path) -> None:
    normal = normal_data(400)
    source = write(tmp_path / "normal.csv", csv_bytes(normal[:300]))
    assert iip("analytics", "train", "--tenant", tenant, "--name", "reactor", "--csv", str(source)).exit_code == 0
    rows = np.vstack([normal[300:350], faulty(normal[350:400], shift=4.0)])
    labelled = write(tmp_path / "test.csv", csv_bytes(rows, labels=["0"] * 50 + ["1"] * 50))
    result = iip(
        "analytics", "evaluate", "reactor@1", str(labelled), "--tenant", tenant, "--label-column", "label", "--json"
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["model"], summary["rows"], summary["normal_rows"], summary["fault_rows"]) == (
        "reactor@1",
        100,
        50,
        50,
    )
    assert summary["false_alarm_rate"] <= 0.1
    assert summary["detection_rate"] >= 0.9
    text = one_line(
        iip("analytics", "evaluate", "reactor", str(labelled), "--tenant", tenant, "--label-column", "label").stdout
    )
    assert text.startswith("reactor@1 on test.csv: 100 of 100 rows scored")
    assert "detection rate" in text
    # Scores per row, as CSV on stdout or JSON in a file; a row lacking a value is named, not scored.
    partial = rows[:3].copy()
    partial[1, VARIABLES.index("level")] = np.nan
    lacking = write(tmp_path / "partial.csv", csv_bytes(partial).replace(b"nan", b""))
    scored = iip("analytics", "score", "reactor", str(lacking), "--tenant", tenant)
    assert scored.exit_code == 0, scored.output
    table = list(csv.DictReader(io.StringIO(scored.stdout)))
    assert [(r["row"], r["scored"], r["missing"]) for r in table] == [
        ("1", "True", ""),
        ("2", "False", "level"),
        ("3", "True", ""),
    ]
    assert table[1]["t2"] == ""
    assert float(table[0]["t2"]) >= 0
    out = tmp_path / "scores.json"
    assert iip("analytics", "score", "reactor@1", str(labelled), "--tenant", tenant, "--out", str(out)).exit_code == 0
    per_row = json.loads(out.read_text())
    assert len(per_row) == 100
    assert per_row[60]["alarm"] is True
    assert set(per_row[0]) == {"row", "t2", "spe", "alarm", "scored", "missing"}
    wrong = iip("analytics", "score", "reactor@x", str(labelled), "--tenant", tenant)
    assert wrong.exit_code == 1
    assert "give the version as NAME@NUMBER" in one_line(wrong.stderr)
    absent = iip("analytics", "score", "reactor@9", str(labelled), "--tenant", tenant)
    assert "model 'reactor' has no version 9" in one_line(absent.stderr)
    text_cell = write(tmp_path / "text.csv", b"temp,pressure,flow,level,speed\n1,2,3,4,x\n")
    refused = iip("analytics", "score", "reactor", str(text_cell), "--tenant", tenant)
    assert "non-numeric value 'x' at row 1 (line 2), column 'speed'" in one_line(refused.stderr)


def test_deploy_and_retire(iip: InProcessIip, tenant: str, tmp_path: Path) -> None:
    trained(iip, tenant, tmp_path)
    deployed = iip("analytics", "deploy", "reactor@1", "--tenant", tenant, "--device", "pump-1")
    assert one_line(deployed.stdout) == "deployed reactor@1 to pump-1"
    twice = iip("analytics", "deploy", "reactor", "--tenant", tenant, "--device", "pump-1")
    assert twice.exit_code == 1
    assert "already deployed to 'pump-1'" in one_line(twice.stderr)
    [model] = json.loads(iip("analytics", "list", "--tenant", tenant, "--json").stdout)
    assert model["status"] == "deployed"
    retired = iip("analytics", "retire", "reactor@1", "--tenant", tenant)
    assert one_line(retired.stdout) == "reactor@1: 1 deployment(s) ended; status retired"


def test_a_rul_model_from_the_command_line(iip: InProcessIip, tenant: str, tmp_path: Path) -> None:
    training, _ = rul_fleet_csv(12)
    source = write(tmp_path / "fleet.csv", training)
    common = ["analytics", "train", "--tenant", tenant, "--name", "engine", "--kind", "rul", "--csv", str(source)]
    quick = [f"--param={k}={v}" for k, v in RUL_QUICK.items()]
    lacking = iip(*common, *quick)
    assert "error: a rul model needs the unit column" in one_line(lacking.stderr)
    result = iip(*common, "--unit-column", "unit", "--variables", ",".join(RUL_VARIABLES), *quick, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["metrics"]["units"] == 12
    in_service, truth = rul_fleet_csv(3, seed=5, cut=True)
    fleet = write(tmp_path / "service.csv", in_service)
    evaluate = ["analytics", "evaluate", "engine", str(fleet), "--tenant", tenant]
    assert "name the --unit-column" in one_line(iip(*evaluate).stderr)
    summary = one_line(iip(*evaluate, "--unit-column", "unit", "--label-column", "truth").stdout)
    assert summary.startswith("engine@1 on service.csv: RUL of 3 of 3 units, RMSE ")
    scored = iip("analytics", "score", "engine", str(fleet), "--tenant", tenant, "--unit-column", "unit")
    rows = list(csv.DictReader(io.StringIO(scored.stdout)))
    assert [r["unit"] for r in rows] == list(truth)
    assert all(float(r["lower"]) <= float(r["rul"]) <= float(r["upper"]) for r in rows)
