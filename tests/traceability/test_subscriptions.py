"""Query subscriptions on SQLite and PostgreSQL, delivered to a real HTTP receiver in the test.

Events are captured through the capture service (or `/epcis/capture`); deliveries run round by
round (`SubscriptionDelivery.run_round`) with a clock the test moves, except in the API test, where
the platform's own delivery loop is woken by the capture.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import select
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedOK, InvalidStatus

from iip.api.app import create_app
from iip.kernel.audit import AuditEntry
from iip.kernel.auth import Role
from iip.kernel.db import Database
from iip.kernel.errors import NotFound
from iip.kernel.runtime import Runtime
from iip.kernel.sealing import Sealer
from iip.traceability import subscription_signal
from iip.traceability.models import Event, Subscription
from iip.traceability.query_service import QueryService
from iip.traceability.subscription_delivery import SubscriptionDelivery, verify_signature
from iip.traceability.subscriptions import (
    SubscriptionControlsError,
    SubscriptionRequest,
    SubscriptionService,
)
from tests.api.support import assert_problem
from tests.conftest import TenantFixture
from tests.traceability.query_support import capture_events, epcis_document
from tests.traceability.subscription_support import (
    TOKEN,
    Clock,
    Receiver,
    Subscriber,
    actor,
    assert_empty_report,
    assert_round_delivers,
    assert_round_sends_nothing,
    capture,
    object_event,
    stored,
)


def row_id(db: Database, tenant_id: str, event_id: str) -> int:
    with db.session() as session:
        found = session.scalar(select(Event.id).where(Event.tenant_id == tenant_id, Event.event_id == event_id))
        assert found is not None
        return found


def delivered_ids(receiver: Receiver) -> list[str]:
    return [event_id for received in receiver.received if received.status == 200 for event_id in received.event_ids]


# --- delivery


async def test_events_captured_after_subscribing_arrive_signed_in_order_once(
    subscriber: Subscriber,
    migrated_db: Database,
    tenant_a: TenantFixture,
    receiver: Receiver,
    delivery: SubscriptionDelivery,
    sealer: Sealer,
) -> None:
    db, tenant = migrated_db, tenant_a.id
    before = capture(db, tenant, object_event())
    subscription_id, query_name = subscriber.subscribe()
    first = capture(db, tenant, object_event(), object_event("receiving"), object_event())
    second = capture(db, tenant, object_event())

    report = await delivery.run_round()

    assert report.delivered == {subscription_id: 3}
    [got] = receiver.received
    assert got.event_ids == [first[0], first[2], second[0]]  # the query's matches, in the order stored
    assert before[0] not in got.event_ids
    assert got.signed_with(TOKEN)
    assert not got.signed_with("another-key-just-as-long-as-the-first")
    assert verify_signature(TOKEN, got.body, got.headers["gs1-signature"], now=delivery.clock().timestamp())
    assert not verify_signature(TOKEN, got.body + b" ", got.headers["gs1-signature"], now=delivery.clock().timestamp())
    assert got.document["type"] == "EPCISQueryDocument"
    assert got.results["queryName"] == query_name
    assert got.results["subscriptionID"] == subscription_id
    assert got.headers["content-type"] == "application/json"
    assert got.headers["gs1-epcis-version"] == "2.0.0"

    # Once: a round with nothing new sends nothing; the next event goes alone.
    await assert_round_sends_nothing(delivery, receiver, received=1)
    third = capture(db, tenant, object_event())
    await delivery.run_round()
    assert [r.event_ids for r in receiver.received] == [[first[0], first[2], second[0]], third]


async def test_a_backlog_goes_in_batches_in_order(
    subscriber: Subscriber,
    migrated_db: Database,
    tenant_a: TenantFixture,
    receiver: Receiver,
    sealer: Sealer,
    clock: Clock,
) -> None:
    subscription_id, _ = subscriber.subscribe()
    ids = capture(migrated_db, tenant_a.id, *(object_event() for _ in range(5)))
    delivery = SubscriptionDelivery(migrated_db, sealer, clock=clock, batch=2)
    try:
        report = await delivery.run_round()
    finally:
        await delivery.close()
    assert report.delivered == {subscription_id: 5}
    assert [r.event_ids for r in receiver.received] == [ids[:2], ids[2:4], ids[4:]]
    assert stored(migrated_db, subscription_id).after_event == row_id(migrated_db, tenant_a.id, ids[-1])


async def test_a_refused_delivery_comes_again_and_the_cursor_moves_only_after_a_2xx(
    subscriber: Subscriber,
    migrated_db: Database,
    tenant_a: TenantFixture,
    receiver: Receiver,
    delivery: SubscriptionDelivery,
    sealer: Sealer,
    clock: Clock,
) -> None:
    db, tenant = migrated_db, tenant_a.id
    subscription_id, _ = subscriber.subscribe()
    start = stored(db, subscription_id).after_event
    ids = capture(db, tenant, object_event(), object_event())
    receiver.answer(500)

    report = await delivery.run_round()

    assert "500" in report.failed[subscription_id]
    failed = stored(db, subscription_id)
    assert failed.after_event == start
    assert failed.attempts == 1
    assert "500" in failed.last_error
    assert "receiver says no" in failed.last_error
    assert failed.next_attempt_at == clock.now + dt.timedelta(seconds=1)
    # Not before its backoff has run out.
    await assert_round_sends_nothing(delivery, receiver, received=1)

    clock.move(1)
    report = await delivery.run_round()

    assert report.delivered == {subscription_id: 2}
    refused, accepted = receiver.received
    assert (refused.status, accepted.status) == (500, 200)
    assert refused.event_ids == accepted.event_ids == ids
    assert refused.headers["x-iip-delivery"] == accepted.headers["x-iip-delivery"]
    done = stored(db, subscription_id)
    assert done.after_event == row_id(db, tenant, ids[-1])
    assert (done.attempts, done.last_error, done.next_attempt_at) == (0, "", None)


async def test_backoff_doubles_up_to_its_cap_and_never_skips(
    subscriber: Subscriber,
    migrated_db: Database,
    tenant_a: TenantFixture,
    receiver: Receiver,
    delivery: SubscriptionDelivery,
    sealer: Sealer,
    clock: Clock,
) -> None:
    db, tenant = migrated_db, tenant_a.id
    subscription_id, _ = subscriber.subscribe()
    start = stored(db, subscription_id).after_event
    ids = capture(db, tenant, object_event())
    receiver.answer(503, 503, 503, 503, 503)
    waits = []
    for _ in range(5):
        await delivery.run_round()
        row = stored(db, subscription_id)
        assert row.next_attempt_at is not None
        assert row.after_event == start
        waits.append((row.next_attempt_at - clock.now).total_seconds())
        clock.move_to(row.next_attempt_at)
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert stored(db, subscription_id).attempts == 5

    await assert_round_delivers(delivery, receiver, {subscription_id: 1}, ids)
    assert [r.status for r in receiver.received] == [503] * 5 + [200]


async def test_a_413_halves_the_batch(
    subscriber: Subscriber,
    migrated_db: Database,
    tenant_a: TenantFixture,
    receiver: Receiver,
    sealer: Sealer,
    clock: Clock,
) -> None:
    subscription_id, _ = subscriber.subscribe()
    ids = capture(migrated_db, tenant_a.id, *(object_event() for _ in range(4)))
    receiver.answer(413)
    delivery = SubscriptionDelivery(migrated_db, sealer, clock=clock, batch=4, retry_base_s=1.0)
    try:
        await delivery.run_round()
        clock.move(1)
        report = await delivery.run_round()
    finally:
        await delivery.close()
    assert report.delivered == {subscription_id: 4}
    assert [(r.status, r.event_ids) for r in receiver.received] == [(413, ids), (200, ids[:2]), (200, ids[2:])]


async def test_a_schedule_delivers_at_its_times_and_reports_empty_results_when_asked(
    subscriber: Subscriber,
    migrated_db: Database,
    tenant_a: TenantFixture,
    receiver: Receiver,
    delivery: SubscriptionDelivery,
    sealer: Sealer,
    clock: Clock,
) -> None:
    db, tenant = migrated_db, tenant_a.id
    reporting, _ = subscriber.subscribe(stream=None, schedule_seconds=60, report_if_empty=True)
    quiet, _ = subscriber.subscribe(stream=None, schedule_seconds=60)
    ids = capture(db, tenant, object_event())

    await assert_round_sends_nothing(delivery, receiver)  # not yet time

    first_times = [stored(db, reporting).next_attempt_at, stored(db, quiet).next_attempt_at]
    assert all(at is not None and at > clock.now for at in first_times)
    clock.move_to(max(at for at in first_times if at is not None))  # a schedule counts from its creation
    await assert_round_delivers(delivery, receiver, {reporting: 1, quiet: 1}, ids)
    assert sorted(r.results["subscriptionID"] for r in receiver.received) == sorted([reporting, quiet])
    assert stored(db, quiet).next_attempt_at == clock.now + dt.timedelta(seconds=60)

    clock.move(60)
    await assert_empty_report(delivery, receiver, reporting, received=3)  # for the one that asked for it
    assert stored(db, quiet).next_attempt_at == clock.now + dt.timedelta(seconds=60)


async def test_a_query_matching_nothing_moves_the_cursor_without_a_delivery(
    subscriber: Subscriber,
    migrated_db: Database,
    tenant_a: TenantFixture,
    receiver: Receiver,
    delivery: SubscriptionDelivery,
    sealer: Sealer,
) -> None:
    subscription_id, _ = subscriber.subscribe(query={"EQ_bizStep": ["receiving"]})
    ids = capture(migrated_db, tenant_a.id, object_event(), object_event())
    await assert_round_sends_nothing(delivery, receiver)
    assert stored(migrated_db, subscription_id).after_event == row_id(migrated_db, tenant_a.id, ids[-1])
    later = capture(migrated_db, tenant_a.id, object_event("receiving"))
    await delivery.run_round()
    assert delivered_ids(receiver) == later


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_an_event_committed_late_with_a_lower_id_is_not_skipped(
    subscriber: Subscriber,
    migrated_db: Database,
    tenant_a: TenantFixture,
    receiver: Receiver,
    delivery: SubscriptionDelivery,
    sealer: Sealer,
) -> None:
    """PostgreSQL hands out ids when rows are inserted, but transactions commit in any order."""
    db, tenant = migrated_db, tenant_a.id
    subscriber.subscribe()
    settled = capture(db, tenant, object_event())
    await delivery.run_round()
    assert delivered_ids(receiver) == settled

    slow = db.sessions()  # a capture whose transaction is still open: its event has the lower id
    try:
        late = object_event()
        capture_events(slow, tenant, [late])
        [early] = capture(db, tenant, object_event())
        assert row_id_in(slow, tenant, late["eventID"]) < row_id(db, tenant, early)

        await delivery.run_round()
        assert delivered_ids(receiver) == settled  # the committed event waits for the open one

        slow.commit()
    finally:
        slow.close()
    await delivery.run_round()
    assert delivered_ids(receiver) == [*settled, late["eventID"], early]


def row_id_in(session: Any, tenant_id: str, event_id: str) -> int:
    found = session.scalar(select(Event.id).where(Event.tenant_id == tenant_id, Event.event_id == event_id))
    assert found is not None
    return int(found)


# --- tenants, unsubscribing


async def test_tenants_stay_apart(
    subscriber: Subscriber,
    migrated_db: Database,
    tenant_a: TenantFixture,
    tenant_b: TenantFixture,
    receiver: Receiver,
    delivery: SubscriptionDelivery,
    sealer: Sealer,
) -> None:
    db = migrated_db
    subscription_id, query_name = subscriber.subscribe(query={})  # every event
    others = capture(db, tenant_b.id, object_event())
    own = capture(db, tenant_a.id, object_event())
    await delivery.run_round()
    assert delivered_ids(receiver) == own
    assert others[0].encode() not in receiver.received[0].body

    query_id = stored(db, subscription_id).query_id
    with db.session() as session:
        service = SubscriptionService(session, actor(tenant_b.id))
        with pytest.raises(NotFound):
            service.get(query_name, subscription_id)
        with pytest.raises(NotFound):
            service.delete(query_name, subscription_id)
        with pytest.raises(NotFound):
            service.list(query_name, None, 10)
        with pytest.raises(NotFound):
            service.create(query_name, SubscriptionRequest(receiver.url, TOKEN, stream=True), sealer)
        with pytest.raises(NotFound):  # by the query's id as well as by its name
            service.get(query_id, subscription_id)
    assert stored(db, subscription_id).active


async def test_unsubscribing_stops_delivery(
    subscriber: Subscriber,
    migrated_db: Database,
    tenant_a: TenantFixture,
    receiver: Receiver,
    delivery: SubscriptionDelivery,
    sealer: Sealer,
) -> None:
    db, tenant = migrated_db, tenant_a.id
    subscription_id, query_name = subscriber.subscribe()
    by_query, by_query_name = subscriber.subscribe()
    first = capture(db, tenant, object_event())
    await delivery.run_round()
    assert delivered_ids(receiver) == first * 2

    with db.session() as session:
        SubscriptionService(session, actor(tenant)).delete(query_name, subscription_id)
        QueryService(session, actor(tenant)).delete_query(by_query_name)  # its subscriptions go with it
    with db.session() as session:
        assert session.get(Subscription, subscription_id) is None
        assert session.get(Subscription, by_query) is None
    capture(db, tenant, object_event())
    assert (await delivery.run_round()).delivered == {}
    assert delivered_ids(receiver) == first * 2


async def test_refused_subscriptions(
    migrated_db: Database, tenant_a: TenantFixture, receiver: Receiver, sealer: Sealer
) -> None:
    refused = {
        "no stream, no schedule": SubscriptionRequest(receiver.url, TOKEN),
        "both": SubscriptionRequest(receiver.url, TOKEN, stream=True, schedule_seconds=5),
        "stream and schedule": SubscriptionRequest(receiver.url, TOKEN, stream=True, schedule={"minute": "5"}),
        "bad schedule": SubscriptionRequest(receiver.url, TOKEN, schedule={"minute": "60"}),
        "reportIfEmpty on a stream": SubscriptionRequest(receiver.url, TOKEN, stream=True, report_if_empty=True),
        "short token": SubscriptionRequest(receiver.url, "short", stream=True),
        "ftp": SubscriptionRequest("ftp://example.com/x", TOKEN, stream=True),
        "credentials": SubscriptionRequest("https://user:pw@example.com/x", TOKEN, stream=True),
        "zero interval": SubscriptionRequest(receiver.url, TOKEN, schedule_seconds=0),
    }
    with migrated_db.session() as session:
        QueryService(session, actor(tenant_a.id)).create_query("refusals", {})
        service = SubscriptionService(session, actor(tenant_a.id))
        accepted = []
        for why, request in refused.items():
            try:
                service.create("refusals", request, sealer)
            except SubscriptionControlsError:
                continue
            accepted.append(why)
        assert accepted == []
        assert service.list("refusals", None, 10)[1].subscriptions == []


# --- the capture signal


def test_a_capture_announces_its_tenant_once_committed(migrated_db: Database, tenant_a: TenantFixture) -> None:
    heard: list[frozenset[str]] = []
    subscription_signal.listen(heard.append)
    try:
        with migrated_db.sessions() as session:
            capture_events(session, tenant_a.id, [object_event()])
            assert heard == []  # written, not yet committed
            session.commit()
        assert heard == [frozenset({tenant_a.id})]
        with migrated_db.sessions() as session:
            capture_events(session, tenant_a.id, [object_event()])
            session.rollback()
            session.commit()  # nothing of the capture is left to announce
        assert heard == [frozenset({tenant_a.id})]
    finally:
        subscription_signal.unlisten(heard.append)


# --- the API, with the platform's own delivery loop


def test_subscriptions_over_the_api(
    client: TestClient, migrated_db: Database, tenant_a: TenantFixture, receiver: Receiver
) -> None:
    headers = tenant_a.headers()
    created = client.post(
        "/epcis/queries", json={"name": "shipped", "query": {"EQ_bizStep": ["shipping"]}}, headers=headers
    )
    assert created.status_code == 201, created.text
    path = "/epcis/queries/shipped/subscriptions"

    response = client.post(path, json={"dest": receiver.url, "stream": True}, headers=headers)

    assert response.status_code == 201, response.text
    body = response.json()
    token = body["signatureToken"]  # made here, answered this once
    subscription_id = body["subscriptionID"]
    assert len(token) >= 32
    assert response.headers["location"] == f"{path}/{subscription_id}"
    assert body["queryName"] == "shipped"
    assert body["dest"] == receiver.url
    assert body["stream"] is True
    one = client.get(f"{path}/{subscription_id}", headers=headers)
    assert one.status_code == 200
    assert "signatureToken" not in one.json()
    assert token not in one.text
    assert one.json()["delivery"] == {"failedAttempts": 0, "lastError": ""}
    listed = client.get(path, headers=tenant_a.headers(Role.VIEWER))
    assert [s["subscriptionID"] for s in listed.json()] == [subscription_id]
    assert client.get(f"/epcis/queries/{created.json()['id']}/subscriptions", headers=headers).json() == listed.json()

    # Captured through the API: the platform's delivery loop is woken and delivers, signed with the token.
    event = object_event()
    capture_response = client.post("/epcis/capture", json=epcis_document([event]), headers=headers)
    assert capture_response.status_code == 202, capture_response.text
    [got] = receiver.wait_for(1)
    assert got.event_ids == [event["eventID"]]
    assert got.signed_with(token)

    assert client.delete(f"{path}/{subscription_id}", headers=headers).status_code == 204
    assert_problem(client.get(f"{path}/{subscription_id}", headers=headers), 404, "subscription_not_found")
    with migrated_db.session() as session:
        audited = session.scalars(
            select(AuditEntry.action).where(
                AuditEntry.object_type == "epcis_subscription", AuditEntry.object_id == subscription_id
            )
        ).all()
    assert sorted(audited) == [
        "DELETE /epcis/queries/{query_name}/subscriptions/{subscription_id}",
        "POST /epcis/queries/{query_name}/subscriptions",
    ]


def test_api_refusals(client: TestClient, tenant_a: TenantFixture, receiver: Receiver) -> None:
    headers = tenant_a.headers()
    assert client.post("/epcis/queries", json={"name": "any", "query": {}}, headers=headers).status_code == 201
    path = "/epcis/queries/any/subscriptions"
    problem = assert_problem(
        client.post(path, json={"dest": receiver.url}, headers=headers), 400, "subscription_controls"
    )
    assert problem["epcisException"] == "epcisException:SubscriptionControlsException"
    cron = {"dest": receiver.url, "schedule": {"hour": "24", "minute": "5"}}
    assert_problem(client.post(path, json=cron, headers=headers), 400, "subscription_controls")
    assert_problem(client.post(path, json={"stream": True}, headers=headers), 422)
    naive = {"dest": receiver.url, "stream": True, "initialRecordTime": "2024-01-01T00:00:00"}
    assert_problem(client.post(path, json=naive, headers=headers), 400, "subscription_controls")
    viewer = tenant_a.headers(Role.VIEWER)
    assert_problem(client.post(path, json={"dest": receiver.url, "stream": True}, headers=viewer), 403)
    assert_problem(
        client.post("/epcis/queries/none/subscriptions", json={"dest": receiver.url, "stream": True}, headers=headers),
        404,
    )
    assert_problem(client.get(path, params={"nextPageToken": "garbage"}, headers=headers), 422, "page_token")


def test_initial_record_time_starts_delivery_at_events_recorded_since(
    migrated_db: Database, tenant_a: TenantFixture, sealer: Sealer
) -> None:
    db, tenant = migrated_db, tenant_a.id
    earlier = capture(db, tenant, object_event())
    with db.session() as session:
        [recorded] = session.scalars(select(Event.record_time).where(Event.event_id == earlier[0])).all()
    capture(db, tenant, object_event())
    unreached = Subscriber(db, tenant, "http://127.0.0.1:9/x", sealer)
    since, _ = unreached.subscribe(initial_record_time=recorded)
    fresh, _ = unreached.subscribe()
    assert stored(db, since).after_event == row_id(db, tenant, earlier[0]) - 1
    assert stored(db, fresh).after_event >= row_id(db, tenant, earlier[0]) + 1


def test_listing_pages(migrated_db: Database, tenant_a: TenantFixture, sealer: Sealer) -> None:
    with migrated_db.session() as session:
        who = actor(tenant_a.id)
        QueryService(session, who).create_query("paged", {})
        service = SubscriptionService(session, who)
        made = [
            service.create("paged", SubscriptionRequest(f"http://127.0.0.1:9/{n}", TOKEN, stream=True), sealer)
            for n in range(5)
        ]
        seen: list[str] = []
        token = None
        while True:
            _query, page = service.list("paged", token, 2)
            seen += [row.id for row in page.subscriptions]
            token = page.next_page_token
            if token is None:
                break
    assert sorted(seen) == sorted(c.subscription.id for c in made)
    assert len(seen) == 5


# --- the WebSocket form, on a real server


@pytest.fixture
def served(runtime: Runtime) -> Iterator[str]:
    """The platform served by uvicorn on a free local port (its lifespan running): host:port."""
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(runtime=runtime, configure_logs=False),
            host="127.0.0.1",
            port=0,
            lifespan="on",
            ws="websockets-sansio",
            log_level="warning",
        )
    )
    thread = threading.Thread(target=server.run, name="platform", daemon=True)
    thread.start()
    for _ in range(3000):  # up to a minute for start-up
        if server.started or not thread.is_alive():
            break
        time.sleep(0.02)
    assert server.started, "the platform did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join()


async def test_a_websocket_streams_new_matches_until_the_query_is_deleted(
    served: str, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    headers = tenant_a.headers()
    async with httpx.AsyncClient(base_url=f"http://{served}", headers=headers, timeout=30) as http:
        created = await http.post("/epcis/queries", json={"name": "shipped", "query": {"EQ_bizStep": ["shipping"]}})
        assert created.status_code == 201, created.text
        query_id = created.json()["id"]
        socket_url = f"ws://{served}/epcis/queries/shipped/events?stream=true"
        refusals = {
            "no key": (socket_url, {}),
            "no stream": (socket_url.removesuffix("?stream=true"), headers),
            "a schedule": (socket_url.replace("stream=true", "minute=5"), headers),
            "another tenant": (f"ws://{served}/epcis/queries/{query_id}/events?stream=true", tenant_b.headers()),
        }
        for why, (url, sent) in refusals.items():
            with pytest.raises(InvalidStatus) as refused:
                await connect(url, additional_headers=sent)
            assert refused.value.response.status_code == 403, why

        async with connect(socket_url, additional_headers=headers) as socket:
            shipped, received = object_event(), object_event("receiving")
            answer = await http.post("/epcis/capture", json=epcis_document([received, shipped]))
            assert answer.status_code == 202, answer.text
            first = json.loads(await asyncio.wait_for(socket.recv(), 30))
            results = first["epcisBody"]["queryResults"]
            assert results["queryName"] == "shipped"
            assert results["subscriptionID"]
            assert [e["eventID"] for e in results["resultsBody"]["eventList"]] == [shipped["eventID"]]

            later = object_event()
            assert (await http.post("/epcis/capture", json=epcis_document([later]))).status_code == 202
            second = json.loads(await asyncio.wait_for(socket.recv(), 30))
            assert [e["eventID"] for e in second["epcisBody"]["queryResults"]["resultsBody"]["eventList"]] == [
                later["eventID"]
            ]

            assert (await http.delete("/epcis/queries/shipped")).status_code == 204
            with pytest.raises(ConnectionClosedOK):
                await asyncio.wait_for(socket.recv(), 30)
            assert socket.close_code == 1000
