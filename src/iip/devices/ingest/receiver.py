"""The MQTT 3.1.1 client MQTT ingest receives with: one asyncio protocol, every packet of a read at once.

It does what ingest needs and no more: CONNECT (client id, clean session flag, credentials, will,
TLS through the transport), SUBSCRIBE, PINGREQ keep-alive, PUBLISH received at QoS 0 and 1, and
PUBLISH sent at QoS 0 and 1 (the Sparkplug host's STATE and commands). QoS 2 is never subscribed
to, so a QoS 2 PUBLISH from the broker is a protocol violation.

Each read (at most `READ_SIZE` bytes, one per event-loop turn, so batch timers and the bus run
between reads) is parsed in one loop: every complete PUBLISH in it becomes a `(topic, payload)`
pair, the pairs go to `on_messages` in one call, and only then are their PUBACKs written, together,
in one `transport.write`. A packet split across reads waits for its remaining bytes (joined once,
when they are all there). A topic that is not UTF-8 is handed on as the `repr` of its bytes, to be
filed under what was received.

Anything the protocol does not allow (a remaining length over four bytes, a topic longer than its
packet, QoS 2 or 3, a packet a broker does not send) closes the connection with the reason, which
`wait_closed` raises as `MqttError`; messages parsed before it in the same read are handled and
acknowledged first. The owner reconnects.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

READ_SIZE = 64 * 1024  # bytes per read: a few hundred small messages, a few milliseconds of work
CONNECT_TIMEOUT_S = 10.0
MAX_PACKET_ID = 0xFFFF

CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 12, 13, 14
PUBACK_HEAD = b"\x40\x02"
PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"
CONNACK_REFUSALS = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}

Message = tuple[str, bytes]  # (topic, payload)
MessageHandler = Callable[[list[Message]], None]


class MqttError(Exception):
    """The connection was refused, lost, or closed over a protocol violation; the message says which."""


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


# --- encoding -------------------------------------------------------------------------------------


def remaining_length(length: int) -> bytes:
    """MQTT's variable-length integer: 7 bits a byte, least significant first."""
    out = bytearray()
    while True:
        length, digit = divmod(length, 128)
        out.append(digit | (0x80 if length else 0))
        if not length:
            return bytes(out)


