"""The notification dispatcher: consumes `alarms.changes`, writes deliveries, sends them, escalates.

For each `AlarmChange` (a durable bus consumer, so every change is seen at least once) a
transaction cancels the escalations the change ends, routes the change (`routing.plan`) and stores
one delivery per channel, keyed by (channel, `notification:<alarm>:<sequence>`): a change the bus
delivers again finds its deliveries and adds none. Escalations the change starts are stored in the
same transaction. Sending happens after the commit, outside any transaction, so a slow receiver
holds no lock and delays no other change.

In an alarm flood a transaction per change costs more than everything else the alarm does, so
`RECORDERS` consumers share the durable and the changes they hold at one moment are recorded in
one transaction (routing read once per tenant, the existing deliveries and the rate windows' counts
read once per batch). Each consumer acknowledges its change only once that transaction has
committed; if it fails, the batch's changes are recorded again one by one, so one change the
database refuses does not take the others with it.

A delivery is sent by whoever claims it first (an UPDATE that only one sender can win, with a
lease so a crashed sender's claim runs out): the bus handler right after storing it, or the
periodic check for what is due. A failure is retried after `retry_base_s`, doubling up to
`retry_max_s`, `max_attempts` times in all; a permanent failure (a 4xx answer, an SMTP 5xx, no SMTP
server configured) is not retried. A receiver may still see a message twice (an answer lost after
it arrived): webhooks carry their delivery id for it to drop the second.

Rate limits: each channel may send `rate_limit` messages per `rate_window_s` window (windows
aligned on the epoch). A notification or escalation over the limit is stored `held`; once its
window has ended, the periodic check sends the channel's held messages of that window as one
digest and marks them `digested`. Nothing is dropped. Under concurrent consumers a window may let
a message or two over the limit: the count is read, not locked.

Escalations: the periodic check (every `check_interval_s`) fires the escalations that are due,
unless the alarm as stored no longer waits for an acknowledgement (then it is cancelled), and
records each firing in the audit log.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from iip.alarms.models import Alarm
from iip.alarms.notify import email, webhook
from iip.alarms.notify.models import Channel, Delivery, Escalation, Route
from iip.alarms.notify.repository import SENDABLE, NotifyRepository, channel_info, contact_info
from iip.alarms.notify.routing import (
    WAITING_STATES,
    ChannelInfo,
    ChannelKind,
    ContactInfo,
    RouteRule,
    Target,
    escalation_plan,
    plan,
    starts_escalation,
    waiting_for_acknowledgement,
)
from iip.alarms.notify.schemas import DeliveryOut
from iip.alarms.notify.service import WRITE, NotificationAdmin, channel_sealer
from iip.alarms.notify.webhook import DeliveryFailed
from iip.alarms.public import ALARM_CHANGES, AlarmChange, AlarmState, Priority
from iip.kernel import audit
from iip.kernel.auth import Principal, new_id
from iip.kernel.bus import Bus, Subscription
from iip.kernel.bus import Delivery as BusDelivery
from iip.kernel.db import Database, utcnow
from iip.kernel.errors import Invalid
from iip.kernel.runtime import Runtime
from iip.kernel.sealing import Sealer, SealError, is_sealed
from iip.kernel.settings import AlarmNotificationSettings

logger = logging.getLogger(__name__)

SERVICE_KEY = "alarms.notifications"
DURABLE = "alarms-notifications"
# A database away for a while (failover, restart) costs retries, not notifications: about half a minute.
MAX_DELIVER = 30
RETRY_DELAY_S = 1.0
SYSTEM_ACTOR = "system:alarms-notifications"
ALARM_LINK = "/alarms/{alarm_id}"
BATCH = 200  # deliveries or escalations one check takes on
CONCURRENCY = 8  # messages in flight at once
RECORDERS = 32  # consumers of alarm changes, whose changes in hand are recorded together
LEASE_MARGIN_S = 60.0
TEST_MESSAGE = "IIP 测试通知 / IIP test notification"

Clock = Callable[[], dt.datetime]


@dataclass(frozen=True, slots=True)
class Job:
    """A claimed delivery, with what sending it needs, read once so no session is held while sending."""

    id: str
    tenant_id: str
    kind: str
    alarm_id: str
    payload: dict[str, Any]
    recipients: tuple[str, ...]
    channel: ChannelInfo
    url: str
    secret: str  # as stored: sealed, or plain from before sealing


@dataclass
class CheckReport:
    """What one periodic check did."""

    escalations_fired: int = 0
    escalations_cancelled: int = 0
    digests: int = 0
    statuses: dict[str, str] = field(default_factory=dict)  # delivery id -> status after the try


def window_start(at: dt.datetime, window_s: int) -> dt.datetime:
    """Start of the rate window holding `at` (windows aligned on the Unix epoch)."""
    return dt.datetime.fromtimestamp(math.floor(at.timestamp() / window_s) * window_s, dt.UTC)


def _notification_key(change: AlarmChange) -> str:
    return f"notification:{change.alarm_id}:{change.sequence}"


DELIVERY_TABLE: Any = Delivery.__table__


class _Batch:
    """What recording a batch of changes knows: the deliveries stored (or to be), the rate windows' counts."""

    def __init__(self, session: Session, repo: NotifyRepository, now: dt.datetime) -> None:
        self.session = session
        self.repo = repo
        self.now = now
        self.existing: dict[tuple[str, str], tuple[str, str]] = {}  # (channel, key) -> (id, status)
        self.counts: dict[tuple[str, dt.datetime], int] = {}  # counted per (channel, window start)
        self.rows: list[dict[str, Any]] = []

    def flush(self) -> set[str]:
        """Insert the deliveries kept (one statement); answers the ids of those another consumer had stored."""
        rows, self.rows = self.rows, []
        refused: set[str] = set()
        if not rows:
            return refused
        try:
            with self.session.begin_nested():
                self.session.execute(insert(DELIVERY_TABLE), rows)
        except IntegrityError:  # a concurrent consumer stored some of them: the others one by one
            for row in rows:
                try:
                    with self.session.begin_nested():
                        self.session.execute(insert(DELIVERY_TABLE), [row])
                except IntegrityError:
                    refused.add(row["id"])
        return refused


