"""Finding a profile's values in an event (pure): locator paths, namespaced extensions, master data, GS1 AIs.

A locator yields every value its path reaches. Each is checked against the locator's kind: a valid
one is `Found` (with the text reports show), one present but unfit is `Rejected` with the reason,
so that a missing KDE can be told from a wrong one and located where it is.
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from iip.traceability.epcis import identifiers
from iip.traceability.epcis.documents import CBV_WEB, GS1_VOC, VOCABULARIES, normalise_time
from iip.traceability.profiles.model import Locator, Segment, parse_path

MasterData = Mapping[str, Mapping[str, str]]  # canonical identifier -> attribute (local name) -> value
# GS1 AIs that hold a date as YYMMDD.
DATE_AIS = frozenset({"11", "12", "13", "15", "16", "17"})
# GS1 YYMMDD dates are read around the year of the event that carries them; 2049 reads 2000-2099.
DEFAULT_REFERENCE_YEAR = 2049


@dataclass(frozen=True, slots=True)
class Scope:
    """What a lookup reads beside the event: the profile's namespaces, the document's, its master data."""

    namespaces: Mapping[str, str] = field(default_factory=dict)
    context: Mapping[str, str] = field(default_factory=dict)
    master_data: MasterData = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Found:
    pointer: str  # JSON pointer from the event's root
    value: Any
    text: str  # the value as reports show it


@dataclass(frozen=True, slots=True)
class Rejected:
    pointer: str
    reason: str


@dataclass(frozen=True, slots=True)
class Lookup:
    found: tuple[Found, ...] = ()
    rejected: tuple[Rejected, ...] = ()


def find(locator: Locator, event: Mapping[str, Any], scope: Scope) -> Lookup:
    """Every value the locator reaches in the event, valid or not."""
    found: list[Found] = []
    rejected: list[Rejected] = []
    moment = parse_time(event.get("eventTime"))
    year = moment.year if moment else DEFAULT_REFERENCE_YEAR
    for pointer, value in walk(event, parse_path(locator.path), scope):
        outcome = check_value(locator, value, pointer, scope, year)
        (found if isinstance(outcome, Found) else rejected).append(outcome)  # type: ignore[arg-type]
    return Lookup(tuple(found), tuple(rejected))


def find_first(locators: tuple[Locator, ...], event: Mapping[str, Any], scope: Scope) -> Lookup:
    """The valid values of the first locator that has any; else every rejected value of all of them."""
    rejected: list[Rejected] = []
    for locator in locators:
        lookup = find(locator, event, scope)
        if lookup.found:
            return lookup
        rejected.extend(lookup.rejected)
    return Lookup((), tuple(rejected))


# --- paths ---------------------------------------------------------------------------------------


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def walk(node: Any, segments: tuple[Segment, ...], scope: Scope, pointer: str = "") -> Iterator[tuple[str, Any]]:
    """(pointer, value) for every value the segments reach from `node`."""
    if not segments:
        yield pointer, node
        return
    segment, rest = segments[0], segments[1:]
    if segment.kind == "key":
        if isinstance(node, Mapping):
            for key in matching_keys(node, segment.name, scope):
                yield from walk(node[key], rest, scope, f"{pointer}/{_escape(key)}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            if segment.kind == "each" or (
                isinstance(item, Mapping) and vocabulary_term(item.get(segment.name)) == vocabulary_term(segment.value)
            ):
                yield from walk(item, rest, scope, f"{pointer}/{index}")


def _namespace(iri: str) -> str:
    # `urn:epcglobal:cbv:mda#` (JSON-LD) and `urn:epcglobal:cbv:mda` (XML) are one namespace.
    return iri.rstrip("#/:")


def matching_keys(node: Mapping[str, Any], name: str, scope: Scope) -> list[str]:
    """The keys of `node` that are `name`: for `prefix:local` of a profile namespace, any prefix the
    document binds to that namespace, or the full IRI; otherwise the key itself."""
    prefix, colon, local = name.partition(":")
    target = scope.namespaces.get(prefix) if colon else None
    if target is None:
        return [name] if name in node else []
    wanted = _namespace(target)
    full = {target + local, wanted + local} | {wanted + sep + local for sep in "#/:"}
    keys: list[str] = []
    for key in node:
        key_prefix, key_colon, key_local = key.partition(":")
        declared = scope.context.get(key_prefix)
        if key in full:
            keys.append(key)
        elif key_colon and key_local == local:
            if declared is not None and _namespace(declared) == wanted:
                keys.append(key)
            elif declared is None and key_prefix == prefix:
                keys.append(key)  # the document relies on a remote context for the prefix: take it as ours
    return keys


def vocabulary_term(value: Any) -> str | None:
    """A CBV value's bare term (`location` for its URN, web URI or bare name); a private URI unchanged."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    for urn, term in VOCABULARIES.values():
        if text.startswith(urn):
            return text[len(urn) :]
        if text.startswith(CBV_WEB + term):
            return text[len(CBV_WEB + term) :]
    if text.startswith(GS1_VOC):
        return text[len(GS1_VOC) :]
    return text.removeprefix("gs1:")


