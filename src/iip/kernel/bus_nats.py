"""NATS JetStream implementation of the event bus (see `iip.kernel.bus` for the contract).

Layout on the server:

* one stream (`stream`, default ``IIP``, file storage) holding every subject under the prefix
  (``iip.>``); the wire subject of `Subject("a.b", ...)` is ``iip.a.b``;
* one durable pull consumer per (subject, durable) pair, explicit acks, deliver policy NEW when
  first created. Its NATS name is derived from both, so two subjects may use the same durable
  name without sharing a consumer. Subscribers on the same pair share the work.

Redelivery and dead-lettering are driven by the client: a failed handler naks with
`retry_delay`; at `max_deliver` attempts the message is published to `DEAD_LETTERS` and acked.
The server's own `max_deliver` is set a little higher as a safety net: a message that reaches the
server's last delivery (its earlier deliveries were never settled, e.g. the worker crashed on it
each time) is dead-lettered without calling the handler again, so nothing stalls silently in the
consumer. While a handler
runs, the message is kept alive with in-progress acks, so `ack_wait` only matters when a worker
dies (or hangs the event loop) with a message in hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from typing import Any, Generic
from urllib.parse import urlsplit, urlunsplit

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js import api as js_api

from iip.kernel.bus import (
    DEAD_LETTERS,
    SUBJECT_PREFIX,
    Bus,
    BusError,
    Delivery,
    Handler,
    M,
    Subject,
    Subscription,
    dead_letter,
    describe_failure,
    describe_malformed,
)

logger = logging.getLogger(__name__)

MSG_ID_HEADER = "Nats-Msg-Id"
# Server-side max_deliver = ours + this: we dead-letter first; the server bound is a safety net.
_SERVER_MAX_DELIVER_MARGIN = 2
_FETCH_TIMEOUT = 5.0
_ERROR_BACKOFF = 1.0
_CONSUMER_NAME_MAX = 48
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]")

# Errors the client library raises for a request that did not go through.
_NATS_ERRORS: tuple[type[BaseException], ...] = (nats.errors.Error, asyncio.TimeoutError, OSError)


def redact_url(url: str) -> str:
    """The URL without its password (for messages and logs)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


def consumer_name(subject_name: str, durable: str) -> str:
    """A NATS-safe consumer name unique per (subject, durable): readable part plus a digest of both."""
    readable = _UNSAFE_NAME_CHARS.sub("_", f"{subject_name}__{durable}")[:_CONSUMER_NAME_MAX]
    digest = hashlib.sha256(f"{subject_name}\0{durable}".encode()).hexdigest()[:12]
    return f"{readable}_{digest}"


