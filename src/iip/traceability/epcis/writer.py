"""Write events in internal form as EPCIS 2.0 documents: JSON-LD (`json_document`) or XML (`xml_document`).

Each item is an event as `epcis.documents` reads it together with the prefix → namespace map of the
document it came from. Events from several documents go into one output document, so their
prefixes are merged: when two items use one prefix for different namespaces, one of them gets a
new prefix, renamed in every key of that event (nested extension keys included); one namespace
keeps one prefix.

The two bindings spell some values differently, and each writer uses its own binding's spelling:

- CBV values: JSON-LD writes the bare term (`shipping`), which GS1's JSON Schema requires in place
  of a CBV 1.x URN; XML has no context to expand a bare term and writes the URN
  (`urn:epcglobal:cbv:bizstep:shipping`). CBV web URIs are written unchanged by both.
- Sensor report `type` and `exception`, and `component`: bare in JSON-LD (`Temperature`, `x`),
  `gs1:Temperature` and `cbv:Comp-x` in XML, as GS1's XML examples write them.
- The ILMD master data prefix `cbvmda` is `urn:epcglobal:cbv:mda:` in the JSON-LD context and
  `urn:epcglobal:cbv:mda` in XML.

XML cannot tell a one-element array from a scalar, nor a number or boolean from text, in an
extension: those come back from XML as a scalar and as text (see docs/traceability.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from lxml import etree

from iip.traceability.epcis.documents import (
    CBV_WEB,
    EPCIS_NS,
    EPCIS_QUERY_NS,
    EVENT_TYPES,
    GS1_VOC,
    VOCABULARIES,
    XSI_NS,
    EpcisFormatError,
)

EPCIS_CONTEXT_URL = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
SCHEMA_VERSION = "2.0"
XML_NS = "http://www.w3.org/XML/1998/namespace"
_MDA_JSON = "urn:epcglobal:cbv:mda:"
_MDA_XML = "urn:epcglobal:cbv:mda"

# Prefixes GS1's EPCIS JSON-LD context declares: a key may use them without the document declaring them.
JSONLD_PREFIXES = {
    "epcis": "https://ref.gs1.org/epcis/",
    "cbv": CBV_WEB,
    "cbvmda": _MDA_JSON,
    "gs1": GS1_VOC,
    "rdfs": "http://www.w3.org/2000/01/rdf-schema#",
    "owl": "http://www.w3.org/2002/07/owl#",
    "xsd": "http://www.w3.org/2001/XMLSchema#",
    "dcterms": "http://purl.org/dc/terms/",
}
_XML_FALLBACK = {**JSONLD_PREFIXES, "cbvmda": _MDA_XML}
_XML_RESERVED = {"epcis": EPCIS_NS, "epcisq": EPCIS_QUERY_NS, "xsi": XSI_NS, "xml": XML_NS}

Item = tuple[Mapping[str, Any], Mapping[str, str]]

# Element order each event type's XSD sequence requires, after the common fields.
_COMMON_FIELDS = (
    "eventTime",
    "recordTime",
    "eventTimeZoneOffset",
    "eventID",
    "errorDeclaration",
    "certificationInfo",
)
_WHAT_WHERE_WHY = (
    "bizStep",
    "disposition",
    "readPoint",
    "bizLocation",
)
_FIELD_ORDER: dict[str, tuple[str, ...]] = {
    "ObjectEvent": (
        "epcList",
        "action",
        *_WHAT_WHERE_WHY,
        "bizTransactionList",
        "quantityList",
        "sourceList",
        "destinationList",
        "sensorElementList",
        "persistentDisposition",
        "ilmd",
    ),
    "AggregationEvent": (
        "parentID",
        "childEPCs",
        "action",
        *_WHAT_WHERE_WHY,
        "bizTransactionList",
        "childQuantityList",
        "sourceList",
        "destinationList",
        "sensorElementList",
        "persistentDisposition",
    ),
    "TransactionEvent": (
        "bizTransactionList",
        "parentID",
        "epcList",
        "action",
        *_WHAT_WHERE_WHY,
        "quantityList",
        "sourceList",
        "destinationList",
        "sensorElementList",
        "persistentDisposition",
    ),
    "TransformationEvent": (
        "inputEPCList",
        "inputQuantityList",
        "outputEPCList",
        "outputQuantityList",
        "transformationID",
        *_WHAT_WHERE_WHY,
        "bizTransactionList",
        "sourceList",
        "destinationList",
        "sensorElementList",
        "persistentDisposition",
        "ilmd",
    ),
    "AssociationEvent": (
        "parentID",
        "childEPCs",
        "childQuantityList",
        "action",
        *_WHAT_WHERE_WHY,
        "bizTransactionList",
        "sourceList",
        "destinationList",
        "sensorElementList",
        "persistentDisposition",
    ),
}
_EPC_LISTS = frozenset({"epcList", "childEPCs", "inputEPCList", "outputEPCList"})
_QUANTITY_LISTS = frozenset({"quantityList", "childQuantityList", "inputQuantityList", "outputQuantityList"})
_TYPED_LISTS = {"bizTransactionList": "bizTransaction", "sourceList": "source", "destinationList": "destination"}
_TYPED_LIST_KINDS = {
    "bizTransactionList": "bizTransactionType",
    "sourceList": "sourceDestType",
    "destinationList": "sourceDestType",
}
_COMPONENT_URN = "urn:epcglobal:cbv:comp:"
_COMPONENT_WEB = CBV_WEB + "Comp-"
_LOCAL_NAME = re.compile(r"[A-Za-z_][\w.-]*$")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- prefixes -----------------------------------------------------------------------------------


def _key_prefix(key: str) -> str | None:
    """The prefix of a `prefix:local` key; None for plain names and full IRIs."""
    if ":" not in key or "://" in key or key.startswith("urn:"):
        return None
    return key.split(":", 1)[0]


def _key_prefixes(value: Any, found: set[str]) -> set[str]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            prefix = _key_prefix(key) if isinstance(key, str) else None
            if prefix:
                found.add(prefix)
            _key_prefixes(item, found)
    elif isinstance(value, list):
        for item in value:
            _key_prefixes(item, found)
    return found


def _renamed(value: Any, renames: Mapping[str, str]) -> Any:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            prefix = _key_prefix(key)
            new_key = f"{renames[prefix]}:{key.split(':', 1)[1]}" if prefix is not None and prefix in renames else key
            out[new_key] = _renamed(item, renames)
        return out
    if isinstance(value, list):
        return [_renamed(item, renames) for item in value]
    return value


def _place(prefix: str, namespace: str, merged: dict[str, str]) -> str:
    """The prefix a namespace gets in the merged map: the one it already has, its own, or a new one."""
    existing = next((p for p, ns in merged.items() if ns == namespace), None)
    if existing is not None:
        return existing
    candidate, number = prefix, 1
    while candidate in merged:
        number += 1
        candidate = f"{prefix}{number}"
    merged[candidate] = namespace
    return candidate


def merge_contexts(
    items: Iterable[Item],
    *,
    reserved: Mapping[str, str] | None = None,
    fallback: Mapping[str, str] = JSONLD_PREFIXES,
    translate: Mapping[str, str] | None = None,
) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """One prefix map for all items, and each event with its keys renamed to it.

    `reserved` prefixes are taken before any item's; `fallback` gives the namespace of a prefix a
    key uses that the item does not declare; `translate` maps a namespace to the one this binding
    uses for it. Returns the prefixes to declare (the items' own, and fallbacks a key needed) and the events.
    """
    merged: dict[str, str] = dict(reserved or {})
    declared: dict[str, str] = {}
    translate = translate or {}
    events: list[dict[str, Any]] = []
    for body, context in items:
        used = _key_prefixes(body, set())
        effective = {p: fallback[p] for p in used if p in fallback and p not in context}
        effective.update(context)
        renames: dict[str, str] = {}
        for prefix, namespace in effective.items():
            namespace_here = translate.get(namespace, namespace)
            target = _place(prefix, namespace_here, merged)
            if target != prefix:
                renames[prefix] = target
            if prefix in context or prefix in used:
                declared[target] = namespace_here
        events.append(_renamed(body, renames) if renames else dict(body))
    return declared, events


# --- JSON-LD ------------------------------------------------------------------------------------


def _json_vocabulary(value: Any, kind: str) -> Any:
    """A CBV 1.x URN as the bare term the JSON binding uses; other values unchanged."""
    urn, _term = VOCABULARIES[kind]
    if isinstance(value, str) and value.startswith(urn):
        return value[len(urn) :]
    return value


def _json_gs1_term(value: Any) -> Any:
    # The JSON Schema refuses GS1 web vocabulary URIs for measurement and alert types; it wants the bare term.
    if isinstance(value, str) and value.startswith(GS1_VOC):
        return value[len(GS1_VOC) :]
    return value


def _json_sensor_report(report: Any) -> Any:
    if not isinstance(report, Mapping):
        return report
    out = dict(report)
    for key in ("type", "exception"):
        if key in out:
            out[key] = _json_gs1_term(out[key])
    component = out.get("component")
    if isinstance(component, str) and component.startswith(_COMPONENT_URN):
        out["component"] = component[len(_COMPONENT_URN) :]
    return out


def _json_quantities(quantities: Any) -> Any:
    # XML's nil quantity (read as "") has no JSON spelling: the schema wants a number or no quantity at all.
    if not isinstance(quantities, list):
        return quantities
    return [
        {k: v for k, v in q.items() if not (k == "quantity" and (v is None or v == ""))}
        if isinstance(q, Mapping)
        else q
        for q in quantities
    ]


def json_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """An internal-form event with its values in the JSON binding's spelling (CBV URNs as bare terms)."""
    out = dict(event)
    for key in ("quantityList", "childQuantityList", "inputQuantityList", "outputQuantityList"):
        if key in out:
            out[key] = _json_quantities(out[key])
    for key in ("bizStep", "disposition"):
        if key in out:
            out[key] = _json_vocabulary(out[key], key)
    persistent = out.get("persistentDisposition")
    if isinstance(persistent, Mapping):
        out["persistentDisposition"] = {
            k: [_json_vocabulary(v, "disposition") for v in values] if isinstance(values, list) else values
            for k, values in persistent.items()
        }
    for name, kind in _TYPED_LIST_KINDS.items():
        entries = out.get(name)
        if isinstance(entries, list):
            out[name] = [
                {**e, "type": _json_vocabulary(e["type"], kind)} if isinstance(e, Mapping) and "type" in e else e
                for e in entries
            ]
    declaration = out.get("errorDeclaration")
    if isinstance(declaration, Mapping) and "reason" in declaration:
        out["errorDeclaration"] = {**declaration, "reason": _json_vocabulary(declaration["reason"], "errorReason")}
    elements = out.get("sensorElementList")
    if isinstance(elements, list):
        out["sensorElementList"] = [
            {**e, "sensorReport": [_json_sensor_report(r) for r in e["sensorReport"]]}
            if isinstance(e, Mapping) and isinstance(e.get("sensorReport"), list)
            else e
            for e in elements
        ]
    return out


def json_document(
    items: Sequence[Item],
    *,
    query_name: str | None = None,
    subscription_id: str | None = None,
    creation_date: str | None = None,
) -> dict[str, Any]:
    """An EPCISDocument, or with `query_name` an EPCISQueryDocument, holding the items' events (JSON-LD)."""
    prefixes, events = merge_contexts(items, translate={_MDA_XML: _MDA_JSON})
    context: list[Any] = [EPCIS_CONTEXT_URL]
    if prefixes:
        context.append(prefixes)
    event_list = [json_event(e) for e in events]
    document: dict[str, Any] = {
        "@context": context,
        "type": "EPCISDocument" if query_name is None else "EPCISQueryDocument",
        "schemaVersion": SCHEMA_VERSION,
        "creationDate": creation_date or _now(),
    }
    if query_name is None:
        document["epcisBody"] = {"eventList": event_list}
    else:
        results: dict[str, Any] = {"queryName": query_name}
        if subscription_id is not None:
            results["subscriptionID"] = subscription_id
        results["resultsBody"] = {"eventList": event_list}
        document["epcisBody"] = {"queryResults": results}
    return document


# --- XML ----------------------------------------------------------------------------------------


class _XmlWriter:
    """Builds the elements of one document; `namespaces` is the merged prefix → namespace map."""

    def __init__(self, namespaces: Mapping[str, str]) -> None:
        self.namespaces = dict(namespaces)
        self.value_prefixes: set[str] = set()  # prefixes written inside values (gs1:Temperature)

    # names

    def qname(self, key: str) -> str:
        """Clark notation `{namespace}local` of an extension key (`prefix:local`, a plain name or a full IRI)."""
        prefix = _key_prefix(key)
        if prefix is not None:
            namespace = self.namespaces.get(prefix)
            if namespace is None:
                raise EpcisFormatError(f"extension {key!r}: prefix {prefix!r} has no namespace in the document")
            local = key.split(":", 1)[1]
        elif ":" in key:
            local_match = _LOCAL_NAME.search(key)
            if local_match is None or local_match.start() == 0:
                raise EpcisFormatError(f"extension {key!r} has no XML local name")
            namespace, local = key[: local_match.start()], local_match.group()
        else:
            return self._checked(key, key)
        return self._checked(f"{{{namespace}}}{local}", key)

    @staticmethod
    def _checked(name: str, key: str) -> str:
        try:
            etree.QName(name)
        except ValueError:
            raise EpcisFormatError(f"extension {key!r} is not a valid XML name") from None
        return name

    # values

    def vocabulary(self, value: Any, kind: str) -> str:
        """A bare CBV term as its URN: XML has no context to expand a bare term."""
        text = _scalar(value)
        urn, _term = VOCABULARIES[kind]
        if text and ":" not in text:
            return urn + text
        return text

    def gs1_term(self, value: Any) -> str:
        text = _scalar(value)
        if text and ":" not in text:
            self.value_prefixes.add("gs1")
            return "gs1:" + text
        return text

    def component(self, value: Any) -> str:
        text = _scalar(value)
        if text and ":" not in text:
            self.value_prefixes.add("cbv")
            return "cbv:Comp-" + text
        return text

    # elements

    def text_child(self, parent: etree._Element, name: str, value: Any) -> etree._Element:
        element = etree.SubElement(parent, name)
        element.text = _scalar(value)
        return element

    def extension(self, parent: etree._Element, key: str, value: Any) -> None:
        """An extension as namespaced elements: an object as children, an array as repeated elements."""
        if isinstance(value, list):
            for item in value:
                self.extension(parent, key, item)
            return
        name = self.qname(key)
        nsmap: dict[str | None, str] | None = None
        if _key_prefix(key) is None and ":" in key and not _has_plain_keys(value):
            # A full-IRI key: its namespace as the element's default keeps the key as it was.
            nsmap = {None: etree.QName(name).namespace or ""}
        element = etree.SubElement(parent, name, nsmap=nsmap)
        if isinstance(value, Mapping):
            for child_key, child in value.items():
                if child_key == "#text":
                    element.text = _scalar(child)
                else:
                    self.extension(element, child_key, child)
        else:
            element.text = _scalar(value)

    def extensions(self, parent: etree._Element, fields: Mapping[str, Any], known: Iterable[str]) -> None:
        skip = set(known)
        for key, value in fields.items():
            if key not in skip and (_key_prefix(key) is not None or ":" in key):
                self.extension(parent, key, value)

    def event(self, parent: etree._Element, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        if kind not in EVENT_TYPES:
            raise EpcisFormatError(f"event type {kind!r} has no XML element")
        element = etree.SubElement(parent, str(kind))
        order = (*_COMMON_FIELDS, *_FIELD_ORDER[str(kind)])
        for name in order:
            if name in event and event[name] is not None:
                self.field(element, name, event[name])
        self.extensions(element, event, order)

    def field(self, parent: etree._Element, name: str, value: Any) -> None:  # noqa: PLR0912 - one branch per binding rule
        if name in _EPC_LISTS:
            holder = etree.SubElement(parent, name)
            for epc in value if isinstance(value, list) else [value]:
                self.text_child(holder, "epc", epc)
        elif name in _QUANTITY_LISTS:
            holder = etree.SubElement(parent, name)
            for quantity in value if isinstance(value, list) else []:
                self.quantity_element(holder, quantity)
        elif name in _TYPED_LISTS:
            self.typed_list(parent, name, value)
        elif name in ("bizStep", "disposition"):
            self.text_child(parent, name, self.vocabulary(value, name))
        elif name in ("readPoint", "bizLocation"):
            place = etree.SubElement(parent, name)
            if isinstance(value, Mapping):
                self.text_child(place, "id", value.get("id", ""))
                self.extensions(place, value, ("id",))
            else:
                self.text_child(place, "id", value)
        elif name == "persistentDisposition":
            holder = etree.SubElement(parent, name)
            for part in ("unset", "set"):  # the XSD's order
                values = value.get(part) if isinstance(value, Mapping) else None
                for disposition in values if isinstance(values, list) else []:
                    self.text_child(holder, part, self.vocabulary(disposition, "disposition"))
        elif name == "errorDeclaration":
            self.error_declaration(parent, value)
        elif name == "sensorElementList":
            holder = etree.SubElement(parent, name)
            for sensor in value if isinstance(value, list) else []:
                self.sensor_element(holder, sensor)
        elif name == "ilmd":
            holder = etree.SubElement(parent, name)
            if isinstance(value, Mapping):
                self.extensions(holder, value, ())
        elif name == "certificationInfo" and isinstance(value, list):
            for info in value:
                self.text_child(parent, name, info)
        else:
            self.text_child(parent, name, value)

    def quantity_element(self, parent: etree._Element, quantity: Any) -> None:
        element = etree.SubElement(parent, "quantityElement")
        if not isinstance(quantity, Mapping):
            self.text_child(element, "epcClass", quantity)
            return
        self.text_child(element, "epcClass", quantity.get("epcClass", ""))
        if "quantity" in quantity:
            amount = quantity["quantity"]
            if amount is None or amount == "":
                # The reader's form of `<quantity xsi:nil="true"/>`.
                etree.SubElement(element, "quantity").set(f"{{{XSI_NS}}}nil", "true")
            else:
                self.text_child(element, "quantity", _decimal(amount))
            if quantity.get("uom") is not None:
                self.text_child(element, "uom", quantity["uom"])
        self.extensions(element, quantity, ("epcClass", "quantity", "uom"))

    def typed_list(self, parent: etree._Element, name: str, entries: Any) -> None:
        if not isinstance(entries, list) or not entries:
            return  # the XSD wants at least one entry; an empty list says nothing
        holder = etree.SubElement(parent, name)
        item_name = _TYPED_LISTS[name]
        for entry in entries:
            if not isinstance(entry, Mapping):
                self.text_child(holder, item_name, entry)
                continue
            element = self.text_child(holder, item_name, entry.get(item_name, ""))
            if entry.get("type") is not None:
                element.set("type", self.vocabulary(entry["type"], _TYPED_LIST_KINDS[name]))

    def error_declaration(self, parent: etree._Element, declaration: Any) -> None:
        element = etree.SubElement(parent, "errorDeclaration")
        if not isinstance(declaration, Mapping):
            return
        if "declarationTime" in declaration:
            self.text_child(element, "declarationTime", declaration["declarationTime"])
        if "reason" in declaration:
            self.text_child(element, "reason", self.vocabulary(declaration["reason"], "errorReason"))
        if "correctiveEventIDs" in declaration:
            holder = etree.SubElement(element, "correctiveEventIDs")
            ids = declaration["correctiveEventIDs"]
            for event_id in ids if isinstance(ids, list) else [ids]:
                self.text_child(holder, "correctiveEventID", event_id)
        self.extensions(element, declaration, ("declarationTime", "reason", "correctiveEventIDs"))

    def sensor_element(self, parent: etree._Element, sensor: Any) -> None:
        element = etree.SubElement(parent, "sensorElement")
        if not isinstance(sensor, Mapping):
            return
        metadata = sensor.get("sensorMetadata")
        if isinstance(metadata, Mapping):
            self.sensor_attributes(etree.SubElement(element, "sensorMetadata"), metadata)
        reports = sensor.get("sensorReport")
        for report in reports if isinstance(reports, list) else []:
            if isinstance(report, Mapping):
                self.sensor_attributes(etree.SubElement(element, "sensorReport"), report)
        self.extensions(element, sensor, ("sensorMetadata", "sensorReport"))

    def sensor_attributes(self, element: etree._Element, values: Mapping[str, Any]) -> None:
        for key, value in values.items():
            if value is None or isinstance(value, Mapping | list):
                continue  # an attribute holds one value; the binding has no place for structure here
            if key in ("type", "exception"):
                text = self.gs1_term(value)
            elif key == "component":
                text = self.component(value)
            else:
                text = _scalar(value)
            element.set(self.qname(key), text)

    def document(
        self,
        events: Sequence[Mapping[str, Any]],
        query_name: str | None,
        subscription_id: str | None,
        creation_date: str,
    ) -> etree._Element:
        nsmap: dict[str | None, str] = {"epcis": EPCIS_NS}
        if query_name is not None:
            nsmap["epcisq"] = EPCIS_QUERY_NS
        nsmap.update({p: ns for p, ns in self.namespaces.items() if p not in _XML_RESERVED})
        for prefix in ("gs1", "cbv"):
            nsmap.setdefault(prefix, JSONLD_PREFIXES[prefix])  # bare values are written with these
        root_name = "EPCISDocument" if query_name is None else "EPCISQueryDocument"
        root_ns = EPCIS_NS if query_name is None else EPCIS_QUERY_NS
        root = etree.Element(f"{{{root_ns}}}{root_name}", nsmap=nsmap)
        root.set("schemaVersion", SCHEMA_VERSION)
        root.set("creationDate", creation_date)
        body = etree.SubElement(root, "EPCISBody")
        if query_name is None:
            event_list = etree.SubElement(body, "EventList")
        else:
            results = etree.SubElement(body, f"{{{EPCIS_QUERY_NS}}}QueryResults")
            self.text_child(results, "queryName", query_name)
            if subscription_id is not None:
                self.text_child(results, "subscriptionID", subscription_id)
            event_list = etree.SubElement(etree.SubElement(results, "resultsBody"), "EventList")
        for event in events:
            self.event(event_list, event)
        declared = [p for p in self.namespaces if p not in _XML_RESERVED]
        keep = [p for p in {*declared, *self.value_prefixes} if p in nsmap]
        etree.cleanup_namespaces(root, keep_ns_prefixes=keep)
        return root


def _has_plain_keys(value: Any) -> bool:
    if isinstance(value, Mapping):
        return any((k != "#text" and ":" not in k) or _has_plain_keys(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_plain_keys(v) for v in value)
    return False


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _decimal(value: Any) -> str:
    """xsd:decimal has no exponent: 1e-07 is written 0.0000001."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _scalar(value)
    if isinstance(value, int):
        return str(value)
    return format(Decimal(repr(value)), "f")


def xml_document(
    items: Sequence[Item],
    *,
    query_name: str | None = None,
    subscription_id: str | None = None,
    creation_date: str | None = None,
) -> bytes:
    """An EPCISDocument, or with `query_name` an EPCISQueryDocument, holding the items' events (XML, UTF-8)."""
    namespaces, events = merge_contexts(
        items, reserved=_XML_RESERVED, fallback=_XML_FALLBACK, translate={_MDA_JSON: _MDA_XML}
    )
    writer = _XmlWriter({**_XML_RESERVED, **namespaces})
    root = writer.document(events, query_name, subscription_id, creation_date or _now())
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True))