# --- identifiers ---------------------------------------------------------------------------------


def canonical(value: Any) -> str | None:
    """The canonical Digital Link of a GS1 identifier; None for anything else (or a broken one)."""
    if not isinstance(value, str) or not identifiers.is_gs1_identifier(value.strip()):
        return None
    try:
        return identifiers.canonical(value.strip())
    except identifiers.IdentifierError:
        return None


def ai_pairs(canonical_id: str) -> dict[str, str]:
    """The AIs of a canonical Digital Link path: {"01": gtin, "10": lot, ...}."""
    parts = canonical_id.removeprefix(identifiers.DL_BASE).split("/")
    return {parts[i]: unquote(parts[i + 1]) for i in range(1, len(parts) - 1, 2)}


def ai_value(identifier: str, ai: str) -> str | None:
    """A GS1 AI of an identifier: from its key and qualifiers, or a Digital Link's data attributes (`?17=...`)."""
    canonical_id = canonical(identifier)
    if canonical_id is None:
        return None
    value = ai_pairs(canonical_id).get(ai)
    if value is None and identifier.strip().lower().startswith(("http://", "https://")):
        values = parse_qs(urlsplit(identifier.strip()).query).get(ai)
        value = values[0] if values else None
    return value


def gln(value: str) -> str:
    """A location or party as GLN digits (`0614141007770`, `.ext` for an SGLN extension); other values as they are."""
    canonical_id = canonical(value)
    if canonical_id is None:
        return value
    pairs = ai_pairs(canonical_id)
    number = pairs.get("414") or pairs.get("417")
    if number is None:
        return canonical_id
    extension = pairs.get("254")
    return f"{number}.{extension}" if extension else number


def site(value: str) -> str:
    """What two locations or parties share when they are one site: the GLN, without an SGLN extension."""
    canonical_id = canonical(value)
    if canonical_id is None:
        return value.strip()
    pairs = ai_pairs(canonical_id)
    return pairs.get("414") or pairs.get("417") or canonical_id


def identity_keys(canonical_id: str) -> set[str]:
    """The names of one object: an item named with its lot and serial is also its GTIN and serial."""
    keys = {canonical_id}
    pairs = ai_pairs(canonical_id) if canonical_id.startswith(identifiers.DL_BASE) else {}
    if pairs.get("01") and "21" in pairs:
        keys.add(f"{identifiers.DL_BASE}/01/{pairs['01']}/21/{pairs['21']}")
    return keys


def match_keys(canonical_id: str) -> set[str]:
    """An object's names and what it is one of: an item named with its lot is also of that lot."""
    keys = identity_keys(canonical_id)
    pairs = ai_pairs(canonical_id) if canonical_id.startswith(identifiers.DL_BASE) else {}
    if pairs.get("01") and "21" in pairs and "10" in pairs:
        keys.add(f"{identifiers.DL_BASE}/01/{pairs['01']}/10/{pairs['10']}")
    return keys


def serial_key(canonical_id: str) -> str | None:
    """An item's identity whatever else names it (GTIN and serial); None for a class."""
    pairs = ai_pairs(canonical_id) if canonical_id.startswith(identifiers.DL_BASE) else {}
    if "01" in pairs and "21" in pairs:
        return f"{identifiers.DL_BASE}/01/{pairs['01']}/21/{pairs['21']}"
    if canonical_id.startswith(identifiers.DL_BASE + "/01/"):
        return None
    return canonical_id  # an SSCC, a GRAI, a private URI: an instance


# --- times ---------------------------------------------------------------------------------------

