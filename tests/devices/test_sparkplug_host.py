"""The Sparkplug B host application state machine, driven through whole edge node sessions."""

from __future__ import annotations

import datetime as dt
import math
import uuid
from dataclasses import replace

import pytest

from iip.devices.codecs.sparkplug import (
    REBIRTH_METRIC,
    DataType,
    EdgeTopic,
    HostState,
    MessageType,
    Metric,
    Payload,
    Property,
    SparkplugError,
    decode_payload,
    decode_state,
    encode_payload,
    encode_state,
)
from iip.devices.directory import IngestOutcome, KnownDevice
from iip.devices.ingest.sparkplug_host import REBIRTH_INTERVAL_MS, SparkplugHost
from iip.devices.profiles import DeviceProfile, MetricSpec, Protocol, SparkplugMapping
from iip.telemetry.public import Quality

T0 = 1_714_552_200_000
MAX_FUTURE_MS = 300_000
GROUP, NODE = "plant", "gw1"


class Clock:
    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


class Directory:
    """A DeviceDirectory over a fixed table of Sparkplug ids."""

    def __init__(self, devices: dict[tuple[str, str, str | None], KnownDevice]) -> None:
        self.devices = devices

    def by_name(self, tenant: str, device: str) -> KnownDevice | None:
        return None

    def by_token(self, token: str) -> KnownDevice | None:
        return None

    def by_sparkplug(self, group_id: str, edge_node_id: str, device_id: str | None) -> KnownDevice | None:
        return self.devices.get((group_id, edge_node_id, device_id))


PUMP_PROFILE = DeviceProfile(
    name="pump",
    protocol=Protocol.SPARKPLUG,
    metrics=[
        MetricSpec(name="speed", sparkplug=SparkplugMapping(metric="Line/Speed")),
        MetricSpec(name="temperature", sparkplug=SparkplugMapping(metric="Motor/Temp")),
    ],
)
GATEWAY = KnownDevice.of("t1", "gateway-1", None)
PUMP = KnownDevice.of("t1", "pump-1", PUMP_PROFILE, gateway="gateway-1")
VALVE = KnownDevice.of("t1", "valve-1", None, gateway="gateway-1")


class Edge:
    """An edge node publishing whole sessions, numbering its messages like a Sparkplug edge node."""

    def __init__(self, host: SparkplugHost, clock: Clock, group: str = GROUP, node: str = NODE) -> None:
        self.host, self.clock, self.group, self.node = host, clock, group, node
        self.seq = 0
        self.datatypes: dict[tuple[str | None, int | str | None], DataType] = {}  # from the births it sent

    def typed(self, device: str | None, metric: Metric) -> Metric:
        """DATA metrics as the edge node knows them: with the datatype of their birth (not sent)."""
        if metric.datatype is not DataType.UNKNOWN:
            return metric
        key = metric.alias if metric.alias is not None else metric.name
        return replace(metric, datatype=self.datatypes.get((device, key), DataType.UNKNOWN))

    def topic(self, kind: MessageType, device: str | None = None) -> str:
        return str(EdgeTopic(self.group, kind, self.node, device))

    def send(
        self,
        kind: MessageType,
        metrics: tuple[Metric, ...] = (),
        device: str | None = None,
        *,
        seq: int | None = None,
        timestamp: int | None = None,
        with_datatypes: bool = True,
    ) -> IngestOutcome:
        if kind in {MessageType.NBIRTH, MessageType.DBIRTH}:
            for metric in metrics:
                for key in (metric.alias, metric.name):
                    self.datatypes[device, key] = metric.datatype
        metrics = tuple(self.typed(device, metric) for metric in metrics)
        if kind is MessageType.NBIRTH:
            self.seq = 0
        elif seq is None and kind is not MessageType.NDEATH:
            self.seq = (self.seq + 1) % 256
        payload = Payload(
            timestamp=self.clock.now if timestamp is None else timestamp,
            metrics=metrics,
            seq=None if kind is MessageType.NDEATH else self.seq if seq is None else seq,
        )
        return self.host.on_message(self.topic(kind, device), encode_payload(payload, with_datatypes=with_datatypes))

    def nbirth(self, *metrics: Metric, bd_seq: int = 0) -> IngestOutcome:
        bd = Metric(name="bdSeq", datatype=DataType.INT64, value=bd_seq)
        rebirth = Metric(name=REBIRTH_METRIC, alias=0, datatype=DataType.BOOLEAN, value=False)
        return self.send(MessageType.NBIRTH, (bd, rebirth, *metrics))

    def ndeath(self, bd_seq: int) -> IngestOutcome:
        return self.send(MessageType.NDEATH, (Metric(name="bdSeq", datatype=DataType.INT64, value=bd_seq),))

    def ndata(self, *metrics: Metric, **options: object) -> IngestOutcome:
        return self.send(MessageType.NDATA, metrics, with_datatypes=False, **options)  # type: ignore[arg-type]

    def dbirth(self, device: str, *metrics: Metric) -> IngestOutcome:
        return self.send(MessageType.DBIRTH, metrics, device)

    def ddata(self, device: str, *metrics: Metric, **options: object) -> IngestOutcome:
        return self.send(MessageType.DDATA, metrics, device, with_datatypes=False, **options)  # type: ignore[arg-type]

    def ddeath(self, device: str) -> IngestOutcome:
        return self.send(MessageType.DDEATH, (), device)


