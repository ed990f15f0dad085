"""Validation for capture: the whole of `epcis.validation`, with each problem told apart by event (pure).

Capture must know which event a problem belongs to (in `proceed` mode the others are stored) and
must validate tens of thousands of events a second. So:

- JSON is checked against GS1's JSON Schema with jsonschema-rs (ADR 0013): the document's envelope
  (the document with an empty event list) against the whole schema, then each event against the
  schema's own `EPCIS-Document-Event` definition, the one the schema applies to every member of
  `eventList`. Together that is the schema applied to the document. Formats are not asserted, as
  `epcis.validation` does not assert them either (draft-07 makes `format` an annotation).
- XML is checked as `epcis.validation.validate` checks it (GS1's XSDs); each XSD finding is given to
  the event its XPath-like path names.
- Then the rules no schema expresses, `epcis.validation.validate_events`, located by JSON pointer.
- The header's master data (`epcis.master_data`), read into `master_data`; what the repository
  cannot keep of it is the document's problem, located like the schema's findings.

A problem outside every event (unreadable input, the envelope or header breaking the schema, an
element the XSD does not allow in the event list) is the document's: it refuses the whole document.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, Literal

import jsonschema_rs
import orjson
from lxml import etree

from iip.traceability.epcis.documents import (
    EVENT_TYPES,
    MAX_DOCUMENT_BYTES,
    EpcisDocument,
    EpcisFormatError,
    json_context,
    parse_xml,
    read_document,
)
from iip.traceability.epcis.master_data import VocabularyElement, json_master_data, xml_master_data
from iip.traceability.epcis.validation import ValidationIssue, validate, validate_events

Syntax = Literal["json", "xml"]
_SCHEMA_FILE = resources.files("iip.traceability.epcis") / "schemas" / "EPCIS-JSON-Schema.json"
# Where each document type keeps its events, as keys from the top and as a JSON pointer.
_EVENT_LISTS = {
    "EPCISDocument": ("epcisBody", "eventList"),
    "EPCISQueryDocument": ("epcisBody", "queryResults", "resultsBody", "eventList"),
}
_XPATH_STEP = re.compile(r"(?:[\w.-]+:)?([\w.-]+)(?:\[(\d+)\])?")


@dataclass
class DocumentCheck:
    """A read document and its problems: the document's own, and each event's by index.

    A JSON document's events are left to validate one at a time (`lazy`, with `event_issues`), so
    that a caller can validate, index and hash each event together (and in another process); an XML
    document's are found with the document (`found`).
    """

    document: EpcisDocument
    syntax: Syntax
    event_pointer: str  # JSON pointer of the event list ("" for a lone event); event i is at f"{it}/{i}"
    document_issues: list[ValidationIssue] = field(default_factory=list)
    found: dict[int, list[ValidationIssue]] = field(default_factory=dict)  # issues found with the document
    lazy: bool = False  # whether each event is still to be validated on its own
    master_data: list[VocabularyElement] = field(default_factory=list)  # the header's, in document order

    def event_location(self, index: int) -> str:
        return f"{self.event_pointer}/{index}" if self.event_pointer else ""


def event_issues(event: dict[str, Any], at: str) -> list[ValidationIssue]:
    """The problems of one member of a JSON event list at pointer `at`: GS1's schema for it, then the rules."""
    issues = _schema_issues(event_validator(), event, at)
    # The rules locate an event given alone from its root; "/" is the event itself.
    issues += [
        ValidationIssue(at + i.location if i.location != "/" else at or "/", i.message)
        for i in validate_events([event], "")
    ]
    return issues


@cache
def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(_SCHEMA_FILE.read_text(encoding="utf-8"))
    return schema


@cache
def document_validator() -> jsonschema_rs.Draft7Validator:
    """GS1's JSON Schema, whole (documents, and lone events at the top level)."""
    return jsonschema_rs.Draft7Validator(_schema(), validate_formats=False)


@cache
def event_validator() -> jsonschema_rs.Draft7Validator:
    """GS1's JSON Schema as it applies to each member of an event list (`#/definitions/EPCIS-Document-Event`)."""
    schema = _schema()
    member = {
        "$schema": schema["$schema"],
        "$ref": "#/definitions/EPCIS-Document-Event",
        "definitions": schema["definitions"],
    }
    return jsonschema_rs.Draft7Validator(member, validate_formats=False)


