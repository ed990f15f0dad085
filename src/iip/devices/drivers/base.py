"""One interface for every protocol driver, the errors drivers raise, and the factory.

A driver talks to one device: `read()` polls every mapped metric, `subscribe()` has a push protocol
deliver changes, `write()` sets one metric and returns only once the device has confirmed it.
Library exceptions never leave a driver: they become `DeviceUnavailable` (cannot reach the device,
no answer in time) or `CommandRejected` (the device, or the mapping, refuses the value), raised
`from` the library error.
"""

from __future__ import annotations

import importlib
import random
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, NamedTuple, Self, TypeAlias

from pydantic import BaseModel, ValidationError

from iip.devices.profiles import DeviceProfile, MetricSpec, Protocol
from iip.kernel.errors import Invalid, Unavailable
from iip.telemetry.public import Quality

Value: TypeAlias = bool | int | float | str


class Reading(NamedTuple):
    """One metric's value at one instant.

    `value` is None only when the device gave none (quality BAD); `detail` says why a reading is not
    GOOD (a Modbus exception, an OPC UA status name).
    """

    metric: str
    ts_ms: int  # Unix epoch, milliseconds, UTC
    value: Value | None
    quality: Quality = Quality.GOOD
    detail: str = ""


ReadingSink: TypeAlias = Callable[[list[Reading]], Awaitable[None]]
StatusSink: TypeAlias = Callable[[bool, str], Awaitable[None]]  # online?, reason


class DeviceUnavailable(Unavailable):
    """The device cannot be reached, or did not answer in time. Worth retrying later."""

    code = "device_unavailable"


class CommandRejected(Invalid):
    """A write the device refused, or one that cannot be sent as asked (unknown or read-only metric,
    a value its register or node cannot hold). Retrying the same write will not help."""

    code = "command_rejected"


class DeviceRejected(Invalid):
    """The device answered a read with an error (a Modbus exception, an OPC UA Bad status)."""

    code = "device_rejected"


@dataclass
class Backoff:
    """Exponential delays between attempts, with optional jitter so a fleet does not retry in step."""

    initial_s: float = 0.5
    max_s: float = 30.0
    factor: float = 2.0
    jitter: float = 0.1  # up to this fraction is taken off each delay at random
    rng: random.Random = field(default_factory=random.Random, repr=False)
    _next: float = field(init=False, repr=False, default=0.0)

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.max_s:
            raise ValueError("backoff needs 0 < initial_s <= max_s")
        self._next = self.initial_s

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * self.factor, self.max_s)
        if self.jitter:
            delay -= delay * self.jitter * self.rng.random()
        return delay

    def reset(self) -> None:
        self._next = self.initial_s


class Driver(ABC):
    """A connection to one device of one profile. Not shared between tasks that connect concurrently
    without the driver's own locking; `DeviceRunner` is the usual owner."""

    protocol: ClassVar[Protocol]
    connection_model: ClassVar[type[BaseModel]]
    push: ClassVar[bool] = False  # delivers changes through `subscribe` rather than being polled

    def __init__(self, profile: DeviceProfile, connection: BaseModel) -> None:
        """`connection` is an instance of the class's `connection_model`."""
        self.profile = profile
        self.connection = connection

    @property
    @abstractmethod
    def connected(self) -> bool: ...

    @abstractmethod
    async def connect(self) -> None:
        """Open the connection; raises DeviceUnavailable. Idempotent."""

    @abstractmethod
    async def close(self) -> None:
        """Release the connection and stop any background work. Never raises; idempotent."""

    @abstractmethod
    async def read(self) -> list[Reading]:
        """Every mapped metric, connecting first if needed. A metric the device refuses comes back BAD;
        an unreachable device raises DeviceUnavailable."""

    async def subscribe(self, callback: ReadingSink, status: StatusSink | None = None) -> None:
        """Have changes delivered to `callback` until `close()`, across reconnects (push protocols)."""
        raise Invalid(f"{self.protocol} devices are polled, not subscribed", code="subscription_unsupported")

    @abstractmethod
    async def write(self, metric: str, value: Value, timeout: float) -> None:  # noqa: ASYNC109 - the ack deadline is part of a command
        """Set `metric` and wait up to `timeout` seconds for the device to confirm it.

        Raises CommandRejected (refused, or cannot be sent) or DeviceUnavailable (no confirmation in time).
        """

    def writable_metric(self, metric: str) -> MetricSpec:
        spec = self.profile.metric(metric)
        if spec is None:
            raise CommandRejected(f"profile {self.profile.name!r} has no metric {metric!r}", code="unknown_metric")
        if not spec.writable:
            raise CommandRejected(f"metric {metric!r} is not writable", code="metric_not_writable")
        return spec

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


# --------------------------------------------------------------------------- factory

# Protocols with a driver, by the module and class that implement them; imported on demand so a
# process that polls no Modbus device never imports pymodbus.
DRIVERS: dict[Protocol, tuple[str, str]] = {
    Protocol.MODBUS: ("iip.devices.drivers.modbus", "ModbusDriver"),
    Protocol.OPCUA: ("iip.devices.drivers.opcua", "OpcUaDriver"),
    Protocol.SIMULATED: ("iip.devices.drivers.simulated", "SimulatedDriver"),
}


def driver_class(protocol: Protocol | str) -> type[Driver]:
    try:
        module_name, class_name = DRIVERS[Protocol(protocol)]
    except (KeyError, ValueError):
        known = ", ".join(DRIVERS)
        raise Invalid(
            f"protocol '{protocol}' has no driver (drivers: {known}); its devices send data themselves",
            code="no_driver",
        ) from None
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, Driver)):
        raise TypeError(f"{module_name}.{class_name} is not a Driver")
    return cls


def validate_connection(protocol: Protocol | str, connection: Mapping[str, Any] | BaseModel) -> BaseModel:
    """The protocol's connection model from stored JSON; a readable Invalid for bad input."""
    model = driver_class(protocol).connection_model
    if isinstance(connection, model):
        return connection
    data = connection.model_dump() if isinstance(connection, BaseModel) else connection
    try:
        return model.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'connection'}: {e['msg']}" for e in err.errors())
        raise Invalid(f"invalid {Protocol(protocol)} connection: {problems}", code="invalid_connection") from None


def create_driver(
    protocol: Protocol | str, profile: DeviceProfile, connection: Mapping[str, Any] | BaseModel
) -> Driver:
    """A driver for one device; nothing connects until `connect()` (or the first read)."""
    cls = driver_class(protocol)
    return cls(profile, validate_connection(protocol, connection))
