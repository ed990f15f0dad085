"""The MQTT JSON codec: IIP's and ThingsBoard's payload shapes, and every way a payload can be bad."""

from __future__ import annotations

import datetime as dt
import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iip.devices.codecs.mqtt_json import (
    NO_DEVICE_ON_THINGSBOARD_TOPIC,
    PARTIAL,
    THINGSBOARD_TOPIC,
    decode_message,
    decode_telemetry,
    parse_telemetry_topic,
    telemetry_topic,
)
from iip.devices.directory import IngestOutcome, KnownDevice
from iip.devices.profiles import DeviceProfile
from iip.telemetry.public import Quality

NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SKEW = 300_000
PROFILE = DeviceProfile.model_validate(
    {
        "name": "pump",
        "protocol": "mqtt",
        "metrics": [
            {"name": "temperature", "mqtt": {"key": "temp"}},
            {"name": "pressure"},
            {"name": "running", "data_type": "bool"},
            {"name": "firmware", "data_type": "string"},
        ],
    }
)
PUMP = KnownDevice.of("tenant-1", "pump-1", PROFILE)
BARE = KnownDevice.of("tenant-1", "bare-1", None)


class Directory:
    """The lookups ingest needs, over a dict."""

    def __init__(self, *devices: KnownDevice, tenant_names: dict[str, str] | None = None) -> None:
        self.devices = {(d.tenant_id, d.key): d for d in devices}
        self.names = tenant_names or {}

    def by_name(self, tenant: str, device: str) -> KnownDevice | None:
        return self.devices.get((self.names.get(tenant, tenant), device))

    def by_token(self, token: str) -> KnownDevice | None:
        return None

    def by_sparkplug(self, group_id: str, edge_node_id: str, device_id: str | None) -> KnownDevice | None:
        return None


def decode(payload: object, device: KnownDevice = PUMP) -> IngestOutcome:
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return decode_telemetry(raw, device, now_ms=NOW, max_future_ms=SKEW)


def points(outcome: IngestOutcome) -> list[tuple[str, str, int, float, int]]:
    return [(d.key, metric, ts, value, quality) for d, metric, ts, value, quality in outcome.points]


def attributes(outcome: IngestOutcome) -> list[tuple[str, str, object]]:
    return [(d.key, name, value) for d, name, value in outcome.attributes]


def reasons(outcome: IngestOutcome) -> list[str]:
    return [reason for reason, _ in outcome.rejected]


# --- the shapes ---------------------------------------------------------------------------------


def test_timestamped_values_become_points_named_through_the_profile() -> None:
    outcome = decode({"ts": NOW - 1000, "values": {"temp": 21.5, "pressure": 3, "running": True}})
    assert points(outcome) == [
        ("pump-1", "temperature", NOW - 1000, 21.5, Quality.GOOD),
        ("pump-1", "pressure", NOW - 1000, 3.0, Quality.GOOD),
        ("pump-1", "running", NOW - 1000, 1.0, Quality.GOOD),
    ]
    assert outcome.rejected == []
    assert all(isinstance(p[3], float) for p in outcome.points)


def test_values_without_ts_take_the_receive_time() -> None:
    outcome = decode({"values": {"temp": 20, "running": False}})
    assert points(outcome) == [
        ("pump-1", "temperature", NOW, 20.0, Quality.GOOD),
        ("pump-1", "running", NOW, 0.0, Quality.GOOD),
    ]


def test_thingsboard_flat_object_takes_the_receive_time() -> None:
    outcome = decode({"temp": 19.0, "pressure": 1.5})
    assert points(outcome) == [
        ("pump-1", "temperature", NOW, 19.0, Quality.GOOD),
        ("pump-1", "pressure", NOW, 1.5, Quality.GOOD),
    ]


def test_a_list_mixes_both_shapes_in_order() -> None:
    outcome = decode(
        [
            {"ts": NOW - 2000, "values": {"temp": 1}},
            {"temp": 2},
            {"ts": "2025-12-31T23:59:59Z", "values": {"temp": 3}},
        ]
    )
    assert points(outcome) == [
        ("pump-1", "temperature", NOW - 2000, 1.0, Quality.GOOD),
        ("pump-1", "temperature", NOW, 2.0, Quality.GOOD),
        ("pump-1", "temperature", NOW - 1000, 3.0, Quality.GOOD),
    ]


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("2025-12-31T23:00:00Z", NOW - 3_600_000),
        ("2026-01-01T08:00:00+08:00", NOW),
        ("2025-12-31T23:59:59.123+00:00", NOW - 877),
        ("2025-12-31 23:59:59.5Z", NOW - 500),
        (NOW - 5, NOW - 5),
        (float(NOW - 5) + 0.7, NOW - 5),
    ],
)
def test_timestamps_in_milliseconds_or_iso_8601(ts: object, expected: int) -> None:
    assert points(decode({"ts": ts, "values": {"pressure": 1}}))[0][2] == expected


