"""Handle names and values as HANDLE.NET's JSON REST API shows them. Pure: no I/O.

A value on the wire: `{"index": 1, "type": "URL", "data": {"format": "string", "value": "https://..."},
"ttl": 86400, "timestamp": "2026-01-01T00:00:00Z"}`, plus `"permissions": "1100"` when the value's
permissions differ from the default `1110` (admin read, admin write, public read, public write).
HS_ADMIN permissions are the 12 bits of RFC 3651, written most significant first, so the string's
first character is `list_handles` and its last `add_handle` (`011111110011` = all but the naming
authority bits and list).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import enum
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from iip.kernel.errors import Conflict, DomainError, Forbidden, Invalid, NotFound, Unauthenticated

MAX_VALUE_BYTES = 64 * 1024
MAX_VALUES = 1000
MAX_KEY_LENGTH = 600  # identifiers_handle.key
MAX_INDEX = 2**31 - 1
DEFAULT_TTL = 86400
DEFAULT_VALUE_PERMISSIONS = "1110"
HIDDEN_VALUE_PERMISSIONS = "1100"  # HS_SECKEY: never publicly readable
NA_PREFIX = "0.na"  # prefix handles live under 0.NA

HS_ADMIN = "HS_ADMIN"
HS_VLIST = "HS_VLIST"
HS_SECKEY = "HS_SECKEY"
HS_SITE = "HS_SITE"
HS_PUBKEY = "HS_PUBKEY"
ADMIN_INDEX = 100
ADMIN_GROUP_INDEX = 200
SECRET_KEY_INDEX = 300


class ResponseCode(enum.IntEnum):
    """Handle protocol response codes (RFC 3652) the REST API reports as `responseCode`."""

    SUCCESS = 1
    ERROR = 2
    HANDLE_NOT_FOUND = 100
    HANDLE_ALREADY_EXISTS = 101
    INVALID_HANDLE = 102
    VALUES_NOT_FOUND = 200
    VALUE_ALREADY_EXISTS = 201
    INVALID_VALUE = 202
    RECURSION_LIMIT_EXCEEDED = 6
    SERVER_NOT_RESPONSIBLE = 301
    SERVICE_REFERRAL = 302
    NOT_AUTHORIZED = 400
    AUTHENTICATION_NEEDED = 402


# --- errors: kernel errors carrying the Handle response code and the HTTP status HANDLE.NET answers with


class HandleProblem(DomainError):
    response_code: ClassVar[ResponseCode] = ResponseCode.ERROR
    http_status: ClassVar[int] = 400


class HandleNotFound(HandleProblem, NotFound):
    code = "handle_not_found"
    response_code = ResponseCode.HANDLE_NOT_FOUND
    http_status = 404


class HandleAlreadyExists(HandleProblem, Conflict):
    code = "handle_exists"
    response_code = ResponseCode.HANDLE_ALREADY_EXISTS
    http_status = 409


class InvalidHandle(HandleProblem, Invalid):
    code = "invalid_handle"
    response_code = ResponseCode.INVALID_HANDLE
    http_status = 400


class ValuesNotFound(HandleProblem, NotFound):
    code = "values_not_found"
    response_code = ResponseCode.VALUES_NOT_FOUND
    http_status = 400


class ValueAlreadyExists(HandleProblem, Conflict):
    code = "value_exists"
    response_code = ResponseCode.VALUE_ALREADY_EXISTS
    http_status = 409


class InvalidValue(HandleProblem, Invalid):
    code = "invalid_value"
    response_code = ResponseCode.INVALID_VALUE
    http_status = 400


class PrefixNotHomed(HandleProblem, NotFound):
    """The prefix is not homed here, or not the caller's: both answer alike so neither is revealed."""

    code = "prefix_not_homed"
    response_code = ResponseCode.SERVER_NOT_RESPONSIBLE
    http_status = 404


class AuthenticationNeeded(HandleProblem, Unauthenticated):
    code = "authentication_needed"
    response_code = ResponseCode.AUTHENTICATION_NEEDED
    http_status = 401


class NotAuthorized(HandleProblem, Forbidden):
    code = "not_authorized"
    response_code = ResponseCode.NOT_AUTHORIZED
    http_status = 403


# --- names


