"""Cron-like subscription schedules: reading them, when they fire, and delivery on schedule.

The delivery tests run on SQLite and PostgreSQL with a real HTTP receiver, round by round, with a
clock the test moves (`SubscriptionDelivery(clock=...)`).
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import pytest
from fastapi.testclient import TestClient

from iip.kernel.db import Database, utcnow
from iip.kernel.sealing import Sealer
from iip.traceability.models import NamedQuery
from iip.traceability.subscription_delivery import SubscriptionDelivery
from iip.traceability.subscription_schedule import ScheduleError, parse_schedule
from iip.traceability.subscription_schemas import SubscriptionOut
from tests.api.support import assert_problem
from tests.conftest import TenantFixture
from tests.traceability.subscription_support import (
    Clock,
    Receiver,
    Subscriber,
    assert_empty_report,
    assert_round_delivers,
    assert_round_sends_nothing,
    capture,
    next_attempt,
    object_event,
    stored,
)

UTC = dt.UTC


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(UTC)


def fires(schedule: dict[str, Any], after: str, count: int = 1) -> list[str]:
    """The next `count` times the schedule fires after `after`, as ISO text in UTC."""
    reader = parse_schedule(schedule)
    found: list[str] = []
    moment: dt.datetime | None = at(after)
    for _ in range(count):
        assert moment is not None
        moment = reader.next_after(moment)
        assert moment is not None
        found.append(moment.isoformat())
    return found


# --- when a schedule fires


@pytest.mark.parametrize(
    ("schedule", "after", "expected"),
    [
        # The binding's example: daily at 01:05:00 (finer omitted fields are their first value).
        ({"hour": "1", "minute": "5"}, "2024-05-01T00:00:00+00:00", ["2024-05-01T01:05:00+00:00"]),
        ({"hour": "1", "minute": 5}, "2024-05-01T01:05:00+00:00", ["2024-05-02T01:05:00+00:00"]),  # strictly after
        ({"hour": "1", "minute": "5"}, "2024-05-01T01:04:59.5+00:00", ["2024-05-01T01:05:00+00:00"]),
        ({"second": "0", "minute": "0"}, "2024-05-01T10:00:00+00:00", ["2024-05-01T11:00:00+00:00"]),
        (
            {"second": "0/30"},
            "2024-05-01T10:00:10+00:00",
            ["2024-05-01T10:00:30+00:00", "2024-05-01T10:01:00+00:00", "2024-05-01T10:01:30+00:00"],
        ),
        (
            {"minute": "[10-20]/5,45"},
            "2024-05-01T10:12:00+00:00",
            ["2024-05-01T10:15:00+00:00", "2024-05-01T10:20:00+00:00", "2024-05-01T10:45:00+00:00"],
        ),
        # Given a time zone offset: the schedule is read in UTC.
        ({"hour": "1", "minute": "5"}, "2024-05-01T08:00:00+08:00", ["2024-05-01T01:05:00+00:00"]),
        # Weekdays only: from Friday 09:00 to Monday 09:00 (1 is Monday).
        ({"dayOfWeek": "[1-5]", "hour": "9"}, "2024-05-03T09:00:00+00:00", ["2024-05-06T09:00:00+00:00"]),
        ({"dayOfWeek": "7"}, "2024-05-01T00:00:00+00:00", ["2024-05-05T00:00:00+00:00"]),
        # Day 31 skips the months without one; 29 February waits for a leap year.
        ({"dayOfMonth": "31"}, "2024-04-01T00:00:00+00:00", ["2024-05-31T00:00:00+00:00", "2024-07-31T00:00:00+00:00"]),
        ({"dayOfMonth": "29", "month": "2"}, "2025-01-01T00:00:00+00:00", ["2028-02-29T00:00:00+00:00"]),
        # Both day fields must match (EPCIS), not either (Unix cron): Friday the 13th.
        ({"dayOfMonth": "13", "dayOfWeek": "5"}, "2024-01-01T00:00:00+00:00", ["2024-09-13T00:00:00+00:00"]),
        ({"month": "1"}, "2024-05-01T00:00:00+00:00", ["2025-01-01T00:00:00+00:00"]),
        # An hour given with every second of it asked for: each second from 02:00:00 to 02:59:59.
        (
            {"second": "[0-59]", "hour": "2"},
            "2024-05-01T02:59:58+00:00",
            ["2024-05-01T02:59:59+00:00", "2024-05-02T02:00:00+00:00"],
        ),
        (
            {"month": "12", "dayOfMonth": "31", "hour": "23", "minute": "59", "second": "59"},
            "2024-12-31T23:59:59+00:00",
            ["2025-12-31T23:59:59+00:00"],
        ),
    ],
)
def test_next_fire_times(schedule: dict[str, Any], after: str, expected: list[str]) -> None:
    assert fires(schedule, after, len(expected)) == expected


def test_next_fire_time_agrees_with_a_second_by_second_search() -> None:
    rng = random.Random(20240501)  # noqa: S311 - reproducible test data, not secrets
    for _ in range(25):
        schedule: dict[str, str] = {}
        for name, (first, last) in (("second", (0, 59)), ("minute", (0, 59)), ("hour", (0, 23))):
            if rng.random() < 0.6:
                picked = sorted(rng.sample(range(first, last + 1), rng.randint(1, 4)))
                schedule[name] = ",".join(map(str, picked))
        if not schedule:
            schedule["minute"] = str(rng.randint(0, 59))
        reader = parse_schedule(schedule)
        start = dt.datetime(2024, 2, 28, rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59), tzinfo=UTC)
        found = reader.next_after(start)
        moment = start + dt.timedelta(seconds=1)
        while not reader.fires_at(moment):
            moment += dt.timedelta(seconds=1)
            assert moment - start < dt.timedelta(days=2), schedule
        assert found == moment, (schedule, start)


@pytest.mark.parametrize(
    ("schedule", "field", "says"),
    [
        ({"minute": "60"}, "schedule.minute", "outside 0-59"),
        ({"hour": "[5-3]"}, "schedule.hour", "backwards"),
        ({"second": "every"}, "schedule.second", "not a number"),
        ({"dayOfWeek": "0"}, "schedule.dayOfWeek", "outside 1-7"),
        ({"month": "1-3"}, "schedule.month", "[low-high]"),
        ({"minute": "5/0"}, "schedule.minute", "step"),
        ({"minute": True}, "schedule.minute", "must be a string"),
        ({"minute": ""}, "schedule.minute", "must list"),
        ({"year": "2030"}, "schedule.year", "not a schedule field"),
        ({}, "schedule", "at least one"),
        ({"dayOfMonth": "30", "month": "2"}, "schedule", "never fires"),
        ({"dayOfMonth": "31", "month": "4,6,9,11"}, "schedule", "never fires"),
    ],
)
def test_a_schedule_that_cannot_work_is_refused_naming_its_field(
    schedule: dict[str, Any], field: str, says: str
) -> None:
    with pytest.raises(ScheduleError) as refused:
        parse_schedule(schedule, now=at("2024-05-01T00:00:00+00:00"))
    assert refused.value.field == field
    assert says in str(refused.value)


def test_a_schedule_is_kept_as_given() -> None:
    given = {"minute": 5, "hour": "[1-3], 7", "dayOfWeek": None}
    assert parse_schedule(given).as_json() == {"minute": "5", "hour": "[1-3],7"}


# --- delivery on schedule


def next_minute(moment: dt.datetime) -> dt.datetime:
    return moment.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)


def answer(db: Database, subscription_id: str) -> dict[str, Any]:
    with db.session() as session:
        row = stored(db, subscription_id)
        query = session.get(NamedQuery, row.query_id)
        assert query is not None
        return SubscriptionOut.of(row, query).answer()


async def test_a_cron_schedule_delivers_at_its_times_and_reports_empty_results_when_asked(
    subscriber: Subscriber,
    migrated_db: Database,
    tenant_a: TenantFixture,
    receiver: Receiver,
    delivery: SubscriptionDelivery,
    sealer: Sealer,
    clock: Clock,
) -> None:
    db, tenant = migrated_db, tenant_a.id
    every_minute = {"second": "0"}
    before = utcnow()
    reporting, _ = subscriber.subscribe(stream=None, schedule=every_minute, report_if_empty=True)
    quiet, _ = subscriber.subscribe(stream=None, schedule=every_minute)
    daily, _ = subscriber.subscribe(stream=None, schedule={"hour": "1", "minute": "5"})
    after = utcnow()
    ids = capture(db, tenant, object_event())

    await assert_round_sends_nothing(delivery, receiver)  # not yet time
    first = next_attempt(db, reporting)
    assert first == stored(db, quiet).next_attempt_at
    assert first.second == 0
    assert before < first <= next_minute(after)  # the next minute after the subscription was made
    daily_at = next_attempt(db, daily)
    assert (daily_at.hour, daily_at.minute, daily_at.second) == (1, 5, 0)

    clock.move_to(first)
    await assert_round_delivers(delivery, receiver, {reporting: 1, quiet: 1}, ids)
    for subscription_id in (reporting, quiet):
        row = stored(db, subscription_id)
        assert row.next_attempt_at == first + dt.timedelta(minutes=1)
        assert row.last_notified_at == first
    shown = answer(db, reporting)
    assert shown["schedule"] == every_minute
    assert shown["reportIfEmpty"] is True
    assert "scheduleSeconds" not in shown
    assert "stream" not in shown
    assert dt.datetime.fromisoformat(shown["lastNotifiedAt"]) == first

    clock.move(60)
    await assert_empty_report(delivery, receiver, reporting, received=3)  # for the one that asked for it
    assert stored(db, quiet).next_attempt_at == first + dt.timedelta(minutes=2)
    assert stored(db, quiet).last_notified_at == first

    # Times missed (the platform was down) make one delivery, and the schedule goes on from now.
    clock.move(5 * 60 + 17)
    later = capture(db, tenant, object_event())
    report = await delivery.run_round()
    assert report.delivered == {reporting: 1, quiet: 1}
    assert [r.event_ids for r in receiver.received[3:]] == [later, later]
    for subscription_id in (reporting, quiet):
        assert stored(db, subscription_id).next_attempt_at == next_minute(clock.now)
    await assert_round_sends_nothing(delivery, receiver, received=5)


async def test_a_failed_scheduled_delivery_is_retried_then_keeps_its_schedule(
    subscriber: Subscriber,
    migrated_db: Database,
    tenant_a: TenantFixture,
    receiver: Receiver,
    delivery: SubscriptionDelivery,
    sealer: Sealer,
    clock: Clock,
) -> None:
    db, tenant = migrated_db, tenant_a.id
    subscription_id, _ = subscriber.subscribe(stream=None, schedule={"second": "0"})
    ids = capture(db, tenant, object_event())
    first = next_attempt(db, subscription_id)
    clock.move_to(first)
    receiver.answer(500)

    await delivery.run_round()
    failed = stored(db, subscription_id)
    assert (failed.attempts, failed.next_attempt_at, failed.last_notified_at) == (
        1,
        first + dt.timedelta(seconds=1),
        None,
    )

    clock.move(1)
    assert (await delivery.run_round()).delivered == {subscription_id: 1}
    assert [(r.status, r.event_ids) for r in receiver.received] == [(500, ids), (200, ids)]
    done = stored(db, subscription_id)
    assert (done.attempts, done.next_attempt_at, done.last_notified_at) == (
        0,
        first + dt.timedelta(minutes=1),
        clock.now,
    )


async def test_an_interval_still_delivers_every_n_seconds(
    subscriber: Subscriber,
    migrated_db: Database,
    tenant_a: TenantFixture,
    receiver: Receiver,
    delivery: SubscriptionDelivery,
    sealer: Sealer,
    clock: Clock,
) -> None:
    db, tenant = migrated_db, tenant_a.id
    subscription_id, _ = subscriber.subscribe(stream=None, schedule_seconds=90)
    ids = capture(db, tenant, object_event())
    clock.move_to(next_attempt(db, subscription_id))
    await assert_round_delivers(delivery, receiver, {subscription_id: 1}, ids)
    row = stored(db, subscription_id)
    assert (row.next_attempt_at, row.last_notified_at) == (clock.now + dt.timedelta(seconds=90), clock.now)
    assert answer(db, subscription_id)["scheduleSeconds"] == 90


# --- over the API


def test_scheduled_subscriptions_over_the_api(client: TestClient, tenant_a: TenantFixture, receiver: Receiver) -> None:
    headers = tenant_a.headers()
    assert client.post("/epcis/queries", json={"name": "nightly", "query": {}}, headers=headers).status_code == 201
    path = "/epcis/queries/nightly/subscriptions"
    body = {
        "dest": receiver.url,
        "reportIfEmpty": True,
        "schedule": {"hour": "1", "minute": 5},
        "initialRecordTime": "2024-05-01T08:00:00+08:00",
    }

    created = client.post(path, json=body, headers=headers)

    assert created.status_code == 201, created.text
    made = created.json()
    assert made["schedule"] == {"hour": "1", "minute": "5"}
    assert made["reportIfEmpty"] is True
    assert "stream" not in made
    assert "scheduleSeconds" not in made
    assert "lastNotifiedAt" not in made  # nothing delivered yet
    assert dt.datetime.fromisoformat(made["initialRecordTime"]) == at("2024-05-01T00:00:00+00:00")
    next_at = dt.datetime.fromisoformat(made["delivery"]["nextAttemptAt"])
    assert (next_at.hour, next_at.minute, next_at.second, next_at.utcoffset()) == (1, 5, 0, dt.timedelta(0))
    one = client.get(f"{path}/{made['subscriptionID']}", headers=headers).json()
    assert one["schedule"] == made["schedule"]
    assert one["initialRecordTime"] == made["initialRecordTime"]
    [listed] = client.get(path, headers=headers).json()
    assert listed["schedule"] == made["schedule"]

    refused = {
        "schedule.minute": {"dest": receiver.url, "schedule": {"minute": "[0-60]"}},
        "schedule.sec": {"dest": receiver.url, "schedule": {"sec": "0"}},
        "never fires": {"dest": receiver.url, "schedule": {"dayOfMonth": "30", "month": "2"}},
        "not stream: true and schedule": {"dest": receiver.url, "stream": True, "schedule": {"minute": "5"}},
        "not schedule and scheduleSeconds": {"dest": receiver.url, "schedule": {"minute": "5"}, "scheduleSeconds": 60},
        "reportIfEmpty applies": {"dest": receiver.url, "stream": True, "reportIfEmpty": True},
    }
    for says, wrong in refused.items():
        problem = assert_problem(client.post(path, json=wrong, headers=headers), 400, "subscription_controls")
        assert says in problem["detail"], (says, problem["detail"])
        assert problem["epcisException"] == "epcisException:SubscriptionControlsException"
    assert len(client.get(path, headers=headers).json()) == 1  # nothing of a refusal is kept