NODE_METRICS = (
    Metric(name="Uptime", alias=1, datatype=DataType.UINT64, value=2**64 - 1),
    Metric(name="Firmware", alias=2, datatype=DataType.STRING, value="4.2.1"),
    Metric(name="Running", alias=3, datatype=DataType.BOOLEAN, value=True),
)
PUMP_METRICS = (
    Metric(name="Line/Speed", alias=10, datatype=DataType.INT16, value=-5),
    Metric(name="Motor/Temp", alias=11, datatype=DataType.FLOAT, value=41.5),
    Metric(name="Serial", alias=12, datatype=DataType.UUID, value=uuid.UUID(int=7)),
    Metric(name="Installed", alias=13, datatype=DataType.DATETIME, value=dt.datetime(2020, 1, 2, tzinfo=dt.UTC)),
    Metric(name="Counter", alias=14, datatype=DataType.INT64, value=-(2**40)),
)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def directory() -> Directory:
    return Directory({(GROUP, NODE, None): GATEWAY, (GROUP, NODE, "pump1"): PUMP, (GROUP, NODE, "valve1"): VALVE})


@pytest.fixture
def host(directory: Directory, clock: Clock) -> SparkplugHost:
    return SparkplugHost("iip", directory, clock, MAX_FUTURE_MS)


@pytest.fixture
def edge(host: SparkplugHost, clock: Clock) -> Edge:
    return Edge(host, clock)


def points(outcome: IngestOutcome) -> list[tuple[str, str, int, float, int]]:
    return [(device.key, metric, ts, value, quality) for device, metric, ts, value, quality in outcome.points]


def reasons(outcome: IngestOutcome) -> list[str]:
    return [reason for reason, _ in outcome.rejected]


def rebirths(outcome: IngestOutcome) -> list[str]:
    """Topics of the rebirth commands an outcome asks to publish (checking each is one)."""
    topics = []
    for topic, payload, qos, retain in outcome.publish:
        command = decode_payload(payload).metric(REBIRTH_METRIC)
        assert command is not None
        assert (command.datatype, command.value, qos, retain) == (DataType.BOOLEAN, True, 0, False)
        topics.append(topic)
    return topics


