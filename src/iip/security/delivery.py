"""Sending bulletins by webhook and e-mail, after the publication has committed, and trying again.

Each delivery row names its channel and target; `deliver` sends the pending ones given and records
the outcome in a transaction of its own: `sent`; `failed` with the reason when the receiver refused
for good (a 4xx answer, an SMTP 5xx, a secret that cannot be read); otherwise `retrying`, with the
reason, until `SecuritySettings.delivery_max_attempts` tries have been made, when it is `failed`
with "gave up after N attempts". Webhooks are signed exactly as alarm notifications are (the
tenant's secret, headers `X-IIP-Delivery`, `X-IIP-Timestamp`, `X-IIP-Signature`; body `kind` =
`bulletin`); e-mail carries Chinese first, then English, through the SMTP server alarm
notifications use. Every try of one delivery carries the same delivery id, so a receiver can drop
a duplicate.

`DeliveryRetrier` (the platform's `delivery_lifespan`) looks every `delivery_check_s` for
deliveries whose `next_attempt_at` has passed and sends them. A failed try that may be retried sets
`next_attempt_at` to the failure's time plus the backoff (`delivery_retry_base_s` after the first
try, doubling, at most `delivery_retry_max_s`), so the wait is the same whether the retrier has run
all along or the platform has just restarted. A due row is claimed by a conditional update before
it is sent, so two platform processes never send the same try twice. A pending row's
`next_attempt_at` is `STALE_PENDING_S` after it was queued: one still pending then lost its sender
(the process died) and is sent by the retrier too.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select, update

from iip.alarms.public import Delivered, send_email, send_signed_webhook
from iip.kernel.db import utcnow
from iip.kernel.runtime import Runtime
from iip.kernel.sealing import Sealer, SealError
from iip.kernel.settings import SecuritySettings
from iip.security.bulletins import SEALING_PURPOSE
from iip.security.models import Advisory, Bulletin, BulletinDelivery, BulletinRecipient, Contact
from iip.security.records import STALE_PENDING_S, Channel, DeliveryStatus

logger = logging.getLogger(__name__)

BEIJING = dt.timezone(dt.timedelta(hours=8), "CST")
INBOX_PATH = "/security/inbox"
SEVERITY_ZH = {"critical": "紧急", "high": "高危", "medium": "中危", "low": "低危"}
KIND_ZH = {"advisory": "漏洞通报", "warning": "预警通报"}
KIND_EN = {"advisory": "Advisory", "warning": "Warning"}


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One delivery, read out of the database so sending holds no transaction open."""

    delivery_id: str
    channel: str
    target: str
    secret: str
    body: dict[str, Any]


def bulletin_body(
    bulletin: Bulletin, recipient: BulletinRecipient, advisory: Advisory | None, link: str
) -> dict[str, Any]:
    return {
        "kind": "bulletin",
        "bulletin_id": bulletin.id,
        "tenant_id": recipient.tenant_id,
        "type": bulletin.kind,
        "title": bulletin.title,
        "severity": bulletin.severity,
        "body_zh": bulletin.body_zh,
        "body_en": bulletin.body_en,
        "cves": list(bulletin.cves),
        "advisory": advisory.tracking_id if advisory is not None else None,
        "deadline": bulletin.deadline.isoformat() if bulletin.deadline else None,
        "published_at": bulletin.published_at.isoformat(),
        "matched_assets": recipient.matched_assets,
        "link": link,
    }


def render_email(body: dict[str, Any]) -> tuple[str, str]:
    """Subject and text of a bulletin e-mail: Chinese, then English."""
    severity = body["severity"]
    kind = body["type"]
    label = f"{KIND_ZH.get(kind, kind)} {KIND_EN.get(kind, kind)}"
    subject = f"[IIP {label}] {SEVERITY_ZH.get(severity, severity)}/{severity}: {body['title']}"
    deadline = dt.datetime.fromisoformat(body["deadline"]) if body["deadline"] else None
    zh_deadline = deadline.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M（北京时间）") if deadline else "无"
    en_deadline = deadline.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC") if deadline else "none"
    cves = ", ".join(body["cves"]) or "—"
    zh = [
        f"{KIND_ZH.get(kind, kind)}：{body['title']}",
        f"等级：{SEVERITY_ZH.get(severity, severity)}",
        f"相关漏洞：{cves}",
        f"处置期限：{zh_deadline}",
        "",
        body["body_zh"] or "（见英文）",
        "",
        f"请登录控制台确认并更新处置状态：{body['link']}",
    ]
    en = [
        f"{KIND_EN.get(kind, kind)}: {body['title']}",
        f"Severity: {severity}",
        f"CVEs: {cves}",
        f"Deadline: {en_deadline}",
        "",
        body["body_en"] or "(see the Chinese text)",
        "",
        f"Acknowledge and report remediation in the console: {body['link']}",
    ]
    return subject, "\n".join([*zh, "", "-" * 40, "", *en, ""])


