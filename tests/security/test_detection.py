"""Each alert kind against a baseline learned from built normal traffic: raised when it should be,
silent when the traffic is what training saw."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iip.alarms.public import AlarmEvent
from iip.security.baseline import Baseline, learn_baseline
from iip.security.detection import (
    KINDS,
    TECHNIQUES,
    Alert,
    AlertKind,
    DetectionSettings,
    Detector,
    detect,
    score_alerts,
    to_alarm_event,
)
from iip.security.protocols.base import Direction, Endpoint, IcsMessage, IcsProtocol, Transport
from iip.security.records import Severity
from tests.security.streams import ACK, HMI, PLC, PLC2, ROGUE, RST, SYN, Stream, plant

TRAIN_S = 120


@pytest.fixture(scope="module")
def baseline() -> Baseline:
    return learn_baseline(plant(TRAIN_S).items)


def later(seconds: int = 30) -> Stream:
    """Normal traffic starting after training, to which a test adds its own."""
    return plant(seconds, start=TRAIN_S + 10)


def kinds(alerts: list[Alert]) -> set[AlertKind]:
    return {alert.kind for alert in alerts}


def run(baseline: Baseline, stream: Stream, **overrides: object) -> list[Alert]:
    return detect(baseline, stream.items, DetectionSettings(**overrides))  # type: ignore[arg-type]


def test_normal_traffic_raises_nothing(baseline: Baseline) -> None:
    assert run(baseline, later(60)) == []


def test_every_kind_has_severity_and_known_techniques() -> None:
    assert set(KINDS) == set(AlertKind)
    for spec in KINDS.values():
        assert spec.techniques
        assert set(spec.techniques) <= set(TECHNIQUES)


def test_new_service_and_new_talker(baseline: Baseline) -> None:
    stream = later()
    before = stream.frame
    stream.handshake(TRAIN_S + 15, ROGUE, (PLC[0], 445))  # a service nobody used
    stream.handshake(TRAIN_S + 16, ROGUE, PLC)  # a known service, a new client
    alerts = run(baseline, stream)
    by_kind = {a.kind: a for a in alerts}
    assert set(by_kind) == {AlertKind.NEW_SERVICE, AlertKind.NEW_TALKER}
    smb = by_kind[AlertKind.NEW_SERVICE]
    assert (smb.source, smb.destination, smb.count) == (ROGUE[0], PLC[0], 3)
    assert {"T0886", "T0867"} <= set(smb.techniques)
    assert smb.frames == [before + 1, before + 2, before + 3]  # the handshake's three packets
    assert by_kind[AlertKind.NEW_TALKER].severity is Severity.HIGH


def test_broadcast_by_a_known_announcer_on_another_port(baseline: Baseline) -> None:
    train = plant(20)
    train.packet(5, ("10.0.0.5", 137), ("10.0.0.255", 137), transport=Transport.UDP)
    learned = learn_baseline(train.items)
    stream = plant(10, start=30)
    stream.packet(32, ("10.0.0.5", 138), ("10.0.0.255", 138), transport=Transport.UDP)
    assert run(learned, stream) == []
    strict = run(learned, stream, announcements_any_port=False)
    assert kinds(strict) == {AlertKind.NEW_SERVICE}
    stream.packet(33, ("10.0.0.6", 138), ("10.0.0.255", 138), transport=Transport.UDP)  # a new announcer
    assert kinds(run(learned, stream)) == {AlertKind.NEW_SERVICE}


def test_new_function(baseline: Baseline) -> None:
    stream = later()
    stream.modbus(TRAIN_S + 15, HMI, PLC, 4, address=0, quantity=2, name="READ_INPUT_REGISTERS")
    alerts = run(baseline, stream)
    assert kinds(alerts) == {AlertKind.NEW_FUNCTION}
    assert alerts[0].details["function"] == {"4 READ_INPUT_REGISTERS"}
    assert alerts[0].raw  # the request bytes are evidence


def test_unauthorized_write_from_a_pair_that_never_wrote(baseline: Baseline) -> None:
    stream = later()
    stream.modbus(TRAIN_S + 15, (HMI[0], 40001), PLC2, 6, address=5, values=[150], name="WRITE_SINGLE_REGISTER")
    alerts = run(baseline, stream)
    assert AlertKind.UNAUTHORIZED_WRITE in kinds(alerts)
    assert {"T0855", "T0836"} <= set(next(a for a in alerts if a.kind is AlertKind.UNAUTHORIZED_WRITE).techniques)


def test_new_write_target(baseline: Baseline) -> None:
    inside_read_range = later()
    inside_read_range.modbus(TRAIN_S + 15, HMI, PLC, 5, address=2, values=[True], name="WRITE_SINGLE_COIL")
    assert run(baseline, inside_read_range) == []
    assert kinds(run(baseline, inside_read_range, writes_within_read_ranges=False)) == {AlertKind.NEW_WRITE_TARGET}
    outside = later()
    outside.modbus(TRAIN_S + 15, HMI, PLC, 6, address=300, values=[1], name="WRITE_SINGLE_REGISTER")
    assert kinds(run(baseline, outside)) == {AlertKind.NEW_WRITE_TARGET}


def test_write_out_of_range(baseline: Baseline) -> None:
    low, high = baseline.pairs[next(p for p in baseline.pairs if p.server == PLC[0])].written_values[
        "1/holding_registers/5"
    ]
    inside = later()
    inside.modbus(TRAIN_S + 15, HMI, PLC, 6, address=5, values=[int((low + high) / 2)], name="WRITE_SINGLE_REGISTER")
    assert run(baseline, inside) == []
    outside = later()
    outside.modbus(TRAIN_S + 15, HMI, PLC, 6, address=5, values=[int(high) + 500], name="WRITE_SINGLE_REGISTER")
    alerts = run(baseline, outside)
    assert kinds(alerts) == {AlertKind.WRITE_OUT_OF_RANGE}
    assert alerts[0].techniques == ("T0836",)


def test_diagnostic_unless_learned() -> None:
    train = plant(30)
    for second in range(0, 30, 10):
        train.modbus(second + 0.5, HMI, PLC, 43, address=0, quantity=None, name="ENCAP_INTERFACE_TRANSPORT")
    learned = learn_baseline(train.items)
    stream = plant(10, start=40)
    stream.modbus(42, HMI, PLC, 43, address=0, quantity=None, name="ENCAP_INTERFACE_TRANSPORT")
    assert run(learned, stream) == []
    stream.modbus(43, HMI, PLC2, 17, address=None, quantity=None, name="REPORT_SERVER_ID")
    alerts = run(learned, stream)
    assert kinds(alerts) == {AlertKind.DIAGNOSTIC}
    assert alerts[0].techniques == ("T0888",)


@pytest.mark.parametrize(
    ("protocol", "function", "name", "fields", "kind"),
    [
        (IcsProtocol.DNP3, 13, "COLD_RESTART", {}, AlertKind.DEVICE_RESTART),
        (IcsProtocol.MODBUS, 8, "DIAGNOSTICS", {"sub_function": 1}, AlertKind.DEVICE_RESTART),
        (IcsProtocol.S7COMM, 0x29, "PLC_STOP", {}, AlertKind.OPERATING_MODE),
        (IcsProtocol.S7COMM, 0x1B, "DOWNLOAD_BLOCK", {}, AlertKind.PROGRAM_DOWNLOAD),
        (IcsProtocol.S7COMM, 0x1D, "START_UPLOAD", {}, AlertKind.PROGRAM_UPLOAD),
        (IcsProtocol.MODBUS, 21, "WRITE_FILE_RECORD", {}, AlertKind.FILE_TRANSFER),
        (IcsProtocol.DNP3, 25, "OPEN_FILE", {}, AlertKind.FILE_TRANSFER),
    ],
)
def test_programming_and_stop_functions_alert_even_when_learned(
    protocol: IcsProtocol, function: int, name: str, fields: dict[str, int], kind: AlertKind
) -> None:
    port = {IcsProtocol.DNP3: 20000, IcsProtocol.S7COMM: 102}.get(protocol, 502)

    def request(at: float, stream: Stream) -> None:
        stream.message(
            at,
            IcsMessage(
                protocol,
                Direction.REQUEST,
                Endpoint(HMI[0], 40100),
                Endpoint(PLC[0], port),
                function=function,
                function_name=name,
                fields=dict(fields),
            ),
        )

    train = plant(20)
    request(5, train)  # the engineer did it once during training too
    learned = learn_baseline(train.items)
    stream = plant(10, start=30)
    assert run(learned, stream) == []
    request(35, stream)
    assert kind in kinds(run(learned, stream))


def test_host_and_port_scans(baseline: Baseline) -> None:
    few = later()
    for i in range(3):
        few.packet(TRAIN_S + 15 + i * 0.1, ROGUE, (f"10.0.0.{100 + i}", 502), flags=SYN, payload=0)
    assert AlertKind.HOST_SCAN not in kinds(run(baseline, few))
    many = later()
    for i in range(8):
        many.packet(TRAIN_S + 15 + i * 0.1, ROGUE, (f"10.0.0.{100 + i}", 502), flags=SYN, payload=0)
    for port in range(20, 35):
        many.packet(TRAIN_S + 16, ROGUE, (PLC[0], port), flags=SYN, payload=0)
    found = kinds(run(baseline, many))
    assert {AlertKind.HOST_SCAN, AlertKind.PORT_SCAN} <= found


def test_half_open_handshakes(baseline: Baseline) -> None:
    completed = later()
    for i in range(8):
        completed.handshake(TRAIN_S + 15 + i, (ROGUE[0], 41000 + i), PLC)
    assert AlertKind.HALF_OPEN not in kinds(run(baseline, completed))
    half = later()
    for i in range(8):
        half.packet(TRAIN_S + 15 + i * 0.1, (ROGUE[0], 42000 + i), PLC, flags=SYN, payload=0)
        half.packet(TRAIN_S + 15 + i * 0.1, PLC, (ROGUE[0], 42000 + i), flags=SYN | ACK, payload=0)
        half.packet(TRAIN_S + 15 + i * 0.1, (ROGUE[0], 42000 + i), PLC, flags=RST, payload=0)
    alerts = [a for a in run(baseline, half) if a.kind is AlertKind.HALF_OPEN]
    assert len(alerts) == 1
    assert len(alerts[0].frames) >= 5


def test_unit_scan(baseline: Baseline) -> None:
    stream = later()
    for unit in range(2, 10):
        stream.modbus(TRAIN_S + 15 + unit * 0.1, HMI, PLC, 3, address=0, quantity=10, unit=unit)
    assert AlertKind.UNIT_SCAN in kinds(run(baseline, stream))
    learned_unit = later()
    learned_unit.modbus(TRAIN_S + 15, HMI, PLC, 3, address=0, quantity=10, unit=1)
    assert run(baseline, learned_unit) == []


def test_register_scan(baseline: Baseline) -> None:
    stream = later()
    for address in range(100, 130):
        stream.modbus(TRAIN_S + 15 + address * 0.01, HMI, PLC, 3, address=address, quantity=1)
    alerts = [a for a in run(baseline, stream) if a.kind is AlertKind.REGISTER_SCAN]
    assert len(alerts) == 1
    assert alerts[0].techniques == ("T0861",)
    inside = later()
    for address in range(10):
        inside.modbus(TRAIN_S + 15 + address * 0.01, HMI, PLC, 3, address=address, quantity=1)
    assert run(baseline, inside) == []


def test_malformed_frame(baseline: Baseline) -> None:
    stream = later()
    bad = IcsMessage(
        IcsProtocol.MODBUS,
        Direction.REQUEST,
        Endpoint(*HMI),
        Endpoint(*PLC),
        malformed="MBAP length does not match frame",
        raw=b"\x00\x01\x00\x00\x00\xff\x01\x03",
    )
    stream.message(TRAIN_S + 15, bad)
    alerts = run(baseline, stream)
    assert kinds(alerts) == {AlertKind.MALFORMED}
    assert alerts[0].raw == [b"\x00\x01\x00\x00\x00\xff\x01\x03"]
    assert alerts[0].details["reason"] == {"MBAP length does not match frame"}


def test_flood(baseline: Baseline) -> None:
    stream = later()
    for i in range(400):
        stream.modbus(TRAIN_S + 15 + i * 0.005, (HMI[0], 40001), PLC2, 3, address=0, quantity=10)
    alerts = [a for a in run(baseline, stream) if a.kind is AlertKind.FLOOD]
    assert len(alerts) == 1
    assert alerts[0].techniques == ("T0814",)
    assert alerts[0].count > 100


def test_exception_burst(baseline: Baseline) -> None:
    few = later()
    for i in range(2):
        few.modbus(TRAIN_S + 15 + i * 0.1, HMI, PLC, 3, address=0, quantity=10, exception=2)
    assert run(baseline, few) == []
    many = later()
    for i in range(12):
        many.modbus(TRAIN_S + 15 + i * 0.1, HMI, PLC, 3, address=0, quantity=10, exception=2)
    assert kinds(run(baseline, many)) == {AlertKind.EXCEPTION_BURST}


def test_alerts_are_aggregated_per_kind_pair_and_window(baseline: Baseline) -> None:
    stream = later()
    for i in range(50):
        stream.packet(TRAIN_S + 15 + i, (ROGUE[0], 50000), (PLC[0], 8080), payload=100)
    alerts = run(baseline, stream, alert_window_s=30.0)
    new = [a for a in alerts if a.kind is AlertKind.NEW_SERVICE]
    assert [a.count for a in new] == [30, 20]
    assert new[0].last_time - new[0].first_time == dt.timedelta(seconds=29)
    assert new[1].frames[0] > new[0].frames[-1]


def test_alarm_event_for_an_alert(baseline: Baseline) -> None:
    stream = later()
    stream.handshake(TRAIN_S + 15, ROGUE, (PLC[0], 445))
    alert = run(baseline, stream)[0]
    event = to_alarm_event(alert, tenant_id="t1")
    assert isinstance(event, AlarmEvent)
    assert (event.source, event.kind, event.subject) == ("security", "ics.new_service", PLC[0])
    assert event.details["techniques"] == list(alert.techniques)
    assert event.details["frames"] == alert.frames
    assert event.severity > 0
    record = alert.to_record()
    assert (record.kind, record.count, record.frames) == ("new_service", 3, alert.frames)


def test_score_alerts_by_labels(baseline: Baseline) -> None:
    stream = later()
    stream.handshake(TRAIN_S + 15, ROGUE, (PLC[0], 445))
    alerts = run(baseline, stream)
    attack = set(alerts[0].frames)
    score = score_alerts(alerts, attack, packets=len(stream.items), attack_packets=3, benign_hours=0.5)
    assert score.detected
    assert (score.true_alerts, score.false_alerts) == (1, 0)
    missed = score_alerts(alerts, {1}, packets=len(stream.items), attack_packets=1, benign_hours=0.5)
    assert not missed.detected
    assert missed.false_per_hour == 2.0


def test_training_traffic_replayed_raises_nothing(baseline: Baseline) -> None:
    assert detect(baseline, plant(TRAIN_S).items) == []


_messages = st.builds(
    IcsMessage,
    protocol=st.sampled_from(list(IcsProtocol)),
    direction=st.sampled_from(list(Direction)),
    source=st.builds(Endpoint, st.sampled_from([HMI[0], PLC[0], ROGUE[0], "", "not an ip"]), st.integers(0, 65535)),
    destination=st.builds(Endpoint, st.sampled_from([HMI[0], PLC[0], "10.0.0.255"]), st.integers(0, 65535)),
    unit=st.none() | st.integers(-5, 300),
    function=st.none() | st.integers(-1, 300),
    function_name=st.sampled_from(["", "PLC_STOP", "COLD_RESTART", "WRITE_SINGLE_COIL", "x"]),
    address=st.none() | st.integers(-10, 70000),
    quantity=st.none() | st.integers(-3, 3000),
    values=st.lists(st.one_of(st.integers(), st.booleans(), st.text(max_size=3), st.none()), max_size=5),
    exception=st.none() | st.integers(0, 255),
    malformed=st.sampled_from(["", "bad"]),
    fields=st.dictionaries(st.sampled_from(["sub_function", "write_start_address", "area"]), st.integers(0, 9)),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_messages, max_size=12))
def test_any_messages_never_crash_detection(messages: list[IcsMessage]) -> None:
    learned = learn_baseline(plant(5).items)
    stream = plant(3, start=10)
    for i, message in enumerate(messages):
        stream.message(20 + i * 0.1, message)
    detector = Detector(learned)
    for packet, found in stream.items:
        detector.check(packet, found)
    for alert in detector.finish():
        assert alert.count >= 1
        assert set(alert.techniques) <= set(TECHNIQUES)


def test_traffic_with_an_address_seen_at_a_decoy(baseline: Baseline) -> None:
    stream = later()
    before = stream.frame
    stream.handshake(TRAIN_S + 15, ROGUE, PLC)
    intel = {ROGUE[0]: "wrote registers, read identification"}
    alerts = detect(baseline, stream.items, known_attackers=intel)
    attacker = [a for a in alerts if a.kind is AlertKind.KNOWN_ATTACKER]
    assert len(attacker) == 1  # the handshake's packets, both ways, are one alert
    (alert,) = attacker
    assert (alert.source, alert.destination, alert.count) == (ROGUE[0], PLC[0], 3)
    assert alert.frames == [before + 1, before + 2, before + 3]
    assert alert.details["indicator"] == {"wrote registers, read identification"}
    assert alert.severity is Severity.CRITICAL
    # the same traffic without the intelligence raises no such alert
    assert AlertKind.KNOWN_ATTACKER not in kinds(detect(baseline, stream.items))
    # nor does intelligence about addresses the plant never talks to
    assert detect(baseline, later(60).items, known_attackers={"192.0.2.99": "scan"}) == []