def _why_not_waiting(session: Session, alarm_id: str) -> str:
    """Why the alarm, as stored now, no longer waits for an operator; empty when it does (or is unknown)."""
    row = session.get(Alarm, alarm_id)
    if row is None:
        return ""
    if row.shelved:
        return "the alarm is shelved"
    if row.out_of_service:
        return "the alarm is out of service"
    if row.suppressed:
        return "the alarm is suppressed by design"
    if row.state not in WAITING_STATES:
        return f"the alarm no longer waits for acknowledgement (state {row.state})"
    return ""


class NotificationDispatcher:
    """Routes alarm changes to deliveries, sends them, retries, escalates and digests."""

    def __init__(
        self,
        db: Database,
        bus: Bus,
        settings: AlarmNotificationSettings,
        *,
        sealer: Sealer,
        clock: Clock = utcnow,
        durable: str = DURABLE,
        max_deliver: int = MAX_DELIVER,
        retry_delay: float = RETRY_DELAY_S,
        periodic: bool = True,
    ) -> None:
        self.db = db
        self.bus = bus
        self.settings = settings
        self.sealer = sealer
        self.clock = clock
        self.durable = durable
        self.max_deliver = max_deliver
        self.retry_delay = retry_delay
        self.periodic = periodic
        self.smtp = email.SmtpConfig.of(settings)
        self._subscriptions: list[Subscription] = []
        self._loop: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[Any]] = set()
        self._limit = asyncio.Semaphore(CONCURRENCY)
        self._waiting: list[tuple[AlarmChange, asyncio.Future[list[str]]]] = []
        self._recording: asyncio.Task[None] | None = None
        self._handing = 0  # bus handlers between taking a change and starting its sends
        self._full: set[tuple[str, dt.datetime, int]] = set()  # rate windows whose limit is reached

    # --- running

    async def start(self) -> None:
        self._subscriptions = [
            await self.bus.subscribe(
                ALARM_CHANGES,
                self.on_change,
                durable=self.durable,
                max_deliver=self.max_deliver,
                retry_delay=self.retry_delay,
            )
            for _ in range(RECORDERS)
        ]
        if self.periodic:
            self._loop = asyncio.create_task(self._check_periodically(), name="alarms:notifications:check")

    async def stop(self) -> None:
        for subscription in self._subscriptions:
            await subscription.stop()
        self._subscriptions = []
        if self._recording is not None:  # what was taken is committed or given back, not cut in a thread
            with contextlib.suppress(Exception):
                await self._recording
            self._recording = None
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
            self._loop = None
        # What is cut short here stays claimed until its lease ends, then the next check sends it.
        for task in list(self._sending):
            task.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)

    async def drain(self) -> None:
        """Wait for the changes being recorded and the messages being sent now (those the bus handler started)."""
        while self._recording is not None or self._handing or self._sending:
            if self._recording is not None:
                with contextlib.suppress(Exception):
                    await self._recording
            elif self._handing:
                await asyncio.sleep(0)  # the consumers hand what was recorded to senders
            else:
                await asyncio.gather(*list(self._sending), return_exceptions=True)

    async def _check_periodically(self) -> None:
        while True:
            try:
                await self.check()
            except Exception:
                logger.exception("the notification check failed; trying again in %s s", self.settings.check_interval_s)
            await asyncio.sleep(self.settings.check_interval_s)

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(work)
        self._sending.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._sending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("sending a notification failed", exc_info=task.exception())

    # --- alarm changes

    async def on_change(self, delivery: BusDelivery[AlarmChange]) -> None:
        """The bus handler: store what the change makes (raising on a database error, for redelivery), send it."""
        self._handing += 1
        try:
            for delivery_id in await self._recorded(delivery.payload):
                self._spawn(self.deliver(delivery_id))
        finally:
            self._handing -= 1

    async def handle(self, change: AlarmChange) -> dict[str, str]:
        """Store and send what one change makes, waiting for the sending: delivery id -> status."""
        ids = await asyncio.to_thread(self.record, change)
        return await self._deliver_all(ids)

    async def _recorded(self, change: AlarmChange) -> list[str]:
        """Record the change with the others the consumers hold now; answers once it is committed."""
        future: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        self._waiting.append((change, future))
        if self._recording is None:
            self._recording = asyncio.create_task(self._record_waiting(), name="alarms:notifications:record")
        return await future

    async def _record_waiting(self) -> None:
        try:
            await asyncio.sleep(0)  # the other consumers hand in what they took meanwhile
            while self._waiting:
                batch, self._waiting = self._waiting, []
                changes = [change for change, _ in batch]
                try:
                    outcomes: list[list[str] | BaseException] = list(await asyncio.to_thread(self.record_many, changes))
                except Exception:  # noqa: BLE001 - one by one, so a change the database refuses fails alone
                    outcomes = await asyncio.to_thread(self._record_each, changes)
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():  # its consumer was stopped: the bus gives the change again
                        continue
                    if isinstance(outcome, BaseException):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
        finally:
            self._recording = None

    def _record_each(self, changes: Sequence[AlarmChange]) -> list[list[str] | BaseException]:
        outcomes: list[list[str] | BaseException] = []
        for change in changes:
            try:
                outcomes.append(self.record(change))
            except Exception as err:  # noqa: BLE001 - handed to the change's consumer, which raises it
                outcomes.append(err)
        return outcomes

    def record(self, change: AlarmChange) -> list[str]:
        """In one transaction: end escalations, store the change's deliveries and escalations.

        Answers the ids of the deliveries ready to be sent (held ones wait for their digest).
        """
        return self.record_many([change])[0]

    def record_many(self, changes: Sequence[AlarmChange]) -> list[list[str]]:
        """`record` for several changes in one transaction, in their order; per change, the ids to send."""
        now = self.clock()
        with self.db.session() as session:
            batch = _Batch(session, NotifyRepository(session), now)
            routing: dict[str, tuple[list[RouteRule], dict[str, ChannelInfo], list[ContactInfo]]] = {}
            planned: list[tuple[AlarmChange, dict[str, Target]]] = []
            for change in changes:
                if change.tenant_id not in routing:
                    routing[change.tenant_id] = batch.repo.routing_of(change.tenant_id)
                rules, channels, contacts = routing[change.tenant_id]
                planned.append((change, plan(change, rules, channels, contacts)))
            batch.existing = batch.repo.deliveries_by_key(
                {channel_id for _, targets in planned for channel_id in targets},
                {_notification_key(change) for change, targets in planned if targets},
            )
            ready: list[list[str]] = []
            for change, targets in planned:
                self._cancel_escalations(batch.repo, change, now)
                ids: list[str] = []
                key = _notification_key(change)
                dumped: dict[str, Any] | None = None
                for target in targets.values():
                    dumped = dumped if dumped is not None else change.model_dump(mode="json")
                    payload = {"kind": "notification", "change": dumped, "routes": target.routes}
                    ids += self._store_in_batch(batch, target, key, change, payload)
                for rule in routing[change.tenant_id][0]:
                    if starts_escalation(rule, change) and rule.escalate_after_min is not None:
                        self._start_escalation(session, batch.repo, rule.id, rule.escalate_after_min, change, now)
                ready.append(ids)
            refused = batch.flush()
            # A delivery a concurrent consumer stored meanwhile is that consumer's to send.
            return [[i for i in ids if i not in refused] for ids in ready]

    def _cancel_escalations(self, repo: NotifyRepository, change: AlarmChange, now: dt.datetime) -> None:
        if waiting_for_acknowledgement(change):
            return
        reason = f"{change.action} at sequence {change.sequence}" + (f" by {change.actor}" if change.actor else "")
        for pending in repo.pending_escalations(change.alarm_id):
            # Only a later change ends it: a redelivered older one says nothing about now.
            if pending.sequence < change.sequence and pending.tenant_id == change.tenant_id:
                repo.take_escalation(pending.id, "cancelled", reason, now)

    def _start_escalation(
        self,
        session: Session,
        repo: NotifyRepository,
        route_id: str,
        after_min: int,
        change: AlarmChange,
        now: dt.datetime,
    ) -> None:
        if repo.pending_escalations(change.alarm_id, route_id=route_id):
            return  # the earlier activation's escalation is still running: it keeps its time
        if repo.escalation(route_id, change.alarm_id, change.sequence) is not None:
            return  # this change was seen before
        row = Escalation(
            id=new_id(),
            tenant_id=change.tenant_id,
            route_id=route_id,
            alarm_id=change.alarm_id,
            sequence=change.sequence,
            change=change.model_dump(mode="json"),
            due_at=change.at + dt.timedelta(minutes=after_min),
            status="pending",
            created_at=now,
        )
        try:
            with session.begin_nested():
                session.add(row)
        except IntegrityError:
            logger.info("escalation of alarm %s sequence %s stored concurrently", change.alarm_id, change.sequence)

    def _store_in_batch(
        self, batch: _Batch, target: Target, key: str, change: AlarmChange, payload: dict[str, Any]
    ) -> list[str]:
        """`_store` of a notification within a batch: existence and rate windows as the batch knows them."""
        channel_id = target.channel.id
        existing = batch.existing.get((channel_id, key))
        if existing is not None:
            return [existing[0]] if existing[1] in SENDABLE else []
        window = window_start(batch.now, self.settings.rate_window_s)
        limit = target.channel.rate_limit if target.channel.rate_limit is not None else self.settings.rate_limit
        status = "pending"
        if limit:
            full = (channel_id, window, limit)
            if full in self._full:
                status = "held"
            else:
                counted = batch.counts.get((channel_id, window))
                if counted is None:
                    counted = batch.repo.counted_in_window(channel_id, window)
                if counted >= limit:
                    status = "held"
                    # Counted deliveries stay counted: a window once full stays full.
                    self._full = {f for f in self._full if f[1] >= window}
                    self._full.add(full)
                else:
                    counted += 1
                batch.counts[channel_id, window] = counted
        row: dict[str, Any] = {
            "id": new_id(),
            "tenant_id": change.tenant_id,
            "channel_id": channel_id,
            "kind": "notification",
            "dedup_key": key,
            "alarm_id": change.alarm_id,
            "sequence": change.sequence,
            "status": status,
            "attempts": 0,
            "last_error": "",
            "payload": payload,
            "recipients": sorted(target.recipients),
            "window_start": window,
            "next_attempt_at": batch.now if status == "pending" else None,
            "created_at": batch.now,
            "updated_at": batch.now,
        }
        batch.existing[channel_id, key] = (row["id"], status)
        batch.rows.append(row)
        return [row["id"]] if status == "pending" else []

    def _store(
        self,
        session: Session,
        repo: NotifyRepository,
        target: Target,
        kind: str,
        key: str,
        change: AlarmChange | None,
        payload: dict[str, Any],
        now: dt.datetime,
        *,
        limited: bool = True,
    ) -> list[str]:
        """Store one delivery unless its key exists; answers its id when it is to be sent now."""
        existing = repo.delivery(target.channel.id, key)
        if existing is not None:
            return [existing.id] if existing.status in SENDABLE else []
        status, window = "pending", None
        if limited:
            window = window_start(now, self.settings.rate_window_s)
            limit = target.channel.rate_limit if target.channel.rate_limit is not None else self.settings.rate_limit
            if limit and repo.counted_in_window(target.channel.id, window) >= limit:
                status = "held"
        row = Delivery(
            id=new_id(),
            tenant_id=change.tenant_id if change is not None else str(payload["tenant_id"]),
            channel_id=target.channel.id,
            kind=kind,
            dedup_key=key,
            alarm_id=change.alarm_id if change is not None else "",
            sequence=change.sequence if change is not None else None,
            status=status,
            attempts=0,
            last_error="",
            payload=payload,
            recipients=sorted(target.recipients),
            window_start=window,
            next_attempt_at=now if status == "pending" else None,
            created_at=now,
            updated_at=now,
        )
        try:
            with session.begin_nested():
                session.add(row)
        except IntegrityError:
            return []  # stored by a concurrent consumer of the same change, which sends it
        return [row.id] if status == "pending" else []

    # --- sending

    async def _deliver_all(self, ids: list[str]) -> dict[str, str]:
        statuses = await asyncio.gather(*(self.deliver(i) for i in ids))
        return {i: s for i, s in zip(ids, statuses, strict=True) if s is not None}

    async def deliver(self, delivery_id: str) -> str | None:
        """Send one delivery if it is due and nobody else holds it; answers its status afterwards."""
        async with self._limit:
            job = await asyncio.to_thread(self._claim, delivery_id)
            if job is None:
                return None
            note, failure = "", None
            try:
                note = await self._send(job)
            except DeliveryFailed as err:
                failure = err
            except Exception as err:  # a fault of ours is logged and retried like any failure
                logger.exception("sending delivery %s failed unexpectedly", job.id)
                failure = DeliveryFailed(f"{type(err).__name__}: {err}")
            return await asyncio.to_thread(self._finish, job, note, failure)

    def _claim(self, delivery_id: str) -> Job | None:
        now = self.clock()
        lease = max(self.settings.webhook_timeout_s, self.settings.smtp_timeout_s * 4) + LEASE_MARGIN_S
        with self.db.session() as session:
            repo = NotifyRepository(session)
            if not repo.claim(delivery_id, now, now + dt.timedelta(seconds=lease)):
                return None
            row = session.get(Delivery, delivery_id)
            channel = session.get(Channel, row.channel_id) if row is not None else None
            if row is None or channel is None:
                return None
            if channel.secret and not is_sealed(channel.secret):
                # Stored before secrets were sealed: sealed at first use, unless it was replaced meanwhile.
                sealed = self.sealer.seal(channel.secret, bound_to=channel.id)
                repo.replace_secret(channel.id, channel.secret, sealed)
            return Job(
                id=row.id,
                tenant_id=row.tenant_id,
                kind=row.kind,
                alarm_id=row.alarm_id,
                payload=dict(row.payload),
                recipients=tuple(row.recipients),
                channel=channel_info(channel),
                url=channel.url,
                secret=channel.secret,
            )

    def _finish(self, job: Job, note: str, failure: DeliveryFailed | None) -> str:
        now = self.clock()
        with self.db.session() as session:
            row = session.get(Delivery, job.id)
            if row is None:
                return "failed"  # the channel was deleted meanwhile, its log with it
            row.attempts += 1
            row.claimed_until = None
            row.updated_at = now
            if failure is None:
                row.status, row.sent_at, row.last_error, row.next_attempt_at = "sent", now, note, None
                return row.status
            row.last_error = failure.message
            attempts = 1 if job.kind == "test" else self.settings.max_attempts
            if failure.permanent or row.attempts >= attempts:
                row.status, row.next_attempt_at = "failed", None
                logger.warning(
                    "delivery %s to channel %s failed after %d attempt(s): %s",
                    job.id,
                    job.channel.name,
                    row.attempts,
                    failure.message,
                )
            else:
                wait = min(self.settings.retry_base_s * 2 ** (row.attempts - 1), self.settings.retry_max_s)
                row.status, row.next_attempt_at = "retrying", now + dt.timedelta(seconds=wait)
                logger.info("delivery %s will be retried in %g s: %s", job.id, wait, failure.message)
            return row.status

    async def _send(self, job: Job) -> str:
        if not job.channel.enabled and job.kind != "test":
            raise DeliveryFailed(f"the channel '{job.channel.name}' is disabled", permanent=True)
        if job.channel.kind is ChannelKind.WEBHOOK:
            try:
                secret = self.sealer.open(job.secret, bound_to=job.channel.id)
            except SealError as err:
                # Trying again cannot help: a new secret (rotate it) or the former secret key can.
                raise DeliveryFailed(f"the channel's signing secret cannot be used: {err}", permanent=True) from err
            body = webhook.encode_body(self.webhook_body(job))
            timestamp = int(self.clock().timestamp())
            await webhook.post(
                job.url, secret, job.id, body, timestamp=timestamp, timeout_s=self.settings.webhook_timeout_s
            )
            return ""
        subject, text = self.email_text(job)
        priority = str(job.payload.get("change", {}).get("priority", ""))
        message = email.build_message(
            self.smtp.sender,
            job.recipients,
            subject,
            text,
            delivery_id=job.id,
            alarm_id=job.alarm_id,
            priority=priority,
        )
        return await email.send(self.smtp, message, job.recipients)

    def link(self, alarm_id: str) -> str:
        return self.settings.console_url + ALARM_LINK.format(alarm_id=alarm_id)

    def webhook_body(self, job: Job) -> dict[str, Any]:
        """What a webhook carries (documented in `iip.alarms.notify.webhook`)."""
        payload = job.payload
        if job.kind == "digest":
            items = [
                {
                    **item["change"],
                    "delivery_id": item["delivery_id"],
                    "kind": item["kind"],
                    "link": self.link(item["change"]["alarm_id"]),
                }
                for item in payload["items"]
            ]
            return {
                "delivery_id": job.id,
                "kind": "digest",
                "tenant_id": job.tenant_id,
                "channel": job.channel.name,
                "window_start": payload["window_start"],
                "window_end": payload["window_end"],
                "count": len(items),
                "notifications": items,
            }
        body = {**payload["change"], "delivery_id": job.id, "kind": job.kind, "link": self.link(job.alarm_id)}
        if "escalation" in payload:
            body["escalation"] = payload["escalation"]
        return body

    def email_text(self, job: Job) -> tuple[str, str]:
        payload = job.payload
        if job.kind == "digest":
            items = [
                email.DigestItem(
                    AlarmChange.model_validate(item["change"]), item["kind"], self.link(item["change"]["alarm_id"])
                )
                for item in payload["items"]
            ]
            return email.render_digest(
                items,
                window_start=dt.datetime.fromisoformat(payload["window_start"]),
                window_end=dt.datetime.fromisoformat(payload["window_end"]),
                delivery_id=job.id,
            )
        change = AlarmChange.model_validate(payload["change"])
        escalation = payload.get("escalation")
        described = (
            f"{escalation['route']}: {escalation['after_min']} min / 分钟" if isinstance(escalation, dict) else ""
        )
        return email.render_change(
            change, kind=job.kind, link=self.link(job.alarm_id), delivery_id=job.id, escalation=described
        )

    # --- the periodic check

    async def check(self) -> CheckReport:
        """Fire due escalations, digest ended rate windows, send what is due. Run every `check_interval_s`."""
        report = CheckReport()
        fired, cancelled = await asyncio.to_thread(self._escalate_due)
        report.escalations_fired, report.escalations_cancelled = fired, cancelled
        report.digests = await asyncio.to_thread(self._digest_ended_windows)
        due = await asyncio.to_thread(self._due)
        report.statuses = await self._deliver_all(due)
        return report

    def _due(self) -> list[str]:
        with self.db.session() as session:
            return NotifyRepository(session).due_deliveries(self.clock(), BATCH)

    def _escalate_due(self) -> tuple[int, int]:
        now = self.clock()
        with self.db.session() as session:
            due = NotifyRepository(session).due_escalations(now, BATCH)
        fired = cancelled = 0
        for escalation_id in due:
            with self.db.session() as session:
                outcome = self._escalate(session, escalation_id, now)
            fired += outcome == "fired"
            cancelled += outcome == "cancelled"
        return fired, cancelled

    def _escalate(self, session: Session, escalation_id: str, now: dt.datetime) -> str:
        repo = NotifyRepository(session)
        row = session.get(Escalation, escalation_id)
        route = session.get(Route, row.route_id) if row is not None else None
        if row is None or route is None or row.status != "pending":
            return ""
        reason = _why_not_waiting(session, row.alarm_id) or (
            "" if route.enabled else f"route '{route.name}' is disabled"
        )
        if reason:
            return "cancelled" if repo.take_escalation(row.id, "cancelled", reason, now) else ""
        after = route.escalate_after_min or 0
        if not repo.take_escalation(row.id, "fired", f"not acknowledged within {after} min", now):
            return ""  # another dispatcher took it
        change = AlarmChange.model_validate(row.change)
        rule = repo.route_rules([route])[0]
        channels = {c.id: channel_info(c) for c in repo.channels(row.tenant_id)}
        contacts = [contact_info(c) for c in repo.contacts(row.tenant_id)]
        targets = escalation_plan(change, rule, channels, contacts)
        for target in targets.values():
            payload = {
                "kind": "escalation",
                "change": row.change,
                "routes": [route.name],
                "escalation": {"route": route.name, "after_min": after},
            }
            key = f"escalation:{row.alarm_id}:{row.sequence}:{route.id}"
            self._store(session, repo, target, "escalation", key, change, payload, now)
        names = ", ".join(t.channel.name for t in targets.values()) or "no channel"
        record = audit.AuditRecord(
            action="alarms.notification.escalate",
            object_type="alarm",
            object_id=row.alarm_id,
            detail=f"route {route.name}: not acknowledged within {after} min; notified {names}",
        )
        audit.append(session, SYSTEM_ACTOR, record, tenant_id=row.tenant_id)
        return "fired"

    def _digest_ended_windows(self) -> int:
        now = self.clock()
        window = dt.timedelta(seconds=self.settings.rate_window_s)
        with self.db.session() as session:
            groups = NotifyRepository(session).ended_windows(now - window)
        made = 0
        for channel_id, start in groups:
            with self.db.session() as session:
                made += self._digest(session, channel_id, start, start + window, now)
        return made

    def _digest(self, session: Session, channel_id: str, start: dt.datetime, end: dt.datetime, now: dt.datetime) -> int:
        repo = NotifyRepository(session)
        held = repo.held(channel_id, start)
        channel = session.get(Channel, channel_id)
        if not held or channel is None:
            return 0
        recipients: set[str] = set()
        for item in held:
            recipients.update(item.recipients)
        payload = {
            "kind": "digest",
            "tenant_id": channel.tenant_id,
            "window_start": start.isoformat(),
            "window_end": end.isoformat(),
            "items": [{"delivery_id": d.id, "kind": d.kind, "change": d.payload["change"]} for d in held],
        }
        target = Target(channel_info(channel), recipients)
        stored = self._store(
            session, repo, target, "digest", f"digest:{start.isoformat()}", None, payload, now, limited=False
        )
        if not stored:
            return 0
        for item in held:
            item.status, item.digest_id, item.updated_at = "digested", stored[0], now
        return 1

    # --- test notifications

    async def send_test(self, actor: Principal, channel_ref: str, message: str = "") -> DeliveryOut:
        """Send a made-up alarm through one channel now, once (no retry), and answer the delivery."""
        delivery_id = await asyncio.to_thread(self._store_test, actor, channel_ref, message)
        await self.deliver(delivery_id)
        return await asyncio.to_thread(self._view, actor, delivery_id)

    def _store_test(self, actor: Principal, channel_ref: str, message: str) -> str:
        now = self.clock()
        with self.db.session() as session:
            actor.require(WRITE)
            row = NotificationAdmin(session, actor).get_channel(channel_ref)
            channel = channel_info(row)
            if channel.kind is ChannelKind.EMAIL and not channel.addresses:
                raise Invalid(
                    f"the e-mail channel '{row.name}' has no addresses of its own for a test to go to",
                    code="no_addresses",
                )
            change = AlarmChange(
                tenant_id=row.tenant_id,
                alarm_id="test",
                rule_key="test",
                rule_version=1,
                device="test-device",
                priority=Priority.LOW,
                state=AlarmState.UNACK_ACTIVE,
                action="activate",
                actor=actor.label,
                message=message or TEST_MESSAGE,
                at=now,
                sequence=0,
            )
            delivery_id = new_id()
            session.add(
                Delivery(
                    id=delivery_id,
                    tenant_id=row.tenant_id,
                    channel_id=row.id,
                    kind="test",
                    dedup_key=f"test:{delivery_id}",
                    alarm_id="test",
                    sequence=None,
                    status="pending",
                    attempts=0,
                    last_error="",
                    payload={"kind": "test", "change": change.model_dump(mode="json"), "routes": []},
                    recipients=sorted(channel.addresses),
                    next_attempt_at=now,
                    created_at=now,
                    updated_at=now,
                )
            )
            return delivery_id

    def _view(self, actor: Principal, delivery_id: str) -> DeliveryOut:
        with self.db.session() as session:
            return NotificationAdmin(session, actor).get_delivery(delivery_id)


@asynccontextmanager
async def notifications_lifespan(runtime: Runtime) -> AsyncIterator[None]:
    """Start the dispatcher (`runtime.services["alarms.notifications"]`): the bus consumer and the periodic check."""
    dispatcher = NotificationDispatcher(
        runtime.db, runtime.bus, runtime.settings.alarms.notifications, sealer=channel_sealer(runtime.settings)
    )
    runtime.services[SERVICE_KEY] = dispatcher
    await dispatcher.start()
    try:
        yield
    finally:
        await dispatcher.stop()
        runtime.services.pop(SERVICE_KEY, None)
