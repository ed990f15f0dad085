"""Read EPCIS 2.0 documents and events, JSON/JSON-LD or XML, into one internal form.

The internal form of an event is the plain dict EPCIS 2.0 JSON-LD carries for it (`type`, `eventTime`,
`epcList`, `readPoint: {"id": ...}`, ...), with user extensions keyed `prefix:name` and the prefixes
declared in the document's context. XML is mapped onto that shape following the standard's XML and
JSON bindings; values are kept as the document wrote them (`normalise_vocabulary` and
`normalise_time` give one form for comparison and hashing).
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from lxml import etree

EPCIS_NS = "urn:epcglobal:epcis:xsd:2"
EPCIS_QUERY_NS = "urn:epcglobal:epcis-query:xsd:2"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
# Namespaces of the document's own structure: not user extensions, so not in the context.
_STRUCTURAL_NS = {
    EPCIS_NS,
    EPCIS_QUERY_NS,
    "urn:epcglobal:epcis:xsd:1",
    "urn:epcglobal:epcis-query:xsd:1",
    "urn:epcglobal:epcis-masterdata:xsd:2",
    "urn:epcglobal:xsd:1",
    "http://www.unece.org/cefact/namespaces/StandardBusinessDocumentHeader",
    XSI_NS,
    "http://www.w3.org/2001/XMLSchema",
}

EVENT_TYPES = frozenset(
    {"ObjectEvent", "AggregationEvent", "TransactionEvent", "TransformationEvent", "AssociationEvent"}
)
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024

_TEXT_FIELDS = frozenset(
    {
        "eventTime",
        "recordTime",
        "eventTimeZoneOffset",
        "eventID",
        "action",
        "bizStep",
        "disposition",
        "parentID",
        "transformationID",
        "certificationInfo",
    }
)
_EPC_LISTS = frozenset({"epcList", "childEPCs", "inputEPCList", "outputEPCList"})
_QUANTITY_LISTS = frozenset({"quantityList", "childQuantityList", "inputQuantityList", "outputQuantityList"})
_TYPED_LISTS = {"bizTransactionList": "bizTransaction", "sourceList": "source", "destinationList": "destination"}
_SENSOR_NUMBERS = frozenset({"value", "minValue", "maxValue", "meanValue", "sDev", "percRank", "percValue"})


class EpcisFormatError(ValueError):
    """The input is not a readable EPCIS document or event (malformed, unsafe or too large)."""


@dataclass
class EpcisDocument:
    """A read document: its type, header attributes, the context's prefixes and the events in internal form."""

    type: str
    events: list[dict[str, Any]]
    context: dict[str, str] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)


def read_document(data: bytes | str, *, max_bytes: int = MAX_DOCUMENT_BYTES) -> EpcisDocument:
    """Read a JSON/JSON-LD or XML EPCIS document (or a single event); the format is told by the first character."""
    raw = data.encode() if isinstance(data, str) else data
    if len(raw) > max_bytes:
        raise EpcisFormatError(f"document of {len(raw)} bytes exceeds the {max_bytes}-byte limit")
    head = raw.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if head == b"<":
        return _read_xml(raw)
    if head in (b"{", b"["):
        return _read_json(raw)
    raise EpcisFormatError("neither JSON nor XML: the document must start with '{' or '<'")


def read_events(data: bytes | str, *, max_bytes: int = MAX_DOCUMENT_BYTES) -> list[dict[str, Any]]:
    """The events of a document (or the one event given), in internal form."""
    return read_document(data, max_bytes=max_bytes).events


# --- JSON ---------------------------------------------------------------------------------------


