"""The device twin: the registry on its own, and the twin API over SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx2 import Response

from iip.kernel.auth import Role
from iip.kernel.bus import Delivery, MemoryBus
from iip.kernel.errors import Invalid, NotFound, Unavailable
from iip.kernel.runtime import Runtime
from iip.telemetry.public import (
    DEVICE_STATUS,
    TELEMETRY_POINTS,
    TWIN_DESIRED,
    DesiredChange,
    DeviceStatus,
    PointBatch,
    PointBatchBuilder,
)
from iip.telemetry.twin import TWINS_SERVICE, TwinRegistry, check_desired, now_ms, subtree
from tests.conftest import TenantFixture

BASE_MS = now_ms() - 3_600_000


def no_store(_tenant_id: str, _devices: Sequence[str]) -> Mapping[str, Mapping[str, tuple[int, float, int]]]:
    """A registry without a time-series store: twins come from their rows and from batches only."""
    return {}


def batch(tenant_id: str, *points: tuple[str, str, int, float], **attributes: Mapping[str, Any]) -> PointBatch:
    builder = PointBatchBuilder(tenant_id, source="test")
    for device, metric, offset_ms, value in points:
        builder.add(device, metric, BASE_MS + offset_ms, value)
    for device, values in attributes.items():
        for name, reported in values.items():
            builder.attribute(device, name, reported)
    return builder.build()


# --- pure parts -------------------------------------------------------------------------------


def test_subtree_follows_slash_paths() -> None:
    document = {"metrics": {"flow": {"value": 1.5}, "a/b": {"value": 2}}, "attributes": {"reported": {"x": [1, 2]}}}
    assert subtree(document, "metrics/flow/value") == 1.5
    assert subtree(document, "/metrics/flow/") == {"value": 1.5}
    assert subtree(document, "metrics/a~1b/value") == 2  # JSON Pointer escape for '/'
    assert subtree(document, "attributes/reported/x/1") == 2
    assert subtree(document, "") == document
    for missing in ("metrics/pressure", "metrics/flow/value/deeper", "attributes/reported/x/2", "metrics//flow"):
        with pytest.raises(NotFound):
            subtree(document, missing)


def test_desired_values_are_checked() -> None:
    check_desired("setpoint", 42)
    check_desired("mode.target", {"auto": True, "steps": [1, 2]})
    for name, value in (("", 1), ("1abc", 1), ("a b", 1), ("x" * 129, 1), ("ok", None), ("ok", "x" * 20_000)):
        with pytest.raises(Invalid):
            check_desired(name, value)


# --- the registry without a store ---------------------------------------------------------------


async def test_registry_numbers_changes_and_keeps_them_for_watchers(runtime: Runtime, tenant_a: TenantFixture) -> None:
    twins = TwinRegistry(runtime.db, MemoryBus(), no_store)
    await twins.apply_batch(batch(tenant_a.id, ("d1", "flow", 1000, 5.0)))
    twin = twins.cached(tenant_a.id, "d1")
    assert twin is not None
    assert (twin.seq, twin.ring, twin.listeners) == (1, None, None)  # unwatched: no history kept

    listener = twins.listen(twin)
    await twins.apply_batch(batch(tenant_a.id, ("d1", "flow", 500, 1.0), ("d1", "temp", 600, 30.0)))
    assert twin.metrics["flow"][1] == 5.0  # older than what the twin has
    assert listener.wake.is_set()
    assert twin.ring is not None
    [(seq, data)] = list(twin.ring)
    patch = json.loads(data)
    assert seq == 2
    assert set(patch["metrics"]) == {"temp"}
    assert patch["metrics"]["temp"]["value"] == 30.0
    assert patch["connection"]["online"] is True
    twins.unlisten(twin, listener)
    assert twin.listeners == set()


async def test_event_stream_snapshot_patches_resume_and_close(runtime: Runtime, tenant_a: TenantFixture) -> None:
    twins = TwinRegistry(runtime.db, MemoryBus(), no_store, ring_size=4, keepalive_s=0.05)
    await twins.apply_batch(batch(tenant_a.id, ("d1", "flow", 0, 1.0)))
    twin = await twins.require(tenant_a.id, "d1")

    stream = twins.events(twin)
    assert (await anext(stream)).startswith("retry:")
    snapshot = parse_events(await anext(stream))[0]
    assert snapshot.event == "twin"
    assert snapshot.data["metrics"]["flow"]["value"] == 1.0
    await twins.apply_batch(batch(tenant_a.id, ("d1", "flow", 10, 2.0)))
    patch = parse_events(await anext(stream))[0]
    assert (patch.event, patch.data["metrics"]["flow"]["value"]) == ("patch", 2.0)
    assert patch.id == twins.event_id(2)
    assert await anext(stream) == ": keep-alive\n\n"  # idle
    await stream.aclose()
    assert twin.listeners == set()

    # Two changes while away: a client that saw event 2 gets exactly those.
    await twins.apply_batch(batch(tenant_a.id, ("d1", "flow", 20, 3.0)))
    await twins.apply_batch(batch(tenant_a.id, ("d1", "flow", 30, 4.0)))
    resumed = twins.events(twin, patch.id)
    await anext(resumed)
    events = parse_events(await anext(resumed))
    assert [(e.id, e.event, e.data["metrics"]["flow"]["value"]) for e in events] == [
        (twins.event_id(3), "patch", 3.0),
        (twins.event_id(4), "patch", 4.0),
    ]
    await resumed.aclose()

    # Too far behind for the ring, from another process, or nonsense: a fresh snapshot instead.
    for offset in range(10, 80, 10):
        await twins.apply_batch(batch(tenant_a.id, ("d1", "flow", 100 + offset, float(offset))))
    for last_event_id in (patch.id, f"0.{twin.seq}", "garbage", twins.event_id(twin.seq + 5)):
        stream = twins.events(twin, last_event_id)
        await anext(stream)
        first = parse_events(await anext(stream))[0]
        assert (first.event, first.id) == ("twin", twins.event_id(twin.seq)), last_event_id
        await stream.aclose()

    # Shutting down ends open streams.
    stream = twins.events(twin, twins.event_id(twin.seq))
    await anext(stream)
    pending = anext(stream)
    twins.close()
    with pytest.raises(StopAsyncIteration):
        await pending
    assert twin.listeners == set()


async def test_desired_changes_are_published_then_kept(runtime: Runtime, tenant_a: TenantFixture) -> None:
    bus = MemoryBus()
    await bus.start()
    published: list[DesiredChange] = []

    async def collect(delivery: Delivery[DesiredChange]) -> None:
        published.append(delivery.payload)

    subscription = await bus.subscribe(TWIN_DESIRED, collect, durable="test-devices")
    twins = TwinRegistry(runtime.db, bus, no_store)
    with pytest.raises(NotFound):
        await twins.set_desired(tenant_a.id, "nobody", "setpoint", 1, "user-1")
    await twins.apply_batch(batch(tenant_a.id, ("d1", "flow", 0, 1.0)))
    change = await twins.set_desired(tenant_a.id, "d1", "setpoint", 42.5, "user-1")
    twin = await twins.require(tenant_a.id, "d1")
    assert twin.desired == {"setpoint": 42.5}
    for _ in range(1000):
        if published:
            break
        await asyncio.sleep(0.01)
    assert published == [change]
    assert (change.device, change.name, change.value, change.requested_by) == ("d1", "setpoint", 42.5, "user-1")

    # With the bus down nothing is desired: the row is put back as it was.
    await bus.close()
    with pytest.raises(Unavailable):
        await twins.set_desired(tenant_a.id, "d1", "setpoint", 50, "user-1")
    with pytest.raises(Unavailable):
        await twins.set_desired(tenant_a.id, "d1", "speed", 3, "user-1")
    assert twin.desired == {"setpoint": 42.5}
    fresh = await TwinRegistry(runtime.db, bus, no_store).require(tenant_a.id, "d1")
    assert fresh.desired == {"setpoint": 42.5}

    await twins.delete_desired(tenant_a.id, "d1", "setpoint")
    with pytest.raises(NotFound):
        await twins.delete_desired(tenant_a.id, "d1", "setpoint")
    fresh = await TwinRegistry(runtime.db, bus, no_store).require(tenant_a.id, "d1")
    assert fresh.desired == {}
    await subscription.stop()


# --- the API ------------------------------------------------------------------------------------


@dataclass
class Sse:
    id: str = ""
    event: str = ""
    data: Any = None


def parse_events(text: str) -> list[Sse]:
    events = []
    for block in text.split("\n\n"):
        event = Sse()
        lines = [line for line in block.split("\n") if line and not line.startswith(":")]
        for line in lines:
            name, _, value = line.partition(": ")
            if name == "data":
                event.data = json.loads(value)
            elif name in ("id", "event"):
                setattr(event, name, value)
        if event.event:
            events.append(event)
    return events


@dataclass
class EventReader:
    """Reads server-sent events off a streaming response; keep-alives let it notice a deadline."""

    lines: Iterator[str]
    pending: list[str] = field(default_factory=list)

    def next(self, timeout: float = 10.0) -> Sse:
        deadline = time.monotonic() + timeout
        for line in self.lines:
            if line:
                self.pending.append(line)
            elif self.pending:
                events = parse_events("\n".join(self.pending))
                self.pending.clear()
                if events:
                    return events[0]
            if time.monotonic() > deadline:
                break
        raise AssertionError("no event arrived")


def twins_of(runtime: Runtime) -> TwinRegistry:
    registry = runtime.services[TWINS_SERVICE]
    assert isinstance(registry, TwinRegistry)
    return registry


def report(client: TestClient, runtime: Runtime, points: PointBatch, done: Callable[[], bool]) -> None:
    """Publish a batch as ingest does and wait until the writer has applied it."""
    assert client.portal is not None
    client.portal.call(runtime.bus.publish, TELEMETRY_POINTS, points)
    deadline = time.monotonic() + 10
    while not done():
        assert time.monotonic() < deadline, "the writer did not apply the batch"
        time.sleep(0.01)


def has_metric(runtime: Runtime, tenant: TenantFixture, device: str, metric: str, value: float) -> Callable[[], bool]:
    def check() -> bool:
        twin = twins_of(runtime).cached(tenant.id, device)
        # Online too: a twin first loaded while its batch is applied shows the stored points a moment earlier.
        return twin is not None and twin.online and metric in twin.metrics and twin.metrics[metric][1] == value

    return check


@pytest.fixture
def pump(client: TestClient, runtime: Runtime, tenant_a: TenantFixture) -> str:
    """Tenant A's device `pump-1`, which has reported two metrics and two attributes."""
    points = batch(
        tenant_a.id,
        ("pump-1", "flow", 0, 12.5),
        ("pump-1", "pressure", 0, 3.25),
        **{"pump-1": {"firmware": "2.0.1", "limits": {"max": 80}}},
    )
    report(client, runtime, points, has_metric(runtime, tenant_a, "pump-1", "pressure", 3.25))
    return "pump-1"