PREFIX_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,254}$")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class HandleName:
    """`prefix/suffix`; the suffix may hold any UTF-8 (slashes too). Lookup is case-insensitive."""

    prefix: str
    suffix: str

    @property
    def handle(self) -> str:
        return f"{self.prefix}/{self.suffix}"

    @property
    def key(self) -> str:
        return self.handle.lower()

    @property
    def prefix_key(self) -> str:
        return self.prefix.lower()

    @property
    def is_prefix_handle(self) -> bool:
        """A naming authority handle such as `0.NA/88.118.8`."""
        return self.prefix_key == NA_PREFIX

    @property
    def owner_prefix(self) -> str:
        """The prefix whose owner owns this handle (`88.118.8` for `0.NA/88.118.8` too)."""
        return self.suffix.lower() if self.is_prefix_handle else self.prefix_key

    @property
    def prefix_handle_key(self) -> str:
        return f"{NA_PREFIX}/{self.owner_prefix}"


def parse_prefix(text: str) -> str:
    if not PREFIX_RE.match(text):
        raise InvalidHandle(f"invalid prefix '{text[:100]}': expected dotted segments such as 88.118.8")
    return text


def parse_handle(text: str, *, allow_empty_suffix: bool = False) -> HandleName:
    """Split and check `prefix/suffix`; raise InvalidHandle (102) saying what is wrong."""
    prefix, slash, suffix = text.partition("/")
    if not slash:
        raise InvalidHandle(f"invalid handle '{text[:100]}': expected prefix/suffix")
    parse_prefix(prefix)
    if not suffix and not allow_empty_suffix:
        raise InvalidHandle(f"invalid handle '{text[:100]}': the suffix is empty")
    if CONTROL_RE.search(suffix):
        raise InvalidHandle("invalid handle: the suffix contains control characters")
    name = HandleName(prefix, suffix)
    if len(name.key) > MAX_KEY_LENGTH:
        raise InvalidHandle(f"invalid handle: longer than {MAX_KEY_LENGTH} characters")
    return name


@dataclass(frozen=True, slots=True)
class ValueReference:
    """`index:handle`, e.g. the identity `300:0.NA/88.118.8`."""

    index: int
    name: HandleName

    def __str__(self) -> str:
        return f"{self.index}:{self.name.handle}"


def parse_value_reference(text: str) -> ValueReference:
    index_text, colon, handle = text.partition(":")
    if not colon or not index_text.isdigit() or not 0 <= int(index_text) <= MAX_INDEX:
        raise InvalidHandle(f"invalid identity '{text[:100]}': expected index:prefix/suffix, e.g. 300:0.NA/88.118.8")
    return ValueReference(int(index_text), parse_handle(handle))


# --- permissions


class AdminPermission(enum.IntFlag):
    """HS_ADMIN permission bits, RFC 3651 section 2.2.2.3."""

    ADD_HANDLE = 1 << 0
    DELETE_HANDLE = 1 << 1
    ADD_NA = 1 << 2
    DELETE_NA = 1 << 3
    MODIFY_VALUE = 1 << 4
    REMOVE_VALUE = 1 << 5
    ADD_VALUE = 1 << 6
    READ_VALUE = 1 << 7
    MODIFY_ADMIN = 1 << 8
    REMOVE_ADMIN = 1 << 9
    ADD_ADMIN = 1 << 10
    LIST_HANDLES = 1 << 11


NO_PERMISSIONS = AdminPermission(0)
ALL_PERMISSIONS = AdminPermission(0xFFF)
PERMISSION_BITS = 12


def parse_admin_permissions(text: str) -> AdminPermission:
    if len(text) != PERMISSION_BITS or set(text) - {"0", "1"}:
        raise InvalidValue(f"invalid HS_ADMIN permissions '{text[:20]}': expected 12 characters of 0 and 1")
    return AdminPermission(int(text, 2))


def format_admin_permissions(permissions: AdminPermission) -> str:
    return format(int(permissions), f"0{PERMISSION_BITS}b")


@dataclass(frozen=True, slots=True)
class ValuePermissions:
    admin_read: bool = True
    admin_write: bool = True
    public_read: bool = True
    public_write: bool = False

    @classmethod
    def parse(cls, text: str) -> ValuePermissions:
        return cls(*(c == "1" for c in text))

    def __str__(self) -> str:
        return "".join(
            "1" if bit else "0" for bit in (self.admin_read, self.admin_write, self.public_read, self.public_write)
        )


# --- values


class AdminData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    handle: str = Field(max_length=MAX_KEY_LENGTH)
    index: int = Field(ge=0, le=MAX_INDEX)
    permissions: str


class ReferenceData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    handle: str = Field(max_length=MAX_KEY_LENGTH)
    index: int = Field(ge=0, le=MAX_INDEX)


