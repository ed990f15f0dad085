"""MQTT JSON telemetry: IIP's topic and ThingsBoard's payload shapes, decoded into an `IngestOutcome`.

Topic: `iip/{tenant}/{device}/telemetry` (tenant by name or id). Payload, one of:

* `{"ts": <ms or ISO 8601>, "values": {"key": value, ...}}` (`ts` optional: receive time),
* `{"key": value, ...}` (ThingsBoard's shape without a timestamp: receive time),
* a list of either.

Values: numbers and booleans (1.0 / 0.0) become points of the metric the key maps to
(`KnownDevice.mqtt_keys`); strings become attributes for the twin, named by the metric the key maps
to, or by the key itself. A device without a profile takes keys as metric names.

What is rejected, and how much of the message is then applied:

* the whole message, when it cannot be read as a whole: bad JSON, a shape other than the above,
  a timestamp that is unreadable, without a time zone, before 2000 (seconds sent as milliseconds)
  or further in the future than allowed, an unknown device;
* only the offending values, when the message is sound but some values are not: an unknown
  metric, a value of the wrong type (null, object, list, text for a numeric metric, a number for a
  text metric). The other values are applied, and the message is filed once with every rejected
  key in the reason, which starts with `PARTIAL`, so a half-applied message is never silent. A
  device that gains a metric before its profile does keeps its known metrics flowing.

Pure: no I/O, no clock (the caller passes `now_ms`); this runs for every message.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson

from iip.devices.directory import DeviceDirectory, IngestOutcome, KnownDevice
from iip.devices.profiles import NAME, DataType, DeviceProfile
from iip.telemetry.public import Quality

TOPIC_PREFIX = "iip/"
TOPIC_SUFFIX = "/telemetry"
TOPIC_FILTER = "iip/+/+/telemetry"
THINGSBOARD_TOPIC = "v1/devices/me/telemetry"

MIN_TS_MS = 946_684_800_000  # 2000-01-01T00:00:00Z; anything earlier is almost surely seconds
MAX_ATTRIBUTE_CHARS = 4096
PARTIAL = "some values rejected, the rest applied: "
NO_DEVICE_ON_THINGSBOARD_TOPIC = (
    f"{THINGSBOARD_TOPIC} names no device: publish to iip/{{tenant}}/{{device}}/telemetry, "
    "or connect to the embedded broker with the device's access token as MQTT username"
)

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MS = dt.timedelta(milliseconds=1)
_GOOD = int(Quality.GOOD)


class _Rejected(Exception):
    """The whole message is rejected for this reason."""


def telemetry_topic(tenant: str, device: str) -> str:
    return f"{TOPIC_PREFIX}{tenant}/{device}{TOPIC_SUFFIX}"


def parse_telemetry_topic(topic: str) -> tuple[str, str] | None:
    """`(tenant, device)` of `iip/{tenant}/{device}/telemetry`, None for any other topic."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != "iip" or parts[3] != "telemetry" or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def rejection(reason: str, device: KnownDevice | None = None) -> IngestOutcome:
    return IngestOutcome(rejected=[(reason, device)])


def decode_message(
    topic: str, payload: bytes, directory: DeviceDirectory, *, now_ms: int, max_future_ms: int
) -> IngestOutcome:
    """Find the device the topic names and decode its payload."""
    names = parse_telemetry_topic(topic)
    if names is None:
        if topic == THINGSBOARD_TOPIC:
            return rejection(NO_DEVICE_ON_THINGSBOARD_TOPIC)
        return rejection(f"not a telemetry topic: {topic}")
    device = directory.by_name(names[0], names[1])
    if device is None:
        return rejection(f"unknown device {names[0]}/{names[1]}")
    return decode_telemetry(payload, device, now_ms=now_ms, max_future_ms=max_future_ms)


def decode_telemetry(payload: bytes, device: KnownDevice, *, now_ms: int, max_future_ms: int) -> IngestOutcome:
    """Decode one payload of a known device (see the module docstring for the rules)."""
    try:
        return _decode(payload, device, now_ms, now_ms + max_future_ms)
    except _Rejected as err:
        return rejection(str(err), device)


def _decode(payload: bytes, device: KnownDevice, now_ms: int, latest_ms: int) -> IngestOutcome:
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError as err:
        raise _Rejected(f"bad JSON: {err}") from None
    entries = document if type(document) is list else (document,)
    if not entries:
        raise _Rejected("empty list: no values")
    outcome = IngestOutcome()
    problems: list[str] = []
    for entry in entries:
        values, ts_ms = _entry(entry, now_ms, latest_ms)
        _take(values, ts_ms, device, outcome, problems)
    if problems:
        summary = "; ".join(problems)
        outcome.rejected.append((PARTIAL + summary if outcome.points or outcome.attributes else summary, device))
    return outcome


