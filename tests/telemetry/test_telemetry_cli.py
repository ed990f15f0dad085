"""`iip telemetry query|export|retention|maintain` against SQLite and PostgreSQL, in process."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest

from iip.kernel.auth import AccessService
from iip.kernel.db import Database
from iip.migrations.runner import upgrade
from iip.telemetry.service import iso_time
from iip.telemetry.store import DAY, MINUTE, TimeSeriesStore
from tests.cli.conftest import InProcessIip, one_line
from tests.telemetry.test_store import batch

# Midnight UTC forty days ago: inside the default retention (400 days), outside a 30-day one.
T0 = (time.time_ns() // 1_000_000 // DAY - 40) * DAY
DAY0 = iso_time(T0)[:10]
RANGE = ("--start", iso_time(T0), "--end", str(T0 + 10 * MINUTE))


@pytest.fixture
def cli_db(db_url: str) -> Iterator[Database]:
    """The database the commands use, migrated."""
    db = Database(db_url)
    upgrade(db)
    yield db
    db.dispose()


@pytest.fixture
def iip(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, db_url: str) -> InProcessIip:
    monkeypatch.chdir(tmp_path)
    env = {"IIP_DATA_DIR": str(tmp_path / "var"), "IIP_DATABASE_URL": db_url, "IIP_LOG_FORMAT": "text"}
    return InProcessIip(monkeypatch, env)


@pytest.fixture
def tenant_id(cli_db: Database) -> str:
    with cli_db.session() as session:
        return AccessService(session).create_tenant("acme").id


@pytest.fixture
def press(cli_db: Database, tenant_id: str) -> list[tuple[int, float]]:
    points = [(T0 + i * 15_000, float(i % 4)) for i in range(20)]
    store = TimeSeriesStore(cli_db)
    store.write(batch(tenant_id, [("press-7", "temp", ts, value) for ts, value in points]))
    store.write(batch(tenant_id, [("press-7", "speed", T0, 1.5)]))
    return points


def test_query_shows_points_and_buckets(iip: InProcessIip, press: list[tuple[int, float]]) -> None:
    result = iip("telemetry", "query", "--device", "press-7", "--metric", "temp", *RANGE, "--limit", "3")
    assert result.exit_code == 0, result.output
    assert f"{DAY0}T00:00:00.000Z" in result.output
    assert f"{DAY0}T00:00:30.000Z" in result.output
    assert f"{DAY0}T00:00:45.000Z" not in result.output
    assert "showing the first 3 points" in result.output

    result = iip(
        "telemetry",
        "query",
        "--device",
        "press-7",
        "--metric",
        "temp",
        *RANGE,
        "--bucket",
        "1m",
        "--fn",
        "avg,max,count",
    )
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if f"{DAY0}T00:0" in line]
    assert len(lines) == 5
    # Every minute holds 0, 1, 2, 3: average 1.5, maximum 3, four points.
    assert all(cells[-3:] == ["1.5", "3.0", "4"] for cells in (line.replace("│", " ").split() for line in lines))


def test_export_writes_csv_and_parquet_files(iip: InProcessIip, press: list[tuple[int, float]], tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    result = iip("telemetry", "export", "--device", "press-7", "--format", "csv", "--output", str(target), *RANGE)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert [(r["metric"], int(r["ts_ms"]), float(r["value"])) for r in rows] == [("speed", T0, 1.5)] + [
        ("temp", ts, value) for ts, value in press
    ]

    target = tmp_path / "temp.parquet"
    args = ("--device", "press-7", "--metric", "temp", "--format", "parquet", "--output", str(target), *RANGE)
    result = iip("telemetry", "export", *args)
    assert result.exit_code == 0, result.output
    table = pq.read_table(target)
    assert table.column("value").to_pylist() == [value for _, value in press]
    assert {str(name) for name in table.column("metric").to_pylist()} == {"temp"}


def test_mistakes_are_one_line_and_leave_no_file(
    iip: InProcessIip, press: list[tuple[int, float]], tmp_path: Path
) -> None:
    cases = [
        (("query", "--device", "press-9"), "device 'press-9' has no telemetry"),
        (("query", "--device", "press-7", "--metric", "temp", "--start", "soon"), "start: expected ISO 8601"),
        (("query", "--device", "press-7", "--bucket", "1w"), "bucket: expected"),
        (("query", "--device", "press-7", "--fn", "max"), "--fn needs --bucket"),
        (("query", "--device", "press-7", "--tenant", "nobody"), "tenant 'nobody' not found"),
        (("export", "--device", "press-9", "--output", str(tmp_path / "x.csv")), "has no telemetry"),
        (("export", "--device", "press-7", "--output", str(tmp_path / "no" / "x.csv")), "no directory"),
        (("retention", "--tenant", "acme", "--days", "3", "--default"), "not both"),
    ]
    for args, message in cases:
        result = iip("telemetry", *args)
        assert result.exit_code == 1, (args, result.output)
        assert message in one_line(result.output), args
    assert list(tmp_path.glob("*.csv")) == []
    assert list(tmp_path.glob(".x.csv*")) == []


def test_retention_and_maintain(
    iip: InProcessIip, press: list[tuple[int, float]], tenant_id: str, backend: str
) -> None:
    result = iip("telemetry", "retention", "--tenant", "acme")
    assert "400 days (platform default)" in result.output
    result = iip("telemetry", "retention", "--tenant", "acme", "--days", "30")
    assert result.exit_code == 0, result.output
    assert f"tenant {tenant_id}: raw points kept 30 days (own)" in result.output
    assert "30 days (own)" in iip("telemetry", "retention", "--tenant", tenant_id).output

    # Forty days ago is past 30 days: maintenance deletes the points.
    result = iip("telemetry", "maintain")
    assert result.exit_code == 0, result.output
    # PostgreSQL drops the day's partition whole (no tenant keeps it); SQLite deletes the rows.
    expected = "1 daily partitions dropped" if backend == "postgresql" else "21 points deleted in 1 tenants"
    assert expected in result.output
    result = iip("telemetry", "query", "--device", "press-7", *RANGE)
    assert result.exit_code == 0, result.output
    assert DAY0 not in result.output
