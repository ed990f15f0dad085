"""The live alarm feed over a real HTTP server (uvicorn) on the real bus, in memory and NATS JetStream:
a tenant's changes reach its streams and never another tenant's; resuming, keep-alives, a client
that goes away, and a client too slow to keep up."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import queue
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

import httpx
import pytest
import pytest_asyncio

from iip.alarms.feed import FEED_PATH, FEED_SERVICE, AlarmFeed
from iip.alarms.public import ALARM_CHANGES, AlarmChange, AlarmState, Priority
from iip.alarms.rules import ConditionChange
from iip.alarms.service import AlarmService
from iip.api.app import create_app
from iip.api.deps import SESSION_COOKIE
from iip.kernel.auth import AccessService, Principal, Role
from iip.kernel.bus import Bus, MemoryBus
from iip.kernel.runtime import Runtime
from tests.conftest import TenantFixture, make_tenant
from tests.console.test_browser import serve
from tests.services import NATS_URL, require_service

WAIT_S = 10.0
RULE = {"key": "pressure.high", "kind": "threshold", "title": "Pressure high", "scope": {"profile": "boiler"}}


# --- a client of the feed ---------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    name: str
    data: str
    id: str

    def json(self) -> dict[str, object]:
        loaded: dict[str, object] = json.loads(self.data)
        return loaded


@dataclass
class FeedClient:
    """One client of the feed over HTTP: a thread reads the stream and parses its events."""

    url: str
    headers: dict[str, str]
    status: int = 0
    events: queue.Queue[Event] = field(default_factory=queue.Queue)
    keep_alives: int = 0
    ended: threading.Event = field(default_factory=threading.Event)
    _socket: socket.socket | None = None
    _client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=httpx.Timeout(10.0, read=60.0)))

    def __post_init__(self) -> None:
        threading.Thread(target=self._read, name="feed-client", daemon=True).start()

    def _read(self) -> None:
        name, data, event_id = "", [], ""
        try:
            with self._client.stream("GET", self.url, headers=self.headers) as response:
                self.status = response.status_code
                self._socket = response.extensions["network_stream"].get_extra_info("socket")
                if response.status_code != 200:
                    response.read()
                    self.events.put(Event("refused", response.text, ""))
                    return
                for line in response.iter_lines():
                    if line == "":
                        if data:
                            self.events.put(Event(name or "message", "\n".join(data), event_id))
                        name, data, event_id = "", [], ""
                    elif line.startswith(":"):
                        self.keep_alives += line.strip() == ": keep-alive"
                    else:
                        key, _, value = line.partition(":")
                        value = value.removeprefix(" ")
                        if key == "event":
                            name = value
                        elif key == "data":
                            data.append(value)
                        elif key == "id":
                            event_id = value
        except httpx.HTTPError:
            pass  # closed by the test, or the server went away
        finally:
            self.ended.set()

    def next(self, timeout: float = WAIT_S) -> Event:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no event within {timeout} s") from None

    def close(self) -> None:
        """Hang up as a browser does when its tab closes (closing alone would not wake the reading thread)."""
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)
        self.ended.wait(WAIT_S)
        self._client.close()


def feed_client(base: str, api_key: str, last_event_id: str = "") -> FeedClient:
    headers = {"Authorization": f"Bearer {api_key}", "Accept": "text/event-stream"}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    return FeedClient(base + FEED_PATH, headers)


def eventually(check: Callable[[], bool], within_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


# --- the bus and the plant --------------------------------------------------------------------


async def _delete_stream(stream: str) -> None:
    import nats
    import nats.js.errors

    connection = await nats.connect(NATS_URL, connect_timeout=2, allow_reconnect=False)
    try:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await connection.jetstream().delete_stream(stream)
    finally:
        await connection.close()


@contextlib.contextmanager
def bus_of(kind: str) -> Iterator[Bus]:
    """A bus of that kind; on NATS, a stream and subject prefix of this test's own, deleted afterwards."""
    if kind == "memory":
        yield MemoryBus()
        return
    require_service("NATS", "127.0.0.1", 4222)
    from iip.kernel.bus_nats import NatsBus

    token = uuid.uuid4().hex[:12]
    stream = f"IIPTEST_{token}"
    try:
        yield NatsBus(NATS_URL, stream=stream, connect_timeout=2.0, subject_prefix=f"iiptest{token}.")
    finally:
        asyncio.run(_delete_stream(stream))


