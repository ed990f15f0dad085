"""Sending bulletins by webhook and e-mail, after the publication has committed.

Each delivery row names its channel and target; `deliver` sends the pending ones given and records
the outcome (sent, or failed with the reason) in a transaction of its own. Webhooks are signed
exactly as alarm notifications are (the tenant's secret, headers `X-IIP-Delivery`,
`X-IIP-Timestamp`, `X-IIP-Signature`; body `kind` = `bulletin`); e-mail carries Chinese first, then
English, through the SMTP server alarm notifications use. A failed delivery stays failed until the
operator sends it again (`redeliver`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from iip.alarms.public import Delivered, send_email, send_signed_webhook
from iip.kernel.db import utcnow
from iip.kernel.runtime import Runtime
from iip.kernel.sealing import Sealer, SealError
from iip.security.models import Advisory, Bulletin, BulletinDelivery, BulletinRecipient, Contact
from iip.security.records import Channel
from iip.security.service import SEALING_PURPOSE

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
            .where(BulletinDelivery.id.in_(list(delivery_ids)), BulletinDelivery.status == "pending")
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
    for item in _outgoing(runtime, delivery_ids):
        try:
            outcomes[item.delivery_id] = await _send(runtime, item, clock())
        except Exception as err:  # one bad channel must not keep the others from going out
            logger.exception("bulletin delivery %s failed", item.delivery_id)
            outcomes[item.delivery_id] = Delivered(ok=False, error=f"{type(err).__name__}: {err}")
    with runtime.db.session() as session:
        for delivery_id, outcome in outcomes.items():
            row = session.get(BulletinDelivery, delivery_id)
            if row is None:
                continue
            row.attempts += 1
            row.status = "sent" if outcome.ok else "failed"
            row.error = (outcome.note if outcome.ok else outcome.error)[:1000]
            row.sent_at = clock() if outcome.ok else None
    return outcomes
