"""What the decoy reports: every connection opened and closed, and every request with its bytes.

A sighting goes to a sink, a plain or async callable; a sink that fails is logged and the decoy
carries on (a visitor must never notice the recording).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from enum import StrEnum

from iip.security.protocols.base import Endpoint, IcsMessage, IcsProtocol

log = logging.getLogger(__name__)


class SightingKind(StrEnum):
    CONNECTED = "connected"
    REQUEST = "request"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class HoneypotSighting:
    """One event at the decoy: a connection opened or closed, or one request read from it."""

    kind: SightingKind
    service: IcsProtocol
    peer: Endpoint
    local: Endpoint
    time: dt.datetime
    connection: int  # numbers the connections of one decoy run, so requests group by connection
    message: IcsMessage | None = None  # the request as the protocol codec read it
    raw: bytes = b""  # the request bytes as received
    reply: bytes = b""  # what the decoy answered ("" when it stayed silent)


Sink = Callable[[HoneypotSighting], Awaitable[None] | None]


async def report(sink: Sink, sighting: HoneypotSighting) -> None:
    """Hands the sighting to the sink, awaiting it when it is a coroutine; never raises."""
    try:
        result = sink(sighting)
        if inspect.isawaitable(result):
            await result
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("honeypot sink failed on a %s sighting from %s", sighting.kind, sighting.peer.host)


def endpoint_of(address: object) -> Endpoint:
    """The Endpoint of a socket address tuple (IPv4 or IPv6); an empty one when unknown."""
    if isinstance(address, tuple) and len(address) >= 2:
        return Endpoint(str(address[0]), int(address[1]))
    return Endpoint("", 0)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def close_quietly(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with suppress(ConnectionError, OSError):
        await writer.wait_closed()