def test_births_define_aliases_that_data_then_uses(edge: Edge, clock: Clock) -> None:
    birth = edge.nbirth(*NODE_METRICS, bd_seq=3)
    assert not birth.rejected
    assert [(d.key, online) for d, online, _ in birth.statuses] == [("gateway-1", True)]
    assert points(birth) == [
        ("gateway-1", "Uptime", T0, float(2**64 - 1), Quality.GOOD),
        ("gateway-1", "Running", T0, 1.0, Quality.GOOD),
    ]
    assert [(d.key, name, value) for d, name, value in birth.attributes] == [("gateway-1", "Firmware", "4.2.1")]

    device_birth = edge.dbirth("pump1", *PUMP_METRICS)
    assert not device_birth.rejected
    assert [(d.key, online) for d, online, _ in device_birth.statuses] == [("pump-1", True)]
    assert points(device_birth) == [
        ("pump-1", "speed", T0, -5.0, Quality.GOOD),  # named through the profile's Sparkplug mapping
        ("pump-1", "temperature", T0, 41.5, Quality.GOOD),
        ("pump-1", "Counter", T0, float(-(2**40)), Quality.GOOD),  # not in the profile: its Sparkplug name
    ]
    assert [(name, value) for _, name, value in device_birth.attributes] == [
        ("Serial", "00000000-0000-0000-0000-000000000007"),
        ("Installed", "2020-01-02T00:00:00+00:00"),
    ]

    clock.now += 1000
    data = edge.ddata(
        "pump1",
        Metric(alias=10, datatype=DataType.INT16, value=-32768, timestamp=T0 + 900),
        Metric(alias=11, datatype=DataType.FLOAT, value=42.0),
    )
    assert not data.rejected
    assert not data.publish
    assert points(data) == [
        ("pump-1", "speed", T0 + 900, -32768.0, Quality.GOOD),  # metric timestamp
        ("pump-1", "temperature", T0 + 1000, 42.0, Quality.GOOD),  # payload timestamp
    ]
    node_data = edge.ndata(Metric(alias=3, datatype=DataType.BOOLEAN, value=False), Metric(name="Firmware", value="5"))
    assert not node_data.rejected
    assert points(node_data) == [("gateway-1", "Running", T0 + 1000, 0.0, Quality.GOOD)]
    assert [(name, value) for _, name, value in node_data.attributes] == [("Firmware", "5")]


def test_sequence_numbers_wrap_from_255_to_0(edge: Edge) -> None:
    edge.nbirth(*NODE_METRICS)
    edge.dbirth("pump1", *PUMP_METRICS)
    sent = []
    for i in range(300):
        outcome = edge.ndata(Metric(alias=1, value=i)) if i % 2 else edge.ddata("pump1", Metric(alias=10, value=i))
        sent.append(edge.seq)
        assert not outcome.rejected, (i, outcome.rejected)
        assert not outcome.publish
        assert points(outcome)[0][3] == float(i)
    assert sent[253:256] == [255, 0, 1]  # seqs 0 and 1 went to the births


def test_a_gap_rejects_the_message_asks_for_a_rebirth_and_resynchronises(edge: Edge) -> None:
    edge.nbirth(*NODE_METRICS)
    assert not edge.ndata(Metric(alias=1, value=1)).rejected  # seq 1
    gap = edge.ndata(Metric(alias=1, value=2), seq=5)
    assert not gap.points
    assert reasons(gap) == ["NDATA from plant/gw1: seq 5 where 2 was expected: messages were lost or reordered"]
    assert gap.rejected[0][1] == GATEWAY
    assert rebirths(gap) == ["spBv1.0/plant/NCMD/gw1"]
    edge.seq = 5
    after = edge.ndata(Metric(alias=1, value=3))  # seq 6 follows the one received
    assert not after.rejected
    assert not after.publish
    assert points(after) == [("gateway-1", "Uptime", T0, 3.0, Quality.GOOD)]


def test_a_gap_over_the_wrap_is_still_a_gap(edge: Edge) -> None:
    edge.nbirth(*NODE_METRICS)
    for _ in range(254):
        edge.ndata(Metric(alias=1, value=1))
    assert edge.seq == 254
    assert not edge.ndata(Metric(alias=1, value=1)).rejected  # 255
    outcome = edge.ndata(Metric(alias=1, value=1), seq=1)
    assert reasons(outcome) == ["NDATA from plant/gw1: seq 1 where 0 was expected: messages were lost or reordered"]