def _pointer(path: Any) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _schema_issues(validator: jsonschema_rs.Draft7Validator, instance: Any, at: str) -> list[ValidationIssue]:
    if validator.is_valid(instance):
        return []
    return [ValidationIssue(at + _pointer(e.instance_path), e.message) for e in validator.iter_errors(instance)]


def sniff(data: bytes) -> Syntax | None:
    """The syntax a body is written in, told by its first character; None when it is neither."""
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if head == b"<":
        return "xml"
    if head in (b"{", b"["):
        return "json"
    return None


def check_document(data: bytes, syntax: Syntax | None = None, *, max_bytes: int = MAX_DOCUMENT_BYTES) -> DocumentCheck:
    """Read and validate a document (or a lone event). Unreadable input raises EpcisFormatError.

    `syntax` is what the sender declared; a body in the other syntax is refused, since reading it as
    declared would fail in a way that names the wrong problem.
    """
    found = sniff(data)
    if found is None:
        raise EpcisFormatError("neither JSON nor XML: the document must start with '{' or '<'")
    if syntax is not None and syntax != found:
        raise EpcisFormatError(f"the body is {found.upper()} but was declared as {syntax.upper()}")
    if len(data) > max_bytes:
        raise EpcisFormatError(f"document of {len(data)} bytes exceeds the {max_bytes}-byte limit")
    return _check_json(data) if found == "json" else _check_xml(data, max_bytes)


# --- JSON -----------------------------------------------------------------------------------------


