"""MQTT ingest: one persistent subscriber that decodes device messages and batches them onto the bus.

Subscriptions (QoS 1): `iip/+/+/telemetry` and `v1/devices/me/telemetry` (JSON, `codecs.mqtt_json`),
and `spBv1.0/#` when a Sparkplug host application is given (its outcomes' `publish` items, such as
rebirth requests, are published for it, and its STATE birth and will are used for the connection).

The session is persistent (MQTT 3.1.1, clean session off, the configured client id), so a broker
keeps QoS 1 messages for the platform while it is away, and the client reconnects forever with
capped exponential backoff. Messages are acknowledged once decoded into the batcher, which
publishes within `batch_max_ms`; a crash of the process can lose that window, a broker restart
loses nothing. A message that cannot be decoded is filed as a dead letter; nothing stops the loop.

Throughput: the connection is `receiver.MqttReceiver`, an asyncio protocol that parses every
PUBLISH of a read in one loop and acknowledges them with one write (ADR 0016); messages reach
`_on_messages` a read at a time and are decoded into the batcher there, before their PUBACKs go out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol
from urllib.parse import unquote, urlsplit

from iip.devices.codecs.mqtt_json import THINGSBOARD_TOPIC, TOPIC_FILTER, decode_message, rejection
from iip.devices.directory import DeadLetterSink, DeviceDirectory, IngestOutcome
from iip.devices.ingest.batcher import IngestBatcher, IngestStats
from iip.devices.ingest.receiver import Message, MqttError, MqttReceiver, Will, open_receiver
from iip.kernel.bus import Bus
from iip.kernel.settings import DevicesSettings, SettingsError

if TYPE_CHECKING:
    from iip.kernel.runtime import Runtime

logger = logging.getLogger(__name__)

SPARKPLUG_PREFIX = "spBv1.0/"
SPARKPLUG_FILTER = "spBv1.0/#"
SERVICE_KEY = "devices.mqtt_ingest"  # key of the running ingest in `Runtime.services`
KEEPALIVE_S = 30
GOODBYE_TIMEOUT_S = 2.0  # how long `stop` waits for the broker to take the STATE death


class HostApplication(Protocol):
    """A Sparkplug B host application, as MQTT ingest drives it."""

    def on_message(self, topic: str, payload: bytes) -> IngestOutcome: ...

    def state_topic(self) -> str: ...

    def online_payload(self) -> bytes: ...

    def offline_payload(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        """`mqtt://[user:password@]host[:port]` (`mqtts://` for TLS); a bad URL is a settings error."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as err:
            raise SettingsError(f"invalid settings: IIP_DEVICES__MQTT_URL: {err}") from None
        if parts.scheme not in {"mqtt", "mqtts", "tcp", "ssl"} or not parts.hostname:
            raise SettingsError(
                "invalid settings: IIP_DEVICES__MQTT_URL: must look like mqtt://[user:password@]host:port "
                "(mqtts:// for TLS)"
            )
        tls = parts.scheme in {"mqtts", "ssl"}
        return cls(
            host=parts.hostname,
            port=port or (8883 if tls else 1883),
            username=unquote(parts.username) if parts.username is not None else None,
            password=unquote(parts.password) if parts.password is not None else None,
            tls=tls,
        )


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class MqttIngest:
    """Subscribes to device topics on `settings.mqtt_url` and feeds the bus; see the module docstring."""

    def __init__(
        self,
        settings: DevicesSettings,
        bus: Bus,
        directory: DeviceDirectory,
        dead_letters: DeadLetterSink,
        sparkplug_host: HostApplication | None = None,
        *,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        keepalive_s: int = KEEPALIVE_S,
        blocking_sink: bool = True,
        now_ms: Callable[[], int] = _wall_ms,
    ) -> None:
        self.address = BrokerAddress.parse(settings.mqtt_url)
        self._client_id = settings.mqtt_client_id
        self._directory = directory
        self._host = sparkplug_host
        self._max_future_ms = settings.max_future_skew_s * 1000
        self._now_ms = now_ms
        self._reconnect = (reconnect_min_s, reconnect_max_s)
        self._keepalive_s = keepalive_s
        self.batcher = IngestBatcher.from_settings(settings, bus, dead_letters, blocking_sink=blocking_sink)
        self._connected = asyncio.Event()
        self.receiver: MqttReceiver | None = None  # the current connection, once CONNACK came
        self._task: asyncio.Task[None] | None = None
        self.connections = 0  # successful connections so far

    @property
    def client_id(self) -> str:
        return self._client_id

    @property
    def stats(self) -> IngestStats:
        return self.batcher.stats

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def topics(self) -> tuple[str, ...]:
        base = (TOPIC_FILTER, THINGSBOARD_TOPIC)
        return (*base, SPARKPLUG_FILTER) if self._host is not None else base

    async def start(self) -> None:
        """Start the batcher and the connection loop; returns at once (the broker may still be down)."""
        if self._task is not None:
            return
        await self.batcher.start()
        self._task = asyncio.create_task(self._run(), name="iip-mqtt-ingest")

    async def wait_connected(self, within_s: float) -> None:
        """Wait until connected and subscribed; TimeoutError after `within_s` seconds."""
        await asyncio.wait_for(self._connected.wait(), within_s)

    async def stop(self) -> None:
        """Say goodbye (Sparkplug STATE offline), disconnect cleanly, publish what is batched."""
        if self._task is None:
            return
        receiver = self.receiver
        if receiver is not None and self._host is not None and self.connected:
            goodbye = receiver.publish(self._host.state_topic(), self._host.offline_payload(), qos=1, retain=True)
            with contextlib.suppress(MqttError, TimeoutError):
                await asyncio.wait_for(goodbye, GOODBYE_TIMEOUT_S)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        await self.batcher.stop()

    async def _run(self) -> None:
        delay = self._reconnect[0]
        while True:
            connections = self.connections
            try:
                await self._session()
            except (MqttError, OSError, TimeoutError) as err:
                logger.warning(
                    "MQTT connection to %s:%d lost or refused (%s)",
                    self.address.host,
                    self.address.port,
                    str(err) or type(err).__name__,
                )
            except Exception:  # anything else: log it, and keep trying as for a lost connection
                logger.exception("MQTT ingest failed; reconnecting")
            finally:
                self._connected.clear()
                self.receiver = None
            if self.connections > connections:  # it was up: start the backoff over
                delay = self._reconnect[0]
            await asyncio.sleep(delay * (0.75 + random.random() / 2))  # noqa: S311 - jitter, not crypto
            delay = min(delay * 2, self._reconnect[1])

    async def _session(self) -> None:
        """One connection: subscribe, announce, then run until the broker goes away."""
        host = self._host
        address = self.address
        receiver, _session_present = await open_receiver(
            address.host,
            address.port,
            self._on_messages,
            client_id=self._client_id,
            clean_session=False,
            keepalive_s=self._keepalive_s,
            username=address.username,
            password=address.password,
            will=Will(host.state_topic(), host.offline_payload()) if host is not None else None,
            tls=ssl.create_default_context() if address.tls else None,
        )
        try:
            self.receiver = receiver  # a persistent session's queue may arrive before the subscriptions
            codes = await receiver.subscribe([(topic, 1) for topic in self.topics])
            refused = [t for t, code in zip(self.topics, codes, strict=False) if code >= 0x80]
            if refused:
                logger.error("the MQTT broker refused subscriptions to %s", ", ".join(refused))
            if host is not None:
                await receiver.publish(host.state_topic(), host.online_payload(), qos=1, retain=True)
            self.connections += 1
            self._connected.set()
            logger.info("MQTT ingest connected to %s:%d as %s", address.host, address.port, self._client_id)
            await receiver.wait_closed()
        finally:
            receiver.disconnect()

    # --- the per-message path ------------------------------------------------------------------

    def _on_messages(self, messages: list[Message]) -> None:
        """Decode one read's messages into the batcher; never raises (their PUBACKs follow)."""
        now_ms = self._now_ms()
        directory = self._directory
        max_future_ms = self._max_future_ms
        add = self.batcher.add
        for topic, payload in messages:
            try:
                if topic.startswith(SPARKPLUG_PREFIX):
                    self._on_sparkplug(topic, payload)
                    continue
                outcome = decode_message(topic, payload, directory, now_ms=now_ms, max_future_ms=max_future_ms)
                add(outcome, source="mqtt", topic=topic, raw=payload)
            except Exception as err:  # noqa: BLE001 - logged with its traceback in _failed
                self._failed(err, "mqtt", topic, payload)

    def _on_sparkplug(self, topic: str, payload: bytes) -> None:
        try:
            if self._host is None:
                outcome = rejection("no Sparkplug host application runs here")
            else:
                outcome = self._host.on_message(topic, payload)
                if outcome.publish:
                    self._send(outcome)
            self.batcher.add(outcome, source="sparkplug", topic=topic, raw=payload)
        except Exception as err:  # noqa: BLE001 - logged with its traceback in _failed
            self._failed(err, "sparkplug", topic, payload)

    def _failed(self, err: Exception, source: str, topic: str, payload: bytes) -> None:
        """File a message the code failed on as a dead letter, so one bad message stops nothing."""
        logger.exception("ingest failed on a message on %r", topic)
        with contextlib.suppress(Exception):
            failed = rejection(f"ingest failed on this message: {type(err).__name__}: {err}")
            self.batcher.add(failed, source=source, topic=topic, raw=payload)

    def _send(self, outcome: IngestOutcome) -> None:
        receiver = self.receiver
        if receiver is None or not receiver.connected:
            logger.warning("not connected: %d Sparkplug messages not sent", len(outcome.publish))
            return
        for topic, payload, qos, retain in outcome.publish:
            sent = receiver.publish(topic, payload, qos=qos, retain=retain)
            sent.add_done_callback(_log_unsent(topic))


