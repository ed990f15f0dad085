"""Threat intelligence from decoy sightings: one indicator per source address.

Nobody has business with a decoy, so every source that reaches it is suspect; what it did says
how much. Per source: first and last seen, connections and requests, the protocols it spoke, and
the notable actions - writes, CPU stop/start, block download/upload/delete, block listing,
identification reads (Modbus 43/14 and report server id, S7 SZL 0x0011/0x001C: what scanners
such as nmap's s7-info and modbus-discover send), clock setting, password attempts, malformed
frames, and a scan across both services. Pure code: sightings in, indicators out.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from iip.security.honeypot.sightings import HoneypotSighting, SightingKind
from iip.security.protocols.base import IcsMessage, IcsProtocol

WRITE, STOP_CPU, START_CPU, IDENTIFICATION = "write", "stop_cpu", "start_cpu", "identification"
DOWNLOAD, UPLOAD, SET_CLOCK, PASSWORD = "download", "upload", "set_clock", "password"
DELETE, BLOCK_LISTING = "delete", "block_listing"
MALFORMED, S7COMM_PLUS, SCAN_BOTH_SERVICES, CONNECT_ONLY = (
    "malformed",
    "s7comm_plus",
    "scan_both_services",
    "connect_only",
)
HIGH_SEVERITY = frozenset({WRITE, STOP_CPU, START_CPU, DOWNLOAD, DELETE, SET_CLOCK, PASSWORD})
MEDIUM_SEVERITY = frozenset({IDENTIFICATION, UPLOAD, BLOCK_LISTING, SCAN_BOTH_SERVICES, MALFORMED, S7COMM_PLUS})

MODBUS_WRITES = frozenset({5, 6, 15, 16, 21, 22, 23})
MODBUS_IDENTIFICATION = frozenset({17, 43})
IDENTIFICATION_SZL = frozenset({0x0011, 0x0111, 0x001C, 0x011C})
S7_ACTIONS = {
    "WRITE_VAR": WRITE,
    "PLC_STOP": STOP_CPU,
    "REQUEST_DOWNLOAD": DOWNLOAD,
    "DOWNLOAD_BLOCK": DOWNLOAD,
    "START_UPLOAD": UPLOAD,
    "UPLOAD": UPLOAD,
}
S7_SUBFUNCTION_ACTIONS = {
    "SET_CLOCK": SET_CLOCK,
    "SET_CLOCK_2": SET_CLOCK,
    "PLC_PASSWORD": PASSWORD,
    "LIST_BLOCKS": BLOCK_LISTING,
    "LIST_BLOCKS_OF_TYPE": BLOCK_LISTING,
    "GET_BLOCK_INFO": BLOCK_LISTING,
}
S7_BLOCK_PI_ACTIONS = {"_DELE": DELETE, "_INSE": DOWNLOAD}  # delete a block; activate a downloaded one


def notable_actions(message: IcsMessage) -> set[str]:
    """What a request did that matters to a defender (empty for plain reads)."""
    if message.is_malformed:
        return {MALFORMED}
    if message.protocol is IcsProtocol.MODBUS:
        return _modbus_actions(message)
    if message.protocol is IcsProtocol.S7COMM:
        return _s7_actions(message)
    return set()


def _modbus_actions(message: IcsMessage) -> set[str]:
    if message.function in MODBUS_WRITES:
        return {WRITE}
    return {IDENTIFICATION} if message.function in MODBUS_IDENTIFICATION else set()


def _s7_actions(message: IcsMessage) -> set[str]:
    fields = message.fields
    subfunction = str(fields.get("subfunction_name", ""))
    if fields.get("s7comm_plus"):
        action = S7COMM_PLUS
    elif message.function_name in S7_ACTIONS:
        action = S7_ACTIONS[message.function_name]
    elif message.function_name == "PI_SERVICE" and fields.get("pi_service") == "P_PROGRAM":
        action = START_CPU
    elif message.function_name == "PI_SERVICE" and fields.get("pi_service") in S7_BLOCK_PI_ACTIONS:
        action = S7_BLOCK_PI_ACTIONS[str(fields["pi_service"])]
    elif subfunction == "READ_SZL" and fields.get("szl_id") in IDENTIFICATION_SZL:
        action = IDENTIFICATION
    else:
        action = S7_SUBFUNCTION_ACTIONS.get(subfunction, "")
    return {action} if action else set()


@dataclass(slots=True)
class SourceIndicator:
    """Everything one source address did at the decoy."""

    address: str
    first_seen: dt.datetime
    last_seen: dt.datetime
    connections: int = 0
    requests: int = 0
    protocols: set[IcsProtocol] = field(default_factory=set)
    actions: Counter[str] = field(default_factory=Counter)
    functions: Counter[str] = field(default_factory=Counter)  # "modbus:READ_HOLDING_REGISTERS": 3

    @property
    def notable(self) -> set[str]:
        """The notable actions, with the ones only the whole picture shows."""
        found = {action for action, count in self.actions.items() if count}
        if len(self.protocols) > 1:
            found.add(SCAN_BOTH_SERVICES)
        if self.connections and not self.requests:
            found.add(CONNECT_ONLY)
        return found

    @property
    def severity(self) -> str:
        notable = self.notable
        if notable & HIGH_SEVERITY:
            return "high"
        return "medium" if notable & MEDIUM_SEVERITY else "low"

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "ipv6-addr" if ":" in self.address else "ipv4-addr",
            "value": self.address,
            "first_seen": self.first_seen.isoformat(),
            "last_seen": self.last_seen.isoformat(),
            "connections": self.connections,
            "requests": self.requests,
            "protocols": sorted(p.value for p in self.protocols),
            "actions": sorted(self.notable),
            "action_counts": dict(sorted(self.actions.items())),
            "functions": dict(sorted(self.functions.items())),
            "severity": self.severity,
        }


class IndicatorBook:
    """Indicators kept up to date one sighting at a time (for a live decoy)."""

    def __init__(self) -> None:
        self._by_address: dict[str, SourceIndicator] = {}

    def add(self, sighting: HoneypotSighting) -> SourceIndicator:
        address = sighting.peer.host
        indicator = self._by_address.get(address)
        if indicator is None:
            indicator = SourceIndicator(address, sighting.time, sighting.time)
            self._by_address[address] = indicator
        indicator.first_seen = min(indicator.first_seen, sighting.time)
        indicator.last_seen = max(indicator.last_seen, sighting.time)
        indicator.protocols.add(sighting.service)
        if sighting.kind is SightingKind.CONNECTED:
            indicator.connections += 1
        elif sighting.kind is SightingKind.REQUEST and sighting.message is not None:
            indicator.requests += 1
            message = sighting.message
            indicator.functions[f"{message.protocol.value}:{message.function_name or 'UNREADABLE'}"] += 1
            indicator.actions.update(notable_actions(message))
        return indicator

    def indicators(self) -> list[SourceIndicator]:
        """Most recently active first."""
        return sorted(self._by_address.values(), key=lambda i: (i.last_seen, i.address), reverse=True)


def build_indicators(sightings: Iterable[HoneypotSighting]) -> list[SourceIndicator]:
    book = IndicatorBook()
    for sighting in sightings:
        book.add(sighting)
    return book.indicators()