def _outgoing(runtime: Runtime, delivery_ids: Sequence[str]) -> list[Outgoing]:
    settings = runtime.settings
    base = settings.alarms.notifications.console_url
    sealer = Sealer.of(settings, SEALING_PURPOSE)
    found: list[Outgoing] = []
    with runtime.db.session() as session:
        rows = session.execute(
            select(BulletinDelivery, BulletinRecipient, Bulletin)
            .join(BulletinRecipient, BulletinRecipient.id == BulletinDelivery.recipient_id)
            .join(Bulletin, Bulletin.id == BulletinRecipient.bulletin_id)
            .where(BulletinDelivery.id.in_(list(delivery_ids)), BulletinDelivery.status == DeliveryStatus.PENDING)
        )
        for delivery, recipient, bulletin in rows:
            advisory = session.get(Advisory, bulletin.advisory_id) if bulletin.advisory_id else None
            contact = session.get(Contact, recipient.tenant_id)
            secret = ""
            if delivery.channel == Channel.WEBHOOK and contact is not None and contact.webhook_secret:
                try:
                    secret = sealer.open(contact.webhook_secret, bound_to=recipient.tenant_id)
                except SealError:
                    secret = ""
            link = f"{base}{INBOX_PATH}/{bulletin.id}"
            body = bulletin_body(bulletin, recipient, advisory, link)
            found.append(Outgoing(delivery.id, delivery.channel, delivery.target, secret, body))
    return found


async def _send(runtime: Runtime, item: Outgoing, now: dt.datetime) -> Delivered:
    notify = runtime.settings.alarms.notifications
    if item.channel == Channel.WEBHOOK:
        if not item.secret:
            return Delivered(ok=False, error="the webhook's secret cannot be read: set it again", permanent=True)
        body = {**item.body, "delivery_id": item.delivery_id}
        return await send_signed_webhook(
            item.target,
            item.secret,
            item.delivery_id,
            body,
            timestamp=int(now.timestamp()),
            timeout_s=notify.webhook_timeout_s,
        )
    subject, text = render_email(item.body)
    recipients = [a.strip() for a in item.target.split(",") if a.strip()]
    return await send_email(notify, recipients, subject, text, delivery_id=item.delivery_id)


async def deliver(
    runtime: Runtime, delivery_ids: Sequence[str], *, clock: Callable[[], dt.datetime] = utcnow
) -> dict[str, Delivered]:
    """Send the pending deliveries named; the outcome of each, also recorded on its row."""
    if not delivery_ids:
        return {}
    outcomes: dict[str, Delivered] = {}
    # The database is used from worker threads: a blocked SQLite write lock must not stall the event loop.
    for item in await asyncio.to_thread(_outgoing, runtime, delivery_ids):
        try:
            outcomes[item.delivery_id] = await _send(runtime, item, clock())
        except Exception as err:  # one bad channel must not keep the others from going out
            logger.exception("bulletin delivery %s failed", item.delivery_id)
            outcomes[item.delivery_id] = Delivered(ok=False, error=f"{type(err).__name__}: {err}")
    await asyncio.to_thread(_record, runtime, outcomes, clock())
    return outcomes


def _record(runtime: Runtime, outcomes: dict[str, Delivered], now: dt.datetime) -> None:
    settings = runtime.settings.security
    with runtime.db.session() as session:
        for delivery_id, outcome in outcomes.items():
            row = session.get(BulletinDelivery, delivery_id)
            if row is not None:
                apply_outcome(row, outcome, now, settings=settings)