_OFFSET = re.compile(r"^([+-])(\d{2}):(\d{2})$")
_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:Z|[+-]\d{2}:\d{2})?$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def parse_time(value: Any) -> dt.datetime | None:
    """An xsd:dateTime with its offset, in UTC; None when it is not one."""
    if not isinstance(value, str) or not _DATETIME.match(value.strip()):
        return None
    text = normalise_time(value)
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def local_date(event: Mapping[str, Any]) -> dt.date | None:
    """The calendar date of an event where it happened (its time at its own offset)."""
    moment = parse_time(event.get("eventTime"))
    if moment is None:
        return None
    offset = _OFFSET.match(str(event.get("eventTimeZoneOffset", "")))
    if offset is None:
        return moment.date()
    sign = 1 if offset.group(1) == "+" else -1
    shift = dt.timedelta(hours=int(offset.group(2)), minutes=int(offset.group(3)))
    return (moment + sign * shift).date()


def parse_date(value: Any) -> dt.date | None:
    """An xsd:date (an offset allowed) or the date of an xsd:dateTime, as written."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    plain = _DATE.match(text)
    if plain:
        try:
            return dt.date(int(plain.group(1)), int(plain.group(2)), int(plain.group(3)))
        except ValueError:
            return None
    if _DATETIME.match(text):
        try:
            return dt.date.fromisoformat(text[:10])
        except ValueError:
            return None
    return None


def gs1_date(text: str, reference_year: int) -> dt.date | None:
    """A GS1 YYMMDD date; DD 00 is the month's last day, the century the one within -49..+50 years of
    `reference_year` (GS1 General Specifications 7.12)."""
    if not re.fullmatch(r"\d{6}", text):
        return None
    yy, month, day = int(text[:2]), int(text[2:4]), int(text[4:])
    year = reference_year - reference_year % 100 + yy
    if year - reference_year > 50:
        year -= 100
    elif reference_year - year > 49:
        year += 100
    if not 1 <= month <= 12:
        return None
    if day == 0:
        day = calendar.monthrange(year, month)[1]
    try:
        return dt.date(year, month, day)
    except ValueError:
        return None


# --- values --------------------------------------------------------------------------------------

_PERSONAL = (
    (re.compile(r"(?<![0-9])[0-9]{17}[0-9Xx](?![0-9])"), "a national identity card number"),
    (re.compile(r"(?<![0-9])[0-9]{15}(?![0-9])"), "a national identity card number"),
    (re.compile(r"(?<![0-9])(?:\+?86[- ]?)?1[3-9][0-9]{9}(?![0-9])"), "a mobile telephone number"),
    (re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+"), "an e-mail address"),
    (re.compile(r"(?<![0-9])[0-9]{3}-[0-9]{2}-[0-9]{4}(?![0-9])"), "a social security number"),
)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_value(
    locator: Locator, value: Any, pointer: str, scope: Scope, reference_year: int = DEFAULT_REFERENCE_YEAR
) -> Found | Rejected:
    """Whether a value found at `pointer` is what the locator asks for (GS1 dates read around `reference_year`)."""
    if locator.master is not None:
        return _master_value(locator, value, pointer, scope)
    if locator.ai is not None:
        return _ai_value(locator, locator.ai, value, pointer, reference_year)
    return _plain_value(locator, value, pointer)


def _ai_value(locator: Locator, ai: str, value: Any, pointer: str, reference_year: int) -> Found | Rejected:
    part = ai_value(value, ai) if isinstance(value, str) else None
    if part is None:
        return Rejected(pointer, f"{_short(value)} is no GS1 identifier carrying AI ({ai})")
    if locator.is_ != "date" and ai not in DATE_AIS:
        return Found(pointer, part, part)
    day = gs1_date(part, reference_year)
    if day is None:
        return Rejected(pointer, f"AI ({ai}) of {_short(value)} is no YYMMDD date")
    return Found(pointer, day, day.isoformat())


def master_keys(value: Any) -> list[str]:
    """The master data keys a value is looked up under, in order: its canonical identifier (or the text as
    written), then its GTIN class; [] for a value that is no identifier."""
    canonical_id = canonical(value)
    key = canonical_id or (value.strip() if isinstance(value, str) and value.strip() else None)
    if key is None:
        return []
    candidates = [key]
    if canonical_id is not None:
        gtin = ai_pairs(canonical_id).get("01")
        if gtin:
            candidates.append(f"{identifiers.DL_BASE}/01/{gtin}")  # master data is kept per product class
    return candidates


def _master_value(locator: Locator, value: Any, pointer: str, scope: Scope) -> Found | Rejected:
    candidates = master_keys(value)
    if not candidates:
        return Rejected(pointer, f"{_short(value)} is no identifier to look master data up for")
    for candidate in candidates:
        attribute = scope.master_data.get(candidate, {}).get(locator.master or "")
        if isinstance(attribute, str) and attribute.strip():
            return Found(pointer, attribute, attribute.strip())
    given = f"gives {locator.master} for {_short(value)}"
    return Rejected(pointer, f"no master data (the document's or the tenant's) {given}")


def _quantity(value: Any, pointer: str) -> Found | Rejected:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        return Rejected(pointer, f"{_short(value)} is no quantity above zero")
    return Found(pointer, value, f"{value:g}")


def _reference(value: Any, pointer: str) -> Found | Rejected:
    if not isinstance(value, Mapping):
        return Rejected(pointer, f"{_short(value)} is no business transaction")
    number, kind_of = value.get("bizTransaction"), vocabulary_term(value.get("type"))
    if not isinstance(number, str) or not number.strip():
        return Rejected(pointer, "the business transaction has no value")
    if not kind_of:
        return Rejected(pointer, f"business transaction {_short(number)} has no type (the reference document type)")
    return Found(pointer, value, f"{kind_of} {number.strip()}")


def _datetime(text: str, pointer: str) -> Found | Rejected:
    moment = parse_time(text)
    return Found(pointer, moment, text) if moment else Rejected(pointer, f"{_short(text)} is no date and time")


def _date(text: str, pointer: str) -> Found | Rejected:
    day = parse_date(text)
    return Found(pointer, day, day.isoformat()) if day else Rejected(pointer, f"{_short(text)} is no date")


def _pseudonym(text: str, pointer: str) -> Found | Rejected:
    for pattern, what in _PERSONAL:
        if pattern.search(text):
            return Rejected(pointer, f"the patient reference holds what looks like {what}: it must be de-identified")
    return Found(pointer, text, text)


_TEXT_KINDS: dict[str, Callable[[str, str], Found | Rejected]] = {
    "text": lambda text, pointer: Found(pointer, text, text),
    "datetime": _datetime,
    "date": _date,
    "pseudonym": _pseudonym,
}


def _term(locator: Locator, text: str, pointer: str) -> Found | Rejected:
    term = vocabulary_term(text)
    if term in {vocabulary_term(t) for t in locator.terms}:
        return Found(pointer, term, term or text)
    return Rejected(pointer, f"{_short(text)} is none of {', '.join(locator.terms)}")


_STRUCTURED_KINDS: dict[str, Callable[[Any, str], Found | Rejected]] = {"quantity": _quantity, "reference": _reference}


def _plain_value(locator: Locator, value: Any, pointer: str) -> Found | Rejected:
    kind = locator.is_
    if kind in _STRUCTURED_KINDS:
        return _STRUCTURED_KINDS[kind](value, pointer)
    if kind == "text" and isinstance(value, int | float) and not isinstance(value, bool):
        return Found(pointer, value, str(value))
    if not isinstance(value, str) or not value.strip():
        return Rejected(pointer, f"{_short(value)} is empty or not text")
    text = value.strip()
    if kind == "term":
        return _term(locator, text, pointer)
    check = _TEXT_KINDS.get(kind)
    return check(text, pointer) if check else _identifier_value(kind, text, pointer)


def _has(*groups: tuple[str, ...]) -> Callable[[Mapping[str, str]], bool]:
    """A test that an identifier's AIs include one of each group."""
    return lambda pairs: all(any(ai in pairs for ai in group) for group in groups)