def _log_unsent(topic: str) -> Callable[[asyncio.Future[None]], None]:
    def done(sent: asyncio.Future[None]) -> None:
        if not sent.cancelled() and (err := sent.exception()) is not None:
            logger.warning("could not publish to %s: %s", topic, err)

    return done


BROKER_SERVICE = "devices.embedded_broker"


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def ingest_lifespan(
    runtime: Runtime,
    directory: DeviceDirectory,
    dead_letters: DeadLetterSink,
    host: HostApplication | None = None,
    *,
    blocking_sink: bool = True,
) -> AsyncIterator[MqttIngest]:
    """Run MQTT ingest for the process; with no `mqtt_url` configured, on an embedded broker.

    `blocking_sink=False` when `dead_letters.record` never waits (it is then called in the loop).
    """
    settings = runtime.settings.devices
    async with contextlib.AsyncExitStack() as stack:
        if not settings.mqtt_url:
            # Imported only here: the broker library takes about a second to import.
            from iip.devices.ingest.broker import EmbeddedBroker

            port = settings.embedded_broker_port
            if "embedded_broker_port" not in settings.model_fields_set and not _port_free(port):
                # The default port is taken (often by a broker installed on the machine): do not fail
                # `make run` over it, listen elsewhere and say where.
                port = free_port()
                logger.warning(
                    "port %d is taken: the embedded MQTT broker listens on %d instead",
                    settings.embedded_broker_port,
                    port,
                )
            broker = await stack.enter_async_context(
                EmbeddedBroker(port, directory, platform_client_id=settings.mqtt_client_id)
            )
            runtime.services[BROKER_SERVICE] = broker
            stack.callback(runtime.services.pop, BROKER_SERVICE, None)
            settings = settings.model_copy(update={"mqtt_url": broker.platform_url})
        ingest = MqttIngest(settings, runtime.bus, directory, dead_letters, host, blocking_sink=blocking_sink)
        await ingest.start()
        stack.push_async_callback(ingest.stop)
        runtime.services[SERVICE_KEY] = ingest
        try:
            yield ingest
        finally:
            runtime.services.pop(SERVICE_KEY, None)