def test_rebirth_requests_are_rate_limited_per_node(
    edge: Edge, host: SparkplugHost, clock: Clock, directory: Directory
) -> None:
    edge.nbirth(*NODE_METRICS)
    assert rebirths(edge.ndata(Metric(alias=1, value=1), seq=9)) == ["spBv1.0/plant/NCMD/gw1"]
    clock.now += REBIRTH_INTERVAL_MS - 1
    second = edge.ndata(Metric(alias=1, value=1), seq=20)
    assert reasons(second)  # still rejected...
    assert not second.publish  # ...but not asked again so soon
    other = Edge(host, clock, node="gw2")
    directory.devices[(GROUP, "gw2", None)] = KnownDevice.of("t1", "gateway-2", None)
    other.nbirth()
    assert rebirths(other.send(MessageType.NDATA, seq=7)) == ["spBv1.0/plant/NCMD/gw2"]  # per node
    clock.now += 1
    assert rebirths(edge.ndata(Metric(alias=1, value=1), seq=30)) == ["spBv1.0/plant/NCMD/gw1"]


def test_data_before_any_birth_is_rejected_with_a_rebirth_request(edge: Edge) -> None:
    outcome = edge.ddata("pump1", Metric(alias=10, datatype=DataType.INT16, value=1), seq=4)
    assert reasons(outcome) == ["DDATA from plant/gw1/pump1: DDATA before the edge node's NBIRTH"]
    assert outcome.rejected[0][1] == PUMP
    assert rebirths(outcome) == ["spBv1.0/plant/NCMD/gw1"]
    edge.nbirth()
    no_dbirth = edge.ddata("valve1", Metric(alias=10, datatype=DataType.INT16, value=1))
    assert reasons(no_dbirth) == ["DDATA from plant/gw1/valve1: DDATA before the device's DBIRTH"]


def test_an_unknown_alias_rejects_the_whole_message(edge: Edge, clock: Clock) -> None:
    edge.nbirth()
    edge.dbirth("pump1", *PUMP_METRICS)
    clock.now += REBIRTH_INTERVAL_MS
    outcome = edge.ddata("pump1", Metric(alias=10, value=1), Metric(alias=99, datatype=DataType.INT8, value=2))
    assert not outcome.points
    assert reasons(outcome) == ["DDATA from plant/gw1/pump1: metric alias 99 was not in the birth"]
    assert rebirths(outcome) == ["spBv1.0/plant/NCMD/gw1"]
    unknown_name = edge.ddata("pump1", Metric(name="Nope", datatype=DataType.INT8, value=1))
    assert reasons(unknown_name) == ["DDATA from plant/gw1/pump1: metric name 'Nope' was not in the birth"]


def test_a_value_that_does_not_fit_its_birth_datatype_is_rejected(edge: Edge) -> None:
    edge.nbirth()
    edge.dbirth("pump1", *PUMP_METRICS)
    outcome = edge.ddata("pump1", Metric(alias=11, datatype=DataType.BOOLEAN, value=True))
    assert reasons(outcome) == ["DDATA from plant/gw1/pump1: metric 'Motor/Temp': Float value carried as bool"]
    declared = edge.send(
        MessageType.DDATA, (Metric(alias=10, datatype=DataType.UINT8, value=1),), "pump1", with_datatypes=True
    )
    assert reasons(declared) == ["DDATA from plant/gw1/pump1: metric 'Line/Speed' is UInt8 here but was born Int16"]


def test_ndeath_with_a_stale_bdseq_is_ignored(edge: Edge) -> None:
    edge.nbirth(*NODE_METRICS, bd_seq=1)
    edge.dbirth("pump1", *PUMP_METRICS)
    edge.dbirth("valve1")
    stale = edge.ndeath(0)  # the will of the connection before: arrives after the new NBIRTH
    assert stale == IngestOutcome()
    assert not edge.ndata(Metric(alias=1, value=5)).rejected
    death = edge.ndeath(1)
    assert sorted((d.key, online, why) for d, online, why in death.statuses) == [
        ("gateway-1", False, "Sparkplug NDEATH"),
        ("pump-1", False, "Sparkplug NDEATH"),
        ("valve-1", False, "Sparkplug NDEATH"),
    ]
    after = edge.ndata(Metric(alias=1, value=6), seq=5)
    assert reasons(after) == ["NDATA from plant/gw1: NDATA before the edge node's NBIRTH"]
    assert not after.points


