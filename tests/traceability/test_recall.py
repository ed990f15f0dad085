"""Recall of a lot or serial: affected products with location and owner, CSV and XLSX, the API and the CLI."""

from __future__ import annotations

import csv
import io
import json
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from lxml import etree

from iip.kernel.auth import AccessService, Role
from iip.kernel.db import Database
from iip.kernel.errors import Invalid
from iip.traceability.epcis.identifiers import dl_to_urn
from iip.traceability.recall import COLUMNS, Recall, csv_bytes, recall, xlsx_bytes
from tests.api.support import assert_problem
from tests.cli.conftest import InProcessIip
from tests.conftest import TenantFixture
from tests.traceability.genealogy_support import (
    C1,
    C2,
    C3,
    C4,
    DISTRIBUTOR,
    F1,
    P1,
    PAL1,
    PAL2,
    RETAIL_A,
    RETAIL_B,
    S1,
    U1,
    U2,
    U3,
    admin,
    bakery_events,
    capture,
    party,
    place,
    shipping,
)

SHEET_NS = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"


@pytest.fixture
def bakery(migrated_db: Database, tenant_a: TenantFixture) -> str:
    with migrated_db.session() as session:
        capture(session, tenant_a.id, bakery_events())
    return tenant_a.id


def recalled(db: Database, tenant_id: str, **subject: str) -> Recall:
    with db.session() as session:
        return recall(session, admin(tenant_id, Role.VIEWER), **subject)


def test_recall_of_a_lot_lists_every_affected_product_with_location_and_owner(
    migrated_db: Database, bakery: str
) -> None:
    result = recalled(migrated_db, bakery, lot=S1)
    rows = {r.affected_identifier: r for r in result.rows}
    assert set(rows) == {S1, P1, C1, C2, C4, PAL1, PAL2}
    assert rows[C1].location_identifier == place(RETAIL_A)
    assert rows[C1].owner == party(RETAIL_A)
    assert rows[C1].critical_tracking_event == "Receiving"
    assert rows[C1].disposition == "sellable_accessible"
    assert rows[C1].traceability_lot_code == "P1"  # the lot it carries
    assert rows[C2].location_identifier == place(DISTRIBUTOR)
    assert rows[C2].owner == party(DISTRIBUTOR)
    assert rows[PAL2].owner == party(RETAIL_B)
    assert rows[P1].identifier_type == "lot"
    assert (rows[P1].quantity, rows[P1].unit_of_measure) == (72, "")
    assert rows[S1].traceability_lot_code == "S1"
    assert rows[C4].identifier_type == "logistic unit (SSCC)"


def test_recall_by_serial_and_by_urn(migrated_db: Database, bakery: str) -> None:
    by_serial = recalled(migrated_db, bakery, serial=U2)
    assert {r.affected_identifier for r in by_serial.rows} == {U2, C3, PAL2}
    assert by_serial.rows[0].quantity == 1
    by_urn = recalled(migrated_db, bakery, lot=dl_to_urn(F1))
    assert {r.affected_identifier for r in by_urn.rows} == {F1, P1, U1, U2, U3, C1, C2, C3, C4, PAL1, PAL2}
    with pytest.raises(Invalid):
        recalled(migrated_db, bakery, lot=U1)  # a serial is not a lot
    with pytest.raises(Invalid):
        recalled(migrated_db, bakery, serial=F1)
    with pytest.raises(Invalid):
        recalled(migrated_db, bakery, lot=F1, serial=U1)


def test_a_product_in_transit_shows_its_shipment(migrated_db: Database, bakery: str) -> None:
    before = {r.affected_identifier: r for r in recalled(migrated_db, bakery, lot=F1).rows}
    assert before[PAL1].critical_tracking_event == "unpacking"  # C1 came off it; no CTE, the CBV step
    assert before[PAL1].reference_document_number == ""
    with migrated_db.session() as session:
        capture(session, bakery, [shipping("06T08:00", [PAL1], DISTRIBUTOR, RETAIL_A, "817")])
    after = {r.affected_identifier: r for r in recalled(migrated_db, bakery, lot=F1).rows}
    for moved in (PAL1, C2):  # C2 is on PAL1 and moves with it
        row = after[moved]
        assert row.critical_tracking_event == "Shipping", moved
        assert row.location_identifier == place(DISTRIBUTOR)
        assert row.owner == party(RETAIL_A)  # the shipment's owning party
        assert row.ship_from_location == place(DISTRIBUTOR)
        assert row.ship_to_location == place(RETAIL_A)
        assert row.reference_document_type == "Advance Shipping Notice"
        assert row.reference_document_number.endswith(":817")
        assert row.disposition == "in_transit"
    assert after[C1] == before[C1]


