"""The dispatcher on SQLite and PostgreSQL, with a real SMTP server and a real HTTP receiver.

Routing by priority, site and role; once per channel under redelivery; rate limits into digests;
retries with backoff; escalations fired, cancelled, and kept across a restart. The clock is injected.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import TypeAdapter
from sqlalchemy import select

from iip.alarms.models import Alarm
from iip.alarms.notify.dispatcher import SERVICE_KEY, NotificationDispatcher, notifications_lifespan
from iip.alarms.notify.models import Delivery, Escalation
from iip.alarms.notify.schemas import ChannelCreate, ContactCreate, RouteSpec
from iip.alarms.notify.service import NotificationAdmin, channel_sealer
from iip.alarms.public import ALARM_CHANGES, AlarmChange, AlarmState, Priority
from iip.kernel import audit
from iip.kernel.bus import MemoryBus
from iip.kernel.db import Database
from iip.kernel.runtime import Runtime
from iip.kernel.sealing import Sealer
from iip.kernel.settings import AlarmNotificationSettings
from tests.alarms.notify.conftest import (
    Clock,
    HookReceiver,
    SmtpServer,
    admin_of,
    alarm_change,
    make_dispatcher,
    notification_settings,
)
from tests.conftest import TenantFixture

CHANNEL = TypeAdapter[Any](ChannelCreate)
CONTACTS = [
    {"name": "Wang Fang", "email": "wang@example.com", "role": "shift_engineer", "site": "plant-a"},
    {"name": "Zhao Lei", "email": "zhao@example.com", "role": "shift_engineer", "site": "plant-b"},
    {"name": "Sun Min", "email": "sun@example.com", "role": "plant_manager", "site": "plant-a"},
]


class Plant:
    """A tenant's notification set-up, and the dispatcher under test."""

    def __init__(
        self, db: Database, tenant: TenantFixture, clock: Clock, settings: AlarmNotificationSettings, sealer: Sealer
    ) -> None:
        self.db = db
        self.tenant = tenant
        self.clock = clock
        self.settings = settings
        self.sealer = sealer
        self.secrets: dict[str, str] = {}
        self.dispatcher = make_dispatcher(db, clock, settings, sealer)

    def admin(self, work: Callable[[NotificationAdmin], Any]) -> Any:
        with self.db.session() as session:
            return work(NotificationAdmin(session, admin_of(self.tenant)))

    def channel(self, **spec: Any) -> None:
        created = self.admin(lambda a: a.create_channel(CHANNEL.validate_python(spec), self.sealer))
        if created.secret:
            self.secrets[created.name] = created.secret

    def contacts(self) -> None:
        with self.db.session() as session:
            admin = NotificationAdmin(session, admin_of(self.tenant))
            for contact in CONTACTS:
                admin.create_contact(ContactCreate(**contact))

    def route(self, **spec: Any) -> None:
        self.admin(lambda a: a.create_route(RouteSpec(**spec)))

    def change(self, **fields: Any) -> AlarmChange:
        return alarm_change(self.tenant.id, self.clock, **fields)

    def deliveries(self, **where: Any) -> list[Delivery]:
        with self.db.session() as session:
            query = select(Delivery).filter_by(**where).order_by(Delivery.created_at, Delivery.id)
            return list(session.scalars(query))

    def escalations(self) -> list[Escalation]:
        with self.db.session() as session:
            return list(session.scalars(select(Escalation).order_by(Escalation.created_at)))


@pytest.fixture
def plant(
    migrated_db: Database, tenant_a: TenantFixture, clock: Clock, smtp_server: SmtpServer, sealer: Sealer
) -> Plant:
    return Plant(migrated_db, tenant_a, clock, notification_settings(smtp_server), sealer)


def bodies(receiver: HookReceiver) -> list[dict[str, Any]]:
    return [json.loads(hook.body) for hook in receiver.received]


# --- routing


