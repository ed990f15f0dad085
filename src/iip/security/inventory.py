"""Asset discovery from traffic: which hosts exist, what they are, and what is asked of them.

Passive and pure: records in, assets out. A host is an address that sent at least one packet (a
destination that never answers may not exist: scans aim at empty addresses). Roles follow the
direction of ICS messages: the sender of requests is the controlling side (Modbus client, DNP3
master, IEC 104 controlling station, S7 client: HMI, SCADA, engineering station), the sender of
responses and unsolicited messages the field side (Modbus server, DNP3 outstation, IEC 104
controlled station, S7 PLC). Unit ids and the point ranges requested are kept per field device,
merged into intervals. Vendor, model and firmware come from what the traffic reveals: Modbus read
device identification (43/14) and S7 SZL 0x0011 / 0x001C answers.

Declared assets (by hand or from CSV) are merged by address: a declared field wins over the
observed one, and both stay on the merged asset so a mismatch can be shown.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import ipaddress
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Any

from iip.kernel.errors import Invalid
from iip.security.protocols.base import Direction, IcsMessage, IcsProtocol, PacketInfo
from iip.security.records import ObservedAsset as ObservedAssetRecord

# -- intervals ---------------------------------------------------------------------------------


def merge_intervals(intervals: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Inclusive `(first, last)` intervals merged where they overlap or touch, sorted."""
    merged: list[tuple[int, int]] = []
    for first, last in sorted(intervals):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


@dataclass(slots=True)
class IntervalSet:
    """Inclusive integer intervals, kept merged (register and point ranges)."""

    intervals: list[tuple[int, int]] = field(default_factory=list)

    def add(self, first: int, last: int) -> None:
        if last < first:
            first, last = last, first
        self.intervals = merge_intervals([*self.intervals, (first, last)])

    def covers(self, first: int, last: int | None = None) -> bool:
        """True when every point of `first..last` lies in one interval."""
        last = first if last is None else last
        return any(lo <= first and last <= hi for lo, hi in self.intervals)

    def to_json(self) -> list[list[int]]:
        return [[lo, hi] for lo, hi in self.intervals]

    @classmethod
    def from_json(cls, data: Iterable[Iterable[int]]) -> IntervalSet:
        pairs = [tuple(pair) for pair in data]
        return cls(merge_intervals((int(p[0]), int(p[1])) for p in pairs if len(p) == 2))


# -- what a message says about its peers ------------------------------------------------------


class Role(StrEnum):
    CONTROLLER = "controller"  # master / client / controlling station
    FIELD_DEVICE = "field_device"  # server / outstation / controlled station / PLC


ROLE_LABELS: dict[tuple[IcsProtocol, Role], str] = {
    (IcsProtocol.MODBUS, Role.CONTROLLER): "Modbus client (master/HMI)",
    (IcsProtocol.MODBUS, Role.FIELD_DEVICE): "Modbus server (PLC/outstation)",
    (IcsProtocol.DNP3, Role.CONTROLLER): "DNP3 master",
    (IcsProtocol.DNP3, Role.FIELD_DEVICE): "DNP3 outstation",
    (IcsProtocol.IEC104, Role.CONTROLLER): "IEC 104 controlling station",
    (IcsProtocol.IEC104, Role.FIELD_DEVICE): "IEC 104 controlled station",
    (IcsProtocol.S7COMM, Role.CONTROLLER): "S7 client",
    (IcsProtocol.S7COMM, Role.FIELD_DEVICE): "S7 PLC",
}

# Modbus function code -> the data table it reads or writes.
MODBUS_TABLES: dict[int, str] = {
    1: "coils",
    5: "coils",
    15: "coils",
    2: "discrete_inputs",
    3: "holding_registers",
    6: "holding_registers",
    16: "holding_registers",
    22: "holding_registers",
    23: "holding_registers",
    4: "input_registers",
}
MODBUS_WRITES = frozenset({5, 6, 15, 16, 22, 23})


def client_and_server(message: IcsMessage) -> tuple[str, str] | None:
    """(controlling host, field host) of a message, or None when its direction is unknown."""
    if message.direction is Direction.REQUEST:
        return message.source.host, message.destination.host
    if message.direction in (Direction.RESPONSE, Direction.UNSOLICITED):
        return message.destination.host, message.source.host
    return None


def address_space(message: IcsMessage) -> str:
    """The name of the address space `message.address` counts in (a Modbus table, an S7 area...)."""
    if message.protocol is IcsProtocol.MODBUS and message.function is not None:
        return MODBUS_TABLES.get(message.function, f"function_{message.function}")
    for key in ("area", "group", "type_id"):
        if key in message.fields:
            return f"{key}_{message.fields[key]}"
    return "points"


