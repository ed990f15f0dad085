"""Recall: every product a lot or a serial reached (a forward genealogy), where it is, who has it.

The export follows the FDA's FSMA 204 electronic sortable spreadsheet: one row per affected
identifier with its traceability lot code, product, quantity and unit of measure, the critical
tracking event it was last seen in with its date and location, ship-from and ship-to, the
reference document, and its owner and disposition. The repository holds no master data yet, so
product and location descriptions are the identifiers (GTIN, GLN) rather than names.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, fields
from typing import Any, Literal
from urllib.parse import unquote

from sqlalchemy.orm import Session

from iip.kernel.auth import Principal
from iip.kernel.errors import Invalid
from iip.traceability.epcis import identifiers
from iip.traceability.epcis.documents import CBV_WEB
from iip.traceability.genealogy import Genealogy, Node, canonical_identifier, identifier_kind, trace

ExportFormat = Literal["csv", "xlsx"]
XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

# Critical tracking events (FSMA 204) by CBV business step; other steps are named by their CBV term.
_CTE_BY_STEP = {
    "shipping": "Shipping",
    "departing": "Shipping",
    "receiving": "Receiving",
    "arriving": "Receiving",
    "accepting": "Receiving",
    "commissioning": "Initial Packing",
    "creating_class_instance": "Initial Packing",
    "packing": "Packing",
}
_REFERENCE_TYPES = {
    "bol": "Bill of Lading",
    "desadv": "Advance Shipping Notice",
    "inv": "Invoice",
    "po": "Purchase Order",
    "poc": "Purchase Order Confirmation",
    "prodorder": "Production Order",
    "recadv": "Receiving Advice",
    "rma": "Return Merchandise Authorisation",
}


@dataclass(frozen=True)
class RecallRow:
    """One affected identifier, in the spreadsheet's column order."""

    traceability_lot_code: str
    product_gtin: str
    product_description: str
    affected_identifier: str
    identifier_type: str
    quantity: float | int | None
    unit_of_measure: str
    critical_tracking_event: str
    event_date: str
    location_description: str
    location_identifier: str
    owner: str
    disposition: str
    ship_from_location: str
    ship_to_location: str
    reference_document_type: str
    reference_document_number: str
    reached_through: str
    hops: int


COLUMNS = (
    "Traceability Lot Code",
    "Product GTIN",
    "Product Description",
    "Affected Identifier",
    "Identifier Type",
    "Quantity",
    "Unit of Measure",
    "Critical Tracking Event",
    "Event Date",
    "Location Description",
    "Location Identifier",
    "Owner",
    "Disposition",
    "Ship-From Location",
    "Ship-To Location",
    "Reference Document Type",
    "Reference Document Number",
    "Reached Through",
    "Hops",
)
assert len(COLUMNS) == len(fields(RecallRow))  # noqa: S101 - the header and the row must stay in step


@dataclass
class Recall:
    root: str
    kind: str  # class (a lot) or instance (a serial)
    genealogy: Genealogy
    rows: list[RecallRow]


def _ai_value(canonical: str, ai: str) -> str:
    parts = canonical.removeprefix(identifiers.DL_BASE).split("/")
    for index in range(1, len(parts) - 1, 2):
        if parts[index] == ai:
            return unquote(parts[index + 1])
    return ""


def _gln(location: str | None) -> str:
    if not location:
        return ""
    gln = _ai_value(location, "414")
    if not gln:
        return location
    extension = _ai_value(location, "254")
    return f"{gln}.{extension}" if extension else gln


def _term(value: str | None, vocabulary_prefix: str) -> str:
    if not value:
        return ""
    return value.removeprefix(CBV_WEB + vocabulary_prefix)


def critical_tracking_event(biz_step: str | None, event_type: str | None) -> str:
    if event_type == "TransformationEvent":
        return "Transformation"
    step = _term(biz_step, "BizStep-")
    return _CTE_BY_STEP.get(step, step)


def identifier_type(node: Node) -> str:
    if node.kind == "class":
        return "lot" if "/10/" in node.id else "product class"
    for ai, label in (("21", "serial"), ("00", "logistic unit (SSCC)"), ("8003", "returnable asset (GRAI)")):
        if f"/{ai}/" in node.id:
            return label
    return "instance"


def _number(value: float | None) -> float | int | None:
    if value is None:
        return None
    return int(value) if float(value).is_integer() else value


