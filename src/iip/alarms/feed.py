"""The live alarm feed: `GET /api/alarms/feed`, server-sent events of the caller's tenant's alarm changes.

One `AlarmFeed` per process subscribes to `ALARM_CHANGES` on first use, under a durable of its own
(as `devices.commands.ReportWatcher` does), so every process hears every change whichever process
made it, and hands each change to the open streams of its tenant. Nothing of another tenant is
ever queued for a stream.

Each stream has a bounded queue. A client too slow to keep up (its queue full) is sent `reload`
and its stream ends: the process never holds a growing backlog for one client, and the browser
reconnects and reloads what it shows.

Events, in order:

* `change` per `AlarmChange` (its JSON), with the id `<feed>.<n>`;
* `ready` once the stream listens (after the changes replayed on a resume), `{"tenant_id", "feed",
  "resumed"}`, with the id of the newest change the feed had seen then;
* `reload` when changes were lost for this client (`{"reason": "overflow"}`, or `"resume"` for a
  `Last-Event-ID` the feed cannot continue from: another process's, or older than it keeps);
* `: keep-alive` comments while idle, which also notice a client that has gone.

Reconnecting with `Last-Event-ID` replays the tenant's changes after it while the feed still keeps
them (the last `RING_SIZE` changes of all tenants, in memory).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import StreamingResponse

from iip.alarms.public import ALARM_CHANGES, AlarmChange
from iip.api.deps import get_runtime, require
from iip.kernel.auth import Principal
from iip.kernel.bus import Bus, Delivery, Subscription
from iip.kernel.errors import Unavailable
from iip.kernel.runtime import Runtime

logger = logging.getLogger(__name__)

FEED_PATH = "/api/alarms/feed"
FEED_SERVICE = "alarms.feed"  # the running `AlarmFeed` in `Runtime.services`
HEARTBEAT_S = 15.0
QUEUE_SIZE = 1000  # changes waiting for one stream before it is told to reload
RING_SIZE = 5000  # changes kept for resuming streams
RETRY_MS = 3000  # how long browsers wait before reconnecting
CLOSING = 0  # the number queued to wake streams when the feed closes (changes count from 1)


def event(name: str, data: str, event_id: str = "") -> str:
    """One server-sent event; `data` is one line (compact JSON)."""
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {name}\ndata: {data}\n\n"


@dataclass(eq=False, slots=True)
class FeedListener:
    """One open stream: its tenant and the changes waiting for it."""

    tenant_id: str
    queue: asyncio.Queue[tuple[int, str]]
    overflowed: bool = False

    def offer(self, number: int, data: str) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait((number, data))
        except asyncio.QueueFull:
            self.overflowed = True  # the stream finds the queue full, sends `reload` and ends


@dataclass(eq=False)
class AlarmFeed:
    """This process's subscription to alarm changes, shared by every open feed stream."""

    bus: Bus
    heartbeat_s: float = HEARTBEAT_S
    queue_size: int = QUEUE_SIZE
    name: str = field(default_factory=lambda: uuid.uuid4().hex[:12])  # names this feed in event ids
    sequence: int = 0  # of the newest change heard
    closed: bool = False
    _ring: deque[tuple[int, str, str]] = field(default_factory=lambda: deque(maxlen=RING_SIZE))
    _listeners: dict[str, set[FeedListener]] = field(default_factory=dict)
    _subscription: Subscription | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def durable(self) -> str:
        return f"alarms-feed-{self.name}"

    @property
    def listening(self) -> int:
        """Open streams, of every tenant."""
        return sum(len(listeners) for listeners in self._listeners.values())

    async def start(self) -> None:
        """Subscribe, once; changes published from now on reach the streams."""
        async with self._lock:
            if self._subscription is None and not self.closed:
                self._subscription = await self.bus.subscribe(ALARM_CHANGES, self.on_change, durable=self.durable)

    async def close(self) -> None:
        """Stop listening and end every open stream."""
        self.closed = True
        async with self._lock:
            if self._subscription is not None:
                await self._subscription.stop()
                self._subscription = None
        for listeners in self._listeners.values():
            for listener in listeners:
                with contextlib.suppress(asyncio.QueueFull):  # a full queue wakes its stream anyway
                    listener.queue.put_nowait((CLOSING, ""))

    async def on_change(self, delivery: Delivery[AlarmChange]) -> None:
        change = delivery.payload
        self.sequence += 1
        data = change.model_dump_json()
        self._ring.append((self.sequence, change.tenant_id, data))
        for listener in self._listeners.get(change.tenant_id, ()):
            listener.offer(self.sequence, data)

    def event_id(self, number: int) -> str:
        return f"{self.name}.{number}"

    def backlog(self, tenant_id: str, last_event_id: str) -> list[tuple[int, str]] | None:
        """The tenant's changes after `last_event_id`; None when they cannot all be told."""
        name, _, number = last_event_id.partition(".")
        if name != self.name or not number.isdigit() or int(number) > self.sequence:
            return None  # another process's feed, or one from before a restart
        last = int(number)
        oldest = self._ring[0][0] if self._ring else self.sequence + 1
        if last < oldest - 1:
            return None  # some of the changes after it are no longer kept
        return [(n, data) for n, tenant, data in self._ring if n > last and tenant == tenant_id]

    def listen(self, tenant_id: str) -> FeedListener:
        listener = FeedListener(tenant_id, asyncio.Queue(maxsize=self.queue_size))
        self._listeners.setdefault(tenant_id, set()).add(listener)
        return listener

    def unlisten(self, listener: FeedListener) -> None:
        listeners = self._listeners.get(listener.tenant_id)
        if listeners is not None:
            listeners.discard(listener)
            if not listeners:
                del self._listeners[listener.tenant_id]

    async def events(
        self,
        tenant_id: str,
        last_event_id: str | None = None,
        is_disconnected: Callable[[], Awaitable[bool]] | None = None,
    ) -> AsyncIterator[str]:
        """The stream of one client of `tenant_id` (see the module's description for its events)."""
        await self.start()
        listener = self.listen(tenant_id)
        try:
            # Nothing awaits between listening and reading the sequence: queued changes all come after it.
            newest = self.sequence
            opening = [f"retry: {RETRY_MS}\n\n"]
            resumed = False
            if last_event_id:
                missed = self.backlog(tenant_id, last_event_id)
                if missed is None:
                    opening.append(event("reload", json.dumps({"reason": "resume"})))
                else:
                    opening += [event("change", data, self.event_id(n)) for n, data in missed]
                    resumed = True
            ready = {"tenant_id": tenant_id, "feed": self.name, "resumed": resumed}
            opening.append(event("ready", json.dumps(ready), self.event_id(newest)))
            yield "".join(opening)
            while not self.closed:
                try:
                    first = await asyncio.wait_for(listener.queue.get(), self.heartbeat_s)
                except TimeoutError:
                    if is_disconnected is not None and await is_disconnected():
                        return
                    yield ": keep-alive\n\n"
                    continue
                if listener.overflowed:
                    yield event("reload", json.dumps({"reason": "overflow"}))
                    return
                batch = [first]
                while not listener.queue.empty():
                    batch.append(listener.queue.get_nowait())
                text = "".join(event("change", data, self.event_id(n)) for n, data in batch if n != CLOSING)
                if text:
                    yield text
        finally:
            self.unlisten(listener)


