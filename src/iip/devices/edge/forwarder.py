"""Transports from the outbox to the platform, and the back-off between failed sends.

HTTP: `POST {platform}/api/telemetry`, NDJSON, one line per device and timestamp. A 200 means the
platform has committed the points (its writes are idempotent on series and timestamp, so resending
after a lost answer creates no duplicate); per-line errors in it are final for those lines. A 400 or
422 refuses the whole request: it goes to the dead-letter table so the queue moves on. Everything
else (5xx, timeouts, refused connections, 401/403/404/429: the link or the configuration, not the
data) is retried with the same batch.

MQTT: QoS 1 to `iip/{tenant}/{device}/telemetry` on a persistent session; a batch is settled when
the broker has acknowledged (PUBACK) every message of it. The acknowledgement is the broker's: it
holds the messages for the platform's own persistent session, not the platform's commit.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import random
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiomqtt
import orjson

from iip.devices.edge.config import MqttLink
from iip.devices.edge.outbox import DeadLetterPart, OutboxBatch, QueuedPoint

log = logging.getLogger(__name__)

INGEST_PATH = "/api/telemetry"
# 4xx answers that say nothing about the data: wrong token or URL, platform busy. Retried.
RETRY_4XX = frozenset({401, 403, 404, 405, 408, 409, 425, 429})
MAX_ERRORS_KEPT = 20


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """What the platform (or broker) made of one batch."""

    delivered: bool  # answered for the whole batch: settle it
    reason: str = ""  # why not (the batch stays and is sent again)
    rejected: Mapping[int, str] = field(default_factory=dict)  # point id -> reason, per-line errors of a 200
    dead_letters: tuple[DeadLetterPart, ...] = ()
    shrink: bool = False  # too large (413): send fewer points at a time

    @classmethod
    def retry(cls, reason: str, *, shrink: bool = False) -> SendOutcome:
        return cls(delivered=False, reason=reason, shrink=shrink)


class Forwarder(Protocol):
    async def send(self, batch: OutboxBatch) -> SendOutcome: ...

    async def close(self) -> None: ...


class Backoff:
    """Exponential, capped, with jitter on the upper half so agents restarted together spread out."""

    def __init__(self, initial_s: float, max_s: float, rng: Callable[[], float] = random.random) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.attempt = 0
        self._rng = rng

    def next_delay(self) -> float:
        ceiling = min(self.max_s, self.initial_s * 2 ** min(self.attempt, 32))
        self.attempt += 1
        return float(ceiling / 2 + self._rng() * ceiling / 2)

    def reset(self) -> None:
        self.attempt = 0


@dataclass(slots=True)
class Line:
    """One device at one timestamp: `{"device": key, "ts": ms, "values": {metric: value}}`."""

    device: str
    ts_ms: int
    values: dict[str, Any] = field(default_factory=dict)
    point_ids: list[int] = field(default_factory=list)


def group_lines(points: Iterable[QueuedPoint]) -> list[Line]:
    """Points grouped per device and timestamp, in the order each group first appears."""
    lines: dict[tuple[str, int], Line] = {}
    for point in points:
        line = lines.get((point.device, point.ts_ms))
        if line is None:
            line = lines[(point.device, point.ts_ms)] = Line(point.device, point.ts_ms)
        line.values[point.metric] = point.value
        line.point_ids.append(point.id)
    return list(lines.values())


def ndjson(lines: Iterable[Line]) -> bytes:
    return b"".join(
        orjson.dumps({"device": line.device, "ts": line.ts_ms, "values": line.values}) + b"\n" for line in lines
    )


def _describe(err: BaseException) -> str:
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, TimeoutError):
        return "timed out"
    if isinstance(err, http.client.RemoteDisconnected):
        return "connection closed without an answer"
    text = str(err) or type(err).__name__
    return " ".join(text.split())


def _problem_detail(body: bytes) -> str:
    try:
        problem = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode(errors="replace")
    if isinstance(problem, dict):
        return str(problem.get("detail") or problem.get("title") or problem)[:500]
    return str(problem)[:500]


def line_errors(answer: Any, line_count: int) -> dict[int, str]:
    """Zero-based line index -> reason, from a 200 answer's `errors` ([{"line": n (1-based), ...}])."""
    errors: dict[int, str] = {}
    if not isinstance(answer, dict):
        return errors
    for item in answer.get("errors") or ():
        if not isinstance(item, dict):
            continue
        number = item.get("line")
        if isinstance(number, int) and 1 <= number <= line_count:
            reason = item.get("reason") or item.get("error") or item.get("detail") or "rejected"
            errors[number - 1] = str(reason)
    return errors


