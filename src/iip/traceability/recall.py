"""Recall: every product a lot or a serial reached (a forward genealogy), where it is, who has it.

The export follows the FDA's FSMA 204 electronic sortable spreadsheet: one row per affected
identifier with its traceability lot code, product, quantity and unit of measure, the critical
tracking event it was last seen in with its date and location, ship-from and ship-to, the
reference document, and its owner and disposition. Where the tenant's master data names the
location or the owner (`master_data`), the location description and the owner name carry the name
and address; else the location is described by its GLN. The headings and the reference document
labels of the columns the FSMA 204 profile's spreadsheet also has are the profile's
(`profiles.reports.spreadsheet_columns`): one source for both spreadsheets.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import cache
from typing import Any, Literal
from urllib.parse import unquote

from sqlalchemy.orm import Session

from iip.kernel.auth import Principal
from iip.kernel.errors import Invalid
from iip.traceability import master_data
from iip.traceability.epcis import identifiers
from iip.traceability.epcis.documents import CBV_WEB
from iip.traceability.epcis.master_data import Description
from iip.traceability.genealogy import Genealogy, Node, identifier_kind, trace
from iip.traceability.indexing import checked_identifier
from iip.traceability.profiles.reports import spreadsheet_columns

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
    owner_name: str
    disposition: str
    ship_from_location: str
    ship_to_location: str
    reference_document_type: str
    reference_document_number: str
    reached_through: str
    hops: int


# The headings of the columns the FSMA 204 spreadsheet lacks; the others are the profile's.
_OWN_HEADINGS = {
    "affected_identifier": "Affected Identifier",
    "identifier_type": "Identifier Type",
    "owner": "Owner",
    "owner_name": "Owner Name",
    "disposition": "Disposition",
    "reached_through": "Reached Through",
    "hops": "Hops",
}
_FIELD_NAMES = tuple(f.name for f in fields(RecallRow))


def _headings() -> tuple[str, ...]:
    shared = {column.key: column.heading for column in spreadsheet_columns()}
    return tuple(shared.get(name) or _OWN_HEADINGS[name] for name in _FIELD_NAMES)


COLUMNS = _headings()  # the spreadsheet's header, in the row's field order


@cache
def _reference_types() -> dict[str, str]:
    """Business transaction types as the spreadsheet names them (`bol` → Bill of Lading), from the profile."""
    return next(c.labels for c in spreadsheet_columns() if c.key == "reference_document_type")


@dataclass
class Recall:
    root: str
    kind: str  # class (a lot) or instance (a serial)
    genealogy: Genealogy
    rows: list[RecallRow]
    names: dict[str, Description] = field(default_factory=dict)  # locations and owners, from master data


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


def spoken(description: Description | None) -> str:
    """A master data description as one cell: `name, address`, whichever is known."""
    if description is None:
        return ""
    return ", ".join(part for part in (description.name, description.address) if part)


def _location_description(location: str | None, names: Mapping[str, Description]) -> str:
    if not location:
        return ""
    return spoken(names.get(location)) or f"GLN {_gln(location)}"


def rows_of(genealogy: Genealogy, names: Mapping[str, Description] | None = None) -> list[RecallRow]:
    """The spreadsheet's rows for a located forward genealogy, sorted by lot, then identifier; `names`
    (identifier → master data description) names locations and owners."""
    known = names or {}
    references = _reference_types()
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
                location_description=_location_description(where.location, known) if where else "",
                location_identifier=where.location or "" if where else "",
                owner=where.owner or "" if where else "",
                owner_name=spoken(known.get(where.owner or "")) if where else "",
                disposition=_term(where.disposition, "Disp-") if where else "",
                ship_from_location=where.ship_from or "" if where else "",
                ship_to_location=where.ship_to or "" if where else "",
                reference_document_type=references.get(
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
    root = checked_identifier(given)
    kind = identifier_kind(root)
    if lot is not None and kind != "class":
        raise Invalid(f"{given} is not a lot (an LGTIN or GTIN class)", code="not_a_lot")
    if serial is not None and kind != "instance":
        raise Invalid(f"{given} is a class, not a serial", code="not_a_serial")
    genealogy = trace(session, principal, root, "forward", tenant=tenant)
    names = whereabouts_names(session, genealogy)
    return Recall(root, kind, genealogy, rows_of(genealogy, names), names)


def whereabouts_names(session: Session, genealogy: Genealogy) -> dict[str, Description]:
    """What the traced tenant's master data says of the locations and owners of a located genealogy."""
    places = {value for where in genealogy.whereabouts.values() for value in (where.location, where.owner) if value}
    return master_data.descriptions(session, genealogy.tenant_id, sorted(places))


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
