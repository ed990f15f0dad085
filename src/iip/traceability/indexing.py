"""What the repository stores beside an event body: its indexed columns and lookup rows (pure, no I/O).

The rules here are the ones queries and genealogy match on, so they are the contract of the lookup
tables (`models.Event`, `EventEpc`, `EventLink`, `SensorReport`):

- identifiers (EPCs, parent, classes, read point, business location, business transactions,
  sources, destinations, sensor device IDs) in their canonical form, `epcis.identifiers.canonical`
  (a Digital Link on id.gs1.org), so an EPC URN and its Digital Link are one row; a value that is no
  GS1 identifier is kept as written, stripped;
- CBV values (business step, disposition, business transaction type, source/destination type) as
  CBV web URIs, `epcis.documents.normalise_vocabulary`; a CURIE (`ex:myStep`) is expanded with the
  document's context first, and `gs1:`/`cbv:` with GS1's own namespaces, as the event hash does;
- sensor measurement types as GS1 web vocabulary URIs, numbers as floats, times as aware UTC datetimes;
- the event time as an aware UTC datetime (microseconds kept).

Identifier roles come from the field an identifier is in, whatever the event type: `epcList` →
`epc`, `childEPCs` → `child`, `parentID` → `parent`, `inputEPCList` → `input`, `outputEPCList` →
`output`, and the quantity lists → `quantity`, `child_quantity`, `input_quantity`,
`output_quantity` (with quantity and uom). An instance role names an identifier once per event even
if the event lists it twice (say as URN and as Digital Link); class rows are kept one per element.

`index_event` also reports values the tables cannot hold (longer than their column, or holding a
NUL character, which PostgreSQL refuses) as problems located by JSON pointer under the event, so
capture rejects such an event instead of failing to store it.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, NamedTuple

from iip.kernel.errors import Invalid
from iip.traceability.epcis import identifiers
from iip.traceability.epcis.documents import CBV_WEB, GS1_VOC, normalise_measurement_type, normalise_vocabulary
from iip.traceability.models import IDENTIFIER_LENGTH, VOCABULARY_LENGTH

EVENT_TYPE_LENGTH = 30
OFFSET_LENGTH = 6
ACTION_LENGTH = 10
UOM_LENGTH = 10

# field → role, for the identifiers of instances and of classes (data, not a chain of ifs)
INSTANCE_ROLES = {
    "parentID": "parent",
    "epcList": "epc",
    "childEPCs": "child",
    "inputEPCList": "input",
    "outputEPCList": "output",
}
CLASS_ROLES = {
    "quantityList": "quantity",
    "childQuantityList": "child_quantity",
    "inputQuantityList": "input_quantity",
    "outputQuantityList": "output_quantity",
}
# list field → (kind of link, key of the value in an entry, vocabulary of its type)
LINK_LISTS = {
    "bizTransactionList": ("bizTransaction", "bizTransaction", "bizTransactionType"),
    "sourceList": ("source", "source", "sourceDestType"),
    "destinationList": ("destination", "destination", "sourceDestType"),
}
_CURIE_BASES = {"gs1": GS1_VOC, "cbv": CBV_WEB}
_FRACTION = re.compile(r"(\.\d{6})\d+")


class EventColumns(NamedTuple):
    """The indexed columns of `traceability_event` (everything but ids, hash, body and times of capture)."""

    event_type: str
    event_time: dt.datetime
    event_time_zone_offset: str
    action: str | None
    biz_step: str | None
    disposition: str | None
    read_point: str | None
    biz_location: str | None


class EpcRow(NamedTuple):
    role: str
    epc: str
    quantity: float | None = None
    uom: str | None = None


class LinkRow(NamedTuple):
    kind: str  # bizTransaction, source, destination
    type: str  # CBV web URI, "" when untyped
    value: str


class SensorRow(NamedTuple):
    type: str
    device_id: str | None
    time: dt.datetime | None
    value: float | None
    min_value: float | None
    max_value: float | None
    mean_value: float | None
    uom: str | None
    string_value: str | None
    boolean_value: bool | None


@dataclass(slots=True)
class IndexedEvent:
    """An event's columns and lookup rows, and the (pointer, message) problems that keep it from the tables."""

    columns: EventColumns
    epcs: list[EpcRow] = field(default_factory=list)
    links: list[LinkRow] = field(default_factory=list)
    sensor_reports: list[SensorRow] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)


@lru_cache(maxsize=65_536)
def canonical_identifier(value: str) -> str:
    """The matching form of an identifier as stored; one that is malformed (validation reports it) stays
    as written, stripped. For an identifier someone asks about, `checked_identifier`."""
    try:
        return identifiers.canonical(value).strip()
    except identifiers.IdentifierError:
        return value.strip()


def checked_identifier(value: str) -> str:
    """The matching form of an identifier asked about (a trace, a recall): Invalid when it is empty or a
    broken GS1 identifier or handle, which no stored row can match."""
    if not value.strip():
        raise Invalid("an identifier is required", code="identifier_required")
    try:
        return identifiers.canonical(value).strip()
    except identifiers.IdentifierError as exc:
        raise Invalid(str(exc), code="invalid_identifier") from None


