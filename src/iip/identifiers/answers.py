"""The public answer to a resolution, rendered from a handle's stored values.

Shared by the resolution hot path (`fast_resolve`), which renders answers for filtered requests,
and by every write, which stores the unfiltered answer on the row (`Handle.answer`) so the common
resolution reads ready bytes. Only the shape every write stores is rendered here; anything else
(`Fallthrough`) is left to the full application, which validates it with the models.
"""

from __future__ import annotations

from typing import Any

import orjson

from iip.identifiers.codec import DEFAULT_TTL, DEFAULT_VALUE_PERMISSIONS, MAX_INDEX, type_matches

FORMATS = frozenset({"string", "base64", "hex", "admin", "vlist"})
STRUCTURED = frozenset({"admin", "vlist"})
PERMISSION_STRINGS = frozenset(format(bits, "04b") for bits in range(16))
VALUE_KEYS = frozenset({"index", "type", "data", "ttl", "timestamp", "permissions"})


class Fallthrough(Exception):
    """The request or the stored record is not the common case: the full application answers it."""


def public_values(stored: Any, types: list[str], indexes: list[int]) -> list[dict[str, Any]]:
    """The public values as the router shows them (`HandleValue.to_wire`), filtered as `select_values`.

    Only the shape every write stores is accepted; anything else goes to the full path, which
    validates it with the models.
    """
    if type(stored) is not list:
        raise Fallthrough
    out: list[dict[str, Any]] = []
    for item in stored:
        if type(item) is not dict or not item.keys() <= VALUE_KEYS:
            raise Fallthrough
        get = item.get
        index, value_type, data = get("index"), get("type"), get("data")
        ttl, stamp, permissions = (
            get("ttl", DEFAULT_TTL),
            get("timestamp"),
            get("permissions", DEFAULT_VALUE_PERMISSIONS),
        )
        if (
            type(index) is not int
            or not 0 < index <= MAX_INDEX
            or type(value_type) is not str
            or not 0 < len(value_type) <= 255
            or type(ttl) is not int
            or not 0 <= ttl <= MAX_INDEX
            or not (stamp is None or type(stamp) is str)
            or permissions not in PERMISSION_STRINGS
            or type(data) is not dict
            or len(data) != 2
        ):
            raise Fallthrough
        fmt, raw = data.get("format"), data.get("value")
        if fmt not in FORMATS or not (type(raw) is str or (fmt in STRUCTURED and _plain(raw))):
            raise Fallthrough
        if permissions[2] != "1":
            continue
        if (types or indexes) and index not in indexes and not any(type_matches(value_type, t) for t in types):
            continue
        wire: dict[str, Any] = {"index": index, "type": value_type, "data": {"format": fmt, "value": raw}}
        if permissions != DEFAULT_VALUE_PERMISSIONS:
            wire["permissions"] = permissions
        wire["ttl"] = ttl
        if stamp is not None:
            wire["timestamp"] = stamp
        out.append(wire)
    return out


def _plain(data: Any, depth: int = 0) -> bool:
    """JSON that orjson writes exactly as the stdlib encoder: strings, 64-bit integers, booleans, null."""
    kind = type(data)
    if kind is str or kind is bool or data is None:
        return True
    if kind is int:
        return bool(-(2**63) <= data < 2**63)
    if depth > 3:
        return False
    if kind is list:
        return all(_plain(item, depth + 1) for item in data)
    if kind is dict:
        # Strings first, without a call: an HS_ADMIN or HS_VLIST entry holds little else.
        return all(type(k) is str and (type(v) is str or _plain(v, depth + 1)) for k, v in data.items())
    return False  # floats are written differently (1e16 vs 1e+16); none is stored by a write


def render(body: dict[str, Any]) -> bytes:
    # Byte for byte what Starlette's JSONResponse writes (compact, UTF-8, no NaN) for the plain data
    # `_public_values` lets through, at a fraction of the cost; a value it cannot write goes the full path.
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError:
        raise Fallthrough from None


def answer_body(handle: str, values: list[dict[str, Any]]) -> bytes:
    """The body of `GET /api/handles/{handle}` for the given public values, as the router writes it."""
    # As the router: 200 with responseCode 200 (values not found) when the filters leave nothing.
    return render({"responseCode": 1 if values else 200, "handle": handle, "values": values})


def stored_answer(handle: str, stored: Any) -> bytes | None:
    """The unfiltered anonymous answer for a row being written, or None when only the full path may answer."""
    try:
        return answer_body(handle, public_values(stored, [], []))
    except Fallthrough:
        return None