class HttpForwarder:
    """One keep-alive connection, used by one send at a time from a worker thread."""

    def __init__(
        self, base_url: str, tokens: Mapping[str, str], *, default_token: str = "", timeout_s: float = 10.0
    ) -> None:
        """`tokens`: device key -> its token; other devices (say, still queued after leaving the
        configuration) go with `default_token`, the gateway's."""
        parts = urlsplit(base_url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._path = parts.path.rstrip("/") + INGEST_PATH
        self._tokens = dict(tokens)
        self._default_token = default_token
        self._timeout_s = timeout_s
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=self._timeout_s, context=ssl.create_default_context()
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout_s)

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _post(self, token: str, body: bytes) -> tuple[int, bytes]:
        headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/x-ndjson",
            "Accept": "application/json",
        }
        for attempt in range(2):
            reused = self._conn is not None
            conn = self._conn or self._connection()
            self._conn = conn
            try:
                conn.request("POST", self._path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self._drop_connection()
                # A kept-alive connection the server closed while idle: one fresh try at once.
                if reused and attempt == 0:
                    continue
                raise
            except BaseException:
                self._drop_connection()
                raise
            if response.will_close:
                self._drop_connection()
            return response.status, data
        raise AssertionError("unreachable")  # pragma: no cover

    async def send(self, batch: OutboxBatch) -> SendOutcome:
        by_token: dict[str, list[QueuedPoint]] = {}
        for point in batch.points:
            by_token.setdefault(self._tokens.get(point.device, self._default_token), []).append(point)
        rejected: dict[int, str] = {}
        dead: list[DeadLetterPart] = []
        for token, points in by_token.items():
            if not token:
                ids = frozenset(p.id for p in points)
                dead.append(DeadLetterPart(ids, "no token configured for these devices", ndjson(group_lines(points))))
                continue
            lines = group_lines(points)
            body = ndjson(lines)
            try:
                status, answer = await asyncio.to_thread(self._post, token, body)
            except (OSError, http.client.HTTPException) as err:
                return SendOutcome.retry(_describe(err))
            if status == 200:
                try:
                    parsed = orjson.loads(answer)
                except orjson.JSONDecodeError:
                    parsed = None
                for index, reason in line_errors(parsed, len(lines)).items():
                    for point_id in lines[index].point_ids:
                        rejected[point_id] = reason
            elif status == 413:
                if len(points) > 1:
                    return SendOutcome.retry("HTTP 413: batch too large", shrink=True)
                dead.append(DeadLetterPart(frozenset(p.id for p in points), "HTTP 413: point too large", body))
            elif 400 <= status < 500 and status not in RETRY_4XX:
                reason = f"HTTP {status}: {_problem_detail(answer)}"
                dead.append(DeadLetterPart(frozenset(p.id for p in points), reason, body))
            else:
                return SendOutcome.retry(f"HTTP {status}: {_problem_detail(answer)}")
        return SendOutcome(delivered=True, rejected=rejected, dead_letters=tuple(dead))

    async def close(self) -> None:
        await asyncio.to_thread(self._drop_connection)


class MqttForwarder:
    """QoS 1 publishes on a persistent session; connects on first use and after each failure."""

    def __init__(self, link: MqttLink, *, timeout_s: float = 10.0, max_inflight: int = 100) -> None:
        self._link = link
        self._timeout_s = timeout_s
        self._max_inflight = max_inflight
        self._client: aiomqtt.Client | None = None

    def topic(self, device: str) -> str:
        return f"iip/{self._link.tenant}/{device}/telemetry"

    async def _connected(self) -> aiomqtt.Client:
        if self._client is None:
            client = aiomqtt.Client(
                self._link.host,
                self._link.port,
                username=self._link.username,
                password=self._link.password,
                identifier=self._link.session_id,
                clean_session=False,
                keepalive=self._link.keepalive_s,
                timeout=self._timeout_s,
                max_inflight_messages=self._max_inflight,
                tls_context=ssl.create_default_context() if self._link.tls else None,
            )
            await client.__aenter__()
            self._client = client
        return self._client

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.__aexit__(None, None, None)
            except aiomqtt.MqttError as err:
                log.debug("mqtt disconnect: %s", err)

    async def send(self, batch: OutboxBatch) -> SendOutcome:
        messages = [
            (self.topic(line.device), orjson.dumps({"ts": line.ts_ms, "values": line.values}))
            for line in group_lines(batch.points)
        ]
        started = time.monotonic()
        try:
            client = await self._connected()
            await asyncio.gather(
                *(client.publish(topic, payload, qos=1, timeout=self._timeout_s) for topic, payload in messages)
            )
        except (aiomqtt.MqttError, OSError) as err:
            await self._disconnect()
            return SendOutcome.retry(f"broker {self._link.host}:{self._link.port}: {_describe(err)}")
        log.debug("published %d messages in %.3f s", len(messages), time.monotonic() - started)
        return SendOutcome(delivered=True)

    async def close(self) -> None:
        await self._disconnect()
