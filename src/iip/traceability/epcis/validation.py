"""Validate EPCIS documents: GS1's JSON Schema or XSD, then the rules a schema cannot express.

Everything is checked and every problem reported; unreadable input is one problem, never an exception.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from functools import cache, lru_cache
from importlib import resources
from typing import Any, cast

import jsonschema
import xmlschema

from iip.traceability.epcis import identifiers
from iip.traceability.epcis.documents import (
    CBV_WEB,
    MAX_DOCUMENT_BYTES,
    VOCABULARIES,
    EpcisDocument,
    EpcisFormatError,
    parse_xml,
    read_document,
)

_SCHEMAS = resources.files("iip.traceability.epcis") / "schemas"
_OFFSET = re.compile(r"[+-](?:(?:0\d|1[0-3]):[0-5]\d|14:00)")
_EXTRA_FRACTION = re.compile(r"(\.\d{6})\d+")
_ACTIONS = ("ADD", "OBSERVE", "DELETE")
# JSON-LD context file holding each CBV vocabulary's terms.
_VOCABULARY_FILES = {
    "bizStep": "cbv-context-bizstep.jsonld",
    "disposition": "cbv-context-disposition.jsonld",
    "bizTransactionType": "cbv-context-biztransaction-type.jsonld",
    "sourceDestType": "cbv-context-sourcedest-type.jsonld",
    "errorReason": "cbv-context-error-reason.jsonld",
}


@dataclass(frozen=True)
class ValidationIssue:
    """One problem: where (a JSON pointer, or an XPath-like path for XSD findings) and what."""

    location: str
    message: str


@cache
def _json_validator() -> jsonschema.protocols.Validator:
    schema = json.loads((_SCHEMAS / "EPCIS-JSON-Schema.json").read_text(encoding="utf-8"))
    validator_class = jsonschema.validators.validator_for(schema)  # the draft the schema declares
    validator: jsonschema.protocols.Validator = validator_class(schema)
    return validator


@cache
def _xsd(kind: str) -> xmlschema.XMLSchema:
    name = "EPCglobal-epcis-query-2_0.xsd" if kind == "EPCISQueryDocument" else "EPCglobal-epcis-2_0.xsd"
    with resources.as_file(_SCHEMAS / "xsd" / name) as path:
        return xmlschema.XMLSchema(str(path), allow="sandbox")  # its imports stay in the folder


@cache
def cbv_terms(kind: str) -> frozenset[str]:
    """The bare terms of a CBV vocabulary (`shipping`, `in_transit`, ...), from GS1's JSON-LD context."""
    text = (_SCHEMAS / "jsonld-context" / _VOCABULARY_FILES[kind]).read_text(encoding="utf-8")
    context = json.loads(text)["@context"]
    return frozenset(k for k, v in context.items() if not k.startswith("@") and isinstance(v, str) and k != "cbv")


def _pointer(path: Any) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def validate(data: bytes | str, *, max_bytes: int = MAX_DOCUMENT_BYTES) -> list[ValidationIssue]:
    """All problems of a JSON/JSON-LD or XML EPCIS document (or single event); empty when it is valid."""
    try:
        document = read_document(data, max_bytes=max_bytes)
    except EpcisFormatError as exc:
        return [ValidationIssue("", str(exc))]
    raw = data.encode() if isinstance(data, str) else data
    if raw.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"<":
        issues = _xsd_issues(raw, document)
    else:
        parsed = json.loads(raw)
        issues = [
            ValidationIssue(_pointer(error.absolute_path), error.message)
            for error in sorted(_json_validator().iter_errors(parsed), key=lambda e: list(map(str, e.absolute_path)))
        ]
    prefix = "" if document.type not in ("EPCISDocument", "EPCISQueryDocument") else _event_list_pointer(document)
    return issues + validate_events(document.events, prefix)


def _event_list_pointer(document: EpcisDocument) -> str:
    if document.type == "EPCISQueryDocument":
        return "/epcisBody/queryResults/resultsBody/eventList"
    return "/epcisBody/eventList"


