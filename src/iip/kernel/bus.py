"""Event bus: typed subjects, async publish/subscribe, at-least-once delivery.

Two implementations keep one contract (tests/kernel/test_bus_contract.py runs on both):

* `MemoryBus`, the default: in-process, nothing to install, nothing survives a restart.
* `NatsBus` (`iip.kernel.bus_nats`): NATS JetStream, a durable stream and durable consumers with
  explicit acks, so a message a crashed worker took is redelivered.

Contract:
* `publish` sends a pydantic model to a `Subject`; payloads travel as JSON bytes, or in the subject's
  `Codec` when it has one (a subject whose volume makes JSON too costly, e.g. `telemetry.points`).
* `subscribe(subject, handler, durable=...)` creates (or resumes) a durable consumer. Every durable
  gets every message published after it was first created; subscribers sharing a durable share the
  work. A handler that returns acks the message; one that raises has it redelivered, up to
  `max_deliver` attempts, after which it is dead-lettered. A payload that does not parse is
  dead-lettered at once. Dead letters go to `DEAD_LETTERS` with the reason and the raw data (as text
  when it is UTF-8, else base64: `DeadLetter.raw()` gives the bytes back).
* `Subscription.stop()` stops consuming; what was taken and not acked is delivered again later.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import logging
import uuid
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

SUBJECT_PREFIX = "iip."


class Codec(Protocol[M]):
    """How a subject's payloads become bytes and back, instead of pydantic JSON.

    `decode` raises ValueError (pydantic's ValidationError is one) for data it refuses, with a message
    that says what is wrong: the bus dead-letters such a message at once.
    """

    def encode(self, payload: M) -> bytes: ...

    def decode(self, data: bytes) -> M: ...


@dataclass(frozen=True, slots=True)
class Subject(Generic[M]):
    """A named channel carrying one payload type, e.g. `Subject("telemetry.points", PointBatch)`.

    Payloads travel as pydantic JSON unless the subject names a `codec`.
    """

    name: str
    model: type[M]
    codec: Codec[M] | None = None

    def __post_init__(self) -> None:
        parts = self.name.split(".")
        if not all(p and p.replace("_", "").replace("-", "").isalnum() for p in parts):
            raise ValueError(f"invalid subject name {self.name!r}: dot-separated alphanumeric tokens")

    @property
    def wire_name(self) -> str:
        return SUBJECT_PREFIX + self.name

    def encode(self, payload: M) -> bytes:
        if self.codec is not None:
            return self.codec.encode(payload)
        return payload.model_dump_json().encode()

    def decode(self, data: bytes) -> M:
        if self.codec is not None:
            return self.codec.decode(data)
        return self.model.model_validate_json(data)


@dataclass(frozen=True, slots=True)
class Delivery(Generic[M]):
    """One delivery attempt of a message to a handler."""

    subject: str
    payload: M
    message_id: str
    attempt: int


Handler = Callable[[Delivery[M]], Awaitable[None]]


class DeadLetter(BaseModel):
    subject: str
    durable: str
    message_id: str
    reason: str
    attempts: int
    data: str
    failed_at: dt.datetime
    # Letters written before binary payloads existed have no field: their data is UTF-8 text.
    encoding: Literal["utf-8", "base64"] = "utf-8"

    def raw(self) -> bytes:
        """The bytes that failed, as they were published (to publish them again once fixed).

        Letters without `encoding` had what was not UTF-8 replaced by U+FFFD: those bytes are lost.
        """
        if self.encoding == "base64":
            return base64.b64decode(self.data, validate=True)
        return self.data.encode("utf-8")


DEAD_LETTERS: Subject[DeadLetter] = Subject("deadletter", DeadLetter)


class BusError(Exception):
    """The bus could not do what was asked (connection, configuration)."""


class Subscription(ABC):
    @abstractmethod
    async def stop(self) -> None:
        """Stop consuming. Messages taken but not acked are delivered again later."""


class Bus(ABC):
    """The interface every bus implementation keeps."""

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def ping(self) -> None:
        """Raise BusError when the bus cannot be reached."""

    @abstractmethod
    async def publish_bytes(self, subject_name: str, data: bytes, *, message_id: str | None = None) -> None:
        """Publish raw bytes (used by `publish`, and by ingest paths that forward what they received)."""

    @abstractmethod
    async def subscribe(
        self,
        subject: Subject[M],
        handler: Handler[M],
        *,
        durable: str,
        max_deliver: int = 5,
        retry_delay: float = 0.5,
    ) -> Subscription: ...

    async def publish(self, subject: Subject[M], payload: M, *, message_id: str | None = None) -> None:
        if not isinstance(payload, subject.model):
            raise TypeError(f"subject {subject.name} carries {subject.model.__name__}, not {type(payload).__name__}")
        await self.publish_bytes(subject.name, subject.encode(payload), message_id=message_id)


def dead_letter(subject: str, durable: str, message_id: str, reason: str, attempts: int, data: bytes) -> DeadLetter:
    encoding: Literal["utf-8", "base64"] = "utf-8"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:  # a binary frame, or garbage: kept whole so it can be published again
        text, encoding = base64.b64encode(data).decode("ascii"), "base64"
    return DeadLetter(
        subject=subject,
        durable=durable,
        message_id=message_id,
        reason=reason,
        attempts=attempts,
        data=text,
        encoding=encoding,
        failed_at=dt.datetime.now(dt.UTC),
    )


def describe_failure(err: BaseException) -> str:
    if isinstance(err, ValidationError):
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "payload"
        return f"malformed payload: {loc}: {first['msg']}"
    return f"{type(err).__name__}: {err}"


def describe_malformed(err: BaseException) -> str:
    """The reason a payload that did not decode is dead-lettered."""
    if isinstance(err, ValidationError):
        return describe_failure(err)
    if isinstance(err, ValueError):
        return f"malformed payload: {err}"
    return f"malformed payload: {type(err).__name__}: {err}"


# --- in-process implementation ---------------------------------------------------------------


@dataclass(slots=True)
class _Message:
    message_id: str
    data: bytes
    attempt: int = 0


@dataclass
class _Durable:
    name: str
    subject: str
    queue: asyncio.Queue[_Message] = field(default_factory=asyncio.Queue)
    consumers: int = 0


class _MemorySubscription(Subscription):
    def __init__(self, bus: MemoryBus, durable: _Durable, task: asyncio.Task[None]) -> None:
        self._bus = bus
        self._durable = durable
        self._task = task

    async def stop(self) -> None:
        if self._bus.forget(self):
            self._durable.consumers -= 1
        if self._task.done():
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class MemoryBus(Bus):
    """In-process bus with the same delivery contract as JetStream, minus persistence."""

    def __init__(self, *, dead_letter_history: int = 1000, dedupe_window: int = 10_000) -> None:
        self._durables: dict[tuple[str, str], _Durable] = {}
        self._subscriptions: set[_MemorySubscription] = set()
        self._closed = False
        self.dead_letters: deque[DeadLetter] = deque(maxlen=dead_letter_history)
        # Like JetStream's duplicate window: a message id seen recently is not delivered twice.
        self._recent_ids: dict[str, None] = {}
        self._dedupe_window = dedupe_window

    async def start(self) -> None:
        self._closed = False

    async def close(self) -> None:
        self._closed = True
        for subscription in list(self._subscriptions):
            await subscription.stop()

    def forget(self, subscription: _MemorySubscription) -> bool:
        if subscription in self._subscriptions:
            self._subscriptions.discard(subscription)
            return True
        return False

    async def ping(self) -> None:
        if self._closed:
            raise BusError("bus is closed")

    async def publish_bytes(self, subject_name: str, data: bytes, *, message_id: str | None = None) -> None:
        if self._closed:
            raise BusError("bus is closed")
        if message_id is not None:
            if message_id in self._recent_ids:
                return
            self._recent_ids[message_id] = None
            if len(self._recent_ids) > self._dedupe_window:
                del self._recent_ids[next(iter(self._recent_ids))]
        msg_id = message_id or uuid.uuid4().hex
        for (subject, _), durable in self._durables.items():
            if subject == subject_name:
                durable.queue.put_nowait(_Message(msg_id, data))

    async def subscribe(
        self,
        subject: Subject[M],
        handler: Handler[M],
        *,
        durable: str,
        max_deliver: int = 5,
        retry_delay: float = 0.5,
    ) -> Subscription:
        key = (subject.name, durable)
        state = self._durables.get(key)
        if state is None:
            state = self._durables[key] = _Durable(durable, subject.name)
        state.consumers += 1
        task = asyncio.create_task(
            self._consume(subject, handler, state, max_deliver, retry_delay), name=f"bus:{subject.name}:{durable}"
        )
        subscription = _MemorySubscription(self, state, task)
        self._subscriptions.add(subscription)
        return subscription

    async def _consume(
        self, subject: Subject[M], handler: Handler[M], state: _Durable, max_deliver: int, retry_delay: float
    ) -> None:
        while True:
            message = await state.queue.get()
            try:
                await self._handle(subject, handler, state, message, max_deliver, retry_delay)
            except asyncio.CancelledError:
                # Taken but not acked: give it back for the next consumer of this durable.
                state.queue.put_nowait(message)
                raise
            except Exception:
                logger.exception("bus consumer %s/%s failed on %s", subject.name, state.name, message.message_id)

    async def _handle(
        self,
        subject: Subject[M],
        handler: Handler[M],
        state: _Durable,
        message: _Message,
        max_deliver: int,
        retry_delay: float,
    ) -> None:
        message.attempt += 1
        try:
            payload = subject.decode(message.data)
        except Exception as err:  # noqa: BLE001 - decoding is pure: a retry would fail the same way
            await self._dead_letter(state, message, describe_malformed(err))
            return
        try:
            await handler(Delivery(subject.name, payload, message.message_id, message.attempt))
        except asyncio.CancelledError:
            raise
        except Exception as err:  # noqa: BLE001 - any handler failure means redelivery
            logger.warning("handler for %s/%s failed (attempt %d): %s", subject.name, state.name, message.attempt, err)
            if message.attempt >= max_deliver:
                await self._dead_letter(state, message, describe_failure(err))
                return
            loop = asyncio.get_running_loop()
            loop.call_later(retry_delay, state.queue.put_nowait, message)

    async def _dead_letter(self, state: _Durable, message: _Message, reason: str) -> None:
        letter = dead_letter(state.subject, state.name, message.message_id, reason, message.attempt, message.data)
        self.dead_letters.append(letter)
        logger.error("dead-lettered %s on %s/%s: %s", message.message_id, state.subject, state.name, reason)
        if state.subject != DEAD_LETTERS.name and not self._closed:
            await self.publish(DEAD_LETTERS, letter)


def create_bus(url: str, **options: Any) -> Bus:
    """The bus named by settings: `memory` or a NATS URL."""
    if url == "memory":
        return MemoryBus()
    from iip.kernel.bus_nats import NatsBus

    return NatsBus(url, **options)