def test_ddeath_takes_one_device_offline_and_counts_in_the_sequence(edge: Edge) -> None:
    edge.nbirth()
    edge.dbirth("pump1", *PUMP_METRICS)
    edge.dbirth("valve1")
    death = edge.ddeath("pump1")
    assert not death.rejected
    assert [(d.key, online, why) for d, online, why in death.statuses] == [("pump-1", False, "Sparkplug DDEATH")]
    valve = edge.dbirth("valve1")  # seq after the DDEATH's: in order
    assert not valve.rejected
    dead = edge.ddata("pump1", Metric(alias=10, value=1))
    assert reasons(dead) == ["DDATA from plant/gw1/pump1: DDATA before the device's DBIRTH"]
    assert rebirths(dead) == ["spBv1.0/plant/NCMD/gw1"]


def test_unregistered_nodes_and_devices_are_rejected_not_fatal(host: SparkplugHost, clock: Clock) -> None:
    ghost = Edge(host, clock, node="ghost")
    birth = ghost.nbirth(*NODE_METRICS)
    assert reasons(birth) == ["NBIRTH from plant/ghost: unknown Sparkplug device plant/ghost"]
    assert (birth.points, birth.statuses, birth.publish) == ([], [], [])
    data = ghost.ndata(Metric(alias=1, value=1))
    assert reasons(data) == ["NDATA from plant/ghost: unknown Sparkplug device plant/ghost"]
    gap = ghost.ndata(Metric(alias=1, value=1), seq=100)
    assert reasons(gap)
    assert not gap.publish  # nothing registered there: no commands to someone else's node
    cold = Edge(host, clock, node="cold").ndata(Metric(alias=1, datatype=DataType.INT8, value=1), seq=3)
    assert reasons(cold) == ["NDATA from plant/cold: unknown Sparkplug device plant/cold"]
    assert not cold.publish


def test_a_registered_device_behind_an_unregistered_node(host: SparkplugHost, directory: Directory) -> None:
    directory.devices = {(GROUP, NODE, "pump1"): PUMP}
    edge = Edge(host, Clock())
    edge.nbirth()
    birth = edge.dbirth("pump1", *PUMP_METRICS)
    assert not birth.rejected
    assert len(birth.points) == 3
    assert points(edge.ddata("pump1", Metric(alias=10, value=7)))[0][1:4] == ("speed", T0, 7.0)
    unknown_device = edge.dbirth("other", *PUMP_METRICS)
    assert reasons(unknown_device) == ["DBIRTH from plant/gw1/other: unknown Sparkplug device plant/gw1/other"]
    gap = edge.ddata("other", Metric(alias=10, value=1), seq=77)
    assert rebirths(gap) == ["spBv1.0/plant/NCMD/gw1"]  # the node has a registered device: worth a rebirth


def test_timestamps_too_far_in_the_future_are_rejected(edge: Edge, clock: Clock) -> None:
    edge.nbirth(*NODE_METRICS)
    outcome = edge.ndata(
        Metric(alias=1, value=1, timestamp=T0 + MAX_FUTURE_MS),
        Metric(alias=1, value=2, timestamp=T0 + MAX_FUTURE_MS + 1),
    )
    assert points(outcome) == [("gateway-1", "Uptime", T0 + MAX_FUTURE_MS, 1.0, Quality.GOOD)]
    assert reasons(outcome) == [
        f"NDATA from plant/gw1: metric 'Uptime': timestamp {T0 + MAX_FUTURE_MS + 1} is more than "
        f"{MAX_FUTURE_MS} ms ahead of now"
    ]
    payload_ahead = edge.ndata(Metric(alias=1, value=3), timestamp=T0 + MAX_FUTURE_MS + 1)
    assert not payload_ahead.points
    assert len(payload_ahead.rejected) == 1
    clock.now += 5
    no_timestamps = edge.host.on_message(
        edge.topic(MessageType.NDATA),
        encode_payload(
            Payload(seq=(edge.seq + 1) % 256, metrics=(edge.typed(None, Metric(alias=1, value=4)),)),
            with_datatypes=False,
        ),
    )
    assert points(no_timestamps) == [("gateway-1", "Uptime", T0 + 5, 4.0, Quality.GOOD)]  # now