def rows_of(genealogy: Genealogy) -> list[RecallRow]:
    """The spreadsheet's rows for a located forward genealogy, sorted by lot, then identifier."""
    rows: list[RecallRow] = []
    for node in genealogy.nodes:
        where = genealogy.whereabouts.get(node.id)
        lot = genealogy.lot_of(node.id)
        if node.kind == "class":
            amount, uom = genealogy.quantities.get(node.id, (None, None))
            quantity, unit = _number(amount), uom or ""
        else:
            quantity, unit = 1, "EA"
        through = genealogy.via.get(node.id, "")
        rows.append(
            RecallRow(
                traceability_lot_code=_ai_value(lot, "10") if lot else "",
                product_gtin=_ai_value(node.id, "01") or (_ai_value(lot, "01") if lot else ""),
                product_description="",
                affected_identifier=node.id,
                identifier_type=identifier_type(node),
                quantity=quantity,
                unit_of_measure=unit,
                critical_tracking_event=critical_tracking_event(
                    where.biz_step if where else None, where.last_event_type if where else None
                ),
                event_date=where.last_event_time.isoformat() if where and where.last_event_time else "",
                location_description=f"GLN {_gln(where.location)}" if where and where.location else "",
                location_identifier=where.location or "" if where else "",
                owner=where.owner or "" if where else "",
                disposition=_term(where.disposition, "Disp-") if where else "",
                ship_from_location=where.ship_from or "" if where else "",
                ship_to_location=where.ship_to or "" if where else "",
                reference_document_type=_REFERENCE_TYPES.get(
                    _term(where.reference_type, "BTT-"), _term(where.reference_type, "BTT-")
                )
                if where
                else "",
                reference_document_number=where.reference or "" if where else "",
                reached_through=through,
                hops=node.depth,
            )
        )
    rows.sort(key=lambda r: (r.traceability_lot_code, r.hops, r.affected_identifier))
    return rows


def recall(
    session: Session,
    principal: Principal,
    *,
    lot: str | None = None,
    serial: str | None = None,
    tenant: str | None = None,
) -> Recall:
    """Every product a lot (a class: LGTIN) or a serial (an instance) reached, located."""
    if (lot is None) == (serial is None):
        raise Invalid("name either a lot or a serial", code="recall_subject")
    given = lot if lot is not None else serial
    assert given is not None  # noqa: S101 - one of the two, checked above
    root = canonical_identifier(given)
    kind = identifier_kind(root)
    if lot is not None and kind != "class":
        raise Invalid(f"{given} is not a lot (an LGTIN or GTIN class)", code="not_a_lot")
    if serial is not None and kind != "instance":
        raise Invalid(f"{given} is a class, not a serial", code="not_a_serial")
    genealogy = trace(session, principal, root, "forward", tenant=tenant)
    return Recall(root, kind, genealogy, rows_of(genealogy))


_FIELD_NAMES = tuple(f.name for f in fields(RecallRow))


def cells(row: RecallRow) -> list[Any]:
    """A row's values in column order, None as an empty cell."""
    values = (getattr(row, name) for name in _FIELD_NAMES)
    return ["" if value is None else value for value in values]


def csv_bytes(rows: list[RecallRow]) -> bytes:
    """The spreadsheet as CSV (UTF-8 with a byte order mark, which spreadsheet programs take as UTF-8)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    writer.writerows(cells(row) for row in rows)
    return ("\ufeff" + buffer.getvalue()).encode("utf-8")


def xlsx_bytes(rows: list[RecallRow]) -> bytes:
    """The spreadsheet as XLSX: a header row, frozen and filtered so every column sorts."""
    import xlsxwriter

    buffer = io.BytesIO()
    workbook = xlsxwriter.Workbook(buffer, {"in_memory": True, "strings_to_urls": False})
    sheet = workbook.add_worksheet("Recall")
    bold = workbook.add_format({"bold": True})
    sheet.write_row(0, 0, COLUMNS, bold)
    for index, row in enumerate(rows, start=1):
        sheet.write_row(index, 0, cells(row))
    sheet.freeze_panes(1, 0)
    sheet.autofilter(0, 0, max(len(rows), 1), len(COLUMNS) - 1)
    workbook.close()
    return buffer.getvalue()


def export(rows: list[RecallRow], export_format: ExportFormat) -> bytes:
    return csv_bytes(rows) if export_format == "csv" else xlsx_bytes(rows)
