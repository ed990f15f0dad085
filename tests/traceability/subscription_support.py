"""A real HTTP receiver for subscription deliveries, and what the subscription tests share: the
subscriber that sets subscriptions up against it, events captured, subscriptions as stored, and what
a delivery round is expected to have sent."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import itertools
import json
import threading
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from iip.kernel.auth import Principal, Role
from iip.kernel.db import Database
from iip.kernel.sealing import Sealer
from iip.traceability.models import Subscription
from iip.traceability.query_service import QueryService
from iip.traceability.subscription_delivery import SubscriptionDelivery
from iip.traceability.subscriptions import SubscriptionRequest, SubscriptionService
from tests.traceability.query_support import capture_events

TOKEN = "subscriber-chosen-signing-key-0123456789"


@dataclass(frozen=True)
class Received:
    """One POST as the receiver got it, with the status it answered."""

    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def document(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.body)
        return document

    @property
    def results(self) -> dict[str, Any]:
        results: dict[str, Any] = self.document["epcisBody"]["queryResults"]
        return results

    @property
    def event_ids(self) -> list[str]:
        return [event["eventID"] for event in self.results["resultsBody"]["eventList"]]

    def signed_with(self, key: str) -> bool:
        """Whether GS1-Signature is HMAC-SHA256 under `key` of "<t>." and the body, computed here independently."""
        fields = dict(part.split("=", 1) for part in self.headers["gs1-signature"].split(","))
        expected = hmac.new(key.encode(), fields["t"].encode() + b"." + self.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, fields["sha256"])


class Receiver:
    """Records every POST and answers the statuses queued with `answer` in turn, then 200."""

    def __init__(self, server: ThreadingHTTPServer) -> None:
        self.server = server
        self.received: list[Received] = []
        self._statuses: deque[int] = deque()
        self._changed = threading.Condition()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/epcis/callback"

    def answer(self, *statuses: int) -> None:
        with self._changed:
            self._statuses.extend(statuses)

    def record(self, headers: dict[str, str], body: bytes) -> int:
        with self._changed:
            status = self._statuses.popleft() if self._statuses else 200
            self.received.append(Received(headers, body, status))
            self._changed.notify_all()
            return status

    def wait_for(self, count: int, *, timeout: float = 30.0) -> list[Received]:
        """The first `count` requests, once they have come (an assertion error if they do not)."""
        with self._changed:
            arrived = self._changed.wait_for(lambda: len(self.received) >= count, timeout)
            assert arrived, f"{len(self.received)} deliveries arrived, {count} expected"
            return list(self.received[:count])


@contextmanager
def running_receiver() -> Iterator[Receiver]:
    holder: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status = holder[0].record({k.lower(): v for k, v in self.headers.items()}, body)
            answer = b'{"received": true}' if status < 300 else b"receiver says no"
            self.send_response(status)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder.append(Receiver(server))
    thread = threading.Thread(target=server.serve_forever, name="subscription-receiver", daemon=True)
    thread.start()
    try:
        yield holder[0]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class Clock:
    """A clock the test moves: deliveries read the time from it."""

    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC).replace(microsecond=0)

    def __call__(self) -> dt.datetime:
        return self.now

    def move(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)

    def move_to(self, moment: dt.datetime) -> None:
        self.now = max(self.now, moment)


_numbers = itertools.count(1)


def object_event(biz_step: str = "shipping") -> dict[str, Any]:
    """A valid ObjectEvent of its own: its own eventID, EPC and time (so never a duplicate)."""
    number = next(_numbers)
    return {
        "type": "ObjectEvent",
        "eventID": f"urn:uuid:{uuid.uuid4()}",
        "eventTime": f"2024-05-01T08:{number // 60 % 60:02d}:{number % 60:02d}.000+08:00",
        "eventTimeZoneOffset": "+08:00",
        "action": "OBSERVE",
        "epcList": [f"urn:epc:id:sgtin:0614141.107346.{number}"],
        "bizStep": biz_step,
    }


def actor(tenant_id: str, role: Role = Role.ADMIN) -> Principal:
    return Principal("user", f"tester-{tenant_id}", "tester", tenant_id, role)


@dataclass(frozen=True)
class Subscriber:
    """A tenant subscribing named queries of its own to one receiver URL, signed with TOKEN."""

    db: Database
    tenant_id: str
    url: str
    sealer: Sealer

    def subscribe(self, *, query: dict[str, Any] | None = None, **wanted: Any) -> tuple[str, str]:
        """A named query (shipping events unless told otherwise) and a subscription to it, a stream unless
        told otherwise: (subscription id, query name)."""
        with self.db.session() as session:
            who = actor(self.tenant_id)
            name = f"q-{uuid.uuid4().hex[:10]}"
            QueryService(session, who).create_query(name, {"EQ_bizStep": ["shipping"]} if query is None else query)
            request = SubscriptionRequest(destination=self.url, signature_token=TOKEN, **({"stream": True} | wanted))
            return SubscriptionService(session, who).create(name, request, self.sealer).subscription.id, name


def capture(db: Database, tenant_id: str, *events: dict[str, Any]) -> list[str]:
    """Capture the events as one document; answers their eventIDs."""
    with db.session() as session:
        capture_events(session, tenant_id, events)
    return [event["eventID"] for event in events]


def stored(db: Database, subscription_id: str) -> Subscription:
    with db.session() as session:
        row = session.get(Subscription, subscription_id)
        assert row is not None
        return row


def next_attempt(db: Database, subscription_id: str) -> dt.datetime:
    """When the subscription is next due (it must be due some time)."""
    due = stored(db, subscription_id).next_attempt_at
    assert due is not None
    return due


async def assert_round_delivers(
    delivery: SubscriptionDelivery, receiver: Receiver, delivered: dict[str, int], event_ids: list[str]
) -> None:
    """A round delivers `delivered` (events per subscription id), and every request the receiver has had
    carried exactly `event_ids`."""
    report = await delivery.run_round()
    assert report.delivered == delivered
    assert receiver.received
    assert all(r.event_ids == event_ids for r in receiver.received)


async def assert_round_sends_nothing(delivery: SubscriptionDelivery, receiver: Receiver, *, received: int = 0) -> None:
    """A round delivers to no subscription, and the receiver has had `received` requests in all."""
    assert (await delivery.run_round()).delivered == {}
    assert len(receiver.received) == received


async def assert_empty_report(
    delivery: SubscriptionDelivery, receiver: Receiver, subscription_id: str, *, received: int
) -> None:
    """A round sends `subscription_id` (and no other) a report with no events, the `received`-th request."""
    report = await delivery.run_round()
    assert report.delivered == {subscription_id: 0}
    assert receiver.received[-1].results["subscriptionID"] == subscription_id
    assert receiver.received[-1].event_ids == []
    assert len(receiver.received) == received
