"""Hand-built packet and message streams for the security tests (what `iter_capture` yields)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from iip.security.protocols.base import Direction, Endpoint, IcsMessage, IcsProtocol, PacketInfo, Transport

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
SYN, ACK, PSH, RST = 0x02, 0x10, 0x08, 0x04


class Stream:
    """Builds `(PacketInfo, [IcsMessage])` items with increasing frame numbers."""

    def __init__(self, start: dt.datetime = T0) -> None:
        self.frame = 0
        self.start = start
        self.items: list[tuple[PacketInfo, list[IcsMessage]]] = []

    def packet(
        self,
        at: float,
        src: tuple[str, int],
        dst: tuple[str, int],
        *,
        flags: int = PSH | ACK,
        transport: Transport = Transport.TCP,
        payload: int = 12,
        messages: list[IcsMessage] | None = None,
    ) -> PacketInfo:
        self.frame += 1
        info = PacketInfo(
            frame=self.frame,
            time=self.start + dt.timedelta(seconds=at),
            source=Endpoint(*src),
            destination=Endpoint(*dst),
            transport=transport,
            length=54 + payload,
            tcp_flags=flags if transport is Transport.TCP else 0,
            payload_length=payload,
        )
        for message in messages or []:
            message.frame, message.time = self.frame, info.time
        self.items.append((info, messages or []))
        return info

    def handshake(self, at: float, client: tuple[str, int], server: tuple[str, int]) -> None:
        self.packet(at, client, server, flags=SYN, payload=0)
        self.packet(at, server, client, flags=SYN | ACK, payload=0)
        self.packet(at, client, server, flags=ACK, payload=0)

    def modbus(
        self,
        at: float,
        client: tuple[str, int],
        server: tuple[str, int],
        function: int,
        *,
        address: int | None = 0,
        quantity: int | None = 1,
        values: list[Any] | None = None,
        unit: int = 1,
        exception: int | None = None,
        name: str = "",
        fields: dict[str, Any] | None = None,
    ) -> None:
        """A request and its response, each in its own packet."""
        request = IcsMessage(
            IcsProtocol.MODBUS,
            Direction.REQUEST,
            Endpoint(*client),
            Endpoint(*server),
            unit=unit,
            function=function,
            function_name=name,
            address=address,
            quantity=quantity,
            values=list(values or []),
            fields=dict(fields or {}),
            raw=b"\x00\x01\x00\x00\x00\x06\x01" + bytes([function]),
        )
        response = IcsMessage(
            IcsProtocol.MODBUS,
            Direction.RESPONSE,
            Endpoint(*server),
            Endpoint(*client),
            unit=unit,
            function=function,
            function_name=name,
            address=address,
            quantity=quantity,
            exception=exception,
        )
        self.packet(at, client, server, messages=[request])
        self.packet(at + 0.01, server, client, messages=[response])

    def message(self, at: float, message: IcsMessage) -> None:
        src = (message.source.host, message.source.port)
        dst = (message.destination.host, message.destination.port)
        self.packet(at, src, dst, messages=[message])


HMI = ("10.0.0.1", 40000)
PLC = ("10.0.0.10", 502)
PLC2 = ("10.0.0.11", 502)
ROGUE = ("10.0.0.66", 41000)


def plant(seconds: int = 60, *, start: float = 0.0, stream: Stream | None = None) -> Stream:
    """Normal traffic: the HMI polls two PLCs every second (coils 0-3, registers 0-9) and now and
    then writes coil 1 and register 5 (values 100..200)."""
    s = stream or Stream()
    s.handshake(start, HMI, PLC)
    s.handshake(start, (HMI[0], 40001), PLC2)
    for second in range(seconds):
        at = start + second
        s.modbus(at, HMI, PLC, 1, address=0, quantity=4, name="READ_COILS")
        s.modbus(at + 0.1, HMI, PLC, 3, address=0, quantity=10, name="READ_HOLDING_REGISTERS")
        s.modbus(at + 0.2, (HMI[0], 40001), PLC2, 3, address=0, quantity=10, name="READ_HOLDING_REGISTERS")
        if second % 10 == 0:
            s.modbus(at + 0.3, HMI, PLC, 5, address=1, values=[second % 20 == 0], name="WRITE_SINGLE_COIL")
            value = 100 + (second * 7) % 101
            s.modbus(at + 0.4, HMI, PLC, 6, address=5, values=[value], name="WRITE_SINGLE_REGISTER")
    return s