async def test_changes_reach_the_channels_and_people_their_priority_site_and_role_select(
    plant: Plant, hook_receiver: HookReceiver, smtp_server: SmtpServer
) -> None:
    plant.channel(kind="webhook", name="scada", url=hook_receiver.url)
    plant.channel(kind="email", name="people")
    plant.contacts()
    plant.route(name="urgent", priorities=["critical", "high"], channels=["scada"])
    plant.route(name="engineers-a", sites=["plant-a"], audience_role="shift_engineer", channels=["people"])

    high_a = plant.change()
    statuses = await plant.dispatcher.handle(high_a)
    assert sorted(statuses.values()) == ["sent", "sent"]

    [hook] = hook_receiver.verified(plant.secrets["scada"], plant.clock.now)
    body = json.loads(hook.body)
    assert body["alarm_id"] == high_a.alarm_id
    assert body["priority"] == "high"
    assert body["state"] == "unack_active"
    assert body["sequence"] == 1
    assert body["kind"] == "notification"
    assert body["delivery_id"] == hook.headers["x-iip-delivery"]
    assert body["link"] == f"https://iip.example.com/alarms/{high_a.alarm_id}"
    [mail] = smtp_server.messages
    assert mail.recipients == ["wang@example.com"]  # not Zhao (plant-b), not Sun (another role)

    # Low priority at plant B: neither route.
    assert await plant.dispatcher.handle(plant.change(priority=Priority.LOW, site="plant-b")) == {}
    # High at plant B: the webhook only.
    await plant.dispatcher.handle(plant.change(site="plant-b"))
    assert len(hook_receiver.received) == 2
    assert len(smtp_server.messages) == 1
    log = plant.deliveries()
    assert [(d.kind, d.status, d.attempts) for d in log] == [("notification", "sent", 1)] * 3


@pytest.mark.parametrize("flag", ["shelved", "suppressed", "out_of_service"])
async def test_changes_of_hidden_alarms_are_not_notified(plant: Plant, hook_receiver: HookReceiver, flag: str) -> None:
    plant.channel(kind="webhook", name="scada", url=hook_receiver.url)
    plant.route(name="all", channels=["scada"], actions=["activate", "clear"])
    assert await plant.dispatcher.handle(plant.change(**{flag: True})) == {}
    assert hook_receiver.received == []
    assert plant.deliveries() == []


# --- once per channel


async def test_a_change_the_bus_delivers_again_is_sent_once_per_channel(
    plant: Plant, hook_receiver: HookReceiver, smtp_server: SmtpServer
) -> None:
    plant.channel(kind="webhook", name="scada", url=hook_receiver.url)
    plant.channel(kind="email", name="room", addresses=["room@example.com"])
    plant.route(name="all", channels=["scada", "room"])
    change = plant.change()
    bus = MemoryBus()
    dispatcher = NotificationDispatcher(
        plant.db, bus, plant.settings, sealer=plant.sealer, clock=plant.clock, periodic=False
    )
    await dispatcher.start()
    try:
        # No message id, so the bus itself does not deduplicate: the same change arrives twice.
        await bus.publish(ALARM_CHANGES, change)
        await bus.publish(ALARM_CHANGES, change)
        await bus.publish(ALARM_CHANGES, plant.change(alarm_id="other-alarm"))
        for _ in range(500):
            if len(plant.deliveries(alarm_id="other-alarm")) == 2:
                break
            await asyncio.sleep(0.01)
        await dispatcher.drain()
    finally:
        await dispatcher.stop()
    assert await plant.dispatcher.handle(change) == {}  # and once more, directly

    assert sorted(b["alarm_id"] for b in bodies(hook_receiver)) == sorted([change.alarm_id, "other-alarm"])
    assert len(smtp_server.messages) == 2
    assert len(plant.deliveries(alarm_id=change.alarm_id)) == 2  # one per channel
    # The next transition of the same alarm is a new message.
    await plant.dispatcher.handle(plant.change(alarm_id=change.alarm_id, sequence=2))
    assert len(hook_receiver.received) == 3


