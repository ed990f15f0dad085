"""Asset discovery from built streams and real codec records, declared assets, CSV import."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iip.security.inventory import (
    AssetImportError,
    Criticality,
    DeclaredAsset,
    IntervalSet,
    Role,
    discover,
    identity_of,
    merge_assets,
    merge_intervals,
    read_declared_assets_csv,
)
from iip.security.protocols import modbus
from iip.security.protocols.base import Direction, Endpoint, IcsMessage, IcsProtocol, Transport
from tests.security.streams import HMI, PLC, PLC2, ROGUE, SYN, Stream, plant


def device_identification_response() -> IcsMessage:
    objects = [(0, b"Schneider Electric"), (1, b"BMX P34 2020"), (2, b"v2.70"), (5, b"M340")]
    body = bytes([0x0E, 0x01, 0x01, 0x00, 0x00, len(objects)])
    body += b"".join(bytes([oid, len(text)]) + text for oid, text in objects)
    frame = struct.pack(">HHHB", 7, 0, 2 + len(body), 1) + bytes([43]) + body
    return modbus.decode_frame(frame, to_server=False, source=Endpoint(*PLC), destination=Endpoint(*HMI))


def test_roles_units_ranges_and_counts() -> None:
    assets = {a.address: a for a in discover(plant(20).items)}
    assert set(assets) == {HMI[0], PLC[0], PLC2[0]}
    hmi, plc = assets[HMI[0]], assets[PLC[0]]
    assert hmi.roles == {(IcsProtocol.MODBUS, Role.CONTROLLER)}
    assert hmi.role_labels == ["Modbus client (master/HMI)"]
    assert plc.roles == {(IcsProtocol.MODBUS, Role.FIELD_DEVICE)}
    assert plc.unit_ids == {IcsProtocol.MODBUS: {1}}
    assert plc.point_ranges[(IcsProtocol.MODBUS, 1, "coils")].intervals == [(0, 3)]
    assert plc.point_ranges[(IcsProtocol.MODBUS, 1, "holding_registers")].intervals == [(0, 9)]
    assert plc.served_ports == {(IcsProtocol.MODBUS, 502)}
    received = plc.messages_received[IcsProtocol.MODBUS] + assets[PLC2[0]].messages_received[IcsProtocol.MODBUS]
    assert hmi.messages_sent[IcsProtocol.MODBUS] == received > 0
    assert hmi.first_seen < hmi.last_seen


def test_only_senders_and_unicast_addresses_are_hosts() -> None:
    stream = Stream()
    stream.packet(0, ROGUE, ("10.0.0.200", 502), flags=SYN, payload=0)  # nobody answers
    stream.packet(1, ("10.0.0.5", 138), ("10.0.0.255", 138), transport=Transport.UDP)
    stream.packet(2, ("fe80::1", 546), ("ff02::1:2", 547), transport=Transport.UDP)
    assert {a.address for a in discover(stream.items)} == {ROGUE[0], "10.0.0.5", "fe80::1"}


def test_vendor_model_firmware_from_modbus_device_identification() -> None:
    response = device_identification_response()
    assert not response.malformed
    assert identity_of(response) == {"vendor": "Schneider Electric", "model": "M340", "firmware": "v2.70"}
    stream = plant(3)
    stream.message(5, response)
    plc = next(a for a in discover(stream.items) if a.address == PLC[0])
    assert (plc.vendor, plc.model, plc.firmware) == ("Schneider Electric", "M340", "v2.70")
    assert plc.to_record().vendor == "Schneider Electric"


def test_identity_from_s7_szl_fields() -> None:
    answer = IcsMessage(
        IcsProtocol.S7COMM,
        Direction.RESPONSE,
        Endpoint(PLC[0], 102),
        Endpoint(HMI[0], 50000),
        fields={"order_number": "6ES7 315-2EH14-0AB0", "firmware_version": "V3.2.6", "serial_number": "S C-X4U"},
    )
    assert identity_of(answer) == {
        "vendor": "Siemens",
        "model": "6ES7 315-2EH14-0AB0",
        "firmware": "V3.2.6",
        "serial": "S C-X4U",
    }
    request = IcsMessage(IcsProtocol.S7COMM, Direction.REQUEST, Endpoint(HMI[0], 50000), Endpoint(PLC[0], 102))
    assert identity_of(request) == {}


def test_malformed_messages_count_but_give_no_roles() -> None:
    stream = Stream()
    bad = IcsMessage(IcsProtocol.DNP3, Direction.REQUEST, Endpoint(*ROGUE), Endpoint(PLC[0], 20000), malformed="bad")
    stream.message(0, bad)
    rogue = next(a for a in discover(stream.items) if a.address == ROGUE[0])
    assert rogue.roles == set()
    assert rogue.messages_sent[IcsProtocol.DNP3] == 1


def test_declared_fields_win_and_both_are_kept() -> None:
    stream = plant(3)
    stream.message(5, device_identification_response())
    observed = discover(stream.items)
    declared = [
        DeclaredAsset(PLC[0], name="Pump PLC", vendor="Schneider", firmware="v2.80", criticality=Criticality.HIGH),
        DeclaredAsset("10.0.0.99", name="Spare RTU", role="RTU"),
    ]
    merged = {a.address: a for a in merge_assets(observed, declared)}
    plc = merged[PLC[0]]
    assert (plc.name, plc.vendor, plc.model, plc.firmware) == ("Pump PLC", "Schneider", "M340", "v2.80")
    assert plc.observed is not None
    assert plc.observed.firmware == "v2.70"
    assert plc.mismatches() == {"vendor": ("Schneider", "Schneider Electric"), "firmware": ("v2.80", "v2.70")}
    assert merged["10.0.0.99"].unseen
    assert merged["10.0.0.99"].role == "RTU"
    assert merged[HMI[0]].undeclared
    assert merged[HMI[0]].role == "Modbus client (master/HMI)"


def test_csv_import() -> None:
    text = (
        "address,name,vendor,model,firmware,role,criticality,owner\n"
        "10.0.0.10,Pump PLC,Schneider,M340,v2.70,PLC,high,Ops\n"
        "\n"
        "10.0.0.1,HMI,,,,HMI,,\n"
    )
    assets = read_declared_assets_csv(text)
    assert [a.address for a in assets] == ["10.0.0.10", "10.0.0.1"]
    assert assets[0].criticality is Criticality.HIGH
    assert assets[1].criticality is None


@pytest.mark.parametrize(
    ("text", "row", "words"),
    [
        ("name\nx\n", 1, "address"),
        ("address,colour\n10.0.0.1,red\n", 1, "colour"),
        ("address,name\n10.0.0.1,a\n10.0.0.300,b\n", 3, "not an IP"),
        ("address,criticality\n10.0.0.1,extreme\n", 2, "criticality"),
        ("address,name\n10.0.0.1,a\n10.0.0.2,b\n10.0.0.1,c\n", 4, "twice"),
        ("address,name\n10.0.0.1,a,extra\n", 2, "more values"),
    ],
)
def test_csv_errors_name_the_row(text: str, row: int, words: str) -> None:
    with pytest.raises(AssetImportError) as caught:
        read_declared_assets_csv(text)
    assert caught.value.message.startswith(f"row {row}:")
    assert words in caught.value.message
    assert caught.value.details["row"] == row


@given(st.lists(st.tuples(st.integers(0, 500), st.integers(0, 40)), max_size=30))
def test_merged_intervals_cover_exactly_the_points(spans: list[tuple[int, int]]) -> None:
    intervals = [(start, start + length) for start, length in spans]
    merged = merge_intervals(intervals)
    points = {p for lo, hi in intervals for p in range(lo, hi + 1)}
    assert {p for lo, hi in merged for p in range(lo, hi + 1)} == points
    assert all(merged[i][1] + 1 < merged[i + 1][0] for i in range(len(merged) - 1))  # disjoint, not touching
    ranges = IntervalSet()
    for lo, hi in intervals:
        ranges.add(lo, hi)
    assert ranges.intervals == merged
    assert IntervalSet.from_json(ranges.to_json()) == ranges
