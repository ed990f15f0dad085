"""The life of one decoy connection, shared by both services: read, answer, report, close.

A service is a `Responder` per connection: it turns received bytes into (request record, reply)
pairs. This loop reports the opening, each request and the closing to the sink, writes the
replies, and ends the connection on an idle timeout, on the peer's close, or when the responder
says a real device would hang up.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from iip.security.honeypot.sightings import (
    HoneypotSighting,
    SightingKind,
    Sink,
    close_quietly,
    endpoint_of,
    report,
    utc_now,
)
from iip.security.protocols.base import Endpoint, IcsMessage, IcsProtocol

READ_CHUNK = 4096


@dataclass(slots=True)
class Exchange:
    """One request read from the stream and what answers it."""

    message: IcsMessage
    reply: bytes = b""
    hang_up: bool = False  # a real device drops the connection after this request


class Responder(Protocol):
    def receive(self, data: bytes) -> list[Exchange]: ...


ResponderFactory = Callable[[Endpoint, Endpoint], Responder]


class ConnectionHandler:
    """The asyncio `start_server` callback of one service."""

    def __init__(
        self,
        service: IcsProtocol,
        responder: ResponderFactory,
        sink: Sink,
        *,
        idle_timeout: float,
        max_connections: int,
        numbers: itertools.count[int],
    ) -> None:
        self.service = service
        self.responder = responder
        self.sink = sink
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.numbers = numbers
        self.open = 0
        self.writers: set[asyncio.StreamWriter] = set()
        self.tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer, local = endpoint_of(writer.get_extra_info("peername")), endpoint_of(writer.get_extra_info("sockname"))
        number = next(self.numbers)
        self.open += 1
        self.writers.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        await self._report(SightingKind.CONNECTED, peer, local, number)
        try:
            if self.open <= self.max_connections:
                await self._converse(reader, writer, peer, local, number)
        except (ConnectionError, OSError, TimeoutError):
            pass  # the peer went away or fell silent: the close below reports it
        finally:
            self.open -= 1
            self.writers.discard(writer)
            self.tasks.discard(task)
            await close_quietly(writer)
            await self._report(SightingKind.CLOSED, peer, local, number)

    async def _converse(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Endpoint, local: Endpoint, number: int
    ) -> None:
        responder = self.responder(peer, local)
        while data := await asyncio.wait_for(reader.read(READ_CHUNK), self.idle_timeout):
            for exchange in responder.receive(data):
                exchange.message.time = utc_now()
                await self._report(SightingKind.REQUEST, peer, local, number, exchange)
                if exchange.reply:
                    writer.write(exchange.reply)
                    await writer.drain()
                if exchange.hang_up:
                    return

    async def _report(
        self, kind: SightingKind, peer: Endpoint, local: Endpoint, number: int, exchange: Exchange | None = None
    ) -> None:
        sighting = HoneypotSighting(
            kind=kind,
            service=self.service,
            peer=peer,
            local=local,
            time=utc_now(),
            connection=number,
            message=exchange.message if exchange else None,
            raw=exchange.message.raw if exchange else b"",
            reply=exchange.reply if exchange else b"",
        )
        await report(self.sink, sighting)

    async def hang_up_all(self) -> None:
        """Ends every open connection (on stop), letting each report its closing."""
        for writer in list(self.writers):
            writer.close()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=5.0)
