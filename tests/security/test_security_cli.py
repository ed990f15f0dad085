"""`iip security pcap|assets|baseline|bulletins` end to end, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from iip.kernel.db import Database
from iip.migrations.runner import upgrade
from tests.cli.conftest import InProcessIip, one_line
from tests.conftest import BACKENDS, database_url
from tests.security.conftest import CSAF, LOOPBACK_CAPTURE, require_dataset, require_raw_sockets
from tests.security.support import ATTACK, TRAINING, capture_path


@dataclass(frozen=True)
class CliDatabase:
    db: Database
    url: str
    folder: Path


@pytest.fixture(scope="module", params=BACKENDS)
def cli_database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliDatabase]:
    """One migrated database per backend for the module; each test makes a tenant of its own."""
    folder = tmp_path_factory.mktemp("security-cli")
    with database_url(str(request.param), folder) as url:
        db = Database(url)
        upgrade(db)
        yield CliDatabase(db, url, folder)
        db.dispose()


@pytest.fixture
def iip(cli_database: CliDatabase, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> InProcessIip:
    monkeypatch.chdir(tmp_path)
    env = {
        "IIP_DATA_DIR": str(cli_database.folder / "var"),
        "IIP_DATABASE_URL": cli_database.url,
        "IIP_LOG_FORMAT": "text",
    }
    return InProcessIip(monkeypatch, env)


@pytest.fixture
def tenant(iip: InProcessIip) -> str:
    name = f"t-{uuid.uuid4().hex[:12]}"
    assert iip("tenant", "create", name).exit_code == 0
    return name


def test_pcap_summary_and_records(iip: InProcessIip, tmp_path: Path) -> None:
    path = capture_path(TRAINING)
    summary = iip("security", "pcap", str(path), "--json")
    assert summary.exit_code == 0, summary.output
    document = json.loads(summary.stdout)
    assert document["frames"] == 3319
    assert document["messages"]["modbus"] > 0
    assert document["error"] == ""
    assert any(h["protocols"] == ["modbus"] for h in document["hosts"])
    records = iip("security", "pcap", str(path), "--records")
    lines = [json.loads(line) for line in records.stdout.splitlines()]
    assert len(lines) == document["messages"]["modbus"]
    assert {line["protocol"] for line in lines} == {"modbus"}
    assert all(line["raw"] and line["frame"] for line in lines)
    table = iip("security", "pcap", str(path))
    assert "modbus messages" in table.stdout
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"hello")
    bad = iip("security", "pcap", str(junk), "--json")
    assert bad.exit_code == 1
    assert json.loads(bad.stdout)["error"] == "not a pcap or pcapng file"
    missing = iip("security", "pcap", str(tmp_path / "none.pcap"))
    assert missing.exit_code == 1
    assert "no such file" in one_line(missing.stderr)


def test_pcap_shows_what_decoding_dropped(iip: InProcessIip, tmp_path: Path) -> None:
    from tests.security.test_capture_drops import LOST, lost_fragment_capture

    path = tmp_path / "lost.pcap"
    path.write_bytes(lost_fragment_capture(tmp_path))
    summary = iip("security", "pcap", str(path), "--json")
    assert summary.exit_code == 0, summary.output
    assert json.loads(summary.stdout)["dropped"] == {LOST: 1}
    table = iip("security", "pcap", str(path))
    assert f"dropped: {LOST}" in " ".join(table.stdout.split())
    whole = iip("security", "pcap", str(capture_path(TRAINING)), "--json")
    assert json.loads(whole.stdout)["dropped"] == {}


def test_assets_baseline_learn_and_check(iip: InProcessIip, tenant: str, tmp_path: Path) -> None:
    listing = tmp_path / "assets.csv"
    listing.write_text("address,name,vendor,criticality\n192.168.1.101,RTU-1,Acme,critical\n")
    imported = iip("security", "assets", "import", str(listing), "--tenant", tenant, "--site", "rtu")
    assert imported.exit_code == 0, imported.output
    assert imported.stdout.strip() == "imported 1 assets"
    learned = iip("security", "baseline", "learn", str(capture_path(TRAINING)), "--tenant", tenant, "--site", "rtu")
    assert learned.exit_code == 0, learned.output
    assert learned.stdout.startswith("baseline version 1 of site 'rtu'")
    checked = iip(
        "security", "baseline", "check", str(capture_path(ATTACK)), "--tenant", tenant, "--site", "rtu", "--json"
    )
    assert checked.exit_code == 0, checked.output
    alerts = json.loads(checked.stdout)
    assert any(a["kind"] == "unauthorized_write" and a["severity"] == "critical" for a in alerts)
    assets = json.loads(iip("security", "assets", "list", "--tenant", tenant, "--json").stdout)
    rtu = next(a for a in assets if a["address"] == "192.168.1.101")
    assert (rtu["name"], rtu["source"], rtu["criticality"]) == ("RTU-1", "imported", "critical")
    assert rtu["protocols"] == ["modbus"]  # what traffic showed is merged into the declared asset
    bad = tmp_path / "bad.csv"
    bad.write_text("address,criticality\n10.0.0.1,extreme\n")
    refused = iip("security", "assets", "import", str(bad), "--tenant", tenant)
    assert refused.exit_code == 1
    assert "row 2" in one_line(refused.stderr)
    no_baseline = iip("security", "baseline", "check", str(capture_path(ATTACK)), "--tenant", tenant, "--site", "x")
    assert no_baseline.exit_code == 1
    assert "no active baseline" in one_line(no_baseline.stderr)


def test_publish_and_list_bulletins(iip: InProcessIip, tenant: str) -> None:
    published = iip(
        "security", "bulletins", "publish", "--title", "Patch PLCs", "--severity", "high", "--body-en", "Now.",
        "--to", tenant, "--deadline", "2030-01-01T00:00:00+08:00",
    )  # fmt: skip
    assert published.exit_code == 0, published.output
    bulletin_id = published.stdout.split()[-1]
    inbox = json.loads(iip("security", "bulletins", "list", "--tenant", tenant, "--json").stdout)
    assert [(b["id"], b["remediation"], b["overdue"]) for b in inbox] == [(bulletin_id, "not_started", False)]
    every = json.loads(iip("security", "bulletins", "list", "--json").stdout)
    mine = next(b for b in every if b["id"] == bulletin_id)
    assert (mine["recipients"], mine["acknowledged"]) == (1, 0)
    naive = iip("security", "bulletins", "publish", "--title", "t", "--severity", "low", "--body-en", "b",
                "--to", tenant, "--deadline", "2030-01-01T00:00")  # fmt: skip
    assert naive.exit_code == 1
    assert "with a zone" in one_line(naive.stderr)


def test_import_advisories_and_match(iip: InProcessIip, tenant: str, tmp_path: Path) -> None:
    folder = tmp_path / "csaf"
    folder.mkdir()
    source = require_dataset(CSAF / "2024" / "icsa-24-011-06.json")
    (folder / source.name).write_bytes(source.read_bytes())
    (folder / "broken.json").write_text("{not json")
    imported = iip("security", "advisories", "import", str(folder))
    assert imported.exit_code == 0, imported.output
    assert "imported 1 advisories, refused 1" in imported.stdout
    assert "broken.json" in imported.stdout
    listing = tmp_path / "assets.csv"
    listing.write_text("address,vendor,model,firmware\n10.9.0.1,Siemens,JT2Go,V14.2\n10.9.0.2,Siemens,JT2Go,V15.0\n")
    assert iip("security", "assets", "import", str(listing), "--tenant", tenant).exit_code == 0
    matched = iip("security", "advisories", "match", "--tenant", tenant, "--json")
    assert matched.exit_code == 0, matched.output
    found = json.loads(matched.stdout)
    assert [(m["address"], m["advisory"], m["status"]) for m in found] == [("10.9.0.1", "ICSA-24-011-06", "affected")]
    assert iip("security", "advisories", "import", str(tmp_path / "none")).exit_code == 1


def test_honeypot_refuses_a_port_in_use(iip: InProcessIip, tenant: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = iip(
            "security", "honeypot", "--tenant", tenant, "--seed", "s", "--host", "127.0.0.1",
            "--modbus-port", str(port), "--s7-port", "0",
        )  # fmt: skip
    assert result.exit_code == 1
    assert "cannot listen" in one_line(result.stderr)


@LOOPBACK_CAPTURE
def test_monitor_watches_an_interface_for_a_while(iip: InProcessIip, tenant: str) -> None:
    require_raw_sockets()
    result = iip("security", "monitor", "lo", "--tenant", tenant, "--site", "cell-1", "--seconds", "0.5")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "monitoring lo for site 'cell-1' (no active baseline: inventory only), for 0.5 s"
    assert "packets" in lines[1]
    assert "new alerts" in lines[2]
    refused = iip("security", "monitor", "no-such-if0", "--tenant", tenant, "--seconds", "0.5")
    assert refused.exit_code == 1
    assert "cannot capture on no-such-if0" in one_line(refused.stderr)