def test_text_becomes_an_attribute() -> None:
    outcome = decode({"firmware": "2.4.1", "location": "hall 3", "temp": 20})
    assert attributes(outcome) == [("pump-1", "firmware", "2.4.1"), ("pump-1", "location", "hall 3")]
    assert points(outcome) == [("pump-1", "temperature", NOW, 20.0, Quality.GOOD)]
    assert outcome.rejected == []


def test_a_device_without_profile_takes_keys_as_metric_names() -> None:
    outcome = decode({"speed": 1200, "mode": "auto"}, BARE)
    assert points(outcome) == [("bare-1", "speed", NOW, 1200.0, Quality.GOOD)]
    assert attributes(outcome) == [("bare-1", "mode", "auto")]


def test_a_device_without_profile_still_rejects_keys_that_are_not_names() -> None:
    outcome = decode({"speed": 1, "bad key!": 2}, BARE)
    assert points(outcome) == [("bare-1", "speed", NOW, 1.0, Quality.GOOD)]
    assert reasons(outcome) == [PARTIAL + "unknown metric 'bad key!'"]


# --- values rejected, the rest applied ------------------------------------------------------------


def test_an_unknown_metric_rejects_only_that_value_and_says_so() -> None:
    outcome = decode({"ts": NOW, "values": {"temp": 20, "humidity": 40, "pressure": 2}})
    assert points(outcome) == [
        ("pump-1", "temperature", NOW, 20.0, Quality.GOOD),
        ("pump-1", "pressure", NOW, 2.0, Quality.GOOD),
    ]
    assert reasons(outcome) == [PARTIAL + "unknown metric 'humidity'"]
    assert outcome.rejected[0][1] is PUMP


def test_a_metric_is_known_by_its_mqtt_key_not_its_name() -> None:
    outcome = decode({"temperature": 20})
    assert outcome.points == []
    assert reasons(outcome) == ["unknown metric 'temperature'"]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (None, "'pressure': expected a number, boolean or text, got null"),
        ({"v": 1}, "'pressure': expected a number, boolean or text, got an object"),
        ([1, 2], "'pressure': expected a number, boolean or text, got a list"),
        ("3.5", "'pressure': metric 'pressure' is numeric, got text"),
    ],
)
def test_a_value_of_the_wrong_type_is_rejected_with_the_others_applied(value: object, problem: str) -> None:
    outcome = decode({"temp": 20, "pressure": value})
    assert points(outcome) == [("pump-1", "temperature", NOW, 20.0, Quality.GOOD)]
    assert reasons(outcome) == [PARTIAL + problem]


def test_a_number_for_a_text_metric_is_rejected() -> None:
    outcome = decode({"firmware": 2})
    assert reasons(outcome) == ["'firmware': metric 'firmware' holds text, got a number"]


def test_every_bad_value_of_a_message_is_listed_in_one_rejection() -> None:
    outcome = decode([{"temp": 1, "x": 2}, {"pressure": None}])
    assert len(outcome.points) == 1
    assert reasons(outcome) == [
        PARTIAL + "unknown metric 'x'; 'pressure': expected a number, boolean or text, got null"
    ]


def test_a_message_with_only_bad_values_applies_nothing() -> None:
    outcome = decode({"humidity": 1, "pressure": None})
    assert outcome.points == []
    assert outcome.attributes == []
    assert reasons(outcome) == ["unknown metric 'humidity'; 'pressure': expected a number, boolean or text, got null"]


def test_overlong_text_is_rejected() -> None:
    outcome = decode({"firmware": "x" * 5000, "temp": 1})
    assert outcome.attributes == []
    assert reasons(outcome) == [PARTIAL + "'firmware': text longer than 4096 characters"]


# --- the whole message rejected -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "bad JSON: "),
        (b"", "bad JSON: "),
        (b"\xff\xfe", "bad JSON: "),
        (b"42", "expected a JSON object or a list of objects, got number"),
        (b'"temp"', "expected a JSON object or a list of objects, got text"),
        (b"null", "expected a JSON object or a list of objects, got null"),
        (b"[]", "empty list: no values"),
        (b"{}", "an entry has no values"),
        (b'[{"temp": 1}, 5]', "expected a JSON object or a list of objects, got number"),
        (b'{"ts": 1767225600000}', "'ts' needs a 'values' object beside it"),
        (b'{"ts": 1767225600000, "values": 5}', "'values' must be a JSON object of key: value, got number"),
        (b'{"values": {}}', "an entry has no values"),
        (b'{"ts": 1767225600000, "values": {"temp": 1}, "temp": 2}', "an entry with 'values' holds only"),
        (b'{"values": {"temp": 1}, "device": "x"}', "an entry with 'values' holds only"),
        (
            b'{"ts": true, "values": {"temp": 1}}',
            "'ts' must be milliseconds since 1970 or an ISO 8601 time, got boolean",
        ),
        (b'{"ts": [1], "values": {"temp": 1}}', "'ts' must be milliseconds since 1970 or an ISO 8601 time, got a list"),
        (b'{"ts": "yesterday", "values": {"temp": 1}}', "timestamp 'yesterday' is not ISO 8601"),
        (b'{"ts": "2025-12-31T23:00:00", "values": {"temp": 1}}', "has no time zone"),
        (b'{"ts": "2025-12-31", "values": {"temp": 1}}', "has no time zone"),
        (b'{"ts": 1767225600, "values": {"temp": 1}}', "is before 2000: 'ts' is in milliseconds, not seconds"),
        (b'{"ts": -5, "values": {"temp": 1}}', "is before 2000"),
    ],
)
def test_malformed_messages_are_rejected_whole(payload: bytes, reason: str) -> None:
    outcome = decode(payload)
    assert outcome.points == []
    assert outcome.attributes == []
    assert len(outcome.rejected) == 1
    assert outcome.rejected[0][0].startswith(reason) or reason in outcome.rejected[0][0]
    assert outcome.rejected[0][1] is PUMP