class SiteAttribute(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=255)
    value: str = Field(max_length=2000)


class SiteKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["base64"] = "base64"
    value: str = Field(max_length=2000)


class SiteInterface(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: bool = True
    admin: bool = False
    protocol: Literal["HTTP", "HTTPS", "TCP", "UDP"]
    port: int = Field(ge=1, le=65535)


class SiteServer(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    server_id: int = Field(default=1, ge=0, alias="serverId")
    address: str = Field(min_length=1, max_length=255)
    public_key: SiteKey | None = Field(default=None, alias="publicKey")
    interfaces: list[SiteInterface] = Field(min_length=1, max_length=16)


class SiteData(BaseModel):
    """An HS_SITE value as HANDLE.NET's site info JSON has it (`siteinfo.json`)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    version: int = 1
    protocol_version: str = Field(default="2.10", alias="protocolVersion", max_length=20)
    serial_number: int = Field(default=1, ge=0, alias="serialNumber")
    primary_site: bool = Field(default=True, alias="primarySite")
    multi_primary: bool = Field(default=False, alias="multiPrimary")
    attributes: list[SiteAttribute] = Field(default_factory=list, max_length=64)
    servers: list[SiteServer] = Field(min_length=1, max_length=64)

    def attribute(self, name: str) -> str | None:
        return next((a.value for a in self.attributes if a.name == name), None)


class HandleData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["string", "base64", "hex", "admin", "vlist", "site"]
    value: Any


class HandleValue(BaseModel):
    """One value of a handle record, as stored and as sent (timestamps are set by the server)."""

    model_config = ConfigDict(extra="ignore")

    index: int = Field(ge=1, le=MAX_INDEX)
    type: str = Field(min_length=1, max_length=255)
    data: HandleData
    ttl: int = Field(default=DEFAULT_TTL, ge=0, le=MAX_INDEX)
    timestamp: str | None = None
    permissions: str = Field(default=DEFAULT_VALUE_PERMISSIONS, pattern=r"^[01]{4}$")

    @property
    def value_permissions(self) -> ValuePermissions:
        return ValuePermissions.parse(self.permissions)

    def admin(self) -> AdminData:
        return AdminData.model_validate(self.data.value)

    def to_wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {"index": self.index, "type": self.type, "data": self.data.model_dump()}
        if self.permissions != DEFAULT_VALUE_PERMISSIONS:
            body["permissions"] = self.permissions
        body["ttl"] = self.ttl
        if self.timestamp is not None:
            body["timestamp"] = self.timestamp
        return body

    def same_content(self, other: HandleValue) -> bool:
        return (self.type, self.data, self.ttl, self.permissions) == (
            other.type,
            other.data,
            other.ttl,
            other.permissions,
        )


def _byte_size(fmt: str, raw: Any) -> int:
    """Size of a string, base64 or hex value in bytes; refuses the wrong type or encoding."""
    if not isinstance(raw, str):
        raise InvalidValue(f"a '{fmt}' value must be a string")
    try:
        if fmt == "base64":
            return len(base64.b64decode(raw, validate=True))
        if fmt == "hex":
            return len(bytes.fromhex(raw))
    except (binascii.Error, ValueError):
        raise InvalidValue(f"a '{fmt}' value is not valid {fmt}") from None
    return len(raw.encode())


def _admin_data(raw: Any) -> dict[str, Any]:
    try:
        admin = AdminData.model_validate(raw)
    except ValidationError as err:
        raise InvalidValue(f"an 'admin' value needs handle, index and permissions: {_first_error(err)}") from None
    parse_handle(admin.handle)
    parse_admin_permissions(admin.permissions)
    return admin.model_dump()


def _vlist_data(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or len(raw) > MAX_VALUES:
        raise InvalidValue(f"a 'vlist' value must be a list of at most {MAX_VALUES} {{handle, index}} references")
    try:
        refs = [ReferenceData.model_validate(item) for item in raw]
    except ValidationError as err:
        raise InvalidValue(f"a 'vlist' entry needs handle and index: {_first_error(err)}") from None
    for ref in refs:
        parse_handle(ref.handle)
    return [ref.model_dump() for ref in refs]


def _site_data(raw: Any) -> dict[str, Any]:
    try:
        site = SiteData.model_validate(raw)
    except ValidationError as err:
        raise InvalidValue(f"invalid 'site' value: {_first_error(err)}") from None
    return site.model_dump(by_alias=True, exclude_none=True)


def _check_data(value_type: str, data: HandleData) -> HandleData:
    """Normalise and check a value's data for its format."""
    fmt, raw = data.format, data.value
    size = 0
    if fmt == "admin":
        if value_type != HS_ADMIN:
            raise InvalidValue("the 'admin' format is only for HS_ADMIN values")
        raw = _admin_data(raw)
    elif fmt == "vlist":
        raw = _vlist_data(raw)
    elif fmt == "site":
        if not value_type.upper().startswith(HS_SITE):
            raise InvalidValue("the 'site' format is only for HS_SITE values")
        raw = _site_data(raw)
    else:
        size = _byte_size(fmt, raw)
    encoded = json.dumps(raw, ensure_ascii=False)
    if "\\u0000" in encoded or CONTROL_RE.search(value_type):
        raise InvalidValue("values and types must not contain NUL or control characters")
    if max(size, len(encoded.encode())) > MAX_VALUE_BYTES:
        raise InvalidValue(f"a value is larger than {MAX_VALUE_BYTES // 1024} KiB")
    return HandleData(format=fmt, value=raw)


def _first_error(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "value"
    return f"{where}: {first.get('msg', 'invalid')}"


def parse_value(raw: Any) -> HandleValue:
    """One value as a client sends it; `data` may be a bare string (format string), as pyhandle sends."""
    if not isinstance(raw, dict):
        raise InvalidValue("each handle value must be a JSON object with index, type and data")
    body = dict(raw)
    data = body.get("data")
    if isinstance(data, str):
        body["data"] = {"format": "string", "value": data}
    elif isinstance(data, dict) and "format" not in data and "value" in data:
        body["data"] = {"format": "string", **data}
    if body.get("type") == HS_SECKEY and "permissions" not in body:
        body["permissions"] = HIDDEN_VALUE_PERMISSIONS
    try:
        value = HandleValue.model_validate(body)
    except ValidationError as err:
        raise InvalidValue(f"invalid handle value: {_first_error(err)}") from None
    value.data = _check_data(value.type, value.data)
    value.timestamp = None
    return value


def parse_values(raw: Any) -> list[HandleValue]:
    """The request entity: an array of values, an object with `values`, or a single value."""
    if isinstance(raw, dict) and "values" in raw:
        raw = raw["values"]
    items = raw if isinstance(raw, list) else [raw]
    if len(items) > MAX_VALUES:
        raise InvalidValue(f"at most {MAX_VALUES} values per handle")
    values = [parse_value(item) for item in items]
    seen: set[int] = set()
    for value in values:
        if value.index in seen:
            raise InvalidValue(f"duplicate index {value.index}")
        seen.add(value.index)
    return values


def load_values(stored: Iterable[dict[str, Any]]) -> list[HandleValue]:
    """Values as kept on the row (already checked when written)."""
    return [HandleValue.model_validate(item) for item in stored]


def dump_values(values: Iterable[HandleValue]) -> list[dict[str, Any]]:
    return [v.model_dump() for v in sorted(values, key=lambda v: v.index)]


def type_matches(value_type: str, wanted: str) -> bool:
    """`type=URL` matches URL; `type=10320.` matches every `10320.*` subtype. Case-insensitive."""
    value_type, wanted = value_type.lower(), wanted.lower()
    if wanted.endswith("."):
        return value_type == wanted[:-1] or value_type.startswith(wanted)
    return value_type == wanted


def select_values(values: Sequence[HandleValue], types: Sequence[str], indexes: Sequence[int]) -> list[HandleValue]:
    """Values matching any given index or type; all of them when neither is given."""
    if not types and not indexes:
        return list(values)
    return [v for v in values if v.index in indexes or any(type_matches(v.type, t) for t in types)]


def timestamp(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def string_value(
    index: int, value_type: str, text: str, *, permissions: str = DEFAULT_VALUE_PERMISSIONS
) -> HandleValue:
    return HandleValue(
        index=index,
        type=value_type,
        data=HandleData(format="string", value=text),
        permissions=permissions,
    )


def admin_value(index: int, admin: ValueReference, permissions: AdminPermission) -> HandleValue:
    data = {"handle": admin.name.handle, "index": admin.index, "permissions": format_admin_permissions(permissions)}
    return HandleValue(index=index, type=HS_ADMIN, data=HandleData(format="admin", value=data))


def vlist_value(index: int, members: Sequence[ValueReference]) -> HandleValue:
    refs = [{"handle": m.name.handle, "index": m.index} for m in members]
    return HandleValue(index=index, type=HS_VLIST, data=HandleData(format="vlist", value=refs))