def _xsd_issues(raw: bytes, document: EpcisDocument) -> list[ValidationIssue]:
    if document.type not in ("EPCISDocument", "EPCISQueryDocument"):
        return []  # a lone event has no XSD root element; the rules below still apply
    # lxml elements implement xmlschema's ElementProtocol; the stubs do not say so.
    resource = xmlschema.XMLResource(cast("Any", parse_xml(raw)), allow="none")
    schema = _xsd(document.type)
    return [
        ValidationIssue(error.path or "/", error.reason or str(error.message)) for error in schema.iter_errors(resource)
    ]


def validate_events(events: list[dict[str, Any]], prefix: str = "") -> list[ValidationIssue]:
    """The rules a schema cannot express, for events in internal form; locations are JSON pointers under prefix."""
    issues: list[ValidationIssue] = []
    for index, event in enumerate(events):
        at = f"{prefix}/{index}" if prefix or len(events) > 1 else ""
        issues += _event_issues(event, at)
    return issues


def _required(event: dict[str, Any], at: str, *names: str) -> list[ValidationIssue]:
    return [ValidationIssue(f"{at}/{n}", f"{event.get('type')} requires {n}") for n in names if not event.get(n)]


def _event_issues(event: dict[str, Any], at: str) -> list[ValidationIssue]:
    issues: list[ValidationIssue] = []
    kind = event.get("type")
    issues += _required(event, at, "eventTime", "eventTimeZoneOffset")
    action = event.get("action")
    if kind in ("ObjectEvent", "AggregationEvent", "TransactionEvent", "AssociationEvent"):
        if action is None:
            issues.append(ValidationIssue(f"{at}/action", f"{kind} requires action"))
        elif action not in _ACTIONS:
            issues.append(
                ValidationIssue(f"{at}/action", f"action must be one of {', '.join(_ACTIONS)}, not {action!r}")
            )
    if kind in ("AggregationEvent", "AssociationEvent") and action in ("ADD", "DELETE"):
        issues += _required(event, at, "parentID")
    if kind == "TransactionEvent":
        issues += _required(event, at, "bizTransactionList")
    if kind == "TransformationEvent":
        if "action" in event:
            issues.append(ValidationIssue(f"{at}/action", "TransformationEvent has no action"))
        if not any(event.get(n) for n in ("inputEPCList", "inputQuantityList", "outputEPCList", "outputQuantityList")):
            issues.append(ValidationIssue(at or "/", "TransformationEvent requires inputs or outputs"))
    offset = event.get("eventTimeZoneOffset")
    if isinstance(offset, str) and not _OFFSET.fullmatch(offset):
        issues.append(ValidationIssue(f"{at}/eventTimeZoneOffset", f"time-zone offset {offset!r} is not ±hh:mm"))
    for name in ("eventTime", "recordTime"):
        issues += _time_issue(event.get(name), f"{at}/{name}")
    issues += _identifier_issues(event, at)
    issues += _vocabulary_issues(event, at)
    return issues