def apply_outcome(row: BulletinDelivery, outcome: Delivered, now: dt.datetime, *, settings: SecuritySettings) -> None:
    """One more try of a delivery: sent, waiting for the next try (from `now` plus the backoff), or
    failed (refused for good, or the last try)."""
    row.attempts += 1
    row.next_attempt_at = None
    if outcome.ok:
        row.status, row.error, row.sent_at = DeliveryStatus.SENT.value, outcome.note[:1000], now
        return
    row.sent_at = None
    if outcome.permanent:
        row.status, row.error = DeliveryStatus.FAILED.value, outcome.error[:1000]
    elif row.attempts >= settings.delivery_max_attempts:
        row.status = DeliveryStatus.FAILED.value
        row.error = f"gave up after {row.attempts} attempts: {outcome.error}"[:1000]
    else:
        row.status, row.error = DeliveryStatus.RETRYING.value, outcome.error[:1000]
        row.next_attempt_at = now + dt.timedelta(seconds=retry_wait(row.attempts, settings))


# --- trying again


def retry_wait(attempts: int, settings: SecuritySettings) -> float:
    """Seconds before the next try of a delivery tried `attempts` times: doubling, capped."""
    return float(min(settings.delivery_retry_base_s * 2 ** max(attempts - 1, 0), settings.delivery_retry_max_s))


class DeliveryRetrier:
    """Sends the deliveries whose next try is due: retries after their backoff, and pending ones
    whose sender is gone. It keeps no state of its own: the rows say what is due."""

    def __init__(self, runtime: Runtime, *, clock: Callable[[], dt.datetime] = utcnow) -> None:
        self.runtime = runtime
        self.clock = clock
        self.sent = 0  # tries made by this retrier, for tests and the health of the service

    async def check(self) -> int:
        """One look: send what is due; how many deliveries were tried."""
        now = self.clock()
        due = await asyncio.to_thread(self._due, now)
        claimed = await asyncio.to_thread(self._claim, due, now)
        if claimed:
            await deliver(self.runtime, claimed, clock=self.clock)
            self.sent += len(claimed)
        return len(claimed)

    def _due(self, now: dt.datetime) -> list[tuple[str, str, int]]:
        """Waiting rows whose time has come (through the `next_attempt_at` index); a row written before
        the column existed has none and is due at once."""
        query = select(BulletinDelivery.id, BulletinDelivery.status, BulletinDelivery.attempts).where(
            or_(BulletinDelivery.next_attempt_at <= now, BulletinDelivery.next_attempt_at.is_(None)),
            BulletinDelivery.status.in_([DeliveryStatus.RETRYING.value, DeliveryStatus.PENDING.value]),
        )
        with self.runtime.db.session() as session:
            return [(row.id, row.status, row.attempts) for row in session.execute(query)]

    def _claim(self, due: Sequence[tuple[str, str, int]], now: dt.datetime) -> list[str]:
        """The due deliveries no other process took meanwhile, now pending for this one to send."""
        claimed: list[str] = []
        with self.runtime.db.session() as session:
            for delivery_id, status, attempts in due:
                taken = session.execute(
                    update(BulletinDelivery)
                    .where(
                        BulletinDelivery.id == delivery_id,
                        BulletinDelivery.status == status,
                        BulletinDelivery.attempts == attempts,
                        or_(BulletinDelivery.next_attempt_at <= now, BulletinDelivery.next_attempt_at.is_(None)),
                    )
                    .values(
                        status=DeliveryStatus.PENDING.value,
                        next_attempt_at=now + dt.timedelta(seconds=STALE_PENDING_S),
                    )
                )
                if getattr(taken, "rowcount", 0) == 1:
                    claimed.append(delivery_id)
        return claimed

    async def run(self, stop: asyncio.Event) -> None:
        interval = self.runtime.settings.security.delivery_check_s
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
            if stop.is_set():
                return
            try:
                await self.check()
            except Exception:  # the database may be away for a while: the next look tries again
                logger.exception("bulletin deliveries not retried")


RETRIER_SERVICE = "security.delivery_retrier"  # the running `DeliveryRetrier` in `Runtime.services`


@asynccontextmanager
async def delivery_lifespan(runtime: Runtime) -> AsyncIterator[None]:
    """Retries failed bulletin deliveries in the background while the platform runs."""
    retrier = DeliveryRetrier(runtime)
    stop = asyncio.Event()
    task = asyncio.create_task(retrier.run(stop), name="security-delivery-retry")
    runtime.services[RETRIER_SERVICE] = retrier
    try:
        yield
    finally:
        runtime.services.pop(RETRIER_SERVICE, None)
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await task