def problem(response: Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    return body


def test_the_whole_twin_and_its_paths(client: TestClient, tenant_a: TenantFixture, pump: str) -> None:
    headers = tenant_a.headers(Role.VIEWER)
    response = client.get(f"/api/devices/{pump}/twin", headers=headers)
    assert response.status_code == 200, response.text
    twin = response.json()
    assert twin["device"] == pump
    assert twin["connection"]["online"] is True
    assert twin["connection"]["last_seen"].endswith("Z")
    assert twin["metrics"]["flow"]["value"] == 12.5
    assert twin["metrics"]["flow"]["quality"] == 0
    assert twin["metrics"]["pressure"]["ts"].startswith(time.strftime("%Y-", time.gmtime(BASE_MS / 1000)))
    assert twin["attributes"] == {"reported": {"firmware": "2.0.1", "limits": {"max": 80}}, "desired": {}}

    def at(path: str) -> Any:
        answer = client.get(f"/api/devices/{pump}/twin/{path}", headers=headers)
        assert answer.status_code == 200, answer.text
        return answer.json()

    assert at("metrics/flow/value") == 12.5
    assert at("metrics/pressure") == twin["metrics"]["pressure"]
    assert at("attributes/reported/limits/max") == 80
    assert at("attributes/desired") == {}
    assert at("connection/online") is True

    body = problem(client.get(f"/api/devices/{pump}/twin/metrics/nothing", headers=headers), 404)
    assert body["code"] == "twin_path_not_found"
    problem(client.get(f"/api/devices/{pump}/twin/metrics/flow/value/more", headers=headers), 404)


def test_unknown_devices_and_other_tenants_twins_are_not_found(
    client: TestClient, runtime: Runtime, tenant_a: TenantFixture, tenant_b: TenantFixture, pump: str
) -> None:
    for path in (f"/api/devices/{pump}/twin", f"/api/devices/{pump}/twin/metrics", f"/api/devices/{pump}/twin/events"):
        assert problem(client.get(path, headers=tenant_b.headers()), 404)["code"] == "twin_not_found"
    response = client.put(f"/api/devices/{pump}/twin/attributes/desired/setpoint", json=1, headers=tenant_b.headers())
    problem(response, 404)
    problem(client.delete(f"/api/devices/{pump}/twin/attributes/desired/firmware", headers=tenant_b.headers()), 404)
    assert client.get("/api/twins", headers=tenant_b.headers()).json() == []
    problem(client.get("/api/devices/never-reported/twin", headers=tenant_a.headers()), 404)
    problem(client.get("/api/devices/never-reported/twin/metrics", headers=tenant_a.headers()), 404)

    # Tenant B's device of the same name is B's own twin.
    report(
        client, runtime, batch(tenant_b.id, (pump, "flow", 0, 99.0)), has_metric(runtime, tenant_b, pump, "flow", 99)
    )
    assert client.get(f"/api/devices/{pump}/twin/metrics/flow/value", headers=tenant_b.headers()).json() == 99.0
    assert client.get(f"/api/devices/{pump}/twin/metrics/flow/value", headers=tenant_a.headers()).json() == 12.5
    problem(client.get(f"/api/devices/{pump}/twin/metrics/pressure", headers=tenant_b.headers()), 404)


def test_platform_operators_reach_any_tenants_twin(
    client: TestClient, runtime: Runtime, tenant_a: TenantFixture, tenant_b: TenantFixture, pump: str
) -> None:
    operator = tenant_b.headers(Role.PLATFORM_OPERATOR)
    url = f"/api/devices/{pump}/twin/metrics/flow/value"
    assert client.get(url, headers=operator).json() == 12.5  # the one tenant that has the device
    assert client.get(f"{url}?tenant={tenant_a.name}", headers=operator).json() == 12.5
    problem(client.get(f"{url}?tenant={tenant_b.id}", headers=operator), 404)
    problem(client.get(f"{url}?tenant=no-such-tenant", headers=operator), 404)
    # Others may name their own tenant only.
    assert client.get(f"{url}?tenant={tenant_a.id}", headers=tenant_a.headers()).json() == 12.5
    refused = problem(client.get(f"{url}?tenant={tenant_b.id}", headers=tenant_a.headers()), 403)
    assert refused["code"] == "tenant_not_yours"

    report(client, runtime, batch(tenant_b.id, (pump, "flow", 0, 1.0)), has_metric(runtime, tenant_b, pump, "flow", 1))
    assert problem(client.get(url, headers=operator), 409)["code"] == "ambiguous_device"
    assert client.get(f"{url}?tenant={tenant_b.id}", headers=operator).json() == 1.0
    assert [t["device"] for t in client.get(f"/api/twins?tenant={tenant_a.id}", headers=operator).json()] == [pump]


def test_a_desired_attribute_is_stored_and_sent_as_a_command(
    client: TestClient, runtime: Runtime, tenant_a: TenantFixture, pump: str
) -> None:
    published: list[DesiredChange] = []

    async def collect(delivery: Delivery[DesiredChange]) -> None:
        published.append(delivery.payload)

    assert client.portal is not None
    client.portal.call(functools.partial(runtime.bus.subscribe, TWIN_DESIRED, collect, durable="test-commands"))
    url = f"/api/devices/{pump}/twin/attributes/desired/setpoint"
    engineer = tenant_a.headers(Role.ENGINEER)
    principal = client.get("/api/me", headers=engineer).json()

    for role in (Role.OPERATOR, Role.VIEWER):
        assert problem(client.put(url, json=55, headers=tenant_a.headers(role)), 403)["code"] == "forbidden"
        problem(client.delete(url, headers=tenant_a.headers(role)), 403)
    response = client.put(url, json={"value": 55, "unit": "%"}, headers=engineer)
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["value"] == {"value": 55, "unit": "%"}
    deadline = time.monotonic() + 10
    while not published:
        assert time.monotonic() < deadline, "no TWIN_DESIRED message"
        time.sleep(0.01)
    [change] = published
    assert change.tenant_id == tenant_a.id
    assert (change.device, change.name, change.value) == (pump, "setpoint", {"value": 55, "unit": "%"})
    assert change.requested_by == principal["id"]
    assert change.request_id == accepted["request_id"]

    desired = client.get(f"/api/devices/{pump}/twin/attributes/desired", headers=tenant_a.headers(Role.OPERATOR))
    assert desired.json() == {"setpoint": {"value": 55, "unit": "%"}}

    # Bad input is refused whole.
    assert problem(client.put(url, json=None, headers=engineer), 422)["code"] == "twin_desired_null"
    bad_name = f"/api/devices/{pump}/twin/attributes/desired/9lives"
    assert problem(client.put(bad_name, json=1, headers=engineer), 422)["code"] == "twin_attribute_name"
    problem(client.put(url, content=b"{not json", headers={**engineer, "content-type": "application/json"}), 422)
    assert client.get(f"/api/devices/{pump}/twin/attributes/desired", headers=engineer).json() == {
        "setpoint": {"value": 55, "unit": "%"}
    }
    assert len(published) == 1

    assert client.delete(url, headers=tenant_a.headers(Role.ADMIN)).status_code == 204
    problem(client.get(f"/api/devices/{pump}/twin/attributes/desired/setpoint", headers=engineer), 404)
    problem(client.delete(url, headers=engineer), 404)


def test_list_twins_by_connection(client: TestClient, runtime: Runtime, tenant_a: TenantFixture, pump: str) -> None:
    assert client.portal is not None
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    status = DeviceStatus(tenant_id=tenant_a.id, device="valve-9", online=False, at=later)
    client.portal.call(runtime.bus.publish, DEVICE_STATUS, status)
    deadline = time.monotonic() + 10
    while twins_of(runtime).cached(tenant_a.id, "valve-9") is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)

    headers = tenant_a.headers(Role.VIEWER)
    listed = client.get("/api/twins", headers=headers).json()
    assert [(t["device"], t["online"]) for t in listed] == [(pump, True), ("valve-9", False)]
    assert [t["device"] for t in client.get("/api/twins?online=true", headers=headers).json()] == [pump]
    assert [t["device"] for t in client.get("/api/twins?online=false", headers=headers).json()] == ["valve-9"]
    assert [t["device"] for t in client.get(f"/api/twins?after={pump}", headers=headers).json()] == ["valve-9"]
    assert [t["device"] for t in client.get("/api/twins?limit=1", headers=headers).json()] == [pump]
    problem(client.get("/api/twins?online=maybe", headers=headers), 422)