def test_nulls_and_non_finite_values_are_bad_points(edge: Edge) -> None:
    edge.nbirth(
        Metric(name="Level", alias=1, datatype=DataType.DOUBLE, is_null=True),
        Metric(name="Ratio", alias=2, datatype=DataType.FLOAT, value=math.nan),
        Metric(name="Flow", alias=3, datatype=DataType.DOUBLE, value=-math.inf),
        Metric(name="Mode", alias=4, datatype=DataType.STRING, is_null=True),
        Metric(name="Blob", alias=5, datatype=DataType.BYTES, value=b"\x00"),
        Metric(name="Node Control/Reboot", alias=6, datatype=DataType.BOOLEAN, value=False),
    )
    data = edge.ndata(Metric(alias=1, is_null=True))
    assert points(data) == [("gateway-1", "Level", T0, 0.0, Quality.BAD)]
    birth_again = edge.nbirth(
        Metric(name="Ratio", alias=2, datatype=DataType.FLOAT, value=math.nan),
        Metric(name="Mode", alias=4, datatype=DataType.STRING, is_null=True),
        Metric(name="Blob", alias=5, datatype=DataType.BYTES, value=b"\x00"),
    )
    assert points(birth_again) == [("gateway-1", "Ratio", T0, 0.0, Quality.BAD)]  # no bdSeq, no control, no bytes
    assert [(name, value) for _, name, value in birth_again.attributes] == [("Mode", None)]


def test_a_quality_property_sets_the_point_quality(edge: Edge) -> None:
    def level(code: int) -> Metric:
        return Metric(
            name=f"L{code}", datatype=DataType.INT32, value=1, properties=(Property("Quality", DataType.INT32, code),)
        )

    outcome = edge.nbirth(level(192), level(0), level(500))
    assert [(metric, quality) for _, metric, _, _, quality in points(outcome)] == [
        ("L192", Quality.GOOD),
        ("L0", Quality.BAD),
        ("L500", Quality.UNCERTAIN),
    ]


def test_historical_values_never_pass_for_live_ones(edge: Edge, clock: Clock) -> None:
    edge.nbirth(Metric(name="Level", alias=1, datatype=DataType.DOUBLE, value=5.0))  # live at T0
    clock.now += 60_000
    outcome = edge.ndata(
        Metric(alias=1, value=1.0, timestamp=T0 - 2000, is_historical=True),  # older: stored
        Metric(alias=1, value=2.0, timestamp=T0 + 1000, is_historical=True),  # newer than the live one
        Metric(alias=1, value=3.0, is_historical=True),  # would take the payload's timestamp
    )
    assert points(outcome) == [("gateway-1", "Level", T0 - 2000, 1.0, Quality.GOOD)]
    assert reasons(outcome) == [
        f"NDATA from plant/gw1: metric 'Level': historical value at {T0 + 1000} is not older than the live one at {T0}",
        "NDATA from plant/gw1: metric 'Level': historical value without its own timestamp",
    ]
    mixed = edge.ndata(
        Metric(alias=1, value=4.0, timestamp=T0 + 59_000, is_historical=True),
        Metric(alias=1, value=5.0, timestamp=T0 + 59_500),  # live, in the same message
    )
    assert [p[2:4] for p in points(mixed)] == [(T0 + 59_000, 4.0), (T0 + 59_500, 5.0)]