def admin(tenant: TenantFixture) -> Principal:
    return Principal("user", tenant.admin_user_id, f"{tenant.name}-admin", tenant.id, Role.ADMIN)


def raise_alarm(runtime: Runtime, tenant: TenantFixture, device: str) -> str:
    """An active, unacknowledged alarm of the tenant, raised as evaluation raises it."""
    rule = {**RULE, "metric": "pressure", "high": 1.6}
    with runtime.db.session() as session:
        service = AlarmService(session, admin(tenant))
        if not service.list_rules():
            service.import_rules([rule])
        change = ConditionChange(tenant.id, RULE["key"], 1, device, time.time_ns() // 1_000_000, active=True, value=2.0)
        [applied] = AlarmService(session).apply([change])
        return applied.alarm_id


@pytest.fixture(params=["memory", "nats"])
def bus_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def served(runtime: Runtime, bus_kind: str) -> Iterator[tuple[str, Runtime]]:
    """The app on a real HTTP server, over the bus of `bus_kind`."""
    with bus_of(bus_kind) as bus:
        runtime.bus = bus
        with serve(create_app(runtime=runtime, configure_logs=False)) as base:
            yield base, runtime


def act(base: str, tenant: TenantFixture, path: str, body: dict[str, object] | None = None) -> dict[str, object]:
    response = httpx.post(base + path, json=body, headers=tenant.headers(Role.OPERATOR), timeout=10)
    assert response.status_code == 200, response.text
    answer: dict[str, object] = response.json()
    return answer


# --- over HTTP ----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_tenants_changes_reach_its_streams_only(served: tuple[str, Runtime]) -> None:
    base, runtime = served
    tenant_a = make_tenant(runtime.db, "feed-a")
    tenant_b = make_tenant(runtime.db, "feed-b")
    alarm_a = raise_alarm(runtime, tenant_a, "boiler-1")
    alarm_b = raise_alarm(runtime, tenant_b, "boiler-1")
    a = feed_client(base, tenant_a.keys[Role.VIEWER])
    b = feed_client(base, tenant_b.keys[Role.VIEWER])
    try:
        ready_a, ready_b = a.next(), b.next()
        assert (ready_a.name, ready_a.json()["tenant_id"], ready_a.json()["resumed"]) == ("ready", tenant_a.id, False)
        assert (ready_b.name, ready_b.json()["tenant_id"]) == ("ready", tenant_b.id)

        act(base, tenant_a, f"/api/alarms/{alarm_a}/acknowledge", {"comment": "seen by A"})
        change = a.next()
        assert change.name == "change"
        seen = AlarmChange.model_validate_json(change.data)
        assert (seen.tenant_id, seen.alarm_id, seen.action, seen.state) == (
            tenant_a.id,
            alarm_a,
            "acknowledge",
            AlarmState.ACK_ACTIVE,
        )
        assert seen.actor == "apikey:operator"
        assert change.id.startswith(ready_a.id.split(".")[0] + ".")

        # B's stream hears B's change next: A's, published before it, never reached it.
        act(base, tenant_b, f"/api/alarms/{alarm_b}/acknowledge")
        first_of_b = b.next()
        assert AlarmChange.model_validate_json(first_of_b.data).alarm_id == alarm_b
        # And A's stream hears A's comment next: B's change, published before it, never reached it.
        act(base, tenant_a, f"/api/alarms/{alarm_a}/comments", {"text": "checked the valve"})
        after = AlarmChange.model_validate_json(a.next().data)
        assert (after.alarm_id, after.action) == (alarm_a, "comment")
        assert a.events.empty()
        assert b.events.empty()

        # Reconnecting with the last id seen: A's two changes again, nothing of B's, then `ready`.
        again = feed_client(base, tenant_a.keys[Role.VIEWER], last_event_id=ready_a.id)
        try:
            replayed = [again.next(), again.next(), again.next()]
            assert [e.name for e in replayed] == ["change", "change", "ready"]
            assert [AlarmChange.model_validate_json(e.data).action for e in replayed[:2]] == ["acknowledge", "comment"]
            assert replayed[2].json()["resumed"] is True
        finally:
            again.close()
        # An id this feed never gave (another process's, or from before a restart): reload, then ready.
        stranger = feed_client(base, tenant_a.keys[Role.VIEWER], last_event_id="0123456789ab.7")
        try:
            told = stranger.next()
            assert (told.name, told.json()) == ("reload", {"reason": "resume"})
            assert stranger.next().json()["resumed"] is False
        finally:
            stranger.close()
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize("bus_kind", ["memory"], indirect=True)
def test_the_engine_raising_an_alarm_reaches_the_feed(served: tuple[str, Runtime]) -> None:
    """The whole path: telemetry over HTTP, the rule engine, the stored alarm, the bus, the stream."""
    base, runtime = served
    tenant = make_tenant(runtime.db, "feed-engine")
    document = {
        "profiles": [{"name": "boiler", "protocol": "http", "metrics": [{"name": "pressure"}]}],
        "devices": [{"key": "boiler-7", "profile": "boiler", "site": "north"}],
    }
    imported = httpx.post(base + "/api/devices/import", json=document, headers=tenant.headers(Role.ENGINEER))
    assert imported.status_code == 200, imported.text
    with runtime.db.session() as session:
        AlarmService(session, admin(tenant)).import_rules([{**RULE, "metric": "pressure", "high": 1.6}])
    engine = runtime.services["alarms.engine"].engine
    eventually(lambda: engine.instance_count() == 1)  # the engine reloads changed rules every few seconds
    client = feed_client(base, tenant.keys[Role.VIEWER])
    try:
        assert client.next().name == "ready"
        line = {"device": "boiler-7", "ts": time.time_ns() // 1_000_000, "values": {"pressure": 2.25}}
        headers = {**tenant.headers(Role.ENGINEER), "Content-Type": "application/x-ndjson"}
        assert httpx.post(base + "/api/telemetry", content=json.dumps(line), headers=headers).status_code == 200
        raised = AlarmChange.model_validate_json(client.next().data)
        assert (raised.action, raised.device, raised.site, raised.value) == ("activate", "boiler-7", "north", 2.25)
        assert (raised.priority, raised.state) == (Priority.MEDIUM, AlarmState.UNACK_ACTIVE)
    finally:
        client.close()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize("bus_kind", ["memory"], indirect=True)
def test_keep_alives_and_a_client_that_goes_away(served: tuple[str, Runtime]) -> None:
    base, runtime = served
    tenant = make_tenant(runtime.db, "feed-idle")
    feed = runtime.services[FEED_SERVICE]
    assert isinstance(feed, AlarmFeed)
    feed.heartbeat_s = 0.2
    idle = feed_client(base, tenant.keys[Role.VIEWER])
    assert idle.next().name == "ready"
    eventually(lambda: idle.keep_alives >= 2)
    idle.close()
    eventually(lambda: feed.listening == 0)
    # A client that hangs up is let go at once, not at the next keep-alive.
    feed.heartbeat_s = 60.0
    gone = feed_client(base, tenant.keys[Role.VIEWER])
    assert gone.next().name == "ready"
    assert feed.listening == 1
    gone.close()
    eventually(lambda: feed.listening == 0, within_s=5.0)
    assert gone.keep_alives == 0


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize("bus_kind", ["memory"], indirect=True)
def test_who_may_listen(served: tuple[str, Runtime]) -> None:
    base, runtime = served
    tenant = make_tenant(runtime.db, "feed-auth")
    anonymous = httpx.get(base + FEED_PATH, timeout=10)
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"].startswith("application/problem+json")
    wrong = httpx.get(base + FEED_PATH, headers={"Authorization": "Bearer iip_nope_nope"}, timeout=10)
    assert wrong.status_code == 401
    # A console session (the browser's EventSource sends its cookie) listens like an API key.
    with runtime.db.session() as session:
        access = AccessService(session)
        user = access.create_user(tenant.id, "feed-viewer", "a-long-enough-password", Role.VIEWER)
        token, _record = access.open_session(user, hours=1)
    browser = FeedClient(base + FEED_PATH, {"Cookie": f"{SESSION_COOKIE}={token}"})
    try:
        ready = browser.next()
        assert (ready.name, ready.json()["tenant_id"]) == ("ready", tenant.id)
    finally:
        browser.close()


# --- a client too slow to keep up -------------------------------------------------------------


@pytest_asyncio.fixture(params=["memory", "nats"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    if request.param == "memory":
        bus: Bus = MemoryBus()
        stream = ""
    else:
        require_service("NATS", "127.0.0.1", 4222)
        from iip.kernel.bus_nats import NatsBus

        token = uuid.uuid4().hex[:12]
        stream = f"IIPTEST_{token}"
        bus = NatsBus(NATS_URL, stream=stream, connect_timeout=2.0, subject_prefix=f"iiptest{token}.")
    await bus.start()
    try:
        yield bus
    finally:
        await bus.close()
        if stream:
            await _delete_stream(stream)


def change_of(tenant_id: str, number: int) -> AlarmChange:
    return AlarmChange(
        tenant_id=tenant_id,
        alarm_id=f"{number:032x}",
        rule_key="pressure.high",
        rule_version=1,
        device="boiler-1",
        priority=Priority.HIGH,
        state=AlarmState.UNACK_ACTIVE,
        action="activate",
        at=dt.datetime.now(dt.UTC),
        sequence=1,
    )


@pytest.mark.asyncio
async def test_a_client_that_falls_behind_is_told_to_reload(bus: Bus) -> None:
    feed = AlarmFeed(bus, queue_size=3)
    stream = feed.events("tenant-a")
    try:
        opening = await anext(stream)
        assert "event: ready" in opening
        # Another tenant's flood fills nothing of this client's.
        for number in range(10):
            await bus.publish(ALARM_CHANGES, change_of("tenant-b", number))
        async with asyncio.timeout(WAIT_S):
            while feed.sequence < 10:  # noqa: ASYNC110 - the bus delivers in the background
                await asyncio.sleep(0.01)
        # This tenant's changes, more than the client's queue holds, while it reads nothing.
        for number in range(10, 15):
            await bus.publish(ALARM_CHANGES, change_of("tenant-a", number))
        async with asyncio.timeout(WAIT_S):
            while feed.sequence < 15:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        told = await anext(stream)
        assert told == 'event: reload\ndata: {"reason": "overflow"}\n\n'
        with pytest.raises(StopAsyncIteration):
            await anext(stream)
        assert feed.listening == 0
    finally:
        await stream.aclose()
        await feed.close()


@pytest.mark.asyncio
async def test_a_client_keeping_up_gets_every_change_of_its_tenant_in_order(bus: Bus) -> None:
    feed = AlarmFeed(bus, queue_size=3)
    stream = feed.events("tenant-a")
    try:
        await anext(stream)
        received: list[str] = []
        for number in range(12):
            await bus.publish(ALARM_CHANGES, change_of("tenant-a" if number % 2 else "tenant-b", number))
            if number % 2:
                chunk = await asyncio.wait_for(anext(stream), WAIT_S)
                received += [line for line in chunk.splitlines() if line.startswith("data: ")]
        ids = [AlarmChange.model_validate_json(line.removeprefix("data: ")).alarm_id for line in received]
        assert ids == [f"{n:032x}" for n in range(1, 12, 2)]
    finally:
        await stream.aclose()
        await feed.close()