def _read_json(raw: bytes) -> EpcisDocument:
    try:
        parsed = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise EpcisFormatError(f"malformed JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise EpcisFormatError("an EPCIS JSON document or event must be a JSON object")
    context = json_context(parsed.get("@context"))
    kind = parsed.get("type")
    if kind in EVENT_TYPES:
        return EpcisDocument(type=kind, events=[copy.deepcopy(parsed)], context=context)
    if kind == "EPCISDocument":
        body = parsed.get("epcisBody")
        events = body.get("eventList") if isinstance(body, dict) else None
    elif kind == "EPCISQueryDocument":
        body = parsed.get("epcisBody")
        results = body.get("queryResults") if isinstance(body, dict) else None
        results_body = results.get("resultsBody") if isinstance(results, dict) else None
        events = results_body.get("eventList") if isinstance(results_body, dict) else None
    else:
        raise EpcisFormatError(
            f"unknown document type {kind!r}: expected EPCISDocument, EPCISQueryDocument or an event"
        )
    if events is None:
        events = []
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise EpcisFormatError("eventList must be a list of event objects")
    attributes = {k: copy.deepcopy(v) for k, v in parsed.items() if k not in ("@context", "epcisBody", "type")}
    return EpcisDocument(type=kind, events=copy.deepcopy(events), context=context, attributes=attributes)


def json_context(context: Any) -> dict[str, str]:
    """The prefix → namespace pairs a JSON-LD `@context` declares (remote context URLs carry none)."""
    entries = context if isinstance(context, list) else [context]
    prefixes: dict[str, str] = {}
    for entry in entries:
        if isinstance(entry, dict):
            prefixes.update({k: v for k, v in entry.items() if isinstance(v, str) and not k.startswith("@")})
    return prefixes


# --- XML ----------------------------------------------------------------------------------------


def _xml_parser() -> etree.XMLParser:
    # No DTD loading, no entity expansion, no network; huge_tree off keeps libxml2's depth and size limits.
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )


_BARE_DOCTYPE = re.compile(rb"<!DOCTYPE\s+[\w:.-]+\s*>", re.IGNORECASE)


def parse_xml(raw: bytes) -> etree._Element:
    """Parse XML safely: a bare `<!DOCTYPE name>` is tolerated (GS1 examples carry one), any DTD content is not."""
    if re.search(rb"<!ENTITY", raw, re.IGNORECASE):
        raise EpcisFormatError("XML entity declarations are not accepted")
    doctypes = re.findall(rb"<!DOCTYPE[^>]*>?", raw, re.IGNORECASE)
    if any(not _BARE_DOCTYPE.fullmatch(d) for d in doctypes):
        raise EpcisFormatError("XML DOCTYPE with a DTD (external or internal subset) is not accepted")
    try:
        root = etree.fromstring(raw, parser=_xml_parser())
    except etree.XMLSyntaxError as exc:
        raise EpcisFormatError(f"malformed XML: {exc}") from None
    docinfo = root.getroottree().docinfo
    if docinfo.system_url or docinfo.public_id:
        raise EpcisFormatError("XML DOCTYPE with a DTD (external or internal subset) is not accepted")
    return root


def _local(el: etree._Element) -> str:
    return etree.QName(el).localname


def _ns(el: etree._Element) -> str | None:
    return etree.QName(el).namespace


def _is_extension(el: etree._Element) -> bool:
    namespace = _ns(el)
    return namespace is not None and namespace not in _STRUCTURAL_NS


def _read_xml(raw: bytes) -> EpcisDocument:
    root = parse_xml(raw)
    context = {p: ns for el in root.iter() for p, ns in el.nsmap.items() if p and ns not in _STRUCTURAL_NS}
    kind = _local(root)
    if kind in EVENT_TYPES:
        return EpcisDocument(type=kind, events=[_xml_event(root)], context=context)
    if kind not in ("EPCISDocument", "EPCISQueryDocument"):
        raise EpcisFormatError(f"unknown XML root element {kind!r}")
    event_list = next((el for el in root.iter() if isinstance(el.tag, str) and _local(el) == "EventList"), None)
    events: list[dict[str, Any]] = []
    for child in event_list if event_list is not None else []:
        if not isinstance(child.tag, str):
            continue
        # EPCIS 1.x wrapped newer event types in <extension>.
        candidates = list(child) if _local(child) == "extension" else [child]
        events.extend(_xml_event(c) for c in candidates if isinstance(c.tag, str) and _local(c) in EVENT_TYPES)
    attributes = {k: v for k, v in root.attrib.items() if etree.QName(k).namespace is None}
    return EpcisDocument(type=kind, events=events, context=context, attributes=attributes)


def _key(el: etree._Element | str, nsmap: dict[str | None, str]) -> str:
    """`prefix:local` for a namespaced name, the full IRI when the namespace has no prefix."""
    qname = etree.QName(el)
    if qname.namespace is None:
        return qname.localname
    prefix = next((p for p, ns in nsmap.items() if ns == qname.namespace and p), None)
    return f"{prefix}:{qname.localname}" if prefix else f"{qname.namespace}{qname.localname}"


def _text(el: etree._Element) -> str:
    return (el.text or "").strip()


def _number(text: str) -> int | float | str:
    try:
        return int(text) if re.fullmatch(r"[+-]?\d+", text) else float(text)
    except ValueError:
        return text