# What each identifier kind needs among its AIs, and what it is not when it lacks them.
_IDENTIFIER_KINDS: dict[str, tuple[Callable[[Mapping[str, str]], bool], str]] = {
    "location": (_has(("414",)), "is not a GS1 location (SGLN)"),
    "party": (_has(("417", "414")), "is not a GS1 party or location (PGLN, SGLN)"),
    "gtin": (_has(("01",)), "names no GTIN"),
    "lot": (_has(("01",), ("10",)), "names no batch/lot"),
    "udi": (_has(("01",), ("10", "21")), "is no UDI: a GTIN (UDI-DI) with a batch/lot or serial number (UDI-PI)"),
}


def _identifier_value(kind: str, text: str, pointer: str) -> Found | Rejected:
    canonical_id = canonical(text)
    if kind == "identifier":
        if canonical_id is None and (identifiers.is_gs1_identifier(text) or ":" not in text):
            return Rejected(pointer, f"{_short(text)} is no valid identifier")
        return Found(pointer, canonical_id or text, canonical_id or text)
    if canonical_id is None:
        return Rejected(pointer, f"{_short(text)} is no valid GS1 identifier")
    fits, failure = _IDENTIFIER_KINDS[kind]
    if fits(ai_pairs(canonical_id)):
        return Found(pointer, canonical_id, canonical_id)
    return Rejected(pointer, f"{_short(text)} {failure}")
