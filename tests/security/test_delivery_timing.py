"""When a failed bulletin delivery is tried again: its backoff counts from the failed try and is
kept on the row (`next_attempt_at`), so a retrier that starts afresh (a restarted platform) neither
sends it early nor makes it wait a second backoff. The retriers here run on a clock the test sets;
the platform's own looks only once an hour."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import inspect

from iip.kernel.runtime import Runtime
from iip.kernel.settings import SecuritySettings, Settings
from iip.security.delivery import DeliveryRetrier
from iip.security.models import BulletinDelivery
from iip.security.records import STALE_PENDING_S
from tests.alarms.notify.conftest import (  # real peers, shared with the alarm notification tests
    HookReceiver,
    hook_receiver,  # noqa: F401 - fixture
)
from tests.conftest import TenantFixture
from tests.security.support import hook_contact, publish_until, retrying_settings

BASE_S = 60.0


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    retry = SecuritySettings(
        delivery_max_attempts=5, delivery_retry_base_s=BASE_S, delivery_retry_max_s=900.0, delivery_check_s=3600.0
    )
    return retrying_settings(tmp_path, db_url, retry)


def _row(runtime: Runtime, delivery_id: str) -> BulletinDelivery:
    with runtime.db.session() as session:
        row = session.get(BulletinDelivery, delivery_id)
        assert row is not None
        session.expunge(row)
        return row


def _next_try(row: BulletinDelivery) -> dt.datetime:
    """When the row is to be tried next (it must be waiting), aware of its zone."""
    assert row.next_attempt_at is not None
    return row.next_attempt_at.replace(tzinfo=row.next_attempt_at.tzinfo or dt.UTC)


def _check_at(client: TestClient, runtime: Runtime, moment: dt.datetime) -> int:
    """One look by a retrier that has just started (it remembers nothing) at `moment`."""
    assert client.portal is not None
    result: Any = client.portal.call(DeliveryRetrier(runtime, clock=lambda: moment).check)
    return int(result)


def test_a_failed_delivery_waits_its_backoff_from_the_failure_across_restarts(
    client: TestClient,
    runtime: Runtime,
    tenant_a: TenantFixture,
    tenant_b: TenantFixture,
    hook_receiver: HookReceiver,  # noqa: F811 - fixture use
) -> None:
    hook_contact(client, tenant_b, hook_receiver, [503, 502])  # unwell twice, then 200
    before = dt.datetime.now(dt.UTC)
    _, delivery = publish_until(client, tenant_a, tenant_b, "retrying")
    after = dt.datetime.now(dt.UTC)
    first_due = _next_try(_row(runtime, delivery["id"]))
    assert before + dt.timedelta(seconds=BASE_S) <= first_due <= after + dt.timedelta(seconds=BASE_S)
    assert dt.datetime.fromisoformat(delivery["next_attempt_at"]) == first_due

    # Not before its time, however often a new retrier looks.
    assert _check_at(client, runtime, first_due - dt.timedelta(seconds=1)) == 0
    assert _check_at(client, runtime, after + dt.timedelta(seconds=BASE_S / 2)) == 0
    assert len(hook_receiver.received) == 1

    # A retrier that first sees the row after its time sends it at once, and the second failure
    # waits twice the base from that failure.
    second_try = first_due + dt.timedelta(seconds=5)
    assert _check_at(client, runtime, second_try) == 1
    assert len(hook_receiver.received) == 2
    row = _row(runtime, delivery["id"])
    assert (row.status, row.attempts) == ("retrying", 2)
    second_due = second_try + dt.timedelta(seconds=2 * BASE_S)
    assert _next_try(row) == second_due

    assert _check_at(client, runtime, second_due - dt.timedelta(seconds=1)) == 0
    assert len(hook_receiver.received) == 2
    assert _check_at(client, runtime, second_due) == 1
    row = _row(runtime, delivery["id"])
    assert (row.status, row.attempts, row.next_attempt_at) == ("sent", 3, None)
    assert len(hook_receiver.received) == 3
    assert _check_at(client, runtime, second_due + dt.timedelta(days=1)) == 0  # nothing left to send


def test_a_delivery_claimed_by_a_process_that_died_is_sent_after_the_stale_time(
    client: TestClient,
    runtime: Runtime,
    tenant_a: TenantFixture,
    tenant_b: TenantFixture,
    hook_receiver: HookReceiver,  # noqa: F811 - fixture use
) -> None:
    hook_contact(client, tenant_b, hook_receiver, [503])
    _, delivery = publish_until(client, tenant_a, tenant_b, "retrying")
    delivery_id = delivery["id"]
    due = _next_try(_row(runtime, delivery_id))
    # A process claims it and dies before sending: the row is pending with a later time.
    retrier = DeliveryRetrier(runtime, clock=lambda: due)
    assert retrier._claim(retrier._due(due), due) == [delivery_id]
    stale = _row(runtime, delivery_id)
    assert stale.status == "pending"
    stale_at = _next_try(stale)
    assert stale_at == due + dt.timedelta(seconds=STALE_PENDING_S)
    assert _check_at(client, runtime, stale_at - dt.timedelta(seconds=1)) == 0
    assert _check_at(client, runtime, stale_at) == 1
    assert _row(runtime, delivery_id).status == "sent"
    assert len(hook_receiver.received) == 2


def test_the_retrier_selects_due_rows_through_an_index(runtime: Runtime) -> None:
    with runtime.db.engine.connect() as connection:
        indexes = inspect(connection).get_indexes("security_bulletin_delivery")
    assert any(index["column_names"] == ["next_attempt_at"] for index in indexes)