def test_csv_export_has_the_fsma_columns_and_one_row_per_product(migrated_db: Database, bakery: str) -> None:
    result = recalled(migrated_db, bakery, lot=S1)
    data = csv_bytes(result.rows)
    assert data.startswith("\ufeff".encode())
    table = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
    assert tuple(table[0]) == COLUMNS
    assert "Traceability Lot Code" in table[0]
    assert "Reference Document Number" in table[0]
    body = [dict(zip(table[0], row, strict=True)) for row in table[1:]]
    assert len(body) == 7
    c1 = next(row for row in body if row["Affected Identifier"] == C1)
    assert c1["Owner"] == party(RETAIL_A)
    assert c1["Quantity"] == "1"
    assert c1["Unit of Measure"] == "EA"


def xlsx_rows(data: bytes) -> list[list[str]]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        sheet = etree.fromstring(archive.read("xl/worksheets/sheet1.xml"))
        shared_xml = archive.read("xl/sharedStrings.xml") if "xl/sharedStrings.xml" in archive.namelist() else None
    shared = [si.findtext(f"{SHEET_NS}t") or "" for si in etree.fromstring(shared_xml)] if shared_xml else []
    rows = []
    for row in sheet.iter(f"{SHEET_NS}row"):
        values = [""] * len(COLUMNS)  # empty cells are not written: place each by its column letter
        for cell in row.iter(f"{SHEET_NS}c"):
            column = sum((ord(c) - 64) * 26**i for i, c in enumerate(reversed(cell.get("r", "A").rstrip("0123456789"))))
            value = cell.findtext(f"{SHEET_NS}v") or ""
            values[column - 1] = shared[int(value)] if cell.get("t") == "s" else value
        rows.append(values)
    return rows


def test_xlsx_export_holds_the_same_table(migrated_db: Database, bakery: str) -> None:
    result = recalled(migrated_db, bakery, lot=S1)
    rows = xlsx_rows(xlsx_bytes(result.rows))
    assert tuple(rows[0]) == COLUMNS
    assert len(rows) == 1 + len(result.rows)
    identifiers = {row[COLUMNS.index("Affected Identifier")] for row in rows[1:]}
    assert identifiers == {r.affected_identifier for r in result.rows}


# --- API ----------------------------------------------------------------------------------------


def test_genealogy_api_backward_and_forward(client: TestClient, bakery: str, tenant_a: TenantFixture) -> None:
    viewer = tenant_a.headers(Role.VIEWER)
    backward = client.get(f"/epcis/genealogy/{quote(PAL2, safe='')}", headers=viewer)
    assert backward.status_code == 200, backward.text
    body = backward.json()
    assert body["root"] == PAL2
    assert {n["id"] for n in body["nodes"]} >= {F1, S1, P1, C3}
    assert {(e["source"], e["target"], e["relation"]) for e in body["edges"]} >= {(S1, P1, "input_of")}
    by_urn = client.get(f"/epcis/genealogy/{dl_to_urn(PAL2)}", headers=viewer).json()
    assert by_urn["nodes"] == body["nodes"]
    forward = client.get(
        f"/epcis/genealogy/{dl_to_urn(F1)}", params={"direction": "forward", "maxDepth": 10}, headers=viewer
    )
    assert forward.status_code == 200, forward.text
    nodes = {n["id"]: n for n in forward.json()["nodes"]}
    assert nodes[C1]["whereabouts"]["owner"] == party(RETAIL_A)
    assert nodes[U1]["whereabouts"]["location"] == place(RETAIL_B)
    shallow = client.get(f"/epcis/genealogy/{dl_to_urn(PAL2)}", params={"maxDepth": 1}, headers=viewer).json()
    assert shallow["truncated"] is True


def test_genealogy_api_problems(client: TestClient, bakery: str, tenant_a: TenantFixture) -> None:
    headers = tenant_a.headers(Role.VIEWER)
    assert_problem(client.get("/epcis/genealogy/urn:epc:id:sscc:9521234.0000000999", headers=headers), 404)
    assert_problem(client.get("/epcis/genealogy/urn:epc:id:sscc:9521234.0000000999"), 401)
    broken = "https://id.gs1.org/00/095212340000000011"
    assert_problem(client.get(f"/epcis/genealogy/{quote(broken, safe='')}", headers=headers), 422)