def _extension_value(el: etree._Element) -> Any:
    children = [c for c in el if isinstance(c.tag, str)]
    attributes = {_key(k, el.nsmap): v for k, v in el.attrib.items() if etree.QName(k).namespace != XSI_NS}
    if not children and not attributes:
        return _text(el)
    value: dict[str, Any] = dict(attributes)
    if _text(el):
        value["#text"] = _text(el)  # text beside attributes or children, as GS1's JSON converters key it
    for child in children:
        _add(value, _key(child, child.nsmap), _extension_value(child))
    return value


def _add(target: dict[str, Any], key: str, value: Any) -> None:
    # A repeated element becomes a JSON array, as the JSON binding does.
    if key not in target:
        target[key] = value
    elif isinstance(target[key], list):
        target[key].append(value)
    else:
        target[key] = [target[key], value]


def _flatten(el: etree._Element) -> list[etree._Element]:
    # EPCIS 1.x <extension>/<baseExtension> wrappers hold fields the 2.0 form puts on the event itself.
    out: list[etree._Element] = []
    for child in el:
        if not isinstance(child.tag, str):
            continue
        if _ns(child) is None and _local(child) in ("extension", "baseExtension"):
            out.extend(_flatten(child))
        else:
            out.append(child)
    return out


def _attributes(el: etree._Element) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, text in el.attrib.items():
        key = _key(name, el.nsmap)
        if key in _SENSOR_NUMBERS:
            out[key] = _number(text)
        elif key == "booleanValue":
            out[key] = text.strip().lower() in ("true", "1")
        else:
            out[key] = text
    return out


def _with_extensions(el: etree._Element, known: dict[str, Any]) -> dict[str, Any]:
    for child in _flatten(el):
        if _is_extension(child):
            _add(known, _key(child, child.nsmap), _extension_value(child))
    return known


def _xml_field(name: str, el: etree._Element) -> Any:  # noqa: PLR0911, PLR0912 - one branch per binding rule
    if name in _TEXT_FIELDS:
        return _text(el)
    if name in _EPC_LISTS:
        return [_text(c) for c in _flatten(el) if _local(c) == "epc"]
    if name in _QUANTITY_LISTS:
        quantities = []
        for element in _flatten(el):
            item: dict[str, Any] = {}
            for part in _flatten(element):
                part_name = _local(part)
                if part_name == "quantity":
                    item["quantity"] = _number(_text(part))
                elif not _is_extension(part):
                    item[part_name] = _text(part)
            quantities.append(_with_extensions(element, item))
        return quantities
    if name in _TYPED_LISTS:
        entries = []
        for entry in _flatten(el):
            item = {"type": entry.get("type")} if entry.get("type") is not None else {}
            item[_TYPED_LISTS[name]] = _text(entry)
            entries.append(item)
        return entries
    if name in ("readPoint", "bizLocation"):
        place = {_local(c): _text(c) for c in _flatten(el) if not _is_extension(c)}
        return _with_extensions(el, place)
    if name == "persistentDisposition":
        disposition: dict[str, list[str]] = {}
        for child in _flatten(el):
            disposition.setdefault(_local(child), []).append(_text(child))
        return disposition
    if name == "errorDeclaration":
        declaration: dict[str, Any] = {}
        for child in _flatten(el):
            child_name = _local(child)
            if child_name == "correctiveEventIDs":
                declaration[child_name] = [_text(c) for c in _flatten(child)]
            elif not _is_extension(child):
                declaration[child_name] = _text(child)
        return _with_extensions(el, declaration)
    if name == "sensorElementList":
        return [_sensor_element(c) for c in _flatten(el)]
    if name == "ilmd":
        return _with_extensions(el, {})
    return _extension_value(el)


def _sensor_element(el: etree._Element) -> dict[str, Any]:
    element: dict[str, Any] = {}
    for child in _flatten(el):
        child_name = _local(child)
        if child_name == "sensorMetadata" and not _is_extension(child):
            element["sensorMetadata"] = _attributes(child)
        elif child_name == "sensorReport" and not _is_extension(child):
            element.setdefault("sensorReport", []).append(_attributes(child))
    return _with_extensions(el, element)


def _xml_event(el: etree._Element) -> dict[str, Any]:
    event: dict[str, Any] = {"type": _local(el)}
    for child in _flatten(el):
        if _is_extension(child):
            _add(event, _key(child, child.nsmap), _extension_value(child))
        else:
            name = _local(child)
            event[name] = _xml_field(name, child)
    return event


# --- normal forms -------------------------------------------------------------------------------

