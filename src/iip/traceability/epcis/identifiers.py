"""EPC URNs ↔ GS1 Digital Link URIs, and the canonical form identifiers are matched in.

The canonical form is the Digital Link URI on `https://id.gs1.org` holding only the key and its key
qualifiers (`/01/{GTIN-14}/21/{serial}`). An EPC URN marks the GS1 Company Prefix with a dot; a Digital
Link does not. Canonicalising to the Digital Link form drops that split, so matching never needs the
company prefix length. Going the other way (`dl_to_urn`) does: the caller gives it, or it is looked up in
GS1's company prefix length table that `biip` ships.

An IIP identifier (a handle) is an EPC too, written `hdl:88.118.8/X`, as a Handle proxy URL
(`https://hdl.handle.net/88.118.8/X`) or as a Handle REST URL (`https://<host>/api/handles/88.118.8/X`);
`iip.identifiers.public.handle_named_by` reads the three. Its canonical form is `hdl:` and the handle
in lower case (handles are case-insensitive in lookup). A handle is no GS1 identifier: the event hash
keeps it as written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote, unquote, urlsplit

from biip.checksums import gs1_standard_check_digit
from biip.gs1_prefixes import GS1CompanyPrefix

from iip.identifiers.public import HANDLE_PROXIES, InvalidHandle, handle_named_by

DL_BASE = "https://id.gs1.org"
HANDLE_BASE = "hdl:"
_DL_SAFE = "!'()*+,-.:;=_"


class IdentifierError(ValueError):
    """A GS1 identifier that is malformed or whose check digit is wrong."""


@dataclass(frozen=True)
class _Scheme:
    ai: str  # Digital Link primary key AI
    digits: int  # length of the key (check digit included), 0 for variable length without check digit
    qualifier: str | None  # AI of the URN's last component when it qualifies the key (serial, lot, extension)


_SCHEMES = {
    "sgtin": _Scheme("01", 14, "21"),
    "sscc": _Scheme("00", 18, None),
    "sgln": _Scheme("414", 13, "254"),
    "pgln": _Scheme("417", 13, None),
    "grai": _Scheme("8003", 14, None),
    "giai": _Scheme("8004", 0, None),
    "gsrn": _Scheme("8018", 18, None),
    "gdti": _Scheme("253", 13, None),
    "lgtin": _Scheme("01", 14, "10"),
}
_URN = re.compile(r"urn:epc:(id|class):([a-z]+):(.+)")
# An EPC pattern for every serial of one GTIN names the GTIN itself.
_SGTIN_PATTERN = re.compile(r"urn:epc:idpat:sgtin:(\d{6,12})\.(\d{1,7})\.\*")


def _check_digit_ok(digits: str) -> bool:
    # isdigit() alone also takes superscripts and other digits int() refuses.
    return digits.isascii() and digits.isdigit() and gs1_standard_check_digit(digits[:-1]) == int(digits[-1])


def _with_check_digit(payload: str) -> str:
    return payload + str(gs1_standard_check_digit(payload))


def _dl_escape(value: str) -> str:
    return quote(unquote(value), safe=_DL_SAFE)


def urn_to_dl(urn: str) -> str:
    """The Digital Link URI of an EPC URN (`urn:epc:id:sgtin:0614141.107346.2017` → `.../01/10614141073464/21/2017`)."""
    pattern = _SGTIN_PATTERN.fullmatch(urn.strip())
    if pattern:
        company, reference = pattern.groups()
        return f"{DL_BASE}/01/{_with_check_digit(reference[0] + company + reference[1:])}"
    match = _URN.fullmatch(urn.strip())
    if not match:
        raise IdentifierError(f"not an EPC URN: {urn!r}")
    level, scheme_name, body = match.groups()
    scheme = _SCHEMES.get(scheme_name)
    if scheme is None or (level == "class") != (scheme_name == "lgtin"):
        raise IdentifierError(f"unsupported EPC scheme {level}:{scheme_name}")
    parts = body.split(".", 2 if scheme_name in ("sgtin", "lgtin", "sgln", "grai", "gdti") else 1)
    company = parts[0]
    if not company.isdigit() or len(parts) < 2:
        raise IdentifierError(f"{urn!r}: expected a numeric company prefix followed by '.'")
    if scheme_name in ("sgtin", "lgtin", "sscc"):
        # The indicator / extension digit leads the reference and moves in front of the company prefix.
        reference = parts[1]
        if not reference.isdigit() or not reference:
            raise IdentifierError(f"{urn!r}: the reference must be digits")
        key = _with_check_digit(reference[0] + company + reference[1:])
    elif scheme_name == "giai":
        key = company + unquote(parts[1])
    elif scheme_name == "grai":
        key = "0" + _with_check_digit(company + parts[1])
    else:
        key = _with_check_digit(company + parts[1])
    if scheme.digits and (len(key) != scheme.digits or not key.isdigit()):
        raise IdentifierError(f"{urn!r}: company prefix and reference must make {scheme.digits - 1} digits")
    path = f"/{scheme.ai}/{_dl_escape(key)}"
    if scheme_name in {"grai", "gdti"}:
        path += _dl_escape(parts[2]) if len(parts) > 2 else ""  # the serial follows the key directly
    elif scheme.qualifier and len(parts) > 2 and not (scheme_name == "sgln" and parts[2] == "0"):
        path += f"/{scheme.qualifier}/{_dl_escape(parts[2])}"  # SGLN extension 0 is the GLN itself
    return DL_BASE + path


_KEY_AIS = {"00", "01", "253", "414", "417", "8003", "8004", "8018"}
_QUALIFIER_AIS = {"01": ("22", "10", "21"), "414": ("254",)}


def _parse_dl(uri: str) -> tuple[str, str, list[tuple[str, str]]]:
    """(key AI, key value, qualifier (AI, value) pairs) of a Digital Link URI; any domain is accepted."""
    parts = urlsplit(uri.strip())
    if parts.scheme not in ("http", "https"):
        raise IdentifierError(f"not a GS1 Digital Link URI: {uri!r}")
    segments = [s for s in parts.path.split("/") if s]
    for index, segment in enumerate(segments):
        if segment in _KEY_AIS and index + 1 < len(segments):
            key_ai, key = segment, unquote(segments[index + 1])
            rest = segments[index + 2 :]
            if len(rest) % 2:
                raise IdentifierError(f"{uri!r}: qualifiers must come in AI/value pairs")
            qualifiers = [(rest[i], unquote(rest[i + 1])) for i in range(0, len(rest), 2)]
            return key_ai, key, qualifiers
    raise IdentifierError(f"no GS1 key in Digital Link URI {uri!r}")


def _check_key(ai: str, key: str, source: str) -> str:
    """The key (a GTIN padded to 14 digits) once its length and check digit hold."""
    if ai == "01" and key.isdigit() and len(key) in (8, 12, 13):
        key = key.zfill(14)
    # AI → (digits carrying the check digit, where they start); GDTI and GRAI add an optional serial after them.
    checked = {
        "00": (18, 0),
        "01": (14, 0),
        "253": (13, 0),
        "414": (13, 0),
        "417": (13, 0),
        "8003": (13, 1),
        "8018": (18, 0),
    }
    if ai not in checked:
        if not key:
            raise IdentifierError(f"{source!r}: empty AI ({ai}) value")
        return key
    length, start = checked[ai]
    digits = key[start : start + length]
    exact = ai not in ("253", "8003")
    if len(digits) != length or not digits.isdigit() or (exact and len(key) != length) or (start and key[0] != "0"):
        raise IdentifierError(f"{source!r}: AI ({ai}) needs {length} digits")
    if not _check_digit_ok(digits):
        raise IdentifierError(f"{source!r}: wrong GS1 check digit in {digits}")
    return key


def _may_be_link(text: str) -> bool:
    """False only when `text` (stripped) cannot parse as an http(s) URI; cheaper than urlsplit, which
    also drops leading control characters and every tab and line break before reading the scheme."""
    if text[:8].lower().startswith(("http://", "https://")):
        return True
    return (text[:1] <= " " if text else False) or "\t" in text or "\r" in text or "\n" in text


@lru_cache(maxsize=16_384)
def is_gs1_identifier(value: str) -> bool:
    """Whether a value is one this module understands: a supported EPC URN or a Digital Link with a GS1 key."""
    text = value.strip()
    if _URN.fullmatch(text) or _SGTIN_PATTERN.fullmatch(text):
        return True
    if not _may_be_link(text) or _is_handle_form(text):
        return False
    try:
        _parse_dl(value)
    except IdentifierError:
        return False
    return True


@lru_cache(maxsize=16_384)
def is_handle(value: str) -> bool:
    """Whether a value is written as a handle (valid or not): `check` says whether it names one."""
    return _is_handle_form(value.strip())


def _is_handle_form(text: str) -> bool:
    """Whether `text` is written as a handle (valid or not), so is no GS1 Digital Link whatever its path holds."""
    try:
        return handle_named_by(text) is not None
    except InvalidHandle:
        return True


def handle_uri(value: str) -> str | None:
    """`hdl:<prefix>/<suffix>` in lower case for a handle in any of its forms; None for other values.

    Raises IdentifierError for a value written as a handle that names no valid one (`hdl:88.118.8`).
    """
    try:
        name = handle_named_by(value)
    except InvalidHandle as err:
        raise IdentifierError(f"{value.strip()[:100]!r}: {err.message}") from None
    return None if name is None else HANDLE_BASE + name.key


# The forms nearly every event carries, canonicalised without the general path's round trip through
# a Digital Link string. Only serials that need no percent-encoding take it, so the result is the
# general path's exactly; any other form, and any wrong check digit, goes the general way.
_PLAIN = r"[A-Za-z0-9!'()*+,\-.:;=_~]+"
_FAST_URN = re.compile(rf"urn:epc:(id:sgtin|class:lgtin|id:sscc|id:sgln):([0-9]+)\.([0-9]*)(?:\.({_PLAIN}))?")
_FAST_LINK = re.compile(rf"https?://([^/?#\s\[\]]+)/(00|01|414)/([0-9]+)(?:/(10|21|254)/({_PLAIN}))?(?:[?#]\S*)?")
# URN scheme → (key AI, AI of its last component); SSCC has none, SGLN's extension 0 is the GLN itself
_FAST_URN_SCHEMES = {"id:sgtin": ("01", "21"), "class:lgtin": ("01", "10"), "id:sscc": ("00", None)}
_FAST_LINK_FORMS = {("00", None), ("01", None), ("01", "10"), ("01", "21"), ("414", None), ("414", "254")}
_KEY_LENGTHS = {"00": 18, "01": 14, "414": 13}


def _check_digit(payload: str) -> str:
    """GS1 mod-10 check digit of ASCII digits (weights 3, 1, ... from the right)."""
    total = 3 * sum(map(int, payload[-1::-2])) + sum(map(int, payload[-2::-2]))
    return str((10 - total % 10) % 10)


def _fast_urn(scheme: str, company: str, reference: str, last: str | None) -> str | None:
    if scheme == "id:sgln":
        ai, payload = "414", company + reference
        qualifier = None if last in (None, "0") else ("254", last)
    else:
        ai, last_ai = _FAST_URN_SCHEMES[scheme]
        if not reference or (last is None) != (last_ai is None):
            return None  # a GTIN without serial or lot, or an SSCC with more: the general path says what it is
        payload = reference[0] + company + reference[1:]  # the indicator digit leads
        qualifier = (last_ai, last) if last_ai is not None and last is not None else None
    if len(payload) + 1 != _KEY_LENGTHS[ai]:
        return None
    key = payload + _check_digit(payload)
    return f"{DL_BASE}/{ai}/{key}" + (f"/{qualifier[0]}/{qualifier[1]}" if qualifier else "")


def _fast_canonical(value: str) -> str | None:
    """The canonical form of a common, well-formed identifier; None to take the general path."""
    urn = _FAST_URN.fullmatch(value)
    if urn is not None:
        return _fast_urn(*urn.groups())
    link = _FAST_LINK.fullmatch(value)
    if link is None:
        return None
    host, ai, key, qualifier_ai, qualifier = link.groups()
    # A Handle proxy's path is a handle whatever it looks like: the general path reads it as one.
    if (ai, qualifier_ai) not in _FAST_LINK_FORMS or len(key) != _KEY_LENGTHS[ai] or host.lower() in HANDLE_PROXIES:
        return None
    if _check_digit(key[:-1]) != key[-1]:
        return None
    if qualifier_ai is None or (qualifier_ai == "254" and qualifier == "0"):
        return f"{DL_BASE}/{ai}/{key}"
    return f"{DL_BASE}/{ai}/{key}/{qualifier_ai}/{qualifier}"


@lru_cache(maxsize=16_384)
def canonical(identifier: str) -> str:
    """The matching form: a Digital Link URI on id.gs1.org, `hdl:` and a handle in lower case; any
    other value comes back unchanged.

    Raises IdentifierError for a GS1 identifier with a wrong check digit or a malformed structure, and
    for a value written as a handle that names none.
    Results are cached: an event's identifiers are canonicalised by validation, hashing and indexing.
    """
    value = identifier.strip()
    fast = _fast_canonical(value)
    return fast if fast is not None else _canonical(identifier, value)


def _canonical(identifier: str, value: str) -> str:
    if value.startswith("urn:epc:"):
        value = urn_to_dl(value)
    else:
        # Not an EPC URN: a handle, a Digital Link, or kept as written (`is_gs1_identifier`, in steps).
        if value[:4].lower() != HANDLE_BASE and not _may_be_link(value):
            return identifier
        handle = handle_uri(value)
        if handle is not None:
            return handle
        try:
            _parse_dl(value)
        except IdentifierError:
            return identifier
    key_ai, key, qualifiers = _parse_dl(value)
    key = _check_key(key_ai, key, identifier)
    allowed = _QUALIFIER_AIS.get(key_ai, ())
    kept = {ai: v for ai, v in qualifiers if ai in allowed}
    if key_ai == "414" and kept.get("254") == "0":
        del kept["254"]
    path = f"/{key_ai}/{_dl_escape(key)}" + "".join(f"/{ai}/{_dl_escape(kept[ai])}" for ai in allowed if ai in kept)
    return DL_BASE + path


def check(identifier: str) -> str | None:
    """None when the identifier is valid or not a GS1 one; otherwise why it is not."""
    try:
        canonical(identifier)
    except IdentifierError as exc:
        return str(exc)
    return None


def same_object(a: str, b: str) -> bool:
    """Whether two identifiers (URN or Digital Link) name the same object."""
    return canonical(a) == canonical(b)


def dl_to_urn(uri: str, company_prefix_length: int | None = None) -> str:  # noqa: PLR0911 - one return per scheme
    """The EPC URN of a Digital Link URI; the company prefix length is looked up when not given."""
    key_ai, key, qualifiers = _parse_dl(uri)
    key = _check_key(key_ai, key, uri)
    extra = dict(qualifiers)
    if company_prefix_length is None:
        lookup = key[1:] if key_ai in ("00", "01", "8003") else key
        prefix = GS1CompanyPrefix.extract(lookup)
        if prefix is None:
            raise IdentifierError(f"{uri!r}: company prefix length unknown; pass company_prefix_length")
        company_prefix_length = len(prefix.value)
    n = company_prefix_length
    if key_ai == "01":
        company, reference = key[1 : 1 + n], key[0] + key[1 + n : 13]
        if "21" in extra:
            return f"urn:epc:id:sgtin:{company}.{reference}.{quote(extra['21'], safe=_DL_SAFE)}"
        if "10" in extra:
            return f"urn:epc:class:lgtin:{company}.{reference}.{quote(extra['10'], safe=_DL_SAFE)}"
        raise IdentifierError(f"{uri!r}: a GTIN needs a serial (21) or lot (10) to be an EPC")
    if key_ai == "00":
        return f"urn:epc:id:sscc:{key[1 : 1 + n]}.{key[0]}{key[1 + n : 17]}"
    if key_ai == "414":
        return f"urn:epc:id:sgln:{key[:n]}.{key[n:12]}.{extra.get('254', '0')}"
    if key_ai == "417":
        return f"urn:epc:id:pgln:{key[:n]}.{key[n:12]}"
    if key_ai == "8003":
        return f"urn:epc:id:grai:{key[1 : 1 + n]}.{key[1 + n : 13]}.{quote(key[14:], safe=_DL_SAFE)}"
    if key_ai == "8004":
        return f"urn:epc:id:giai:{key[:n]}.{quote(key[n:], safe=_DL_SAFE)}"
    if key_ai == "8018":
        return f"urn:epc:id:gsrn:{key[:n]}.{key[n:17]}"
    return f"urn:epc:id:gdti:{key[:n]}.{key[n:12]}.{quote(key[13:], safe=_DL_SAFE)}"