def test_birth_definitions_are_checked(edge: Edge) -> None:
    outcome = edge.nbirth(
        Metric(name="A", alias=5, datatype=DataType.INT8, value=1),
        Metric(name="B", alias=5, datatype=DataType.INT8, value=2),
        Metric(alias=6, datatype=DataType.INT8, value=3),
        Metric(name="C", value=None),
    )
    assert reasons(outcome) == [
        "NBIRTH from plant/gw1: alias 5 names both 'A' and 'B'",
        "NBIRTH from plant/gw1: metric alias 6 has no name",
        "NBIRTH from plant/gw1: metric 'C' has no datatype",
    ]
    assert not outcome.points
    assert outcome.statuses  # the node is online all the same
    ambiguous = edge.ndata(Metric(alias=5, value=1))
    assert reasons(ambiguous) == ["NDATA from plant/gw1: metric alias 5 was not in the birth"]


def test_malformed_messages_are_rejected_with_a_reason(host: SparkplugHost, edge: Edge) -> None:
    bad_topic = host.on_message("spBv1.0/plant/NBIRTH", b"")
    assert reasons(bad_topic) == [
        "topic 'spBv1.0/plant/NBIRTH': expected spBv1.0/{group_id}/{message_type}/{edge_node_id}[/{device_id}]"
    ]
    bad_payload = host.on_message(edge.topic(MessageType.NBIRTH), b"\xff\xff")
    assert bad_payload.rejected == [("NBIRTH from plant/gw1: payload is not a Sparkplug B protobuf message", GATEWAY)]
    edge.nbirth()
    no_seq = host.on_message(edge.topic(MessageType.NDATA), encode_payload(Payload(timestamp=T0)))
    assert reasons(no_seq) == ["NDATA from plant/gw1: no seq"]
    out_of_range = edge.ndata(seq=256)
    assert reasons(out_of_range) == ["NDATA from plant/gw1: seq 256 is outside 0..255"]
    commands = host.on_message(edge.topic(MessageType.NCMD), b"\xff")  # commands are not ours to ingest
    assert commands == IngestOutcome()


def test_state_will_and_birth_share_their_timestamp(host: SparkplugHost, clock: Clock) -> None:
    assert host.state_topic() == "spBv1.0/STATE/iip"
    will = decode_state(host.offline_payload())
    clock.now += 250  # subscribing takes a while
    birth = decode_state(host.online_payload())
    assert will == HostState(False, T0)
    assert birth == HostState(True, T0)
    clock.now -= 10_000  # the clock steps back: STATE timestamps still only grow
    shutdown = decode_state(host.offline_payload())
    assert shutdown == HostState(False, T0 + 1)
    with pytest.raises(SparkplugError):
        SparkplugHost("a/b", Directory({}), clock, MAX_FUTURE_MS)


def test_a_late_will_of_our_own_is_answered_with_a_birth(host: SparkplugHost, clock: Clock) -> None:
    host.offline_payload()
    online = host.online_payload()
    late_will = host.on_message("spBv1.0/STATE/iip", encode_state(False, T0 - 60_000))
    assert late_will.publish == [("spBv1.0/STATE/iip", online, 1, True)]
    assert host.on_message("spBv1.0/STATE/iip", online) == IngestOutcome()  # our own birth echoed
    assert host.on_message("spBv1.0/STATE/other", encode_state(False, T0)) == IngestOutcome()
    usurper = host.on_message("spBv1.0/STATE/iip", encode_state(False, T0 + 1))
    assert reasons(usurper) == ["STATE of host iip: a newer death than ours; is another host using this id?"]
    assert not usurper.publish
    assert reasons(host.on_message("spBv1.0/STATE/iip", b"OFFLINE")) == ["STATE of host iip: STATE payload is not JSON"]
    host.offline_payload()  # a clean shutdown: our own death echoed back is not contradicted
    assert host.on_message("spBv1.0/STATE/iip", encode_state(False, T0 + 1)) == IngestOutcome()


def test_rebirth_request_is_an_ncmd(host: SparkplugHost) -> None:
    topic, payload = host.rebirth_request("plant", "gw9")
    assert topic == "spBv1.0/plant/NCMD/gw9"
    decoded = decode_payload(payload)
    assert decoded.timestamp == T0
    assert decoded.metrics == (Metric(name=REBIRTH_METRIC, timestamp=T0, datatype=DataType.BOOLEAN, value=True),)
