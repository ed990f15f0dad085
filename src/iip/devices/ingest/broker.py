"""The embedded MQTT broker (amqtt, MQTT 3.1.1) `iip run` starts when no broker is configured.

It listens on 127.0.0.1 only and knows who publishes, which an external broker does not tell its
subscribers. That is what makes ThingsBoard's topic usable: a device connects with its access token
as MQTT username (ThingsBoard's convention, password empty) and publishes to
`v1/devices/me/telemetry`; the broker drops that message and republishes the payload, unchanged,
to `iip/{tenant id}/{device}/telemetry` of the device the token belongs to, where MQTT ingest
takes it like any other. On an external broker devices publish to the `iip/...` topic directly,
with either payload shape.

Who may connect:
* the platform, with the user name and the random password generated per start (`platform_url`);
  no one else may use the platform's client id, which holds its persistent session;
* a device, with its access token as user name (checked against the directory on every message,
  so a revoked token stops working at once); it may publish and subscribe only under
  `v1/devices/me/` and its own `iip/{tenant}/{device}/`;
* anyone without a user name, when `allow_anonymous` (the default: the listener is local). An
  anonymous message on ThingsBoard's topic reaches ingest as is and is filed as a dead letter,
  since it names no device.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import quote

from amqtt.broker import Broker  # type: ignore[import-untyped]
from amqtt.contexts import Action  # type: ignore[import-untyped]
from amqtt.errors import BrokerError  # type: ignore[import-untyped]
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin  # type: ignore[import-untyped]

from iip.devices.codecs.mqtt_json import THINGSBOARD_TOPIC, telemetry_topic
from iip.devices.directory import DeviceDirectory, KnownDevice
from iip.kernel.errors import Unavailable

logger = logging.getLogger(__name__)

PLATFORM_USERNAME = "iip-platform"
THINGSBOARD_PREFIX = "v1/devices/me/"
SESSION_EXPIRY_S = 86_400  # an absent client's persistent session (and its queue) is dropped after this
_ROLE = "iip.role"  # key in amqtt's per-session attributes
_PLATFORM = "platform"
_DEVICE = "device"


class DeviceTokenPlugin(BaseAuthPlugin, BaseTopicPlugin):  # type: ignore[misc]
    """Authentication, topic rights and the ThingsBoard topic rewrite (see the module docstring)."""

    @dataclass
    class Config:
        directory: Any = None  # a DeviceDirectory; Any because amqtt builds this from a dict
        platform_username: str = PLATFORM_USERNAME
        platform_password: str = ""
        platform_client_id: str = ""
        allow_anonymous: bool = True

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        config = self.context.config
        self._directory: DeviceDirectory | None = config.directory
        self._platform_username: str = config.platform_username
        self._platform_password: str = config.platform_password
        self._platform_client_id: str = config.platform_client_id
        self._allow_anonymous: bool = config.allow_anonymous

    async def authenticate(self, *, session: Any) -> bool:
        username: str | None = session.username
        if username == self._platform_username:
            password = session.password or ""
            if self._platform_password and hmac.compare_digest(password.encode(), self._platform_password.encode()):
                session.attributes[_ROLE] = _PLATFORM
                return True
            return False
        if self._platform_client_id and session.client_id == self._platform_client_id:
            return False  # the platform's persistent session is the platform's alone
        if not username:
            session.attributes[_ROLE] = None
            return self._allow_anonymous
        if self._device(username) is None:
            return False
        session.attributes[_ROLE] = _DEVICE
        return True

    async def topic_filtering(self, *, session: Any = None, topic: str | None = None, action: Any = None) -> bool:
        if action is Action.RECEIVE or session is None or topic is None:
            return True
        role = session.attributes.get(_ROLE)
        if role == _PLATFORM:
            return True
        if role != _DEVICE:
            return self._allow_anonymous
        if action is Action.PUBLISH and topic == THINGSBOARD_TOPIC:
            return False  # republished under the device's own topic by `on_broker_message_received`
        if topic.startswith(THINGSBOARD_PREFIX):
            return True
        device = self._device(session.username)
        return device is not None and self._owns(device, topic)

    async def on_broker_message_received(self, *, client_id: str, message: Any) -> None:
        if message is None or message.topic != THINGSBOARD_TOPIC:
            return
        try:
            session = self.context.get_session(client_id)
            if session is not None:
                await self._republish(session, message)
        except Exception:
            logger.exception("could not republish a ThingsBoard message of client %s", client_id)

    async def on_broker_client_disconnected(self, *, client_id: str, client_session: Any) -> None:
        """Pass on what the client published and amqtt acknowledged but had not passed on yet.

        amqtt 0.12 stops a client's delivery loop when the client disconnects, leaving its
        acknowledged QoS 1 messages behind: a device that publishes and disconnects at once would
        lose its last messages. (The one amqtt is passing on at that moment may end up after them;
        points carry their own timestamps, so that order does not matter to the store.)
        """
        queue = client_session.delivered_message_queue
        try:
            while not queue.empty():
                message = queue.get_nowait()
                if message is not None:
                    await self._pass_on(client_session, message)
        except Exception:
            logger.exception("could not pass on the last messages of client %s", client_id)

    async def _pass_on(self, session: Any, message: Any) -> None:
        topic: str = message.topic
        if not topic or "#" in topic or "+" in topic or topic.startswith("$"):
            return
        if topic == THINGSBOARD_TOPIC and session.attributes.get(_ROLE) == _DEVICE:
            await self._republish(session, message)
            return
        if not await self.topic_filtering(session=session, topic=topic, action=Action.PUBLISH):
            return
        data = bytes(message.data)
        await self.context.broadcast_message(topic, data)
        if message.publish_packet is not None and message.publish_packet.retain_flag:
            await self.context.retain_message(topic, data, message.qos)

    async def _republish(self, session: Any, message: Any) -> None:
        """A device's ThingsBoard message, under the device's own topic."""
        if session.attributes.get(_ROLE) != _DEVICE:
            return  # anonymous: passed on as is, to be filed as naming no device
        device = self._device(session.username)
        if device is None:
            logger.warning("dropped a message of client %s: its access token is no longer valid", session.client_id)
            return
        await self.context.broadcast_message(telemetry_topic(device.tenant_id, device.key), bytes(message.data))

    def _device(self, token: str | None) -> KnownDevice | None:
        if not token or self._directory is None:
            return None
        return self._directory.by_token(token)

    def _owns(self, device: KnownDevice, topic: str) -> bool:
        """Whether `topic` (or topic filter) lies under the device's own `iip/{tenant}/{device}/`."""
        parts = topic.split("/", 3)
        if len(parts) < 4 or parts[0] != "iip" or parts[2] != device.key:
            return False
        if parts[1] == device.tenant_id:
            return True
        named = self._directory.by_name(parts[1], parts[2]) if self._directory is not None else None
        return named is not None and named.tenant_id == device.tenant_id and named.key == device.key