def test_the_event_stream_in_order_and_resumed(
    client: TestClient, runtime: Runtime, tenant_a: TenantFixture, pump: str
) -> None:
    twins = twins_of(runtime)
    twins.keepalive_s = 0.1
    twin = twins.cached(tenant_a.id, pump)
    assert twin is not None
    headers = tenant_a.headers(Role.ENGINEER)
    url = f"/api/devices/{pump}/twin/events"
    with client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = EventReader(response.iter_lines())
        snapshot = events.next()
        assert snapshot.event == "twin"
        assert snapshot.data["metrics"]["flow"]["value"] == 12.5

        for value in (1.0, 2.0, 3.0):
            points = batch(tenant_a.id, (pump, "flow", int(value) * 1000, value))
            report(client, runtime, points, has_metric(runtime, tenant_a, pump, "flow", value))
        client.put(f"/api/devices/{pump}/twin/attributes/desired/speed", json=7, headers=headers)
        received = [events.next() for _ in range(4)]
        assert [e.event for e in received] == ["patch"] * 4
        assert [e.data.get("metrics", {}).get("flow", {}).get("value") for e in received] == [1.0, 2.0, 3.0, None]
        assert received[3].data == {"attributes": {"desired": {"speed": 7}}}
        numbers = [int(e.id.rsplit(".", 1)[1]) for e in received]
        assert numbers == sorted(numbers)
        assert len(set(numbers)) == 4
        last_id = received[-1].id
    deadline = time.monotonic() + 10
    while twin.listeners:  # the server side ended with the client
        assert time.monotonic() < deadline, "the stream outlived its client"
        time.sleep(0.01)

    # Changes while disconnected are replayed to a client that says what it saw last.
    client.delete(f"/api/devices/{pump}/twin/attributes/desired/speed", headers=headers)
    report(
        client, runtime, batch(tenant_a.id, (pump, "flow", 9000, 9.0)), has_metric(runtime, tenant_a, pump, "flow", 9)
    )
    with client.stream("GET", url, headers={**headers, "Last-Event-ID": last_id}) as response:
        events = EventReader(response.iter_lines())
        first, second = events.next(), events.next()
        assert (first.event, first.data) == ("patch", {"attributes": {"desired": {"speed": None}}})
        assert (second.event, second.data["metrics"]["flow"]["value"]) == ("patch", 9.0)
