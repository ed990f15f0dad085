"""GS1 Digital Link URIs and GS1 element strings, parsed and converted through biip. Pure: no I/O.

A Digital Link names one primary key (AI + value), optionally refined by key qualifiers that must
appear in the path in a fixed order (for a GTIN: 22 CPV, 10 lot, 21 serial, 235 TPX), and carries
data attributes in the query string. Every error is an `Invalid` with a message naming the fault.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from biip import ParseError
from biip.checksums import gs1_standard_check_digit
from biip.gs1_application_identifiers import GS1ApplicationIdentifier
from biip.gs1_digital_link_uris import GS1DigitalLinkURI
from biip.gs1_element_strings import GS1ElementString, GS1ElementStrings
from biip.gs1_messages import GS1Message
from biip.symbology import GS1Symbology, SymbologyIdentifier

from iip.kernel.errors import Invalid

GS1_ROOT = "https://id.gs1.org"  # the canonical resolver root of the GS1 Digital Link standard
GROUP_SEPARATOR = "\x1d"  # what scanners send for FNC1 between variable-length fields


@dataclass(frozen=True, slots=True)
class PrimaryKey:
    """A GS1 primary identification key as it appears in a Digital Link path."""

    ai: str
    name: str  # short name: the path parameter and the Digital Link convenience alias
    title: str
    qualifiers: tuple[str, ...] = ()  # qualifier AIs, in the only order the path may use
    check_digit_span: int | None = None  # leading digits of the value that end in a GS1 check digit


PRIMARY_KEYS: tuple[PrimaryKey, ...] = (
    PrimaryKey("01", "gtin", "GTIN", ("22", "10", "21", "235"), 14),
    PrimaryKey("00", "sscc", "SSCC", (), 18),
    PrimaryKey("414", "gln", "GLN", ("254", "7040"), 13),
    PrimaryKey("415", "payTo", "GLN of the invoicing party", ("8020",), 13),
    PrimaryKey("417", "partyGln", "Party GLN", ("7040",), 13),
    PrimaryKey("8004", "giai", "GIAI", ("7040",)),
    PrimaryKey("8003", "grai", "GRAI", (), 14),
    PrimaryKey("8006", "itip", "ITIP", ("22", "10", "21"), 14),
    PrimaryKey("8013", "gmn", "GMN"),
    PrimaryKey("8010", "cpid", "CPID", ("8011",)),
    PrimaryKey("8017", "gsrnp", "GSRN of the service provider", ("8019",), 18),
    PrimaryKey("8018", "gsrn", "GSRN of the service recipient", ("8019",), 18),
    PrimaryKey("255", "gcn", "GCN", (), 13),
    PrimaryKey("253", "gdti", "GDTI", (), 13),
    PrimaryKey("401", "ginc", "GINC"),
    PrimaryKey("402", "gsin", "GSIN", (), 17),
)
PRIMARY_KEY_BY_AI = {key.ai: key for key in PRIMARY_KEYS}

# Convenience aliases the Digital Link standard allowed in paths; accepted when parsing, never written.
PATH_ALIASES: dict[str, str] = {
    **{key.name.lower(): key.ai for key in PRIMARY_KEYS},
    "cpv": "22",
    "lot": "10",
    "ser": "21",
    "tpx": "235",
    "glnx": "254",
    "uic-ext": "7040",
    "refno": "8020",
    "cpsn": "8011",
    "srin": "8019",
}


@dataclass(frozen=True, slots=True)
class AiValue:
    """One element string: an application identifier and its value."""

    ai: str
    value: str
    title: str = ""  # GS1 data title, e.g. "BATCH/LOT"

    @property
    def segment(self) -> str:
        """As a path segment pair, the value percent-encoded so a '/' in it stays one segment."""
        return f"{self.ai}/{quote(self.value, safe='')}"


@dataclass(frozen=True)
class DigitalLink:
    """What a Digital Link or an element string names."""

    primary: AiValue
    qualifiers: tuple[AiValue, ...]
    attributes: tuple[AiValue, ...]
    element_strings: GS1ElementStrings = field(repr=False, compare=False)

    @property
    def key(self) -> str:
        """The primary key as stored on links, e.g. `01/09506000134352`."""
        return self.primary.segment

    @property
    def qualifier_path(self) -> str:
        """The qualifiers as stored on links, e.g. `10/ABC`, or ''."""
        return "/".join(q.segment for q in self.qualifiers)

    @property
    def qualifier_levels(self) -> tuple[str, ...]:
        """Qualifier paths from the most specific to none, the order a resolver falls back in."""
        return tuple("/".join(q.segment for q in self.qualifiers[:n]) for n in range(len(self.qualifiers), -1, -1))

    @property
    def path(self) -> str:
        """The path without data attributes, e.g. `/01/09506000134352/10/ABC`."""
        return "/" + "/".join((self.key, self.qualifier_path)).rstrip("/")

    def uri(self, root: str = GS1_ROOT, *, attributes: bool = True) -> str:
        """The Digital Link URI under `root` (scheme, host and optional path prefix)."""
        canonical = GS1DigitalLinkURI.from_element_strings(self.element_strings).as_canonical_uri()
        tail = canonical.removeprefix(GS1_ROOT)
        if not attributes:
            tail = tail.split("?", 1)[0]
        return root.rstrip("/") + tail

    def element_string(self, symbology: str = "") -> str:
        """As an element string with GS separators after variable-length fields, optionally prefixed."""
        return symbology + GS1Message.from_element_strings(self.element_strings).value

    def hri(self) -> str:
        """The human-readable interpretation printed under a barcode, e.g. `(01)09506000134352(10)ABC`."""
        return GS1Message.from_element_strings(self.element_strings).as_hri()


def _describe(key: PrimaryKey) -> str:
    return f"{key.title} ({key.ai})"


def _check_digits(element: GS1ElementString) -> None:
    key = PRIMARY_KEY_BY_AI.get(element.ai.ai)
    biip_error = element.gtin_error or element.sscc_error or element.gln_error
    if key is not None and key.check_digit_span is not None:
        digits = element.value[: key.check_digit_span]
        if len(digits) == key.check_digit_span and digits.isdigit():
            expected = gs1_standard_check_digit(digits[:-1])
            if expected != int(digits[-1]):
                raise Invalid(
                    f"bad check digit in {_describe(key)} '{element.value}': expected {expected}, got {digits[-1]}",
                    code="bad_check_digit",
                )
    if biip_error:
        raise Invalid(f"invalid {element.ai.data_title} '{element.value}': {biip_error}", code="bad_check_digit")


def _check_qualifier_order(key: PrimaryKey, qualifier_ais: list[str]) -> None:
    allowed = ", ".join(key.qualifiers) or "none"
    last = -1
    for ai in qualifier_ais:
        if ai not in key.qualifiers:
            raise Invalid(
                f"AI {ai} is not a key qualifier of {_describe(key)}; allowed qualifiers, in order: {allowed}",
                code="bad_qualifier",
            )
        position = key.qualifiers.index(ai)
        if position <= last:
            raise Invalid(
                f"key qualifiers of {_describe(key)} must appear once each in the order {allowed}; "
                f"got {' before '.join(qualifier_ais)}",
                code="bad_qualifier_order",
            )
        last = position


def _from_element_strings(element_strings: GS1ElementStrings) -> DigitalLink:
    for element in element_strings:
        _check_digits(element)
    present = [e for e in element_strings if e.ai.ai in PRIMARY_KEY_BY_AI]
    if not present:
        found = ", ".join(e.ai.ai for e in element_strings) or "nothing"
        raise Invalid(f"no GS1 primary key found (got AIs {found})", code="no_primary_key")
    if len({e.ai.ai for e in present}) > 1:
        # e.g. an SSCC label that also carries a GLN: which one the link names would be a guess.
        names = ", ".join(e.ai.ai for e in present)
        raise Invalid(f"more than one GS1 primary key ({names}); a Digital Link names exactly one", code="ambiguous")
    primary = present[0]
    key = PRIMARY_KEY_BY_AI[primary.ai.ai]
    qualifiers = [e for ai in key.qualifiers for e in element_strings if e.ai.ai == ai]
    rest = [e for e in element_strings if e is not primary and all(e is not q for q in qualifiers)]

    def pair(element: GS1ElementString) -> AiValue:
        return AiValue(element.ai.ai, element.value, element.ai.data_title)

    return DigitalLink(
        primary=pair(primary),
        qualifiers=tuple(pair(q) for q in qualifiers),
        attributes=tuple(pair(a) for a in sorted(rest, key=lambda e: e.ai.ai)),
        element_strings=element_strings,
    )


def parse_digital_link(text: str) -> DigitalLink:
    """Parse a Digital Link URI (`https://host/prefix/01/...?...`) or just its path (`/01/...`)."""
    text = text.strip()
    if not text:
        raise Invalid("empty GS1 Digital Link")
    has_scheme = re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", text) is not None
    parts = urlsplit(text if has_scheme else GS1_ROOT + "/" + text.lstrip("/"))
    if parts.scheme not in ("http", "https"):
        raise Invalid(f"a GS1 Digital Link is an http(s) URI, got scheme '{parts.scheme}'")
    raw = [s for s in parts.path.split("/") if s]
    # Anything before the primary key is the resolver's own path prefix.
    start = next((i for i, s in enumerate(raw) if PATH_ALIASES.get(s.lower(), s) in PRIMARY_KEY_BY_AI), None)
    if start is None:
        known = ", ".join(k.ai for k in PRIMARY_KEYS)
        raise Invalid(f"no GS1 primary key in path '{parts.path}'; expected one of {known}", code="no_primary_key")
    segments = [PATH_ALIASES.get(s.lower(), s) if i % 2 == 0 else s for i, s in enumerate(raw[start:])]
    if len(segments) % 2:
        raise Invalid(f"path '{parts.path}' has an AI without a value", code="bad_path")
    key = PRIMARY_KEY_BY_AI[segments[0]]
    _check_qualifier_order(key, segments[2::2])
    values = [unquote(v) for v in segments[1::2]]
    if key.ai == "01" and values[0].isdigit():
        values[0] = values[0].zfill(14)  # GTIN-8, -12 and -13 are written as GTIN-14 in element strings
    element_strings = GS1ElementStrings()
    try:
        for ai, value in zip(segments[0::2], values, strict=True):
            element_strings.append(GS1ElementString.parse(f"{ai}{value}"))
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name.isdigit() and _known_ai(name) and name not in (key.ai, *key.qualifiers):
                element_strings.append(GS1ElementString.parse(f"{name}{value}"))
    except ParseError as err:
        raise Invalid(f"invalid GS1 Digital Link '{text}': {err}", code="bad_element") from err
    return _from_element_strings(element_strings)


def _known_ai(name: str) -> bool:
    try:
        return GS1ApplicationIdentifier.extract(name).ai == name
    except ParseError:
        return False


def split_symbology(text: str) -> tuple[str, str]:
    """(`]C1`-style symbology identifier or '', the data after it)."""
    if not text.startswith("]"):
        return "", text
    try:
        identifier = SymbologyIdentifier.extract(text)
    except ParseError as err:
        raise Invalid(f"unknown symbology identifier at the start of '{text[:8]}'", code="bad_symbology") from err
    return identifier.value, text[len(identifier) :]


# Symbologies whose data is a GS1 element string (GS1-128, GS1 DataMatrix, GS1 QR, DataBar ...).
ELEMENT_STRING_SYMBOLOGIES = frozenset(GS1Symbology.with_gs1_messages())


def parse_element_string(text: str) -> DigitalLink:
    """Parse a scanned GS1 element string (`]C1`/`]d2`/`]Q3` prefix and GS separators allowed) or an HRI."""
    symbology, data = split_symbology(text.strip())
    if symbology:
        kind = SymbologyIdentifier.extract(symbology).gs1_symbology
        if kind not in ELEMENT_STRING_SYMBOLOGIES:
            raise Invalid(
                f"symbology identifier '{symbology}' does not announce GS1 element strings", code="bad_symbology"
            )
    data = data.lstrip(GROUP_SEPARATOR)  # some scanners send the leading FNC1 as GS
    if not data:
        raise Invalid("empty GS1 element string")
    try:
        message = GS1Message.parse_hri(data) if data.startswith("(") else GS1Message.parse(data)
    except ParseError as err:
        raise Invalid(f"invalid GS1 element string: {err}", code="bad_element") from err
    return _from_element_strings(message.element_strings)


def element_string_to_digital_link(text: str, root: str = GS1_ROOT) -> str:
    """A scanned element string as a Digital Link URI under `root`."""
    return parse_element_string(text).uri(root)


def digital_link_to_element_string(uri: str, symbology: str = "") -> str:
    """A Digital Link URI as an element string, optionally prefixed with a symbology identifier."""
    return parse_digital_link(uri).element_string(symbology)


def query_without(query: str, *names: str) -> str:
    """The query string without the named parameters (e.g. `linkType`), order kept."""
    kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k not in names]
    return urlencode(kept)
