"""Starting and stopping the decoy: a Modbus/TCP and an S7comm listener on one process image.

The decoy only listens; it never opens a connection of its own (no callbacks, no lookups of the
visitors). Ports default to the real ones (502, 102); port 0 takes any free port, and the ports
actually bound are on the running decoy.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

from iip.security.honeypot.connection import ConnectionHandler, ResponderFactory
from iip.security.honeypot.identity import PlcIdentity, identity_for
from iip.security.honeypot.modbus import ModbusResponder
from iip.security.honeypot.registers import ProcessImage
from iip.security.honeypot.s7 import CpuState, S7Responder
from iip.security.honeypot.sightings import Sink
from iip.security.protocols.base import Endpoint, IcsProtocol


@dataclass(frozen=True, slots=True)
class HoneypotConfig:
    """What a deployment chooses; the seed makes its identity and process values its own."""

    seed: str
    host: str = "0.0.0.0"  # noqa: S104 - a decoy is meant to be reached
    modbus_port: int | None = 502  # None: no Modbus listener
    s7_port: int | None = 102  # None: no S7 listener
    family: str | None = None  # pin a product line ("S7-300", "Modicon M580"...); else drawn from the seed
    idle_timeout: float = 300.0  # seconds of silence before the decoy hangs up
    max_connections: int = 64  # per service; beyond, connections are reported and closed at once
    clock: Callable[[], float] = field(default=time.time)


class RunningHoneypot:
    """Both listeners of a started decoy; `stop()` (or leaving `async with`) closes them."""

    def __init__(
        self,
        identity: PlcIdentity,
        image: ProcessImage,
        servers: dict[IcsProtocol, asyncio.Server],
        handlers: list[ConnectionHandler],
    ) -> None:
        self.identity = identity
        self.image = image
        self.servers = servers
        self.handlers = handlers

    def endpoint(self, service: IcsProtocol) -> Endpoint | None:
        server = self.servers.get(service)
        if server is None or not server.sockets:
            return None
        host, port = server.sockets[0].getsockname()[:2]
        return Endpoint(str(host), int(port))

    @property
    def modbus_port(self) -> int | None:
        endpoint = self.endpoint(IcsProtocol.MODBUS)
        return endpoint.port if endpoint else None

    @property
    def s7_port(self) -> int | None:
        endpoint = self.endpoint(IcsProtocol.S7COMM)
        return endpoint.port if endpoint else None

    async def stop(self) -> None:
        for server in self.servers.values():
            server.close()
        for handler in self.handlers:
            await handler.hang_up_all()
        for server in self.servers.values():
            await server.wait_closed()

    async def __aenter__(self) -> RunningHoneypot:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


async def run_honeypot(config: HoneypotConfig, sink: Sink) -> RunningHoneypot:
    """Starts the configured listeners and returns them running."""
    identity = identity_for(config.seed, family=config.family, speaks_s7=config.s7_port is not None)
    image = ProcessImage(config.seed, config.clock)
    state = CpuState()
    numbers = itertools.count(1)
    factories: dict[IcsProtocol, tuple[int, ResponderFactory]] = {}
    if config.modbus_port is not None:
        factories[IcsProtocol.MODBUS] = (
            config.modbus_port,
            lambda peer, local: ModbusResponder(peer, local, identity=identity, image=image),
        )
    if config.s7_port is not None:
        factories[IcsProtocol.S7COMM] = (
            config.s7_port,
            lambda peer, local: S7Responder(
                peer, local, identity=identity, image=image, state=state, clock=config.clock
            ),
        )
    servers: dict[IcsProtocol, asyncio.Server] = {}
    handlers: list[ConnectionHandler] = []
    try:
        for service, (port, factory) in factories.items():
            handler = ConnectionHandler(
                service,
                factory,
                sink,
                idle_timeout=config.idle_timeout,
                max_connections=config.max_connections,
                numbers=numbers,
            )
            handlers.append(handler)
            servers[service] = await asyncio.start_server(handler, config.host, port)
    except BaseException:
        await RunningHoneypot(identity, image, servers, handlers).stop()
        raise
    return RunningHoneypot(identity, image, servers, handlers)