def test_a_timestamp_beyond_the_allowed_skew_rejects_the_message() -> None:
    just_inside = decode({"ts": NOW + SKEW, "values": {"temp": 1}})
    assert len(just_inside.points) == 1
    outcome = decode([{"ts": NOW, "values": {"temp": 1}}, {"ts": NOW + SKEW + 1, "values": {"temp": 2}}])
    assert outcome.points == []
    assert reasons(outcome) == [f"timestamp {NOW + SKEW + 1} is too far in the future (300 s ahead)"]


def test_a_future_iso_timestamp_is_rejected_too() -> None:
    future = (dt.datetime.fromtimestamp(NOW / 1000, dt.UTC) + dt.timedelta(days=1)).isoformat()
    assert reasons(decode({"ts": future, "values": {"temp": 1}})) == [
        f"timestamp {future!r} is too far in the future (86400 s ahead)"
    ]


def test_old_timestamps_are_accepted_for_backfill() -> None:
    assert points(decode({"ts": "2001-01-01T00:00:00Z", "values": {"temp": 1}}))[0][2] == 978_307_200_000


# --- topics and devices ---------------------------------------------------------------------------


def test_topics_round_trip() -> None:
    assert telemetry_topic("acme", "pump-1") == "iip/acme/pump-1/telemetry"
    assert parse_telemetry_topic("iip/acme/pump-1/telemetry") == ("acme", "pump-1")
    for topic in ("iip/acme/telemetry", "iip//pump-1/telemetry", "iip/acme/pump-1/status", "x/acme/pump-1/telemetry"):
        assert parse_telemetry_topic(topic) is None


def test_decode_message_finds_the_device_by_tenant_name_or_id() -> None:
    directory = Directory(PUMP, tenant_names={"acme": "tenant-1"})
    for tenant in ("acme", "tenant-1"):
        outcome = decode_message(
            f"iip/{tenant}/pump-1/telemetry", b'{"temp": 1}', directory, now_ms=NOW, max_future_ms=SKEW
        )
        assert points(outcome) == [("pump-1", "temperature", NOW, 1.0, Quality.GOOD)]


def test_an_unknown_device_rejects_the_message_without_a_device() -> None:
    outcome = decode_message(
        "iip/acme/pump-9/telemetry", b'{"temp": 1}', Directory(PUMP), now_ms=NOW, max_future_ms=SKEW
    )
    assert outcome.points == []
    assert outcome.rejected == [("unknown device acme/pump-9", None)]


def test_thingsboard_topic_without_a_broker_that_names_the_device_is_rejected() -> None:
    outcome = decode_message(THINGSBOARD_TOPIC, b'{"temp": 1}', Directory(PUMP), now_ms=NOW, max_future_ms=SKEW)
    assert outcome.rejected == [(NO_DEVICE_ON_THINGSBOARD_TOPIC, None)]


def test_another_topic_is_rejected() -> None:
    outcome = decode_message("iip/acme/pump-1/x", b"{}", Directory(PUMP), now_ms=NOW, max_future_ms=SKEW)
    assert outcome.rejected == [("not a telemetry topic: iip/acme/pump-1/x", None)]


# --- anything at all ------------------------------------------------------------------------------

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
keys = st.sampled_from(["ts", "values", "temp", "pressure", "running", "firmware", "x", "bad key"]) | st.text(
    max_size=8
)
json_values = st.recursive(
    scalars | st.integers(min_value=NOW - 10**12, max_value=NOW + 10**9),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=64), json_values.map(lambda v: json.dumps(v).encode())))
def test_any_payload_yields_points_or_a_reason_and_never_raises(payload: bytes) -> None:
    for device in (PUMP, BARE):
        outcome = decode(payload, device)
        assert outcome.points or outcome.attributes or outcome.rejected
        assert len(outcome.rejected) <= 1
        if outcome.rejected and (outcome.points or outcome.attributes):
            assert outcome.rejected[0][0].startswith(PARTIAL)
        assert all(d is device and 946_684_800_000 <= ts <= NOW + SKEW for d, _, ts, _, _ in outcome.points)