def test_recall_api_json_csv_and_xlsx(client: TestClient, bakery: str, tenant_a: TenantFixture) -> None:
    headers = tenant_a.headers(Role.VIEWER)
    answer = client.get("/api/traceability/recall", params={"lot": dl_to_urn(S1)}, headers=headers)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["count"] == 7
    affected = {row["identifier"]: row for row in body["affected"]}
    assert affected[C1]["owner"] == party(RETAIL_A)
    as_csv = client.get("/api/traceability/recall", params={"lot": S1, "format": "csv"}, headers=headers)
    assert as_csv.status_code == 200
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert "attachment" in as_csv.headers["content-disposition"]
    assert len(list(csv.reader(io.StringIO(as_csv.content.decode("utf-8-sig"))))) == 8
    as_xlsx = client.get("/api/traceability/recall", params={"serial": U1, "format": "xlsx"}, headers=headers)
    assert as_xlsx.status_code == 200
    assert len(xlsx_rows(as_xlsx.content)) == 4  # header, U1, C3, PAL2
    assert_problem(client.get("/api/traceability/recall", params={"lot": S1, "serial": U1}, headers=headers), 422)
    assert_problem(client.get("/api/traceability/recall", headers=headers), 422)
    assert_problem(client.get("/api/traceability/recall", params={"lot": U1}, headers=headers), 422)


def test_a_platform_operator_reads_the_tenant_holding_the_identifier(
    client: TestClient, bakery: str, tenant_a: TenantFixture, tenant_b: TenantFixture, migrated_db: Database
) -> None:
    with migrated_db.session() as session:
        operator_key = AccessService(session).create_api_key(tenant_b.id, "op", Role.PLATFORM_OPERATOR)[1]
    headers = {"Authorization": f"Bearer {operator_key}"}
    found = client.get(f"/epcis/genealogy/{dl_to_urn(PAL2)}", headers=headers)
    assert found.status_code == 200, found.text
    assert_problem(client.get(f"/epcis/genealogy/{dl_to_urn(PAL2)}", headers=tenant_b.headers()), 404)


# --- CLI ----------------------------------------------------------------------------------------


@pytest.fixture
def iip_in_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, db_url: str) -> InProcessIip:
    monkeypatch.chdir(tmp_path)
    env = {"IIP_DATA_DIR": str(tmp_path / "var"), "IIP_DATABASE_URL": db_url, "IIP_LOG_FORMAT": "text"}
    return InProcessIip(monkeypatch, env)


@pytest.fixture
def cli_bakery(iip_in_process: InProcessIip, db_url: str) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    assert iip_in_process("db", "upgrade").exit_code == 0
    assert iip_in_process("tenant", "create", name).exit_code == 0
    db = Database(db_url)
    with db.session() as session:
        tenant_id = AccessService(session).tenant_by_name(name).id
        capture(session, tenant_id, bakery_events())
    yield name
    db.dispose()


def test_cli_genealogy_and_recall(iip_in_process: InProcessIip, cli_bakery: str, tmp_path: Path) -> None:
    iip = iip_in_process
    backward = iip("trace", "genealogy", dl_to_urn(PAL2), "--tenant", cli_bakery, "--json")
    assert backward.exit_code == 0, backward.output
    assert {F1, S1, P1} <= {n["id"] for n in json.loads(backward.stdout)["nodes"]}
    forward = iip("trace", "genealogy", S1, "--tenant", cli_bakery, "--forward")
    assert forward.exit_code == 0, forward.output
    assert forward.stdout.splitlines()[-1].startswith("7 identifiers")
    target = tmp_path / "recall.csv"
    written = iip("trace", "recall", dl_to_urn(S1), "--tenant", cli_bakery, "--csv", str(target))
    assert written.exit_code == 0, written.output
    assert written.stdout.strip() == f"wrote 7 affected identifiers to {target}"
    assert len(list(csv.reader(io.StringIO(target.read_text("utf-8-sig"))))) == 8
    book = tmp_path / "recall.xlsx"
    assert iip("trace", "recall", S1, "--tenant", cli_bakery, "--xlsx", str(book)).exit_code == 0
    assert xlsx_rows(book.read_bytes())[0][0] == "Traceability Lot Code"
    missing = iip("trace", "recall", "urn:epc:class:lgtin:9521234.000999.NOPE", "--tenant", cli_bakery)
    assert missing.exit_code == 1
    assert "no event names" in missing.output