async def test_a_flood_from_the_bus_is_recorded_in_batches_once_per_change_within_the_rate_limit(
    plant: Plant, hook_receiver: HookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    plant.channel(kind="webhook", name="scada", url=hook_receiver.url, rate_limit=5)
    plant.route(name="all", channels=["scada"])
    bus = MemoryBus()
    dispatcher = NotificationDispatcher(
        plant.db, bus, plant.settings, sealer=plant.sealer, clock=plant.clock, periodic=False
    )
    batches: list[int] = []
    record_many = dispatcher.record_many

    def counted(changes: Any) -> list[list[str]]:
        batches.append(len(changes))
        return record_many(changes)

    monkeypatch.setattr(dispatcher, "record_many", counted)
    changes = [plant.change(device=f"pump-{n:03d}") for n in range(200)]
    await dispatcher.start()
    try:
        for change in changes:
            await bus.publish(ALARM_CHANGES, change)
        await bus.publish(ALARM_CHANGES, changes[0])  # delivered again: nothing more stored
        for _ in range(1000):
            if sum(batches) >= 201 and len(plant.deliveries()) == 200:
                break
            await asyncio.sleep(0.01)
        await dispatcher.drain()
    finally:
        await dispatcher.stop()

    assert len(batches) <= 201 // 8, repr(batches)  # many changes to a transaction
    log = plant.deliveries()
    assert sorted(d.alarm_id for d in log) == sorted(c.alarm_id for c in changes)  # one per change
    assert sorted(d.status for d in log) == ["held"] * 195 + ["sent"] * 5
    assert len(hook_receiver.received) == 5


async def test_a_change_the_database_refuses_fails_alone_and_is_delivered_again(
    plant: Plant, hook_receiver: HookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    plant.channel(kind="webhook", name="scada", url=hook_receiver.url)
    plant.route(name="all", channels=["scada"])
    bus = MemoryBus()
    dispatcher = NotificationDispatcher(
        plant.db, bus, plant.settings, sealer=plant.sealer, clock=plant.clock, periodic=False, retry_delay=0.05
    )
    refusals = {"pump-bad": 1}
    record_many = dispatcher.record_many

    def refusing(changes: Any) -> list[list[str]]:
        for change in changes:
            if refusals.get(change.device):
                if len(changes) == 1:
                    refusals[change.device] -= 1
                raise RuntimeError("database away")
        return record_many(changes)

    monkeypatch.setattr(dispatcher, "record_many", refusing)
    good = [plant.change(device=f"pump-{n}") for n in range(5)]
    bad = plant.change(device="pump-bad")
    await dispatcher.start()
    try:
        for change in [*good[:2], bad, *good[2:]]:
            await bus.publish(ALARM_CHANGES, change)
        for _ in range(500):
            if len(plant.deliveries()) == 6:
                break
            await asyncio.sleep(0.01)
        await dispatcher.drain()
    finally:
        await dispatcher.stop()

    assert refusals == {"pump-bad": 0}  # refused once on its own, then recorded on redelivery
    assert sorted(d.alarm_id for d in plant.deliveries()) == sorted(c.alarm_id for c in [*good, bad])
    assert sorted(b["device"] for b in bodies(hook_receiver)) == sorted(c.device for c in [*good, bad])


# --- rate limits


async def test_messages_over_the_rate_limit_are_held_and_sent_as_one_digest_when_the_window_ends(
    plant: Plant, hook_receiver: HookReceiver
) -> None:
    plant.channel(kind="webhook", name="scada", url=hook_receiver.url, rate_limit=2)
    plant.route(name="all", channels=["scada"])
    for n in range(5):
        await plant.dispatcher.handle(plant.change(device=f"pump-{n}"))
        plant.clock.advance(seconds=1)  # in order, all within the window
    assert [d.status for d in plant.deliveries()] == ["sent", "sent", "held", "held", "held"]
    assert len(hook_receiver.received) == 2

    # START is 08:00:30: the window runs to 08:01:00.
    plant.clock.advance(seconds=24)
    assert (await plant.dispatcher.check()).digests == 0
    plant.clock.advance(seconds=1)
    report = await plant.dispatcher.check()
    assert report.digests == 1
    assert list(report.statuses.values()) == ["sent"]

    digest = bodies(hook_receiver)[2]
    assert digest["kind"] == "digest"
    assert digest["count"] == 3
    assert [n["device"] for n in digest["notifications"]] == ["pump-2", "pump-3", "pump-4"]
    assert digest["window_start"] == "2030-03-01T08:00:00+00:00"
    assert digest["window_end"] == "2030-03-01T08:01:00+00:00"
    assert len(hook_receiver.verified(plant.secrets["scada"], plant.clock.now)) == 3
    log = plant.deliveries()
    [digest_row] = [d for d in log if d.kind == "digest"]
    assert digest_row.id == digest["delivery_id"]
    held = [d for d in log if d.digest_id]
    assert [d.status for d in held] == ["digested"] * 3
    assert {d.digest_id for d in held} == {digest_row.id}
    assert [n["delivery_id"] for n in digest["notifications"]] == [d.id for d in held]

    # The next window starts with a clean count, and nothing is digested twice.
    await plant.dispatcher.handle(plant.change(device="pump-5"))
    assert (await plant.dispatcher.check()).digests == 0
    assert len(hook_receiver.received) == 4


async def test_an_email_digest_lists_the_held_alarms(plant: Plant, smtp_server: SmtpServer) -> None:
    plant.channel(kind="email", name="room", addresses=["room@example.com"], rate_limit=1)
    plant.route(name="all", channels=["room"])
    for device in ("pump-1", "pump-2", "pump-3"):
        await plant.dispatcher.handle(plant.change(device=device))
        plant.clock.advance(seconds=1)
    plant.clock.advance(minutes=1)
    await plant.dispatcher.check()
    first, digest = (m.message for m in smtp_server.messages)
    assert "pump-1" in first["Subject"]
    assert digest["Subject"] == "[IIP 摘要 Digest] 2 条告警通知 / 2 alarm notifications"
    text = digest.get_content()
    assert "pump-2" in text
    assert "pump-3" in text
    assert "pump-1" not in text


# --- retries


async def test_a_failing_receiver_is_retried_with_backoff_until_it_answers(
    plant: Plant, hook_receiver: HookReceiver
) -> None:
    plant.channel(kind="webhook", name="scada", url=hook_receiver.url)
    plant.route(name="all", channels=["scada"])
    hook_receiver.statuses.append(500)

    assert list((await plant.dispatcher.handle(plant.change())).values()) == ["retrying"]
    [row] = plant.deliveries()
    assert (row.attempts, row.last_error) == (1, "the receiver answered 500 Internal Server Error: receiver is unwell")
    assert row.next_attempt_at is not None
    assert (row.next_attempt_at - plant.clock.now).total_seconds() == plant.settings.retry_base_s

    assert (await plant.dispatcher.check()).statuses == {}  # not due yet
    plant.clock.advance(seconds=plant.settings.retry_base_s)
    assert list((await plant.dispatcher.check()).statuses.values()) == ["sent"]

    [row] = plant.deliveries()
    assert (row.status, row.attempts, row.last_error) == ("sent", 2, "")
    first, second = hook_receiver.received
    assert first.body == second.body
    assert first.headers["x-iip-delivery"] == second.headers["x-iip-delivery"] == row.id
    assert len(hook_receiver.verified(plant.secrets["scada"], plant.clock.now)) == 2


async def test_retries_back_off_and_stop_after_max_attempts(
    migrated_db: Database, tenant_a: TenantFixture, clock: Clock, hook_receiver: HookReceiver, sealer: Sealer
) -> None:
    plant = Plant(migrated_db, tenant_a, clock, notification_settings(max_attempts=3, retry_base_s=5), sealer)
    plant.channel(kind="webhook", name="scada", url=hook_receiver.url)
    plant.route(name="all", channels=["scada"])
    hook_receiver.statuses.extend([503, 503, 503, 503])

    await plant.dispatcher.handle(plant.change())
    waits = []
    for _ in range(2):
        [row] = plant.deliveries()
        assert row.status == "retrying"
        assert row.next_attempt_at is not None
        waits.append((row.next_attempt_at - clock.now).total_seconds())
        clock.now = row.next_attempt_at
        await plant.dispatcher.check()
    [row] = plant.deliveries()
    assert waits == [5, 10]
    assert (row.status, row.attempts, row.next_attempt_at) == ("failed", 3, None)
    clock.advance(hours=1)
    await plant.dispatcher.check()
    assert len(hook_receiver.received) == 3


async def test_a_refusal_is_not_retried(plant: Plant, hook_receiver: HookReceiver) -> None:
    plant.channel(kind="webhook", name="scada", url=hook_receiver.url)
    plant.route(name="all", channels=["scada"])
    hook_receiver.statuses.append(410)
    assert list((await plant.dispatcher.handle(plant.change())).values()) == ["failed"]
    plant.clock.advance(hours=1)
    await plant.dispatcher.check()
    assert len(hook_receiver.received) == 1


async def test_a_delivery_held_by_one_sender_is_not_sent_by_another(plant: Plant, hook_receiver: HookReceiver) -> None:
    plant.channel(kind="webhook", name="scada", url=hook_receiver.url)
    plant.route(name="all", channels=["scada"])
    [delivery_id] = await asyncio.to_thread(plant.dispatcher.record, plant.change())
    other = make_dispatcher(plant.db, plant.clock, plant.settings, plant.sealer)
    statuses = await asyncio.gather(plant.dispatcher.deliver(delivery_id), other.deliver(delivery_id))
    assert sorted(statuses, key=str) == [None, "sent"]
    assert len(hook_receiver.received) == 1


# --- escalations


def escalating(plant: Plant, hook_receiver: HookReceiver) -> None:
    plant.channel(kind="webhook", name="scada", url=hook_receiver.url)
    plant.channel(kind="email", name="managers")
    plant.contacts()
    plant.route(
        name="boilers",
        channels=["scada"],
        escalate_after_min=10,
        escalation_channels=["managers"],
        escalation_role="plant_manager",
    )


async def test_an_alarm_not_acknowledged_in_time_escalates_once(
    plant: Plant, hook_receiver: HookReceiver, smtp_server: SmtpServer
) -> None:
    escalating(plant, hook_receiver)
    change = plant.change()
    await plant.dispatcher.handle(change)
    [pending] = plant.escalations()
    assert (pending.status, pending.due_at) == ("pending", change.at + dt.timedelta(minutes=10))

    plant.clock.advance(minutes=9, seconds=59)
    assert (await plant.dispatcher.check()).escalations_fired == 0
    assert smtp_server.messages == []
    plant.clock.advance(seconds=1)
    report = await plant.dispatcher.check()
    assert report.escalations_fired == 1
    assert list(report.statuses.values()) == ["sent"]
    assert (await plant.dispatcher.check()).escalations_fired == 0

    [mail] = smtp_server.messages
    assert mail.recipients == ["sun@example.com"]
    assert mail.message["Subject"].startswith("[IIP 升级 Escalation] 高/High")
    assert "升级：boilers: 10 min / 分钟" in mail.message.get_content()
    [fired] = plant.escalations()
    assert (fired.status, fired.resolution) == ("fired", "not acknowledged within 10 min")
    [escalation] = plant.deliveries(kind="escalation")
    assert escalation.recipients == ["sun@example.com"]
    with plant.db.session() as session:
        entries = [e for e in audit.iter_entries(session) if e.action == "alarms.notification.escalate"]
    assert [(e.object_id, e.tenant_id, e.principal) for e in entries] == [
        (change.alarm_id, plant.tenant.id, "system:alarms-notifications")
    ]


@pytest.mark.parametrize(
    "ending",
    [
        {"action": "acknowledge", "state": AlarmState.ACK_ACTIVE, "actor": "user:wang"},
        {"action": "shelve", "shelved": True, "actor": "user:wang"},
        {"action": "out_of_service", "out_of_service": True, "actor": "user:wang"},
    ],
)
async def test_acknowledging_shelving_or_removing_the_alarm_cancels_its_escalation(
    plant: Plant, hook_receiver: HookReceiver, smtp_server: SmtpServer, ending: dict[str, Any]
) -> None:
    escalating(plant, hook_receiver)
    change = plant.change()
    await plant.dispatcher.handle(change)
    plant.clock.advance(minutes=3)
    await plant.dispatcher.handle(plant.change(alarm_id=change.alarm_id, sequence=2, at=plant.clock.now, **ending))
    [cancelled] = plant.escalations()
    assert cancelled.status == "cancelled"
    assert cancelled.resolution == f"{ending['action']} at sequence 2 by user:wang"

    plant.clock.advance(minutes=30)
    assert (await plant.dispatcher.check()).escalations_fired == 0
    assert smtp_server.messages == []
    # The activation, delivered again later, does not start it over.
    await plant.dispatcher.handle(change)
    assert [e.status for e in plant.escalations()] == ["cancelled"]


async def test_a_clear_before_acknowledgement_does_not_cancel_the_escalation(
    plant: Plant, hook_receiver: HookReceiver, smtp_server: SmtpServer
) -> None:
    escalating(plant, hook_receiver)
    change = plant.change()
    await plant.dispatcher.handle(change)
    cleared = plant.change(alarm_id=change.alarm_id, sequence=2, action="clear", state=AlarmState.UNACK_RTN)
    await plant.dispatcher.handle(cleared)
    plant.clock.advance(minutes=10)
    assert (await plant.dispatcher.check()).escalations_fired == 1
    assert len(smtp_server.messages) == 1


async def test_pending_escalations_survive_a_restart(
    plant: Plant, hook_receiver: HookReceiver, smtp_server: SmtpServer
) -> None:
    escalating(plant, hook_receiver)
    await plant.dispatcher.handle(plant.change())
    del plant.dispatcher  # the process goes away; the next one finds the escalation stored

    plant.clock.advance(minutes=11)
    restarted = make_dispatcher(plant.db, plant.clock, plant.settings, plant.sealer)
    assert (await restarted.check()).escalations_fired == 1
    assert [m.recipients for m in smtp_server.messages] == [["sun@example.com"]]


async def test_an_escalation_whose_alarm_is_stored_acknowledged_is_cancelled_when_due(
    plant: Plant, hook_receiver: HookReceiver, smtp_server: SmtpServer
) -> None:
    # The acknowledgement's change never arrived (or arrived first): the stored alarm decides.
    escalating(plant, hook_receiver)
    change = plant.change()
    with plant.db.session() as session:
        session.add(
            Alarm(
                id=change.alarm_id,
                tenant_id=plant.tenant.id,
                rule_key=change.rule_key,
                rule_version=change.rule_version,
                device=change.device,
                state=AlarmState.ACK_ACTIVE.value,
                priority=change.priority.value,
                priority_rank=change.priority.rank,
            )
        )
    await plant.dispatcher.handle(change)
    plant.clock.advance(minutes=10)
    report = await plant.dispatcher.check()
    assert (report.escalations_fired, report.escalations_cancelled) == (0, 1)
    [cancelled] = plant.escalations()
    assert cancelled.resolution == "the alarm no longer waits for acknowledgement (state ack_active)"
    assert smtp_server.messages == []


# --- the lifespan


async def test_the_lifespan_consumes_alarm_changes_from_the_bus_until_it_ends(
    runtime: Runtime, tenant_a: TenantFixture, hook_receiver: HookReceiver
) -> None:
    sealer = channel_sealer(runtime.settings)
    plant = Plant(runtime.db, tenant_a, Clock(), runtime.settings.alarms.notifications, sealer)
    plant.channel(kind="webhook", name="scada", url=hook_receiver.url)
    plant.route(name="all", channels=["scada"])
    await runtime.bus.start()
    async with notifications_lifespan(runtime):
        dispatcher = runtime.services[SERVICE_KEY]
        assert isinstance(dispatcher, NotificationDispatcher)
        change = plant.change(at=dt.datetime.now(dt.UTC))
        await runtime.bus.publish(ALARM_CHANGES, change)
        for _ in range(500):
            if hook_receiver.received:
                break
            await asyncio.sleep(0.01)
        await dispatcher.drain()
    assert SERVICE_KEY not in runtime.services
    [hook] = hook_receiver.verified(plant.secrets["scada"], dt.datetime.now(dt.UTC))
    assert json.loads(hook.body)["alarm_id"] == change.alarm_id
    assert [d.status for d in plant.deliveries()] == ["sent"]