def _expand_curie(value: str, context: dict[str, str]) -> str:
    prefix, colon, rest = value.partition(":")
    if not colon or rest.startswith("//"):
        return value
    base = context.get(prefix) or _CURIE_BASES.get(prefix)
    return base + rest if base else value


def vocabulary_uri(value: str, kind: str, context: dict[str, str]) -> str:
    """A CBV value (`kind` of `documents.VOCABULARIES`) as its web URI, a CURIE expanded first."""
    return normalise_vocabulary(_expand_curie(value.strip(), context), kind)


def parse_time(value: Any) -> dt.datetime | None:
    """An xsd:dateTime as an aware UTC datetime (a time without offset read as UTC); None if unreadable."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    if _FRACTION.search(text):  # fromisoformat takes at most 6 fraction digits
        text = _FRACTION.sub(r"\1", text)
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


def _number(value: Any) -> float | None:
    if type(value) is float:
        return value
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _members(value: Any) -> Any:
    """What a field meant to hold a list is walked over: nothing for a number, which the schema refuses
    (walking it would raise); a list, text or object as it is."""
    return () if not value or isinstance(value, int | float) else value


@lru_cache(maxsize=4_096)
def _plain_vocabulary_uri(text: str, kind: str) -> str:
    """`vocabulary_uri` of a stripped value whose prefix the document's context does not bind (cached)."""
    return normalise_vocabulary(_expand_curie(text, {}), kind)


@lru_cache(maxsize=4_096)
def _plain_measurement_type(text: str) -> str:
    """A stripped measurement type whose prefix the document's context does not bind, as its URI (cached)."""
    return normalise_measurement_type(_expand_curie(text, {}))


# An event's columns and lookup rows as plain tuples, in the field order of the NamedTuples above
# (what capture stores; `index_event` gives the same as NamedTuples).
Rows = tuple[
    tuple[Any, ...],  # EventColumns
    list[tuple[Any, ...]],  # EpcRow
    list[tuple[Any, ...]],  # LinkRow
    list[tuple[Any, ...]],  # SensorRow
    list[tuple[str, str]],  # problems: (pointer, message)
]


