"""Webhook signing secrets at rest, on SQLite and PostgreSQL: stored sealed, signing with the secret issued.

The API answers a secret once; the column holds only its sealed form, which the dispatcher opens to
sign. A secret stored plain before sealing still signs, and is sealed at its first use. Migration
0012 grows the column without touching the channels' routes or deliveries.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from iip.alarms.notify import router as notify_router
from iip.alarms.notify.models import SEALED_SECRET_LENGTH, SECRET_LENGTH, Channel, Delivery, Route, RouteChannel
from iip.alarms.notify.router import PREFIX
from iip.alarms.notify.schemas import WebhookChannelCreate
from iip.alarms.notify.service import CHANNEL_SECRET_PURPOSE, NotificationAdmin, channel_sealer
from iip.api.app import create_app
from iip.kernel.auth import new_id
from iip.kernel.db import Database
from iip.kernel.runtime import Runtime
from iip.kernel.sealing import Sealer, is_sealed, sealed_length
from iip.kernel.settings import Settings
from iip.migrations.runner import downgrade, upgrade
from tests.alarms.notify.conftest import (
    Clock,
    HookReceiver,
    admin_of,
    alarm_change,
    make_dispatcher,
    notification_settings,
)
from tests.api.support import api_routes
from tests.conftest import TenantFixture, make_tenant

P = PREFIX
PLAIN_SECRET = "whsec_stored-before-sealing-0123456789"


@pytest.fixture
def api(runtime: Runtime) -> Iterator[TestClient]:
    app = create_app(runtime=runtime, configure_logs=False)
    if not any(info.path.startswith(PREFIX) for info in api_routes(app)):  # until the module mounts it
        app.include_router(notify_router)
    with TestClient(app) as client:
        yield client


def created(api: TestClient, tenant: TenantFixture, **spec: Any) -> dict[str, Any]:
    response = api.post(f"{P}/channels", json={"kind": "webhook", **spec}, headers=tenant.headers())
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def stored_secret(db: Database, channel_id: str) -> str:
    with db.session() as session:
        value = session.scalar(select(Channel.secret).where(Channel.id == channel_id))
    assert value is not None
    return value


def send_test(api: TestClient, tenant: TenantFixture, channel: str) -> dict[str, Any]:
    response = api.post(f"{P}/channels/{channel}/test", headers=tenant.headers())
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_the_column_holds_the_sealed_secret_and_webhooks_verify_with_the_one_issued(
    api: TestClient, runtime: Runtime, tenant_a: TenantFixture, hook_receiver: HookReceiver
) -> None:
    channel = created(api, tenant_a, name="scada", url=hook_receiver.url)
    issued = channel["secret"]
    stored = stored_secret(runtime.db, channel["id"])
    assert is_sealed(stored)
    assert issued not in stored
    assert channel_sealer(runtime.settings).open(stored, bound_to=channel["id"]) == issued
    shown = api.get(f"{P}/channels/scada", headers=tenant_a.headers()).json()
    assert shown["secret_set"] is True
    assert "secret" not in shown
    assert stored not in api.get(f"{P}/channels", headers=tenant_a.headers()).text

    assert send_test(api, tenant_a, "scada")["status"] == "sent"
    assert len(hook_receiver.verified(issued, dt.datetime.now(dt.UTC))) == 1


def test_a_rotated_secret_is_stored_sealed_and_signs_in_place_of_the_former(
    api: TestClient, runtime: Runtime, tenant_a: TenantFixture, hook_receiver: HookReceiver
) -> None:
    former = created(api, tenant_a, name="scada", url=hook_receiver.url)["secret"]
    response = api.post(f"{P}/channels/scada/secret", headers=tenant_a.headers())
    assert response.status_code == 200, response.text
    rotated = response.json()
    stored = stored_secret(runtime.db, rotated["id"])
    assert is_sealed(stored)
    assert rotated["secret"] not in stored

    send_test(api, tenant_a, "scada")
    now = dt.datetime.now(dt.UTC)
    assert len(hook_receiver.verified(rotated["secret"], now)) == 1
    assert hook_receiver.verified(former, now) == []


def test_the_longest_secret_accepted_fits_the_column_sealed(
    api: TestClient, runtime: Runtime, tenant_a: TenantFixture, hook_receiver: HookReceiver
) -> None:
    assert sealed_length(SECRET_LENGTH) <= SEALED_SECRET_LENGTH
    given = "s" * SECRET_LENGTH  # PostgreSQL refuses a value longer than its column
    channel = created(api, tenant_a, name="long", url=hook_receiver.url, secret=given)
    assert channel["secret"] == given
    assert len(stored_secret(runtime.db, channel["id"])) == sealed_length(SECRET_LENGTH)
    send_test(api, tenant_a, "long")
    assert len(hook_receiver.verified(given, dt.datetime.now(dt.UTC))) == 1


async def test_a_secret_sealed_under_another_secret_key_fails_the_delivery_clearly(
    migrated_db: Database, tenant_a: TenantFixture, sealer: Sealer, hook_receiver: HookReceiver, clock: Clock
) -> None:
    with migrated_db.session() as session:
        spec = WebhookChannelCreate(name="scada", url=hook_receiver.url)
        issued = NotificationAdmin(session, admin_of(tenant_a)).create_channel(spec, sealer).secret
    assert issued is not None
    changed_key = Sealer.of(Settings(secret_key="a-new-secret-key-" * 4), CHANNEL_SECRET_PURPOSE)
    dispatcher = make_dispatcher(migrated_db, clock, notification_settings(), changed_key)

    failed = await dispatcher.send_test(admin_of(tenant_a), "scada")
    assert (failed.status, failed.attempts) == ("failed", 1)
    assert failed.last_error.startswith("the channel's signing secret cannot be used")
    assert "another secret key (IIP_SECRET_KEY)" in failed.last_error
    assert issued not in failed.last_error
    assert hook_receiver.received == []
    # The secret key it was sealed under still signs with it.
    sent = await make_dispatcher(migrated_db, clock, notification_settings(), sealer).send_test(
        admin_of(tenant_a), "scada"
    )
    assert sent.status == "sent"
    assert len(hook_receiver.verified(issued, clock.now)) == 1


def test_a_sealed_secret_copied_to_another_channel_does_not_sign_there(
    api: TestClient, runtime: Runtime, tenant_a: TenantFixture, hook_receiver: HookReceiver
) -> None:
    first = created(api, tenant_a, name="first", url=hook_receiver.url)
    second = created(api, tenant_a, name="second", url=hook_receiver.url)
    copied = stored_secret(runtime.db, first["id"])
    with runtime.db.session() as session:
        row = session.get(Channel, second["id"])
        assert row is not None
        row.secret = copied
    failed = send_test(api, tenant_a, "second")
    assert failed["status"] == "failed"
    assert "another purpose or record" in failed["last_error"]
    assert hook_receiver.received == []


# --- secrets stored before sealing, and migration 0012


def plain_channel_with_deliveries(db: Database, tenant: TenantFixture, url: str, clock: Clock) -> tuple[str, list[str]]:
    """A webhook channel as stored before sealing, a route naming it and two pending deliveries."""
    with db.session() as session:
        channel = Channel(id=new_id(), tenant_id=tenant.id, name="scada", kind="webhook", url=url, secret=PLAIN_SECRET)
        route = Route(id=new_id(), tenant_id=tenant.id, name="all")
        session.add_all([channel, route])
        session.flush()
        session.add(RouteChannel(route_id=route.id, channel_id=channel.id, escalation=False))
        deliveries = []
        for sequence in (1, 2):
            change = alarm_change(tenant.id, clock, sequence=sequence)
            delivery = Delivery(
                id=new_id(),
                tenant_id=tenant.id,
                channel_id=channel.id,
                kind="notification",
                dedup_key=f"notification:{change.alarm_id}:{sequence}",
                alarm_id=change.alarm_id,
                sequence=sequence,
                status="pending",
                payload={"kind": "notification", "change": change.model_dump(mode="json"), "routes": ["all"]},
                next_attempt_at=clock.now,
            )
            session.add(delivery)
            deliveries.append(delivery.id)
        return channel.id, deliveries


def counts(db: Database) -> tuple[int, int, int]:
    with db.session() as session:
        return (
            session.scalar(select(func.count()).select_from(Channel)) or 0,
            session.scalar(select(func.count()).select_from(RouteChannel)) or 0,
            session.scalar(select(func.count()).select_from(Delivery)) or 0,
        )


async def test_a_secret_stored_plain_before_0012_still_signs_and_is_sealed_at_first_use(
    db_url: str, sealer: Sealer, hook_receiver: HookReceiver, clock: Clock
) -> None:
    db = Database(db_url)
    try:
        upgrade(db, "0011")
        tenant = make_tenant(db, "tenant-a")
        channel_id, (first, second) = plain_channel_with_deliveries(db, tenant, hook_receiver.url, clock)

        upgrade(db, "0012")
        assert counts(db) == (1, 1, 2)  # growing the column kept the channel's route and deliveries
        assert stored_secret(db, channel_id) == PLAIN_SECRET

        dispatcher = make_dispatcher(db, clock, notification_settings(), sealer)
        assert await dispatcher.deliver(first) == "sent"
        stored = stored_secret(db, channel_id)
        assert is_sealed(stored)
        assert PLAIN_SECRET not in stored
        assert sealer.open(stored, bound_to=channel_id) == PLAIN_SECRET
        assert await dispatcher.deliver(second) == "sent"  # now from the sealed value
        assert len(hook_receiver.verified(PLAIN_SECRET, clock.now)) == 2
    finally:
        db.dispose()


def test_going_below_0012_disables_the_channels_whose_secret_is_sealed(
    db_url: str, sealer: Sealer, hook_receiver: HookReceiver, clock: Clock
) -> None:
    db = Database(db_url)
    try:
        upgrade(db, "0012")
        tenant = make_tenant(db, "tenant-a")
        plain_id, _ = plain_channel_with_deliveries(db, tenant, hook_receiver.url, clock)
        with db.session() as session:
            spec = WebhookChannelCreate(name="sealed", url=hook_receiver.url)
            sealed_id = NotificationAdmin(session, admin_of(tenant)).create_channel(spec, sealer).id

        downgrade(db, "0011")
        assert counts(db) == (2, 1, 2)
        with db.session() as session:
            rows = {row.id: (row.secret, row.enabled) for row in session.scalars(select(Channel))}
        # The former version would sign with the sealed text: no secret, disabled until one is issued.
        assert rows == {plain_id: (PLAIN_SECRET, True), sealed_id: ("", False)}
        upgrade(db, "0012")
        assert counts(db) == (2, 1, 2)
    finally:
        db.dispose()