def _describe(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


class NatsBus(Bus):
    """Event bus on NATS JetStream: durable stream, durable pull consumers, explicit acks."""

    def __init__(
        self,
        url: str,
        *,
        stream: str = "IIP",
        ack_wait: float = 30.0,
        connect_timeout: float = 5.0,
        subject_prefix: str = SUBJECT_PREFIX,
    ) -> None:
        if not subject_prefix.endswith(".") or subject_prefix == ".":
            raise ValueError(f"subject_prefix must be a non-empty subject token ending in '.', not {subject_prefix!r}")
        if ack_wait <= 0:
            raise ValueError("ack_wait must be positive")
        self.url = url
        self.stream = stream
        self.ack_wait = ack_wait
        self.connect_timeout = connect_timeout
        self.subject_prefix = subject_prefix
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._subscriptions: set[_NatsSubscription[Any]] = set()
        self._closing = False

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            return  # started (and reconnecting by itself if the link dropped)
        self._closing = False
        nc = await self._connect()
        try:
            js = nc.jetstream()
            await self._ensure_stream(js)
        except BaseException:
            with contextlib.suppress(Exception):
                await nc.close()
            raise
        self._nc, self._js = nc, js

    async def _connect(self) -> NatsClient:
        where = redact_url(self.url)
        nc = NatsClient()
        first_error: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
        connected = False

        async def on_error(err: Exception) -> None:
            if not connected:
                if not first_error.done():
                    first_error.set_result(err)
                return
            logger.warning("NATS at %s: %s", where, _describe(err))

        async def on_disconnected() -> None:
            if connected and not self._closing:
                logger.warning("disconnected from NATS at %s", where)

        async def on_reconnected() -> None:
            logger.info("reconnected to NATS at %s", where)

        connect = asyncio.create_task(
            nc.connect(
                servers=[self.url],
                connect_timeout=self.connect_timeout,  # type: ignore[arg-type]  # typed int, float works
                error_cb=on_error,
                disconnected_cb=on_disconnected,
                reconnected_cb=on_reconnected,
                max_reconnect_attempts=-1,
            ),
            name=f"nats-connect:{where}",
        )
        waiters: set[asyncio.Future[Any]] = {connect, first_error}
        try:
            done, _ = await asyncio.wait(waiters, timeout=self.connect_timeout, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            connect.cancel()
            raise
        if connect in done and connect.exception() is None:
            connected = True
            return nc
        # Failed, or still retrying: stop it and report the first reason we saw.
        connect.cancel()
        with contextlib.suppress(BaseException):
            await connect
        with contextlib.suppress(Exception):
            await nc.close()
        if connect.done() and not connect.cancelled() and connect.exception() is not None:
            reason = _describe(connect.exception())  # type: ignore[arg-type]
        elif first_error.done():
            reason = _describe(first_error.result())
        else:
            reason = f"no answer within {self.connect_timeout:g} s"
        raise BusError(f"cannot reach NATS at {where}: {reason}")

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        wanted = self.subject_prefix + ">"
        try:
            try:
                info = await js.stream_info(self.stream)
            except nats.js.errors.NotFoundError:
                await js.add_stream(
                    js_api.StreamConfig(name=self.stream, subjects=[wanted], storage=js_api.StorageType.FILE)
                )
                return
            subjects = list(info.config.subjects or [])
            if wanted not in subjects:  # keep whatever else an operator put there
                await js.update_stream(info.config.evolve(subjects=[*subjects, wanted]))
        except nats.errors.NoRespondersError as err:
            raise BusError(f"NATS at {redact_url(self.url)} has no JetStream (start nats-server with -js)") from err
        except _NATS_ERRORS as err:
            raise BusError(
                f"cannot set up stream {self.stream} on NATS at {redact_url(self.url)}: {_describe(err)}"
            ) from err

    async def close(self) -> None:
        for sub in list(self._subscriptions):
            await sub.stop()
        self._closing = True
        nc, self._nc, self._js = self._nc, None, None
        if nc is None or nc.is_closed:
            return
        try:
            await nc.drain()
        except Exception as err:  # noqa: BLE001 - closing anyway
            logger.debug("draining NATS connection failed: %s", err)
            with contextlib.suppress(Exception):
                await nc.close()

    async def ping(self) -> None:
        nc = self._nc
        if nc is None or not nc.is_connected:
            raise BusError(f"not connected to NATS at {redact_url(self.url)}")
        try:
            await nc.flush(timeout=2)
        except _NATS_ERRORS as err:
            raise BusError(f"NATS at {redact_url(self.url)} does not answer: {_describe(err)}") from err

    def _jetstream(self) -> JetStreamContext:
        if self._js is None or self._nc is None or self._nc.is_closed:
            raise BusError("bus is not started (or closed)")
        return self._js

    # --- publish / subscribe ------------------------------------------------------------------

    def wire_subject(self, subject_name: str) -> str:
        return self.subject_prefix + subject_name

    async def publish_bytes(self, subject_name: str, data: bytes, *, message_id: str | None = None) -> None:
        js = self._jetstream()
        wire = self.wire_subject(subject_name)
        headers = {MSG_ID_HEADER: message_id} if message_id else None
        try:
            await js.publish(wire, data, stream=self.stream, headers=headers)
        except _NATS_ERRORS as err:
            raise BusError(f"cannot publish to {wire}: {_describe(err)}") from err

    async def subscribe(
        self,
        subject: Subject[M],
        handler: Handler[M],
        *,
        durable: str,
        max_deliver: int = 5,
        retry_delay: float = 0.5,
    ) -> Subscription:
        if max_deliver < 1:
            raise ValueError("max_deliver must be at least 1")
        js = self._jetstream()
        name = consumer_name(subject.name, durable)
        try:
            server_max_deliver = await self._ensure_consumer(js, name, self.wire_subject(subject.name), max_deliver)
            psub = await js.pull_subscribe_bind(consumer=name, stream=self.stream)
        except _NATS_ERRORS as err:
            raise BusError(f"cannot subscribe {durable} to {subject.name}: {_describe(err)}") from err
        sub = _NatsSubscription(
            self,
            subject,
            handler,
            durable=durable,
            consumer=name,
            psub=psub,
            max_deliver=max_deliver,
            server_max_deliver=server_max_deliver,
            retry_delay=retry_delay,
        )
        self._subscriptions.add(sub)
        sub.begin()
        return sub

    async def _ensure_consumer(self, js: JetStreamContext, name: str, wire: str, max_deliver: int) -> int | None:
        """Create or resume the consumer; returns the server's max_deliver in force (None: unlimited)."""
        server_max_deliver = max_deliver + _SERVER_MAX_DELIVER_MARGIN
        try:
            info: js_api.ConsumerInfo = await js.consumer_info(self.stream, name)
        except nats.js.errors.NotFoundError:
            config = js_api.ConsumerConfig(
                name=name,
                durable_name=name,
                deliver_policy=js_api.DeliverPolicy.NEW,
                ack_policy=js_api.AckPolicy.EXPLICIT,
                ack_wait=self.ack_wait,
                max_deliver=server_max_deliver,
                filter_subject=wire,
            )
            await js.add_consumer(self.stream, config)
            return server_max_deliver
        current = info.config
        if current.filter_subject != wire:
            raise BusError(f"consumer {name} exists with filter {current.filter_subject!r}, expected {wire!r}")
        if current.ack_wait != self.ack_wait or current.max_deliver != server_max_deliver:
            # Resumed with other settings: editable fields are updated in place.
            # (Servers before 2.10 keep max_deliver unchanged: we read back what is in force.)
            info = await js.add_consumer(
                self.stream, current.evolve(ack_wait=self.ack_wait, max_deliver=server_max_deliver)
            )
        in_force = info.config.max_deliver
        if in_force is None or in_force <= 0:
            return None
        if in_force <= max_deliver:
            logger.warning(
                "consumer %s keeps max_deliver=%d on the server; dead-lettering after %d attempts instead of %d",
                name,
                in_force,
                in_force - 1,
                max_deliver,
            )
        return in_force

    def _forget(self, sub: _NatsSubscription[Any]) -> None:
        self._subscriptions.discard(sub)


class _NatsSubscription(Subscription, Generic[M]):
    """One pull subscription and the task that fetches from it and runs the handler."""

    def __init__(
        self,
        bus: NatsBus,
        subject: Subject[M],
        handler: Handler[M],
        *,
        durable: str,
        consumer: str,
        psub: JetStreamContext.PullSubscription,
        max_deliver: int,
        server_max_deliver: int | None,
        retry_delay: float,
    ) -> None:
        self._bus = bus
        self._subject = subject
        self._handler = handler
        self._durable = durable
        self._consumer = consumer
        self._psub = psub
        # The server's last delivery is reserved for dead-lettering (see module docstring).
        self._final_delivery = server_max_deliver
        self._max_deliver = max_deliver if server_max_deliver is None else min(max_deliver, server_max_deliver - 1)
        self._retry_delay = retry_delay
        self._task: asyncio.Task[None] | None = None
        self._held: Msg | None = None  # taken from the server, not yet acked/naked
        self._stopped = False

    def begin(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"bus:{self._subject.name}:{self._durable}")

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        held, self._held = self._held, None
        if held is not None:
            # Taken but not settled: hand it back now rather than after ack_wait.
            with contextlib.suppress(*_NATS_ERRORS):
                await held.nak()
        with contextlib.suppress(*_NATS_ERRORS, ValueError):
            await self._psub.unsubscribe()
        self._bus._forget(self)

    async def _run(self) -> None:
        where = f"{self._subject.name}/{self._durable}"
        while True:
            try:
                msgs = await self._psub.fetch(1, timeout=_FETCH_TIMEOUT)
            except TimeoutError:  # includes nats TimeoutError / FetchTimeoutError: nothing new
                continue
            except _NATS_ERRORS as err:
                logger.warning("fetching %s failed: %s", where, _describe(err))
                await asyncio.sleep(_ERROR_BACKOFF)
                continue
            except Exception:  # keep consuming whatever the library throws
                logger.exception("fetching %s failed", where)
                await asyncio.sleep(_ERROR_BACKOFF)
                continue
            for msg in msgs:
                self._held = msg
                try:
                    await self._process(msg)
                except _NATS_ERRORS as err:
                    # Could not settle it (connection trouble): the server redelivers after ack_wait.
                    logger.warning("settling a message on %s failed: %s", where, _describe(err))
                except Exception:  # one bad message must not stop the consumer
                    logger.exception("processing a message on %s failed", where)
                self._held = None

    async def _process(self, msg: Msg) -> None:
        meta = msg.metadata
        attempt = meta.num_delivered
        message_id = (msg.headers or {}).get(MSG_ID_HEADER) or f"{meta.stream}:{meta.sequence.stream}"
        if self._final_delivery is not None and attempt >= self._final_delivery:
            reason = f"delivered {attempt} times without an outcome (worker stopped or crashed while handling it)"
            await self._dead_letter(msg, message_id, attempt, reason)
            return
        try:
            payload = self._subject.decode(msg.data)
        except Exception as err:  # noqa: BLE001 - decoding is pure: a retry would fail the same way
            await self._dead_letter(msg, message_id, attempt, describe_malformed(err))
            return
        keepalive = asyncio.create_task(self._keep_alive(msg))
        try:
            await self._handler(Delivery(self._subject.name, payload, message_id, attempt))
        except Exception as err:  # noqa: BLE001 - any handler failure means redelivery
            logger.warning("handler for %s/%s failed (attempt %d): %s", self._subject.name, self._durable, attempt, err)
            if attempt >= self._max_deliver:
                await self._dead_letter(msg, message_id, attempt, describe_failure(err))
            else:
                await msg.nak(delay=self._retry_delay)
            return
        finally:
            keepalive.cancel()
        await msg.ack()

    async def _keep_alive(self, msg: Msg) -> None:
        """Tell the server the handler is still working, so ack_wait does not expire under it."""
        interval = max(self._bus.ack_wait / 3, 0.05)
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(*_NATS_ERRORS):
                await msg.in_progress()

    async def _dead_letter(self, msg: Msg, message_id: str, attempt: int, reason: str) -> None:
        subject = self._subject.name
        letter = dead_letter(subject, self._durable, message_id, reason, attempt, msg.data)
        logger.error("dead-lettered %s on %s/%s: %s", message_id, subject, self._durable, reason)
        if subject != DEAD_LETTERS.name:
            seq = msg.metadata.sequence.stream
            try:
                # Deduplicated by id, so a crash between publish and ack does not double it.
                await self._bus.publish(DEAD_LETTERS, letter, message_id=f"deadletter:{self._consumer}:{seq}")
            except BusError as err:
                logger.error("could not publish dead letter for %s: %s", message_id, err)
                await msg.nak(delay=max(self._retry_delay, _ERROR_BACKOFF))
                return
        await msg.ack()