def _time_issue(value: Any, at: str) -> list[ValidationIssue]:
    if not isinstance(value, str):
        return []
    text = value.replace("Z", "+00:00").replace("z", "+00:00")
    if _EXTRA_FRACTION.search(text):  # fromisoformat takes at most 6 fraction digits
        text = _EXTRA_FRACTION.sub(r"\1", text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return [ValidationIssue(at, f"{value!r} is not an xsd:dateTime")]
    if moment.tzinfo is None:
        return [ValidationIssue(at, f"{value!r} has no time-zone offset")]
    return []


def _members(value: Any) -> Any:
    """What a field meant to hold a list is walked over: nothing for a number, which the schema refuses
    (walking it would raise); a list, text or object as it is."""
    return () if not value or isinstance(value, int | float) else value


_EPC_LISTS = ("epcList", "childEPCs", "inputEPCList", "outputEPCList")
_QUANTITY_LISTS = ("quantityList", "childQuantityList", "inputQuantityList", "outputQuantityList")
_PARTY_LISTS = (("sourceList", "source"), ("destinationList", "destination"))


def _identifier_values(event: dict[str, Any], at: str) -> list[tuple[tuple[Any, ...], Any]]:
    """Each identifier with its location's steps (joined into a pointer only for a problem: most have none)."""
    found: list[tuple[tuple[Any, ...], Any]] = [((at, "parentID"), event.get("parentID"))]
    # Absent lists are skipped without building anything: an event fills few of these fields.
    for name in _EPC_LISTS:
        values = event.get(name)
        if values:
            found += [((at, name, i), v) for i, v in enumerate(_members(values))]
    for name in _QUANTITY_LISTS:
        values = event.get(name)
        if values:
            found += [
                ((at, name, i, "epcClass"), q.get("epcClass"))
                for i, q in enumerate(_members(values))
                if isinstance(q, dict)
            ]
    for name in ("readPoint", "bizLocation"):
        place = event.get(name)
        if isinstance(place, dict):
            found.append(((at, name, "id"), place.get("id")))
    for name, item in _PARTY_LISTS:
        values = event.get(name)
        if values:
            found += [((at, name, i, item), e.get(item)) for i, e in enumerate(_members(values)) if isinstance(e, dict)]
    return found


def _identifier_issues(event: dict[str, Any], at: str) -> list[ValidationIssue]:
    issues = []
    for steps, value in _identifier_values(event, at):
        if isinstance(value, str) and (identifiers.is_gs1_identifier(value) or identifiers.is_handle(value)):
            problem = identifiers.check(value)
            if problem:
                issues.append(ValidationIssue("/".join(map(str, steps)), problem))
    return issues


@lru_cache(maxsize=4_096)
def _vocabulary_problem(value: str, kind: str) -> str | None:
    """Why a CBV URN or web URI is no term of its vocabulary; None when it is one or is no CBV value.
    Cached: an event's vocabulary values come from a short list."""
    urn, term = VOCABULARIES[kind]
    if value.startswith(urn):
        name = value[len(urn) :]
    elif value.startswith(CBV_WEB + term):
        name = value[len(CBV_WEB + term) :]
    else:
        return None  # bare names are the JSON Schema's business; other URIs are private vocabularies
    if name in cbv_terms(kind):
        return None
    return f"{value!r} is not a CBV {kind} value"


def _vocabulary_issue(value: Any, kind: str, at: str, *steps: Any) -> list[ValidationIssue]:
    """The issue of a vocabulary value at `at` followed by `steps` (joined only for an issue)."""
    if not isinstance(value, str):
        return []
    problem = _vocabulary_problem(value, kind)
    if problem is None:
        return []
    return [ValidationIssue("/".join(map(str, (at, *steps))), problem)]


_TYPED_LISTS = (
    ("bizTransactionList", "bizTransactionType"),
    ("sourceList", "sourceDestType"),
    ("destinationList", "sourceDestType"),
)


def _vocabulary_issues(event: dict[str, Any], at: str) -> list[ValidationIssue]:
    issues = _vocabulary_issue(event.get("bizStep"), "bizStep", at, "bizStep")
    issues += _vocabulary_issue(event.get("disposition"), "disposition", at, "disposition")
    persistent = event.get("persistentDisposition")
    if isinstance(persistent, dict):
        for key in ("set", "unset"):
            for i, value in enumerate(_members(persistent.get(key))):
                issues += _vocabulary_issue(value, "disposition", at, "persistentDisposition", key, i)
    for name, kind in _TYPED_LISTS:
        entries = event.get(name)
        if entries:
            for i, entry in enumerate(_members(entries)):
                if isinstance(entry, dict):
                    issues += _vocabulary_issue(entry.get("type"), kind, at, name, i, "type")
    declaration = event.get("errorDeclaration")
    if isinstance(declaration, dict):
        issues += _vocabulary_issue(declaration.get("reason"), "errorReason", at, "errorDeclaration", "reason")
    return issues
