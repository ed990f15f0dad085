"""Signed product codes as GS1 Digital Links: serials, the signed bytes, the URI both ways, offline checks.

Pure functions, no database. A code is the Digital Link of one serialised item (SGTIN), with the
lot as key qualifier and the expiry date as data attribute, and two parameters of ours, `k` (the
key id) and `s` (the Ed25519 signature, base64url without padding)::

    https://id.example.com/v/01/09506000134352/10/LOT7/21/MZXW6YTBOI3DQNRS?17=261231&k=Qk9vX2dn&s=<86 chars>

The resolver base (`https://id.example.com/v`) may carry a path; the code starts at `/01/`. The
signature covers `SIGNED_PREFIX` and the GTIN (14 digits), serial, lot, expiry (`YYMMDD`) and key id,
one per line (no GS1 value may hold a line break, so the encoding is unambiguous), UTF-8::

    IIP-CODE-1\\n09506000134352\\nMZXW6YTBOI3DQNRS\\nLOT7\\n261231\\nQk9vX2dn

so anyone holding the tenant's public key (`GET /api/traceability/keys`) can check a code offline
with `verify_offline`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from iip.kernel.ed25519 import signer

SIGNED_PREFIX = "IIP-CODE-1"
KEY_PARAM = "k"
SIGNATURE_PARAM = "s"
LOT_AI, SERIAL_AI, EXPIRY_AI, GTIN_AI = "10", "21", "17", "01"
SERIAL_BYTES = 10  # 80 random bits: 16 base32 characters, inside GS1's 20 for AI 21
SERIAL_LENGTH = 16
KEY_ID_LENGTH = 8  # base64url characters of the public key's SHA-256: 48 bits
SIGNATURE_LENGTH = 86  # base64url characters of a 64-byte Ed25519 signature
MAX_URI_LENGTH = 2000
MAX_LOT_LENGTH = 20
PUBLIC_KEY_BYTES = 32

# GS1 AI encodable character set 82, the characters a lot or serial may hold.
CSET82 = re.compile(r'^[!"%-?A-Z_a-z]+$')
GTIN = re.compile(r"^\d{8}$|^\d{12,14}$")
EXPIRY = re.compile(r"^\d{2}(0[1-9]|1[0-2])(0\d|[12]\d|3[01])$")
KEY_ID = re.compile(r"^[A-Za-z0-9_-]{8}$")


class CodeError(ValueError):
    """A code, or a value for one, that cannot be used; the message says why."""


# --- values


def check_digit_ok(digits: str) -> bool:
    """GS1's mod-10 check digit over a GTIN, GLN or SSCC."""
    body, check = digits[:-1], int(digits[-1])
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return (10 - total % 10) % 10 == check


def gtin14(value: str) -> str:
    """A GTIN-8, -12, -13 or -14 as 14 digits; CodeError if malformed or its check digit is wrong."""
    value = value.strip()
    if not GTIN.match(value):
        raise CodeError(f"a GTIN has 8, 12, 13 or 14 digits, not {value[:20]!r}")
    if not check_digit_ok(value):
        raise CodeError(f"wrong check digit in GTIN {value}")
    return value.zfill(14)


def check_lot(value: str) -> str:
    if not 0 < len(value) <= MAX_LOT_LENGTH or not CSET82.match(value):
        raise CodeError(
            f"a lot has 1 to {MAX_LOT_LENGTH} characters of GS1's set 82 (letters, digits, !\"%&'()*+,-./:;<=>?_)"
        )
    return value


def expiry_code(day: dt.date) -> str:
    """AI 17's `YYMMDD` for a date within GS1's century window (49 years back, 50 ahead)."""
    return day.strftime("%y%m%d")