class _Indexer:
    """Builds one event's rows, noting values a column cannot hold with their pointer.

    A value's pointer is given as steps (`"epcList", 3`) and joined only for a problem: most values have none.
    """

    __slots__ = ("context", "problems")

    def __init__(self, context: dict[str, str]) -> None:
        self.context = context
        self.problems: list[tuple[str, str]] = []

    def refuse(self, value: str, limit: int | None, where: tuple[str | int, ...]) -> None:
        """Note why a value does not fit its column (the callers test `len(value) > limit or NUL in value`)."""
        at = "".join(f"/{step}" for step in where)
        if limit is not None and len(value) > limit:
            self.problems.append((at, f"longer than the {limit} characters the repository stores"))
        elif "\x00" in value:
            self.problems.append((at, "contains a NUL character"))

    def fits(self, value: str, limit: int | None, *where: str | int) -> str:
        if (limit is not None and len(value) > limit) or "\x00" in value:
            self.refuse(value, limit, where)
        return value

    def text(self, value: Any, limit: int, *where: str | int) -> str | None:
        if isinstance(value, str):
            text = value.strip()
            if text:
                if len(text) > limit or "\x00" in text:
                    self.refuse(text, limit, where)
                return text
        return None

    def identifier(self, value: Any, *where: str | int) -> str | None:
        if not isinstance(value, str) or not value.strip():
            return None
        canonical = canonical_identifier(value)
        if len(canonical) > IDENTIFIER_LENGTH or "\x00" in canonical:
            self.refuse(canonical, IDENTIFIER_LENGTH, where)
        return canonical

    def vocabulary(self, value: Any, kind: str, *where: str | int) -> str | None:
        if not isinstance(value, str):
            return None
        text = value.strip()
        if not text:
            return None
        if self.context and self.context.get(text.partition(":")[0]):
            uri = normalise_vocabulary(_expand_curie(text, self.context), kind)
        else:
            uri = _plain_vocabulary_uri(text, kind)
        if len(uri) > VOCABULARY_LENGTH or "\x00" in uri:
            self.refuse(uri, VOCABULARY_LENGTH, where)
        return uri

    def place(self, event: dict[str, Any], name: str) -> str | None:
        place = event.get(name)
        return self.identifier(place.get("id"), name, "id") if isinstance(place, dict) else None

    def columns(self, event: dict[str, Any]) -> tuple[Any, ...]:
        event_time = parse_time(event.get("eventTime"))
        if event_time is None:
            self.problems.append(("/eventTime", "no readable eventTime"))
            event_time = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        return (
            self.text(event.get("type"), EVENT_TYPE_LENGTH, "type") or "",
            event_time,
            self.text(event.get("eventTimeZoneOffset"), OFFSET_LENGTH, "eventTimeZoneOffset") or "",
            self.text(event.get("action"), ACTION_LENGTH, "action"),
            self.vocabulary(event.get("bizStep"), "bizStep", "bizStep"),
            self.vocabulary(event.get("disposition"), "disposition", "disposition"),
            self.place(event, "readPoint"),
            self.place(event, "bizLocation"),
        )

    def epcs(self, event: dict[str, Any]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = []
        seen: set[tuple[str, str]] = set()
        for name, role in INSTANCE_ROLES.items():
            value = event.get(name)
            if value is None:
                continue
            if name == "parentID":
                epc = self.identifier(value, name)
                if epc is not None:
                    seen.add((role, epc))
                    rows.append((role, epc, None, None))
                continue
            if not isinstance(value, list):
                continue
            for index, item in enumerate(value):
                epc = self.identifier(item, name, index)
                if epc is not None and (role, epc) not in seen:
                    seen.add((role, epc))
                    rows.append((role, epc, None, None))
        for name, role in CLASS_ROLES.items():
            elements = event.get(name)
            if not elements:
                continue
            for index, element in enumerate(_members(elements)):
                if not isinstance(element, dict):
                    continue
                epc_class = self.identifier(element.get("epcClass"), name, index, "epcClass")
                if epc_class is not None:
                    uom = self.text(element.get("uom"), UOM_LENGTH, name, index, "uom")
                    rows.append((role, epc_class, _number(element.get("quantity")), uom))
        return rows

    def links(self, event: dict[str, Any]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = []
        for name, (kind, key, vocabulary) in LINK_LISTS.items():
            entries = event.get(name)
            if not entries:
                continue
            for index, entry in enumerate(_members(entries)):
                if not isinstance(entry, dict):
                    continue
                value = self.identifier(entry.get(key), name, index, key)
                if value is not None:
                    link_type = self.vocabulary(entry.get("type"), vocabulary, name, index, "type") or ""
                    rows.append((kind, link_type, value))
        return rows

    def sensor_reports(self, event: dict[str, Any]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = []
        elements = event.get("sensorElementList")
        if not elements:
            return rows
        for e, element in enumerate(_members(elements)):
            if not isinstance(element, dict):
                continue
            metadata = element.get("sensorMetadata")
            metadata = metadata if isinstance(metadata, dict) else {}
            for r, report in enumerate(_members(element.get("sensorReport"))):
                if isinstance(report, dict):
                    rows.append(self.sensor_report(report, metadata, e, r))
        return rows

    def sensor_report(self, report: dict[str, Any], metadata: dict[str, Any], e: int, r: int) -> tuple[Any, ...]:
        # A report without its own device or time has the element's metadata ones.
        device = report.get("deviceID") or metadata.get("deviceID")
        measurement = report.get("type")
        measurement_type = ""
        if isinstance(measurement, str) and measurement.strip():
            text = measurement.strip()
            if self.context and self.context.get(text.partition(":")[0]):
                measurement_type = normalise_measurement_type(_expand_curie(text, self.context))
            else:
                measurement_type = _plain_measurement_type(text)
            self.fits(measurement_type, VOCABULARY_LENGTH, "sensorElementList", e, "sensorReport", r, "type")
        string_value = report.get("stringValue")
        boolean_value = report.get("booleanValue")
        return (
            measurement_type,
            self.identifier(device, "sensorElementList", e, "sensorReport", r, "deviceID"),
            parse_time(report.get("time") or metadata.get("time")),
            _number(report.get("value")),
            _number(report.get("minValue")),
            _number(report.get("maxValue")),
            _number(report.get("meanValue")),
            self.text(report.get("uom"), UOM_LENGTH, "sensorElementList", e, "sensorReport", r, "uom"),
            self.fits(string_value, None, "sensorElementList", e, "sensorReport", r, "stringValue")
            if isinstance(string_value, str)
            else None,
            boolean_value if isinstance(boolean_value, bool) else None,
        )


def index_rows(event: dict[str, Any], context: dict[str, str] | None = None) -> Rows:
    """`index_event` as plain tuples: the event's columns, its lookup rows and its problems."""
    indexer = _Indexer(context or {})
    event_id = event.get("eventID")
    if isinstance(event_id, str):
        indexer.fits(event_id, IDENTIFIER_LENGTH, "eventID")
    columns = indexer.columns(event)
    return columns, indexer.epcs(event), indexer.links(event), indexer.sensor_reports(event), indexer.problems


def index_event(event: dict[str, Any], context: dict[str, str] | None = None) -> IndexedEvent:
    """The columns and lookup rows of an event in internal form; `context` maps its document's prefixes."""
    columns, epcs, links, sensor_reports, problems = index_rows(event, context)
    return IndexedEvent(
        columns=EventColumns._make(columns),
        epcs=[EpcRow._make(row) for row in epcs],
        links=[LinkRow._make(row) for row in links],
        sensor_reports=[SensorRow._make(row) for row in sensor_reports],
        problems=problems,
    )
