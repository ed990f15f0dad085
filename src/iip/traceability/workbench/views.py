"""How the workbench pages show events and identifiers: labels of event types and CBV terms, the
identifiers an event names by role, places, short labels of GS1 keys, and an event's raw JSON-LD.

Pure functions of stored values; the pages and the trace graph use them, the services know nothing
of them. Labels are message ids, translated where a template renders them.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote, urlencode, urlsplit

from iip.console.i18n import N_
from iip.traceability.epcis.documents import CBV_WEB, VOCABULARIES
from iip.traceability.epcis.identifiers import DL_BASE, IdentifierError, canonical
from iip.traceability.epcis.writer import json_document
from iip.traceability.models import Event

TRACE_PATH = "/traceability/trace"
EVENT_PATH = "/traceability/events/view"

EVENT_TYPE_LABELS: dict[str, str] = {
    "ObjectEvent": N_("Object event"),
    "AggregationEvent": N_("Aggregation event"),
    "TransactionEvent": N_("Transaction event"),
    "TransformationEvent": N_("Transformation event"),
    "AssociationEvent": N_("Association event"),
}
ACTION_LABELS: dict[str, str] = {"ADD": N_("Add"), "OBSERVE": N_("Observe"), "DELETE": N_("Delete")}

# CBV 2.0 business steps and dispositions. The English labels are chosen not to collide with other
# message ids of the console, whose translations mean something else ("Active" is a user's state).
BIZ_STEP_LABELS: dict[str, str] = {
    "accepting": N_("Accepting"),
    "arriving": N_("Arriving"),
    "assembling": N_("Assembling"),
    "collecting": N_("Collecting"),
    "commissioning": N_("Commissioning"),
    "consigning": N_("Consigning"),
    "creating_class_instance": N_("Creating class instance"),
    "cycle_counting": N_("Cycle counting"),
    "decommissioning": N_("Decommissioning"),
    "departing": N_("Departing"),
    "destroying": N_("Destroying"),
    "disassembling": N_("Disassembling"),
    "dispensing": N_("Dispensing"),
    "encoding": N_("Encoding"),
    "entering_exiting": N_("Entering or exiting"),
    "holding": N_("Holding"),
    "inspecting": N_("Inspecting"),
    "installing": N_("Installing"),
    "killing": N_("Killing a tag"),
    "loading": N_("Loading"),
    "other": N_("Other business step"),
    "packing": N_("Packing"),
    "picking": N_("Picking"),
    "receiving": N_("Receiving"),
    "removing": N_("Removing"),
    "repackaging": N_("Repackaging"),
    "repairing": N_("Repairing"),
    "replacing": N_("Replacing"),
    "reserving": N_("Reserving"),
    "retail_selling": N_("Retail selling"),
    "sampling": N_("Sampling"),
    "sensor_reporting": N_("Sensor reporting"),
    "shipping": N_("Shipping"),
    "staging_outbound": N_("Staging outbound"),
    "stock_taking": N_("Stock taking"),
    "stocking": N_("Stocking"),
    "storing": N_("Storing"),
    "transporting": N_("Transporting"),
    "unloading": N_("Unloading"),
    "unpacking": N_("Unpacking"),
    "void_shipping": N_("Void shipping"),
}
DISPOSITION_LABELS: dict[str, str] = {
    "active": N_("Active (commissioned)"),
    "available": N_("Available"),
    "completeness_inferred": N_("Completeness inferred"),
    "completeness_verified": N_("Completeness verified"),
    "conformant": N_("Conformant"),
    "container_closed": N_("Container closed"),
    "container_open": N_("Container open"),
    "damaged": N_("Damaged"),
    "destroyed": N_("Destroyed"),
    "dispensed": N_("Dispensed"),
    "disposed": N_("Disposed"),
    "encoded": N_("Encoded"),
    "expired": N_("Expired (disposition)"),
    "in_progress": N_("In progress"),
    "in_transit": N_("In transit"),
    "inactive": N_("Inactive (disposition)"),
    "mismatch_class": N_("Class mismatch"),
    "mismatch_instance": N_("Instance mismatch"),
    "mismatch_quantity": N_("Quantity mismatch"),
    "needs_replacement": N_("Needs replacement"),
    "no_pedigree_match": N_("No pedigree match"),
    "non_conformant": N_("Non-conformant"),
    "non_sellable_other": N_("Not sellable"),
    "partially_dispensed": N_("Partially dispensed"),
    "recalled": N_("Recalled"),
    "reserved": N_("Reserved"),
    "retail_sold": N_("Sold at retail"),
    "returned": N_("Returned"),
    "sellable_accessible": N_("Sellable, accessible"),
    "sellable_not_accessible": N_("Sellable, not accessible"),
    "stolen": N_("Stolen"),
    "unavailable": N_("Unavailable"),
    "unknown": N_("Unknown disposition"),
}
_CBV_LABELS = {"bizStep": BIZ_STEP_LABELS, "disposition": DISPOSITION_LABELS}

# The fields naming identifiers, in the order an event is read: (field, role label, by quantity).
IDENTIFIER_FIELDS: tuple[tuple[str, str, bool], ...] = (
    ("parentID", N_("Parent"), False),
    ("epcList", N_("Object"), False),
    ("childEPCs", N_("Child"), False),
    ("inputEPCList", N_("Input"), False),
    ("outputEPCList", N_("Output"), False),
    ("quantityList", N_("Object"), True),
    ("childQuantityList", N_("Child"), True),
    ("inputQuantityList", N_("Input"), True),
    ("outputQuantityList", N_("Output"), True),
)
LINK_FIELDS: tuple[tuple[str, str, str, str], ...] = (
    # (list field, value key, label, the CBV vocabulary of its types)
    ("bizTransactionList", "bizTransaction", N_("Business transaction"), "bizTransactionType"),
    ("sourceList", "source", N_("Source"), "sourceDestType"),
    ("destinationList", "destination", N_("Destination"), "sourceDestType"),
)
# GS1 application identifiers in Digital Link paths, as the short labels name them.
KEY_LABELS: dict[str, str] = {
    "01": N_("GTIN"),
    "10": N_("Batch/lot"),
    "21": N_("Serial number"),
    "00": N_("SSCC"),
    "414": N_("GLN"),
    "254": N_("GLN extension"),
    "417": N_("Party GLN"),
    "8003": N_("GRAI"),
    "8004": N_("GIAI"),
}


def trace_url(identifier: str) -> str:
    return f"{TRACE_PATH}?{urlencode({'epc': identifier})}"


def event_url(event_id: str) -> str:
    return f"{EVENT_PATH}?{urlencode({'id': event_id})}"


def canonical_or_none(value: object) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return canonical(value)
    except IdentifierError:
        return None


# --- identifiers an event names


@dataclass(frozen=True)
class Named:
    """An identifier an event names, as captured, in one role."""

    role: str  # message id
    value: str
    by_quantity: bool = False
    quantity: float | int | None = None
    uom: str | None = None


def _quantity(value: object) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


def named_identifiers(body: Mapping[str, Any]) -> list[Named]:
    """Every identifier of an event body with its role, in the order of `IDENTIFIER_FIELDS`."""
    found: list[Named] = []
    for field, role, by_quantity in IDENTIFIER_FIELDS:
        value = body.get(field)
        if field == "parentID":
            if isinstance(value, str) and value:
                found.append(Named(role, value))
            continue
        for item in value if isinstance(value, list) else []:
            if not by_quantity and isinstance(item, str) and item:
                found.append(Named(role, item))
            elif by_quantity and isinstance(item, Mapping) and isinstance(item.get("epcClass"), str):
                uom = item.get("uom")
                found.append(
                    Named(
                        role,
                        item["epcClass"],
                        True,
                        _quantity(item.get("quantity")),
                        uom if isinstance(uom, str) else None,
                    )
                )
    return found


@dataclass(frozen=True)
class Link:
    label: str  # message id: business transaction, source, destination
    type: str
    value: str


def links_of(body: Mapping[str, Any]) -> list[Link]:
    out: list[Link] = []
    for field, key, label, vocabulary in LINK_FIELDS:
        for item in body.get(field) or []:
            if isinstance(item, Mapping) and isinstance(item.get(key), str):
                kind = item.get("type")
                out.append(Link(label, term_of(kind, vocabulary) if isinstance(kind, str) else "", item[key]))
    return out


# --- CBV terms and places


def term_of(value: str | None, vocabulary: str) -> str:
    """A CBV value by its bare term (`shipping`) whichever way it is written; anything else as given."""
    if not value:
        return ""
    urn, web = VOCABULARIES[vocabulary]
    for prefix in (CBV_WEB + web, urn, "cbv:" + web):
        if value.startswith(prefix):
            return value[len(prefix) :]
    return value


@dataclass(frozen=True)
class Term:
    term: str  # the bare CBV term, or a private vocabulary's URI as stored
    label: str | None  # message id of a standard term

    @property
    def text(self) -> str:
        return self.label or self.term


def cbv(value: str | None, vocabulary: Literal["bizStep", "disposition"]) -> Term | None:
    if not value:
        return None
    term = term_of(value, vocabulary)
    return Term(term, _CBV_LABELS[vocabulary].get(term))


def dl_pairs(value: str) -> list[tuple[str, str]]:
    """The (AI, value) pairs of a Digital Link on id.gs1.org; none for anything else."""
    if not value.startswith(DL_BASE + "/"):
        return []
    segments = [s for s in urlsplit(value).path.split("/") if s]
    return [(segments[i], unquote(segments[i + 1])) for i in range(0, len(segments) - 1, 2)]


def place(value: str | None) -> str:
    """A location for people: `GLN 9521234000021` (with its extension), else as stored."""
    if not value:
        return ""
    pairs = dict(dl_pairs(value))
    if "414" not in pairs:
        return value
    return f"GLN {pairs['414']}" + (f" · {pairs['254']}" if "254" in pairs else "")


def party(value: str | None) -> str:
    """An owner for people: `GLN 9521234000021` for a party GLN, else as stored."""
    if not value:
        return ""
    pairs = dict(dl_pairs(value))
    return f"GLN {pairs['417']}" if "417" in pairs else value


@dataclass(frozen=True)
class LabelPart:
    name: str  # message id, or "" for an identifier that is no GS1 key
    value: str


def short_label(identifier: str, limit: int = 26) -> tuple[LabelPart, ...]:
    """At most two parts naming an identifier briefly: the most specific key first (serial, lot, SSCC)."""
    pairs = dl_pairs(canonical_or_none(identifier) or identifier)  # a URN by its keys too
    if not pairs:
        text = identifier if len(identifier) <= limit else "…" + identifier[-(limit - 1) :]
        return (LabelPart("", text),)
    by_ai = dict(pairs)
    order = [ai for ai in ("21", "10", "00", "8003", "8004", "414", "417", "01") if ai in by_ai]
    parts = [LabelPart(KEY_LABELS[ai], _cut(by_ai[ai], limit)) for ai in order[:2]]
    return tuple(parts) or (LabelPart("", _cut(identifier, limit)),)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def is_lot(identifier: str) -> bool:
    pairs = dict(dl_pairs(identifier))
    return "01" in pairs and "21" not in pairs


# --- the event itself


def _utc_text(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def raw_json_ld(event: Event) -> str:
    """The event as the query API answers it, in an EPCISDocument of its own, indented for reading."""
    body = {**event.body, "eventID": event.body.get("eventID") or event.event_id}
    body["recordTime"] = _utc_text(event.record_time)
    document = json_document([(body, event.context)])
    document.pop("creationDate", None)  # the time of this rendering, not of the event
    return json.dumps(document, indent=2, ensure_ascii=False, default=str)


def local_event_time(event: Event) -> str:
    """The event's time as it happened where it happened: its own time zone offset."""
    offset = event.event_time_zone_offset or "+00:00"
    try:
        hours, minutes = int(offset[1:3]), int(offset[4:6])
    except ValueError:
        return _utc_text(event.event_time)
    sign = -1 if offset.startswith("-") else 1
    zone = dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))
    return event.event_time.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S") + f" {offset}"


def canonical_identifiers(body: Mapping[str, Any]) -> Iterator[str]:
    for named in named_identifiers(body):
        value = canonical_or_none(named.value)
        if value is not None:
            yield value