class _Broker(Broker):  # type: ignore[misc]
    """amqtt's broker, closing every client connection it is done with (it leaves some open)."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self._writers: set[asyncio.StreamWriter] = set()

    async def stream_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
    ) -> None:
        self._writers.add(writer)
        try:
            await super().stream_connected(reader, writer, listener_name)
        finally:
            self._writers.discard(writer)
            writer.close()

    async def shutdown(self) -> None:
        await super().shutdown()
        for writer in list(self._writers):
            writer.close()


class EmbeddedBroker:
    """An amqtt broker on `host:port`, as an async context manager."""

    def __init__(
        self,
        port: int,
        directory: DeviceDirectory | None = None,
        *,
        host: str = "127.0.0.1",
        allow_anonymous: bool = True,
        platform_client_id: str = "",
    ) -> None:
        self.host = host
        self.port = port
        self.platform_username = PLATFORM_USERNAME
        self.platform_password = secrets.token_urlsafe(24)
        self._config: dict[str, Any] = {
            "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
            "session_expiry_interval": SESSION_EXPIRY_S,
            "plugins": {
                f"{__name__}.{DeviceTokenPlugin.__name__}": {
                    "directory": directory,
                    "platform_username": self.platform_username,
                    "platform_password": self.platform_password,
                    "platform_client_id": platform_client_id,
                    "allow_anonymous": allow_anonymous,
                }
            },
        }
        self._broker: Any = None

    @property
    def platform_url(self) -> str:
        """Where the platform's own client connects, with its credentials."""
        user = quote(self.platform_username, safe="")
        password = quote(self.platform_password, safe="")
        return f"mqtt://{user}:{password}@{self.host}:{self.port}"

    def connected_clients(self) -> set[str]:
        """Client ids of the sessions connected now."""
        if self._broker is None:
            return set()
        return {
            client_id
            for client_id, (session, _) in self._broker.sessions.items()
            if session.transitions.state == "connected"
        }

    async def start(self) -> None:
        if self._broker is not None:
            return
        amqtt_logger = logging.getLogger("amqtt")
        if amqtt_logger.level == logging.NOTSET:
            amqtt_logger.setLevel(logging.WARNING)  # amqtt logs every connection and refusal at INFO
        transitions_logger = logging.getLogger("transitions")  # amqtt's state machine, chatty at INFO
        if transitions_logger.level == logging.NOTSET:
            transitions_logger.setLevel(logging.WARNING)
        broker = _Broker(self._config)
        try:
            await broker.start()
        except BrokerError as err:
            raise Unavailable(
                f"the embedded MQTT broker cannot listen on {self.host}:{self.port} ({err.__cause__ or err}); "
                "set IIP_DEVICES__EMBEDDED_BROKER_PORT, or IIP_DEVICES__MQTT_URL for an external broker",
                code="mqtt_broker_unavailable",
            ) from err
        self._broker = broker
        logger.info("embedded MQTT broker listening on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        broker, self._broker = self._broker, None
        if broker is not None:
            with contextlib.suppress(BrokerError):
                await broker.shutdown()

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