def _string(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


def encode_connect(
    client_id: str,
    keepalive_s: int,
    *,
    clean_session: bool,
    username: str | None = None,
    password: str | None = None,
    will: Will | None = None,
) -> bytes:
    flags = 0x02 if clean_session else 0
    payload = _string(client_id.encode())
    if will is not None:
        flags |= 0x04 | (min(will.qos, 1) << 3) | (0x20 if will.retain else 0)
        payload += _string(will.topic.encode()) + _string(will.payload)
    if username is not None:
        flags |= 0x80
        payload += _string(username.encode())
    if password is not None:
        flags |= 0x40
        payload += _string(password.encode())
    body = _string(b"MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive_s) + payload
    return bytes([CONNECT << 4]) + remaining_length(len(body)) + body


def encode_subscribe(packet_id: int, filters: Sequence[tuple[str, int]]) -> bytes:
    body = struct.pack("!H", packet_id) + b"".join(_string(topic.encode()) + bytes([qos]) for topic, qos in filters)
    return bytes([SUBSCRIBE << 4 | 0x02]) + remaining_length(len(body)) + body


def encode_publish(topic: str, payload: bytes, *, qos: int, retain: bool, packet_id: int = 0) -> bytes:
    body = _string(topic.encode()) + (struct.pack("!H", packet_id) if qos else b"") + payload
    first = PUBLISH << 4 | qos << 1 | (1 if retain else 0)
    return bytes([first]) + remaining_length(len(body)) + body


# --- the protocol -----------------------------------------------------------------------------------


class MqttReceiver(asyncio.BufferedProtocol):
    """One connection to a broker; see the module docstring. Made by `open_receiver`."""

    def __init__(self, on_messages: MessageHandler, *, keepalive_s: float) -> None:
        self._on_messages = on_messages
        self._keepalive_s = keepalive_s
        self._read = bytearray(READ_SIZE)
        self._view = memoryview(self._read)
        self._parts: list[bytes] = []  # the start of a packet not yet complete
        self._have = 0  # bytes in `_parts`
        self._need = 0  # bytes `_parts` must hold before parsing is worth trying again
        self._transport: asyncio.Transport | None = None
        self._closed: asyncio.Future[None] | None = None
        self.close_reason: str | None = None
        self._connack: asyncio.Future[bool] | None = None
        self._acks: dict[int, asyncio.Future[Any]] = {}  # packet id -> SUBACK or PUBACK awaited
        self._next_id = 0
        self._wrote = False  # something was written since the last keep-alive tick
        self._ping_ticks = -1  # keep-alive ticks since an unanswered PINGREQ; -1: none outstanding
        self._keepalive: asyncio.TimerHandle | None = None
        self.reads = 0
        self.messages = 0
        self.pings = 0
        self.pongs = 0

    # --- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not isinstance(transport, asyncio.Transport):
            raise TypeError("MQTT needs a stream transport")
        self._transport = transport
        self._closed = asyncio.get_running_loop().create_future() if _loop_running() else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.close_reason is None:
            self.close_reason = f"connection lost: {exc}" if exc else "the broker closed the connection"
        self._transport = None
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None
        error = MqttError(self.close_reason)
        pending: list[asyncio.Future[Any]] = [*self._acks.values()]
        if self._connack is not None:
            pending.append(self._connack)
        self._acks.clear()
        for future in pending:
            if not future.done():
                future.set_exception(error)
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        if self.close_reason is not None:
            return  # closing: what still arrives is not read
        self.reads += 1
        data = bytes(self._view[:nbytes])
        if self._parts:
            self._parts.append(data)
            self._have += nbytes
            if self._have < self._need:
                return
            data = b"".join(self._parts)
            self._parts = []
        self._parse(data)

    def eof_received(self) -> bool | None:
        return None  # close the transport

    # --- parsing

    def _parse(self, data: bytes) -> None:  # noqa: PLR0912, PLR0915 - one loop per read, no call per message
        """Every complete packet of `data`; the rest waits in `_parts`."""
        messages: list[Message] = []
        acks = bytearray()
        end = len(data)
        pos = 0
        problem: str | None = None
        self._need = 0
        while pos + 1 < end:
            first = data[pos]
            length = data[pos + 1]
            start = pos + 2
            if length & 0x80:
                length, start = _long_length(data, pos + 1, end)
                if length < 0:
                    if start < 0:
                        problem = "remaining length longer than four bytes"
                    break
            stop = start + length
            if stop > end:
                self._need = stop - pos
                break
            if first >> 4 == PUBLISH:
                qos = first >> 1 & 3
                if length < 2:
                    problem = "PUBLISH shorter than its topic length"
                    break
                topic_end = start + 2 + (data[start] << 8 | data[start + 1])
                payload_start = topic_end + 2 * qos
                if qos > 1:
                    problem = f"PUBLISH with QoS {qos}, above the QoS 1 subscribed"
                    break
                if payload_start > stop:
                    problem = "PUBLISH topic longer than the packet"
                    break
                raw_topic = data[start + 2 : topic_end]
                try:
                    topic = raw_topic.decode()
                except UnicodeDecodeError:
                    topic = repr(raw_topic)  # MQTT requires UTF-8; file it under what was received
                messages.append((topic, data[payload_start:stop]))
                if qos:
                    acks += PUBACK_HEAD
                    acks += data[topic_end:payload_start]
            else:
                problem = self._control(first, data[start:stop])
                if problem is not None:
                    break
            pos = stop
        if problem is None and pos < end:
            self._parts = [data[pos:]]
            self._have = end - pos
            self._need = max(self._need, self._have + 1)
        if messages:
            self._deliver(messages, bytes(acks))
        if problem is not None:
            self.fail(problem)

    def _deliver(self, messages: list[Message], acks: bytes) -> None:
        """Hand the messages on, then acknowledge them: a failure leaves them to the broker to resend."""
        self.messages += len(messages)
        try:
            self._on_messages(messages)
        except Exception:
            logger.exception("MQTT messages could not be handled; the broker will resend them")
            self.fail("messages could not be handled")
            return
        if acks:
            self._write(acks)

    def _control(self, first: int, body: bytes) -> str | None:
        """A packet other than PUBLISH; what is wrong with it, if anything."""
        kind = first >> 4
        if kind in (PUBACK, SUBACK):
            if len(body) < 2 + (kind == SUBACK):
                return f"{'PUBACK' if kind == PUBACK else 'SUBACK'} too short"
            future = self._acks.pop(body[0] << 8 | body[1], None)
            if future is not None and not future.done():
                future.set_result(list(body[2:]) if kind == SUBACK else None)
            return None
        if kind == PINGRESP:
            self.pongs += 1
            self._ping_ticks = -1
            return None
        if kind == CONNACK:
            if len(body) != 2:
                return "CONNACK of the wrong length"
            if self._connack is not None and not self._connack.done():
                if body[1]:
                    refusal = CONNACK_REFUSALS.get(body[1], f"return code {body[1]}")
                    self._connack.set_exception(MqttError(f"connection refused: {refusal}"))
                else:
                    self._connack.set_result(bool(body[0] & 1))
            return None
        return f"unexpected packet type {kind} from the broker"

    # --- sending

    def _write(self, data: bytes) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(data)
            self._wrote = True

    def _packet_id(self) -> int:
        while True:
            self._next_id = self._next_id % MAX_PACKET_ID + 1
            if self._next_id not in self._acks:
                return self._next_id

    def _awaiting(self, packet_id: int) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self._transport is None:
            future.set_exception(MqttError(self.close_reason or "not connected"))
        else:
            self._acks[packet_id] = future
        return future

    async def handshake(self, connect: bytes, within_s: float = CONNECT_TIMEOUT_S) -> bool:
        """Send CONNECT and wait for its CONNACK; whether the broker had a session for us. Starts keep-alive."""
        self._connack = asyncio.get_running_loop().create_future()
        if self._transport is None:
            raise MqttError(self.close_reason or "not connected")
        self._write(connect)
        session_present = await asyncio.wait_for(self._connack, within_s)
        if self._keepalive_s > 0:
            self._schedule_keepalive()
        return session_present

    async def subscribe(self, filters: Sequence[tuple[str, int]], within_s: float = CONNECT_TIMEOUT_S) -> list[int]:
        """The broker's return code per filter (the QoS granted, or 0x80 for a refusal)."""
        packet_id = self._packet_id()
        future = self._awaiting(packet_id)
        self._write(encode_subscribe(packet_id, filters))
        codes: list[int] = await asyncio.wait_for(future, within_s)
        return codes

    def publish(self, topic: str, payload: bytes, *, qos: int, retain: bool) -> asyncio.Future[None]:
        """Send a message (QoS above 1 is sent at 1); done once written (QoS 0) or acknowledged (QoS 1)."""
        qos = min(qos, 1)
        if qos == 0:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            if self._transport is None:
                future.set_exception(MqttError(self.close_reason or "not connected"))
            else:
                self._write(encode_publish(topic, payload, qos=0, retain=retain))
                future.set_result(None)
            return future
        packet_id = self._packet_id()
        future = self._awaiting(packet_id)
        self._write(encode_publish(topic, payload, qos=1, retain=retain, packet_id=packet_id))
        return future

    # --- keep-alive and closing

    def _schedule_keepalive(self) -> None:
        loop = asyncio.get_running_loop()
        self._keepalive = loop.call_later(self._keepalive_s / 2, self._keepalive_tick)

    def _keepalive_tick(self) -> None:
        """Every half keep-alive period: ping when nothing was sent; give up on a ping unanswered for one period."""
        if self._transport is None:
            return
        if self._ping_ticks >= 0:
            self._ping_ticks += 1
            if self._ping_ticks >= 2:
                self.fail(f"no PINGRESP within the keep-alive of {self._keepalive_s:g} s")
                return
        elif not self._wrote:
            self._write(PINGREQ_PACKET)
            self.pings += 1
            self._ping_ticks = 0
        self._wrote = False
        self._schedule_keepalive()

    def fail(self, reason: str) -> None:
        """Close the connection over a problem, logging why (the owner reconnects)."""
        if self._transport is None:
            return
        logger.warning("closing the MQTT connection: %s", reason)
        self.close_reason = reason
        self._transport.abort()

    def disconnect(self) -> None:
        """Say goodbye (DISCONNECT: the broker drops the will) and close."""
        transport = self._transport
        if transport is None:
            return
        self.close_reason = "disconnected"
        if not transport.is_closing():
            transport.write(DISCONNECT_PACKET)
        transport.close()

    async def wait_closed(self) -> None:
        """Return when the connection is gone; MqttError with the reason unless it was `disconnect`ed."""
        if self._closed is not None:
            await asyncio.shield(self._closed)
        if self.close_reason != "disconnected":
            raise MqttError(self.close_reason or "the broker closed the connection")

    @property
    def connected(self) -> bool:
        return self._transport is not None


def _long_length(data: bytes, at: int, end: int) -> tuple[int, int]:
    """A remaining length of two to four bytes at `at`: (length, where the packet's body starts);
    (-1, 0) when it is not all there yet, (-1, -1) when it is malformed."""
    length = 0
    for i in range(4):
        if at + i >= end:
            return -1, 0
        byte = data[at + i]
        length |= (byte & 0x7F) << 7 * i
        if byte < 0x80:
            return length, at + i + 1
    return -1, -1


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def open_receiver(
    host: str,
    port: int,
    on_messages: MessageHandler,
    *,
    client_id: str,
    clean_session: bool = False,
    keepalive_s: int = 30,
    username: str | None = None,
    password: str | None = None,
    will: Will | None = None,
    tls: ssl.SSLContext | None = None,
    within_s: float = CONNECT_TIMEOUT_S,
) -> tuple[MqttReceiver, bool]:
    """Connect and wait for CONNACK: the receiver, and whether the broker kept a session for `client_id`.

    MqttError when the broker refuses, OSError or TimeoutError when it cannot be reached."""
    loop = asyncio.get_running_loop()
    receiver = MqttReceiver(on_messages, keepalive_s=keepalive_s)
    await asyncio.wait_for(loop.create_connection(lambda: receiver, host, port, ssl=tls), within_s)
    connect = encode_connect(
        client_id, keepalive_s, clean_session=clean_session, username=username, password=password, will=will
    )
    try:
        session_present = await receiver.handshake(connect, within_s)
    except BaseException:
        receiver.disconnect()
        raise
    return receiver, session_present