@asynccontextmanager
async def feed_lifespan(runtime: Runtime) -> AsyncIterator[None]:
    """The process's alarm feed while the platform runs (`runtime.services["alarms.feed"]`)."""
    feed = AlarmFeed(runtime.bus)
    runtime.services[FEED_SERVICE] = feed
    try:
        yield
    finally:
        runtime.services.pop(FEED_SERVICE, None)
        await feed.close()


def alarm_feed_of(request: Request) -> AlarmFeed:
    feed = get_runtime(request).services.get(FEED_SERVICE)
    if not isinstance(feed, AlarmFeed):
        raise Unavailable("the alarm feed is not running in this process", code="feed_unavailable")
    return feed


feed_router = APIRouter(tags=["alarms"])

Reader = Annotated[Principal, Depends(require("alarms.read"))]
Feed = Annotated[AlarmFeed, Depends(alarm_feed_of)]


# An endless stream: kept out of the OpenAPI document, whose clients (and its fuzzing) expect answers that end.
@feed_router.get(FEED_PATH, response_class=StreamingResponse, include_in_schema=False)
async def alarm_feed(
    request: Request,
    actor: Reader,
    feed: Feed,
    last_event_id: Annotated[str | None, Header(max_length=100)] = None,
) -> StreamingResponse:
    """Server-sent events of your tenant's alarm changes (`change`), `ready` once listening, `reload`
    when changes were lost for this client; `Last-Event-ID` resumes while the changes are kept."""
    return StreamingResponse(
        feed.events(actor.tenant_id, last_event_id, request.is_disconnected),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