def requested_range(message: IcsMessage) -> tuple[int, int] | None:
    """The inclusive address range a request reads or writes, if it names one."""
    if message.address is None or message.address < 0:
        return None
    quantity = message.quantity if message.quantity and message.quantity > 0 else 1
    return message.address, message.address + quantity - 1


# Where each protocol's answers name the device. S7 SZL answers are read by the S7 codec into these
# `fields`; Modbus 43/14 objects are named as the specification names them.
_MODBUS_IDENTITY = {"vendor": ("VendorName",), "model": ("ModelName", "ProductName", "ProductCode")}
_MODBUS_FIRMWARE = ("MajorMinorRevision",)
_S7_IDENTITY_KEYS = {
    "vendor": ("vendor",),
    "model": ("module_type_name", "module_type", "order_number", "module_name"),
    "firmware": ("firmware_version", "firmware", "fw_version"),
    "serial": ("serial_number",),
}


def identity_of(message: IcsMessage) -> dict[str, str]:
    """Vendor, model, firmware and serial a response reveals about its sender (may be empty)."""
    if message.is_malformed or message.direction is Direction.REQUEST:
        return {}
    if message.protocol is IcsProtocol.MODBUS:
        objects = message.fields.get("device_identification")
        if not isinstance(objects, dict):
            return {}
        found = {key: _first(objects, names) for key, names in _MODBUS_IDENTITY.items()}
        found["firmware"] = _first(objects, _MODBUS_FIRMWARE)
        return {key: value for key, value in found.items() if value}
    if message.protocol is IcsProtocol.S7COMM:
        sources = [message.fields, *(v for v in message.fields.values() if isinstance(v, dict))]
        found = {}
        for key, names in _S7_IDENTITY_KEYS.items():
            value = next((_first(s, names) for s in sources if _first(s, names)), "")
            if value:
                found[key] = value
        if found and "vendor" not in found:
            found["vendor"] = "Siemens"  # S7comm is Siemens' protocol; SZL answers do not name the maker
        return found
    return {}


def _first(source: dict[str, Any], names: Iterable[str]) -> str:
    for name in names:
        value = source.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return ""


# -- observed assets --------------------------------------------------------------------------


@dataclass(slots=True)
class ObservedAsset:
    """A host as the traffic shows it."""

    address: str
    first_seen: dt.datetime
    last_seen: dt.datetime
    mac: str = ""
    packets_sent: int = 0
    packets_received: int = 0
    roles: set[tuple[IcsProtocol, Role]] = field(default_factory=set)
    protocols: set[IcsProtocol] = field(default_factory=set)
    served_ports: set[tuple[IcsProtocol, int]] = field(default_factory=set)  # ICS services it offers
    unit_ids: dict[IcsProtocol, set[int]] = field(default_factory=dict)
    point_ranges: dict[tuple[IcsProtocol, int | None, str], IntervalSet] = field(default_factory=dict)
    messages_sent: Counter[IcsProtocol] = field(default_factory=Counter)
    messages_received: Counter[IcsProtocol] = field(default_factory=Counter)
    vendor: str = ""
    model: str = ""
    firmware: str = ""
    serial: str = ""

    @property
    def role_labels(self) -> list[str]:
        return sorted(ROLE_LABELS[role] for role in self.roles)

    @property
    def is_field_device(self) -> bool:
        return any(role is Role.FIELD_DEVICE for _, role in self.roles)

    def to_record(self) -> ObservedAssetRecord:
        """The storage shape (`iip.security.records.ObservedAsset`)."""
        return ObservedAssetRecord(
            address=self.address,
            first_seen=self.first_seen,
            last_seen=self.last_seen,
            mac=self.mac,
            role=", ".join(self.role_labels),
            vendor=self.vendor,
            model=self.model,
            firmware=self.firmware,
            protocols=sorted(str(p) for p in self.protocols),
            unit_ids=sorted({u for units in self.unit_ids.values() for u in units}),
            register_ranges=[[lo, hi] for ranges in self.point_ranges.values() for lo, hi in ranges.intervals],
        )