def expiry_date(code: str, *, today: dt.date | None = None) -> dt.date | None:
    """The date of an AI 17 value (GS1 General Specifications 7.12: the century that puts it nearest
    to today, 49 years back to 50 ahead); day 00 is the month's last day. None when malformed."""
    if not EXPIRY.match(code):
        return None
    this_year = (today or dt.datetime.now(dt.UTC).date()).year
    yy, month, day = int(code[:2]), int(code[2:4]), int(code[4:])
    year = this_year - this_year % 100 + yy
    if year - this_year >= 51:
        year -= 100
    elif this_year - year > 49:
        year += 100
    if day == 0:
        following = dt.date(year + month // 12, month % 12 + 1, 1)
        return following - dt.timedelta(days=1)
    try:
        return dt.date(year, month, day)
    except ValueError:
        return None


def new_serials(count: int) -> list[str]:
    """`count` distinct serials of 80 random bits each (upper-case base32: URL-safe and in set 82)."""
    serials: set[str] = set()
    while len(serials) < count:
        # 10 random bytes are exactly 16 base32 characters: one encoding of the whole buffer, then slices.
        missing = count - len(serials)
        text = base64.b32encode(secrets.token_bytes(SERIAL_BYTES * missing)).decode()
        serials.update(text[i : i + SERIAL_LENGTH] for i in range(0, len(text), SERIAL_LENGTH))
    return list(serials)


# --- keys and signatures


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def from_b64url(text: str) -> bytes:
    """Bytes of unpadded base64url; CodeError if it is not."""
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise CodeError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise CodeError("not base64url") from None


def key_id_of(public_key: bytes) -> str:
    """The id a code names its key by: the first 8 base64url characters of the key's SHA-256."""
    return b64url(hashlib.sha256(public_key).digest())[:KEY_ID_LENGTH]


def signed_payload(gtin: str, serial: str, lot: str | None, expiry: str | None, key_id: str) -> bytes:
    """The bytes a code's signature covers (see the module docstring)."""
    return "\n".join((SIGNED_PREFIX, gtin, serial, lot or "", expiry or "", key_id)).encode()


def batch_signer(seed: bytes) -> Callable[[bytes], str]:
    """A function giving the base64url signature of a payload by the key of this 32-byte seed (libsodium)."""
    sign = signer(seed)
    to_url = str.maketrans("+/", "-_")
    return lambda payload: sign(payload).rstrip("=").translate(to_url)


def signature_holds(public_key: bytes, payload: bytes, signature: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, payload)
    except (InvalidSignature, ValueError):
        return False
    return True


# --- the URI


@dataclass(frozen=True, slots=True)
class CodeLink:
    """What a code's URI carries."""

    gtin: str  # 14 digits
    serial: str
    lot: str | None
    expiry: str | None  # AI 17, YYMMDD
    key_id: str
    signature: str  # base64url

    @property
    def payload(self) -> bytes:
        return signed_payload(self.gtin, self.serial, self.lot, self.expiry, self.key_id)

    @property
    def sgtin(self) -> str:
        """The item's Digital Link on id.gs1.org, as `epcis.identifiers.canonical` writes an SGTIN."""
        return f"https://id.gs1.org/01/{self.gtin}/21/{_segment(self.serial)}"

    @property
    def lgtin(self) -> str | None:
        """The lot's Digital Link on id.gs1.org (an LGTIN), if the code names a lot."""
        return None if self.lot is None else f"https://id.gs1.org/01/{self.gtin}/10/{_segment(self.lot)}"


def _segment(value: str) -> str:
    return quote(value, safe="")


def build_uri(resolver: str, link: CodeLink) -> str:
    """The code's URI under `resolver` (a base URL, no trailing slash)."""
    path = f"{resolver}/{GTIN_AI}/{link.gtin}"
    if link.lot is not None:
        path += f"/{LOT_AI}/{_segment(link.lot)}"
    path += f"/{SERIAL_AI}/{_segment(link.serial)}?"
    if link.expiry is not None:
        path += f"{EXPIRY_AI}={link.expiry}&"
    return f"{path}{KEY_PARAM}={link.key_id}&{SIGNATURE_PARAM}={link.signature}"


def uri_writer(resolver: str, gtin: str, lot: str | None, expiry: str | None, key_id: str) -> Callable[[str, str], str]:
    """`(serial, signature) -> URI` for the codes of one batch, with what they share formatted once."""
    head = f"{resolver}/{GTIN_AI}/{gtin}" + (f"/{LOT_AI}/{_segment(lot)}" if lot is not None else "") + f"/{SERIAL_AI}/"
    middle = "?" + (f"{EXPIRY_AI}={expiry}&" if expiry is not None else "") + f"{KEY_PARAM}={key_id}&{SIGNATURE_PARAM}="
    return lambda serial, signature: f"{head}{_segment(serial)}{middle}{signature}"


def parse_uri(uri: str) -> CodeLink:
    """The code a URI carries (any host and path before `/01/`); CodeError if it is not one."""
    uri = uri.strip()
    if len(uri) > MAX_URI_LENGTH:
        raise CodeError("the code is too long")
    if any(ord(c) < 32 for c in uri):
        raise CodeError("the code holds control characters")
    parts = urlsplit(uri if "://" in uri or uri.startswith("/") else "/" + uri)
    segments = parts.path.split("/")
    try:
        start = segments.index(GTIN_AI)
    except ValueError:
        raise CodeError("not a GS1 Digital Link of a GTIN (no /01/ in the path)") from None
    rest = segments[start + 1 :]
    if len(rest) % 2 != 1:
        raise CodeError("a Digital Link path alternates application identifiers and values")
    gtin = gtin14(unquote(rest[0]))
    qualifiers = dict(zip(rest[1::2], (unquote(v) for v in rest[2::2]), strict=True))
    query = _query(parts.query)
    unknown = set(qualifiers) - {LOT_AI, SERIAL_AI}
    if unknown:
        raise CodeError(f"unexpected key qualifier(s) {', '.join(sorted(unknown))} in the path")
    lot = qualifiers.get(LOT_AI) or query.get(LOT_AI)
    serial = qualifiers.get(SERIAL_AI)
    if not serial:
        raise CodeError("the code names no serial number (/21/)")
    if len(serial) > MAX_LOT_LENGTH or not CSET82.match(serial):
        raise CodeError("the serial number is not a GS1 serial")
    if lot is not None:
        check_lot(lot)
    expiry = query.get(EXPIRY_AI)
    if expiry is not None and not EXPIRY.match(expiry):
        raise CodeError("the expiry date (17) is not YYMMDD")
    key_id = query.get(KEY_PARAM, "")
    signature = query.get(SIGNATURE_PARAM, "")
    if not KEY_ID.match(key_id):
        raise CodeError("the code names no signing key (k)")
    if len(signature) != SIGNATURE_LENGTH:
        raise CodeError("the code carries no signature (s)")
    return CodeLink(gtin, serial, lot, expiry, key_id, signature)


def _query(query: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name in found:
            raise CodeError(f"parameter {name!r} is given twice")
        found[name] = value
    return found


# --- offline verification


def signature_ok(link: CodeLink, public_key: bytes) -> bool:
    try:
        signature = from_b64url(link.signature)
    except CodeError:
        return False
    return len(signature) == 64 and signature_holds(public_key, link.payload, signature)


def public_key_bytes(value: bytes | str) -> bytes | None:
    """A raw Ed25519 public key from bytes or base64url text; None if it is not one."""
    if isinstance(value, str):
        try:
            value = from_b64url(value)
        except CodeError:
            return None
    return value if len(value) == PUBLIC_KEY_BYTES else None


def verify_offline(uri: str, public_keys: Mapping[str, bytes | str]) -> bool:
    """Whether the code's signature holds under the published key it names (key id -> raw key, or
    its base64url text, as `keys_from_jwks` gives). No database, no network: it cannot tell a code
    that was issued from a copy of one, or a recalled one; the online check does."""
    try:
        link = parse_uri(uri)
    except CodeError:
        return False
    stored = public_keys.get(link.key_id)
    key = None if stored is None else public_key_bytes(stored)
    # The key id is a digest of the key: a key filed under the wrong id is refused.
    return key is not None and key_id_of(key) == link.key_id and signature_ok(link, key)


def jwk(public_key: bytes) -> dict[str, str]:
    """An Ed25519 public key as a JSON Web Key (RFC 8037)."""
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": b64url(public_key),
        "kid": key_id_of(public_key),
        "use": "sig",
        "alg": "EdDSA",
    }


def keys_from_jwks(document: Mapping[str, Any]) -> dict[str, bytes]:
    """Key id -> raw public key of the Ed25519 keys of a JWK set (`GET /api/traceability/keys`)."""
    found: dict[str, bytes] = {}
    entries = document.get("keys")
    for entry in entries if isinstance(entries, list) else ():
        if not isinstance(entry, dict) or entry.get("kty") != "OKP" or entry.get("crv") != "Ed25519":
            continue
        x = entry.get("x")
        key = public_key_bytes(x) if isinstance(x, str) else None
        if key is not None:
            found[key_id_of(key)] = key
    return found


def sign_codes(
    seed: bytes, key_id: str, gtin: str, lot: str | None, expiry: str | None, serials: Iterable[str]
) -> list[str]:
    """Base64url signatures of the codes of one batch, in the order of `serials`."""
    sign = batch_signer(seed)
    return [sign(signed_payload(gtin, serial, lot, expiry, key_id)) for serial in serials]