def _entry(entry: object, now_ms: int, latest_ms: int) -> tuple[dict[str, Any], int]:
    """The values of one entry and their timestamp."""
    if type(entry) is not dict:
        raise _Rejected(f"expected a JSON object or a list of objects, got {_kind(entry)}")
    ts_ms = now_ms
    if "values" in entry or "ts" in entry:
        values = entry.get("values")
        if type(values) is not dict:
            if "values" not in entry:
                raise _Rejected("'ts' needs a 'values' object beside it")
            raise _Rejected(f"'values' must be a JSON object of key: value, got {_kind(values)}")
        if len(entry) > 2 or ("ts" not in entry and len(entry) > 1):
            raise _Rejected("an entry with 'values' holds only 'ts' and 'values'")
        ts = entry.get("ts")
        if ts is not None:
            ts_ms = _timestamp(ts)
            if ts_ms > latest_ms:
                raise _Rejected(f"timestamp {ts!r} is too far in the future ({(ts_ms - now_ms) // 1000} s ahead)")
    else:
        values = entry
    if not values:
        raise _Rejected("an entry has no values")
    return values, ts_ms


def _take(values: dict[str, Any], ts_ms: int, device: KnownDevice, outcome: IngestOutcome, problems: list[str]) -> None:
    """Values become points (numbers, booleans) or attributes (text); the others become problems."""
    keys = device.mqtt_keys
    profile = device.profile
    text_metrics = _text_metrics(profile)
    points = outcome.points
    for key, value in values.items():
        kind = type(value)
        if kind is float or kind is int or kind is bool:
            metric = keys.get(key)
            if metric is None:
                if profile is not None or not NAME.match(key):
                    problems.append(f"unknown metric {key!r}")
                    continue
                metric = key
            elif metric in text_metrics:
                problems.append(f"{key!r}: metric {metric!r} holds text, got a number")
                continue
            points.append((device, metric, ts_ms, float(value), _GOOD))
        elif kind is str:
            problem = _attribute(key, value, keys.get(key), profile is not None, text_metrics, device, outcome)
            if problem:
                problems.append(problem)
        else:
            problems.append(f"{key!r}: expected a number, boolean or text, got {_kind(value)}")


def _attribute(
    key: str,
    value: str,
    metric: str | None,
    profiled: bool,
    text_metrics: frozenset[str],
    device: KnownDevice,
    outcome: IngestOutcome,
) -> str:
    """File a text value as an attribute; the problem with it, or ""."""
    if metric is None:
        if not NAME.match(key):
            return f"{key!r}: not a valid attribute name"
        metric = key
    elif profiled and metric not in text_metrics:
        return f"{key!r}: metric {metric!r} is numeric, got text"
    if len(value) > MAX_ATTRIBUTE_CHARS:
        return f"{key!r}: text longer than {MAX_ATTRIBUTE_CHARS} characters"
    outcome.attributes.append((device, metric, value))
    return ""


def _timestamp(ts: object) -> int:
    if isinstance(ts, (int, float)) and not isinstance(ts, bool):
        ms = int(ts)
    elif isinstance(ts, str):
        try:
            moment = dt.datetime.fromisoformat(ts)
        except ValueError:
            raise _Rejected(f"timestamp {ts!r} is not ISO 8601") from None
        if moment.tzinfo is None:
            raise _Rejected(f"timestamp {ts!r} has no time zone (add Z or an offset such as +08:00)")
        ms = (moment - _EPOCH) // _MS
    else:
        raise _Rejected(f"'ts' must be milliseconds since 1970 or an ISO 8601 time, got {_kind(ts)}")
    if ms < MIN_TS_MS:
        raise _Rejected(f"timestamp {ts!r} is before 2000: 'ts' is in milliseconds, not seconds")
    return ms


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    return "an object"


# Names of a profile's text metrics, by profile identity: profiles are shared by many devices and
# replaced, not changed, when the registry changes. The profile is kept with its entry, so an id is
# never reused while cached.
_TEXT_METRICS: dict[int, tuple[DeviceProfile, frozenset[str]]] = {}
_TEXT_METRICS_MAX = 4096
_NO_NAMES: frozenset[str] = frozenset()


def _text_metrics(profile: DeviceProfile | None) -> frozenset[str]:
    if profile is None:
        return _NO_NAMES
    cached = _TEXT_METRICS.get(id(profile))
    if cached is not None and cached[0] is profile:
        return cached[1]
    names = frozenset(m.name for m in profile.metrics if m.data_type is DataType.STRING)
    if len(_TEXT_METRICS) >= _TEXT_METRICS_MAX:
        _TEXT_METRICS.clear()
    _TEXT_METRICS[id(profile)] = (profile, names)
    return names