@lru_cache(maxsize=65_536)  # asked for every packet, of a few addresses; parsing one costs microseconds
def is_unicast_host(address: str) -> bool:
    """False for multicast, broadcast and unspecified addresses (never a device of their own)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if ip.is_multicast or ip.is_unspecified:
        return False
    return not (isinstance(ip, ipaddress.IPv4Address) and ip == ipaddress.IPv4Address("255.255.255.255"))


class InventoryBuilder:
    """Builds observed assets from `(PacketInfo, [IcsMessage])` items, in one pass."""

    def __init__(self) -> None:
        self._assets: dict[str, ObservedAsset] = {}
        self._received: Counter[str] = Counter()
        self._received_times: dict[str, tuple[dt.datetime, dt.datetime]] = {}

    def observe(self, packet: PacketInfo, messages: Iterable[IcsMessage] = ()) -> None:
        self.observe_packet(packet)
        for message in messages:
            self.observe_message(message, time=packet.time)

    def observe_packet(self, packet: PacketInfo) -> None:
        sender = self._asset(packet.source.host, packet.time)
        if sender is not None:
            sender.packets_sent += 1
        self._received[packet.destination.host] += 1
        asset = self._assets.get(packet.destination.host)
        if asset is not None:
            asset.packets_received += 1

    def observe_mac(self, address: str, mac: str) -> None:
        """A hardware address the link layer showed for `address` (ARP, Ethernet source)."""
        asset = self._assets.get(address)
        if asset is not None and mac:
            asset.mac = mac.lower()

    def observe_message(self, message: IcsMessage, *, time: dt.datetime | None = None) -> None:
        when = message.time or time
        peers = client_and_server(message)
        if when is None or peers is None:
            return
        client_host, server_host = peers
        client = self._asset(client_host, when)
        server = self._asset(server_host, when)
        sender, receiver = (client, server) if message.direction is Direction.REQUEST else (server, client)
        if sender is not None:
            sender.messages_sent[message.protocol] += 1
        if receiver is not None:
            receiver.messages_received[message.protocol] += 1
        if message.is_malformed:
            return  # a frame that could not be read says nothing reliable about roles
        for asset, role in ((client, Role.CONTROLLER), (server, Role.FIELD_DEVICE)):
            if asset is not None:
                asset.roles.add((message.protocol, role))
                asset.protocols.add(message.protocol)
        if server is None:
            return
        server_port = message.destination.port if message.direction is Direction.REQUEST else message.source.port
        server.served_ports.add((message.protocol, server_port))
        if message.unit is not None:
            server.unit_ids.setdefault(message.protocol, set()).add(message.unit)
        if message.direction is Direction.REQUEST and message.exception is None:
            self._record_range(server, message)
        if message.direction is not Direction.REQUEST:
            self._record_identity(server, message)

    def assets(self) -> list[ObservedAsset]:
        return sorted(self._assets.values(), key=lambda a: _address_key(a.address))

    def _asset(self, address: str, when: dt.datetime) -> ObservedAsset | None:
        if not is_unicast_host(address):
            return None
        asset = self._assets.get(address)
        if asset is None:
            asset = self._assets[address] = ObservedAsset(address=address, first_seen=when, last_seen=when)
        asset.first_seen = min(asset.first_seen, when)
        asset.last_seen = max(asset.last_seen, when)
        return asset

    @staticmethod
    def _record_range(server: ObservedAsset, message: IcsMessage) -> None:
        span = requested_range(message)
        if span is None:
            return
        key = (message.protocol, message.unit, address_space(message))
        server.point_ranges.setdefault(key, IntervalSet()).add(*span)

    @staticmethod
    def _record_identity(server: ObservedAsset, message: IcsMessage) -> None:
        for key, value in identity_of(message).items():
            setattr(server, key, value)


def discover(stream: Iterable[tuple[PacketInfo, list[IcsMessage]]]) -> list[ObservedAsset]:
    """The observed assets of a decoded capture (`iter_capture`'s items)."""
    builder = InventoryBuilder()
    for packet, messages in stream:
        builder.observe(packet, messages)
    return builder.assets()


def _address_key(address: str) -> tuple[int, int]:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return (9, 0)
    return (ip.version, int(ip))


# -- declared assets and merging --------------------------------------------------------------


class Criticality(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class DeclaredAsset:
    """An asset as its owner describes it (typed in, or a row of an imported CSV)."""

    address: str
    name: str = ""
    vendor: str = ""
    model: str = ""
    firmware: str = ""
    role: str = ""
    criticality: Criticality | None = None
    owner: str = ""


class AssetImportError(Invalid, ValueError):
    """A declared-asset file that cannot be read; the message names the row and the problem."""

    code = "asset_import_invalid"
    title = "Asset list not usable"


CSV_COLUMNS = ("address", "name", "vendor", "model", "firmware", "role", "criticality", "owner")


def read_declared_assets_csv(text: str) -> list[DeclaredAsset]:
    """Declared assets from CSV text with a header row (columns `CSV_COLUMNS`; only `address` required).

    Rows are numbered as a spreadsheet shows them (the header is row 1). Raises `AssetImportError`
    naming the first bad row: a missing or invalid address, an unknown criticality, a duplicate address.
    """
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [name.strip().lower() for name in (reader.fieldnames or [])]
    if "address" not in header:
        raise AssetImportError("row 1: the header has no 'address' column", row=1)
    unknown = sorted(set(header) - set(CSV_COLUMNS))
    if unknown:
        raise AssetImportError(f"row 1: unknown columns {', '.join(unknown)}", row=1)
    reader.fieldnames = header
    assets: list[DeclaredAsset] = []
    seen: set[str] = set()
    for number, row in enumerate(reader, start=2):
        if None in row:
            raise AssetImportError(f"row {number}: more values than columns", row=number)
        values = {key: (value or "").strip() for key, value in row.items()}
        if not any(values.values()):
            continue
        asset = _declared_from_row(values, number)
        if asset.address in seen:
            raise AssetImportError(f"row {number}: address {asset.address} appears twice", row=number)
        seen.add(asset.address)
        assets.append(asset)
    return assets


def _declared_from_row(values: dict[str, str], number: int) -> DeclaredAsset:
    address = values.get("address", "")
    try:
        address = str(ipaddress.ip_address(address))
    except ValueError:
        raise AssetImportError(f"row {number}: {address!r} is not an IP address", row=number) from None
    level = values.get("criticality", "").lower()
    if level and level not in {c.value for c in Criticality}:
        allowed = ", ".join(c.value for c in Criticality)
        raise AssetImportError(f"row {number}: criticality {level!r} is not one of {allowed}", row=number)
    return DeclaredAsset(
        address=address,
        name=values.get("name", ""),
        vendor=values.get("vendor", ""),
        model=values.get("model", ""),
        firmware=values.get("firmware", ""),
        role=values.get("role", ""),
        criticality=Criticality(level) if level else None,
        owner=values.get("owner", ""),
    )


@dataclass(slots=True)
class Asset:
    """One address with what was declared and what was observed; declared fields win."""

    address: str
    declared: DeclaredAsset | None = None
    observed: ObservedAsset | None = None

    @property
    def vendor(self) -> str:
        return self._pick("vendor")

    @property
    def model(self) -> str:
        return self._pick("model")

    @property
    def firmware(self) -> str:
        return self._pick("firmware")

    @property
    def role(self) -> str:
        declared = self.declared.role if self.declared else ""
        return declared or (", ".join(self.observed.role_labels) if self.observed else "")

    @property
    def name(self) -> str:
        return self.declared.name if self.declared else ""

    @property
    def unseen(self) -> bool:
        """Declared but never seen in traffic."""
        return self.observed is None

    @property
    def undeclared(self) -> bool:
        """Seen in traffic but nobody declared it."""
        return self.declared is None

    def mismatches(self) -> dict[str, tuple[str, str]]:
        """Fields where declared and observed disagree: name -> (declared, observed)."""
        if self.declared is None or self.observed is None:
            return {}
        out: dict[str, tuple[str, str]] = {}
        for name in ("vendor", "model", "firmware"):
            declared, observed = getattr(self.declared, name), getattr(self.observed, name)
            if declared and observed and declared.casefold() != observed.casefold():
                out[name] = (declared, observed)
        return out

    def _pick(self, name: str) -> str:
        declared = getattr(self.declared, name) if self.declared else ""
        return str(declared or (getattr(self.observed, name) if self.observed else ""))


def merge_assets(observed: Iterable[ObservedAsset], declared: Iterable[DeclaredAsset]) -> list[Asset]:
    """One `Asset` per address found in either list, sorted by address."""
    merged: dict[str, Asset] = {}
    for seen in observed:
        merged[seen.address] = Asset(address=seen.address, observed=seen)
    for entry in declared:
        merged.setdefault(entry.address, Asset(address=entry.address)).declared = entry
    return [merged[key] for key in sorted(merged, key=_address_key)]


def iter_field_devices(assets: Iterable[ObservedAsset]) -> Iterator[ObservedAsset]:
    """The assets that answered ICS requests (PLCs, RTUs, outstations)."""
    return (asset for asset in assets if asset.is_field_device)
