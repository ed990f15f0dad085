"""A profile's report tables (pure, but for writing XLSX): one row per object of each event of the table's CTEs.

The FSMA 204 profile's table `spreadsheet` is the FDA's electronic sortable spreadsheet (one row per
traceability lot per CTE); the 一品一码 profile has one table per record type with Chinese headings.
Columns are the profile's data (`tables` in its YAML); `spreadsheet_columns` gives the FSMA 204
columns to the recall export, so that both spreadsheets name the same values alike.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from iip.kernel.errors import NotFound
from iip.traceability.epcis.identifiers import DL_BASE
from iip.traceability.profiles.locate import Found, Lookup, MasterData, ai_pairs, gln, local_date, vocabulary_term
from iip.traceability.profiles.model import Column, CriticalEvent, Profile, Table, load_profile
from iip.traceability.profiles.rules import EventObject, classify, event_objects, kde_lookups, scope_of

Cell = str | int | float | None
FSMA_PROFILE = "food_fsma204"
FSMA_TABLE = "spreadsheet"
_CBV_BT = re.compile(r"^urn:epcglobal:cbv:bt:\d{13}:(.+)$")


@dataclass(frozen=True)
class ReportTable:
    key: str
    title: str
    keys: tuple[str, ...]
    headings: tuple[str, ...]
    rows: list[tuple[Cell, ...]]


def spreadsheet_columns() -> tuple[Column, ...]:
    """The FSMA 204 sortable spreadsheet's columns (key, heading), in order."""
    return _table(load_profile(FSMA_PROFILE), FSMA_TABLE).columns


def _table(profile: Profile, key: str) -> Table:
    for table in profile.tables:
        if table.key == key:
            return table
    names = ", ".join(t.key for t in profile.tables) or "none"
    raise NotFound(f"profile {profile.name!r} has no table {key[:100]!r}; its tables: {names}", code="table_not_found")


def report(
    profile: Profile,
    events: Sequence[Mapping[str, Any]],
    *,
    context: Mapping[str, str] | None = None,
    master_data: MasterData | None = None,
    table: str | None = None,
) -> list[ReportTable]:
    """The profile's tables (or the one named) for the events, rows in the events' order."""
    tables = [_table(profile, table)] if table is not None else list(profile.tables)
    scope = scope_of(profile, context, master_data)
    classified: list[tuple[Mapping[str, Any], CriticalEvent, dict[str, Lookup]]] = []
    for event in events:
        cte = classify(profile, event, context=context, master_data=master_data)
        if cte is not None:
            classified.append((event, cte, kde_lookups(profile, cte, event, scope)))
    out: list[ReportTable] = []
    for spec in tables:
        rows: list[tuple[Cell, ...]] = []
        for event, cte, lookups in classified:
            if spec.ctes and cte.key not in spec.ctes:
                continue
            objects: list[EventObject | None] = list(event_objects(event, context)) or [None]
            rows.extend(
                tuple(_cell(spec, column, event, cte, lookups, obj, context) for column in spec.columns)
                for obj in objects
            )
        keys = tuple(c.key for c in spec.columns)
        out.append(ReportTable(spec.key, spec.title, keys, tuple(c.heading for c in spec.columns), rows))
    return out


def _number(value: float | None) -> int | float | None:
    if value is None:
        return None
    return int(value) if float(value).is_integer() else value


def _cell(  # noqa: PLR0911 - one answer per column source
    table: Table,
    column: Column,
    event: Mapping[str, Any],
    cte: CriticalEvent,
    lookups: Mapping[str, Lookup],
    obj: EventObject | None,
    context: Mapping[str, str] | None,
) -> Cell:
    source = column.value
    if source.startswith("object."):
        return _object_cell(source, obj)
    if source == "event.cte":
        return cte.label_zh if table.language == "zh" else cte.label
    if source == "event.date":
        day = local_date(event)
        return day.isoformat() if day else ""
    if source == "event.inputs":
        return "; ".join(o.identifier for o in event_objects(event, context, inputs=True))
    if source == "kde":
        return _kde_cell(column, lookups, obj)
    field = {"event.time": "eventTime", "event.id": "eventID", "event.biz_step": "bizStep"}.get(source, "disposition")
    value = event.get(field)
    if not isinstance(value, str):
        return ""
    return vocabulary_term(value) or "" if source in ("event.biz_step", "event.disposition") else value


