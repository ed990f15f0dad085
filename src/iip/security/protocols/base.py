"""What every ICS protocol codec produces: one `IcsMessage` per application message seen on the wire.

Codecs are pure: bytes in, records out, no I/O. The fields that every protocol has (who, when,
function, addresses, values, exception) are columns of the record; what only one protocol has goes
in `fields`. A frame a codec cannot read is still a record, with `malformed` saying why, so a
monitor counts and reports it instead of dropping it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol


class IcsProtocol(StrEnum):
    MODBUS = "modbus"
    DNP3 = "dnp3"
    IEC104 = "iec104"
    S7COMM = "s7comm"


class Direction(StrEnum):
    REQUEST = "request"  # master/client to outstation/server
    RESPONSE = "response"  # outstation/server to master/client
    UNSOLICITED = "unsolicited"  # sent by the outstation on its own (DNP3 unsolicited, IEC 104 spontaneous)
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str  # IPv4 or IPv6 address as text
    port: int


NOWHERE = Endpoint("", 0)  # the endpoints of a frame decoded outside any capture


@dataclass(slots=True)
class IcsMessage:
    """One ICS application message (ICSNPP's per-message log line, for any of the four protocols)."""

    protocol: IcsProtocol
    direction: Direction
    source: Endpoint
    destination: Endpoint
    time: dt.datetime | None = None  # capture time (UTC); None outside a capture
    unit: int | None = None  # Modbus unit id, DNP3 destination address, IEC 104 common address, S7 rack/slot
    function: int | None = None  # function code / type id / S7 function
    function_name: str = ""  # e.g. "READ_HOLDING_REGISTERS", "DIRECT_OPERATE", "C_SC_NA_1", "WRITE_VAR"
    transaction: int | None = None  # Modbus transaction id, DNP3 sequence, S7 PDU reference
    address: int | None = None  # first register / point / information object address
    quantity: int | None = None  # number of registers, points or objects
    values: list[Any] = field(default_factory=list)  # register values, point values, written data
    exception: int | None = None  # exception / error code when the peer refused the request
    exception_name: str = ""
    malformed: str = ""  # why the frame could not be read; "" when it could
    fields: dict[str, Any] = field(default_factory=dict)  # what only this protocol has
    frame: int | None = None  # position of the packet in its capture (evidence), counted from 1
    raw: bytes = b""  # the application bytes this record was read from (evidence)

    @property
    def is_malformed(self) -> bool:
        return bool(self.malformed)

    @classmethod
    def of_frame(
        cls,
        protocol: IcsProtocol,
        frame: bytes,
        *,
        to_server: bool,
        source: Endpoint = NOWHERE,
        destination: Endpoint = NOWHERE,
        time: dt.datetime | None = None,
        frame_number: int | None = None,
    ) -> IcsMessage:
        """The record a codec fills in for one frame: a request when sent to the server."""
        return cls(
            protocol=protocol,
            direction=Direction.REQUEST if to_server else Direction.RESPONSE,
            source=source,
            destination=destination,
            time=time,
            frame=frame_number,
            raw=bytes(frame),
        )


class StreamDecoder(Protocol):
    """Decodes one direction of one TCP stream of a protocol.

    `feed` takes the next bytes in order (TCP payloads may split or join application frames) and
    returns every complete message they finish; bytes that can never become a valid frame produce a
    malformed record and the decoder resynchronises, never raising.
    """

    def feed(self, data: bytes, *, time: dt.datetime | None = None, frame: int | None = None) -> list[IcsMessage]: ...


class Transport(StrEnum):
    TCP = "tcp"
    UDP = "udp"
    OTHER = "other"


@dataclass(slots=True)
class PacketInfo:
    """One IP packet of a capture, ICS or not: what flow-level detection (talkers, scans, floods) reads."""

    frame: int  # position in the capture, counted from 1 (the labelled data sets count the same way)
    time: dt.datetime
    source: Endpoint
    destination: Endpoint
    transport: Transport
    length: int  # bytes on the wire
    tcp_flags: int = 0  # SYN 0x02, RST 0x04, ACK 0x10, FIN 0x01 ...
    payload_length: int = 0
    protocol: IcsProtocol | None = None  # the ICS protocol its port or content says, if any