def _parse_json(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        # orjson refuses some JSON the codec reads (integers past 64 bits, lone surrogates):
        # the codec says what is wrong, or reads it, and then so do we.
        read_document(data)
        parsed = json.loads(data)
        try:
            json.dumps(parsed, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise EpcisFormatError(
                "the document holds text that is not Unicode (an unpaired surrogate escape)"
            ) from None
        return parsed


def _check_json(data: bytes) -> DocumentCheck:
    parsed = _parse_json(data)
    if not isinstance(parsed, dict):
        raise EpcisFormatError("an EPCIS JSON document or event must be a JSON object")
    context = json_context(parsed.get("@context"))
    kind = parsed.get("type")
    if kind in EVENT_TYPES:
        document = EpcisDocument(type=kind, events=[parsed], context=context)
        check = DocumentCheck(document, "json", "")
        issues = _schema_issues(document_validator(), parsed, "")
        _bucket(check, issues + validate_events(document.events, ""))
        return check
    path = _EVENT_LISTS.get(kind) if isinstance(kind, str) else None
    if path is None or not isinstance(kind, str):
        raise EpcisFormatError(
            f"unknown document type {kind!r}: expected EPCISDocument, EPCISQueryDocument or an event"
        )
    envelope, events = _without_events(parsed, path)
    if not all(isinstance(e, dict) for e in events):
        raise EpcisFormatError("eventList must be a list of event objects")
    attributes = {k: v for k, v in parsed.items() if k not in ("@context", "epcisBody", "type")}
    document = EpcisDocument(type=kind, events=events, context=context, attributes=attributes)
    check = DocumentCheck(document, "json", _pointer(path), lazy=True)
    check.document_issues += _schema_issues(document_validator(), envelope, "")
    check.master_data, issues = json_master_data(parsed.get("epcisHeader"))
    _add_master_data_issues(check, issues, "/epcisHeader")
    return check


def _add_master_data_issues(check: DocumentCheck, issues: list[ValidationIssue], header: str) -> None:
    """The master data's own problems, unless the schema found the header wrong already (it says it better)."""
    if not any(header in i.location for i in check.document_issues):
        check.document_issues += issues


def _without_events(parsed: dict[str, Any], path: tuple[str, ...]) -> tuple[dict[str, Any], list[Any]]:
    """A copy of the document with an empty event list along `path` (copying only that path), and the events."""
    envelope = dict(parsed)
    holder = envelope
    for key in path[:-1]:
        inner = holder.get(key)
        if not isinstance(inner, dict):
            return envelope, []  # the schema says what is missing
        holder[key] = holder = dict(inner)
    events = holder.get(path[-1])
    if events is None:
        return envelope, []
    if not isinstance(events, list):
        raise EpcisFormatError("eventList must be a list of event objects")
    holder[path[-1]] = []
    return envelope, events


def _bucket(check: DocumentCheck, issues: list[ValidationIssue]) -> None:
    """Give each issue located by JSON pointer to its event, or to the document."""
    prefix = check.event_pointer + "/"
    count = len(check.document.events)
    for issue in issues:
        index: int | None = None
        if not check.event_pointer:
            index = 0 if count else None
        elif issue.location.startswith(prefix):
            step = issue.location[len(prefix) :].split("/", 1)[0]
            index = int(step) if step.isdigit() and int(step) < count else None
        if index is None:
            check.document_issues.append(issue)
        else:
            check.found.setdefault(index, []).append(issue)


# --- XML ------------------------------------------------------------------------------------------


def _check_xml(data: bytes, max_bytes: int) -> DocumentCheck:
    document = read_document(data, max_bytes=max_bytes)
    lone_event = document.type in EVENT_TYPES
    pointer = "" if lone_event else "/" + "/".join(_EVENT_LISTS[document.type])
    check = DocumentCheck(document, "xml", pointer)
    by_pointer: list[ValidationIssue] = []
    by_path: list[ValidationIssue] = []
    for issue in validate(data, max_bytes=max_bytes):
        # The rules locate by JSON pointer on the internal form; the XSD by element path.
        is_rule = lone_event or issue.location == "" or issue.location.startswith("/epcisBody/")
        (by_pointer if is_rule else by_path).append(issue)
    _bucket(check, by_pointer)
    if by_path:
        events = _xml_event_positions(data)
        for issue in by_path:
            index = _xml_event_index(issue.location, events)
            if index is None:
                check.document_issues.append(issue)
            else:
                check.found.setdefault(index, []).append(issue)
    if b"VocabularyList" in data:  # a header with master data: the only reason to walk the tree again
        check.master_data, issues = xml_master_data(parse_xml(data))
        _add_master_data_issues(check, issues, "/EPCISHeader")
    return check


def _local(el: etree._Element) -> str:
    return etree.QName(el).localname


def _xml_event_positions(data: bytes) -> dict[tuple[tuple[str, int], ...], int]:
    """Each event element's steps below the EventList (`ObjectEvent[2]`, `extension[1]/TransformationEvent[1]`)
    → its index among the document's events, in the order `read_document` reads them."""
    root = parse_xml(data)
    event_list = next((el for el in root.iter() if isinstance(el.tag, str) and _local(el) == "EventList"), None)
    positions: dict[tuple[tuple[str, int], ...], int] = {}
    seen: Counter[str] = Counter()
    for child in event_list if event_list is not None else []:
        if not isinstance(child.tag, str):
            continue
        name = _local(child)
        seen[name] += 1
        outer = (name, seen[name])
        if name == "extension":  # EPCIS 1.x wrapped newer event types in <extension>
            inner_seen: Counter[str] = Counter()
            for inner in child:
                if isinstance(inner.tag, str):
                    inner_name = _local(inner)
                    inner_seen[inner_name] += 1
                    if inner_name in EVENT_TYPES:
                        positions[(outer, (inner_name, inner_seen[inner_name]))] = len(positions)
        elif name in EVENT_TYPES:
            positions[(outer,)] = len(positions)
    return positions


def _xml_event_index(location: str, positions: dict[tuple[tuple[str, int], ...], int]) -> int | None:
    steps = [s for s in location.split("/") if s]
    names = [_XPATH_STEP.fullmatch(s) for s in steps]
    after = next((i + 1 for i, m in enumerate(names) if m and m.group(1) == "EventList"), None)
    if after is None:
        return None
    parsed: list[tuple[str, int]] = []
    for match in names[after : after + 2]:
        if match is None:
            break
        parsed.append((match.group(1), int(match.group(2) or 1)))
    for length in (1, 2):
        if len(parsed) >= length and tuple(parsed[:length]) in positions:
            return positions[tuple(parsed[:length])]
    return None