def _object_cell(source: str, obj: EventObject | None) -> Cell:
    if obj is None:
        return ""
    if source == "object.identifier":
        return obj.identifier
    if source == "object.quantity":
        return _number(obj.quantity)
    if source == "object.uom":
        return obj.uom or ""
    ai = {"object.gtin": "01", "object.lot": "10", "object.serial": "21"}[source]
    return ai_pairs(obj.identifier).get(ai, "") if obj.identifier.startswith(DL_BASE + "/") else ""


def _kde_cell(column: Column, lookups: Mapping[str, Lookup], obj: EventObject | None) -> str:
    for key in column.kde:
        lookup = lookups.get(key)
        if lookup is None or not lookup.found:
            continue
        found = list(lookup.found)
        if obj is not None:
            # Of an event's several values, the ones about this row's object (its quantity element).
            own = [f for f in found if f.pointer == obj.pointer or f.pointer.startswith(obj.pointer + "/")]
            found = own or found
        texts: list[str] = []
        for item in found:
            text = _part(column, item)
            text = column.labels.get(text, text)
            if text and text not in texts:
                texts.append(text)
        return "; ".join(texts)
    return ""


def _part(column: Column, found: Found) -> str:
    """The part of a found value a column shows."""
    value = found.value
    if column.part == "gln":
        return gln(found.text)
    if column.part == "date":
        if isinstance(value, dt.datetime):
            return found.text[:10]  # the date as written, in the event's own offset
        return value.isoformat() if isinstance(value, dt.date) else found.text
    if column.part == "type" and isinstance(value, Mapping):
        return vocabulary_term(value.get("type")) or ""
    if column.part == "number":
        return _document_number(value.get("bizTransaction") if isinstance(value, Mapping) else value) or found.text
    return found.text


def _document_number(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    # CBV's business transaction URN names the issuer's GLN, then the document's own number.
    issued = _CBV_BT.match(value.strip())
    return issued.group(1) if issued else value.strip()


# --- files ---------------------------------------------------------------------------------------


def _value(cell: Cell) -> Cell:
    return "" if cell is None else cell


def csv_bytes(table: ReportTable) -> bytes:
    """A table as CSV (UTF-8 with a byte order mark, which spreadsheet programs take as UTF-8)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(table.headings)
    writer.writerows([_value(c) for c in row] for row in table.rows)
    return ("\ufeff" + buffer.getvalue()).encode("utf-8")


_SHEET_UNSAFE = re.compile(r"[\[\]:*?/\\]")


def xlsx_bytes(tables: Sequence[ReportTable]) -> bytes:
    """The tables as one workbook, a sheet each: a header row, frozen and filtered so every column sorts."""
    import xlsxwriter

    buffer = io.BytesIO()
    workbook = xlsxwriter.Workbook(buffer, {"in_memory": True, "strings_to_urls": False})
    bold = workbook.add_format({"bold": True})
    names: set[str] = set()
    for table in tables:
        name = _SHEET_UNSAFE.sub(" ", table.title)[:31] or table.key[:31]
        if name in names:
            name = table.key[:31]
        names.add(name)
        sheet = workbook.add_worksheet(name)
        sheet.write_row(0, 0, table.headings, bold)
        for index, row in enumerate(table.rows, start=1):
            sheet.write_row(index, 0, [_value(c) for c in row])
        sheet.freeze_panes(1, 0)
        sheet.autofilter(0, 0, max(len(table.rows), 1), len(table.headings) - 1)
    workbook.close()
    return buffer.getvalue()