CBV_WEB = "https://ref.gs1.org/cbv/"
# vocabulary kind → (CBV 1.x URN prefix, CBV 2.0 web term prefix)
VOCABULARIES = {
    "bizStep": ("urn:epcglobal:cbv:bizstep:", "BizStep-"),
    "disposition": ("urn:epcglobal:cbv:disp:", "Disp-"),
    "bizTransactionType": ("urn:epcglobal:cbv:btt:", "BTT-"),
    "sourceDestType": ("urn:epcglobal:cbv:sdt:", "SDT-"),
    "errorReason": ("urn:epcglobal:cbv:er:", "ER-"),
}
GS1_VOC = "https://gs1.org/voc/"


def normalise_vocabulary(value: str, kind: str) -> str:
    """One form for a CBV value given as CBV 1.x URN, CBV 2.0 web URI or bare name: the web URI.

    `kind` is a key of VOCABULARIES; a value from none of the three forms (a private vocabulary URI)
    is returned unchanged.
    """
    urn, term = VOCABULARIES[kind]
    if value.startswith(urn):
        return CBV_WEB + term + value[len(urn) :]
    if value.startswith(CBV_WEB) or ":" in value:
        return value
    return CBV_WEB + term + value


def normalise_measurement_type(value: str) -> str:
    """A sensor report type as the GS1 web vocabulary URI (`Temperature`, `gs1:Temperature`)."""
    if value.startswith("gs1:"):
        return GS1_VOC + value[4:]
    return value if ":" in value else GS1_VOC + value


_EXTRA_FRACTION = re.compile(r"(\.\d{6})\d+")


def normalise_time(value: str) -> str:
    """An xsd:dateTime in UTC at millisecond precision (`2005-04-04T02:33:31.116Z`), for comparing and hashing."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    # fromisoformat takes at most 6 fraction digits (searching first: most times have fewer, and sub costs more).
    if _EXTRA_FRACTION.search(text):
        text = _EXTRA_FRACTION.sub(r"\1", text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    millis = round(moment.microsecond / 1000)
    if millis == 1000:
        moment = moment.replace(microsecond=0) + timedelta(seconds=1)
        millis = 0
    if moment.year >= 1000:  # isoformat is faster than strftime, whose %Y does not pad earlier years
        return moment.replace(microsecond=millis * 1000, tzinfo=None).isoformat(timespec="milliseconds") + "Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{millis:03d}Z"


def normalise_event(event: dict[str, Any]) -> dict[str, Any]:
    """A copy of an internal-form event with vocabulary as web URIs and its timestamps in UTC milliseconds."""
    out = copy.deepcopy(event)
    _normalise_fields(out, {"eventTime": None, "recordTime": None, "bizStep": "bizStep", "disposition": "disposition"})
    persistent = out.get("persistentDisposition")
    if isinstance(persistent, dict):
        for key, values in persistent.items():
            if isinstance(values, list):
                persistent[key] = [normalise_vocabulary(v, "disposition") for v in values if isinstance(v, str)]
    kinds = {
        "bizTransactionList": "bizTransactionType",
        "sourceList": "sourceDestType",
        "destinationList": "sourceDestType",
    }
    for key, kind in kinds.items():
        for entry in out.get(key) or []:
            if isinstance(entry, dict) and isinstance(entry.get("type"), str):
                entry["type"] = normalise_vocabulary(entry["type"], kind)
    declaration = out.get("errorDeclaration")
    if isinstance(declaration, dict):
        _normalise_fields(declaration, {"reason": "errorReason", "declarationTime": None})
    for element in out.get("sensorElementList") or []:
        if isinstance(element, dict):
            _normalise_sensor_element(element)
    return out


def _normalise_fields(target: dict[str, Any], fields: dict[str, str | None]) -> None:
    """Normalise string fields in place: a vocabulary kind, or None for a timestamp."""
    for key, kind in fields.items():
        value = target.get(key)
        if isinstance(value, str):
            target[key] = normalise_time(value) if kind is None else normalise_vocabulary(value, kind)


def _normalise_sensor_element(element: dict[str, Any]) -> None:
    metadata = element.get("sensorMetadata")
    reports = element.get("sensorReport") or []
    for part in [metadata, *reports]:
        if not isinstance(part, dict):
            continue
        for key in ("time", "startTime", "endTime"):
            if isinstance(part.get(key), str):
                part[key] = normalise_time(part[key])
        if part is not metadata and isinstance(part.get("type"), str):
            part["type"] = normalise_measurement_type(part["type"])
