"""Early-warning bulletins (信息通报预警): the platform operator publishes, each recipient tenant
reads, acknowledges and reports its remediation; where a tenant wants them besides its inbox.

Advisories belong to the platform: only platform operators publish bulletins. A bulletin reaches
the tenants it affects (those with unsettled matches of its advisory or CVEs) or the ones the
operator chooses; each recipient tenant sees it in its inbox and may receive it by webhook and
e-mail: the pending deliveries are in `deliveries` for `delivery.deliver` to send after the commit.
Answering a bulletin (acknowledging it, reporting remediation) is a write of the recipient tenant.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from iip.alarms.public import check_email_address, check_webhook_url
from iip.kernel.auth import AccessService, Principal, new_id
from iip.kernel.db import utcnow
from iip.kernel.errors import Forbidden, Invalid, NotFound
from iip.kernel.sealing import Sealer
from iip.kernel.settings import Settings
from iip.security.models import Advisory, AdvisoryMatch, Bulletin, BulletinDelivery, BulletinRecipient, Contact
from iip.security.records import (
    STALE_PENDING_S,
    BulletinKind,
    Channel,
    DeliveryStatus,
    Remediation,
    Severity,
    is_overdue,
)
from iip.security.scoping import Clock, ScopedService, parse_choice
from iip.security.service import SecurityService

SEALING_PURPOSE = "security.webhook"  # what the sealed webhook secrets are bound to


@dataclass(frozen=True, slots=True)
class RecipientView:
    recipient: BulletinRecipient
    bulletin: Bulletin
    deliveries: list[BulletinDelivery]
    overdue: bool


class BulletinService(ScopedService):
    def __init__(
        self,
        session: Session,
        actor: Principal,
        *,
        settings: Settings | None = None,
        clock: Clock = utcnow,
    ) -> None:
        super().__init__(session, actor, settings=settings, clock=clock)
        self.deliveries: list[str] = []  # webhook and e-mail deliveries to send after the commit

    # --- bulletins: the operator's side

    def publish_bulletin(
        self,
        *,
        kind: str,
        title: str,
        severity: str,
        body_zh: str = "",
        body_en: str = "",
        advisory_ref: str | None = None,
        cves: Sequence[str] = (),
        deadline: dt.datetime | None = None,
        tenant_ids: Sequence[str] | None = None,
    ) -> Bulletin:
        """Publish to the tenants named, or (None) to the tenants whose assets match its advisory or CVEs."""
        self._platform()
        try:
            bulletin_kind = BulletinKind(kind).value
        except ValueError:
            raise Invalid("a bulletin is an advisory or a warning", code="bulletin_kind_invalid") from None
        if not title.strip():
            raise Invalid("a bulletin needs a title", code="bulletin_title_missing")
        if not body_zh.strip() and not body_en.strip():
            raise Invalid("a bulletin needs a body in Chinese or English", code="bulletin_body_missing")
        advisory = self._advisory(advisory_ref) if advisory_ref else None
        all_cves = sorted({c.strip().upper() for c in cves if c.strip()} | set(advisory.cves if advisory else ()))
        now = self.clock()
        bulletin = Bulletin(
            id=new_id(),
            kind=bulletin_kind,
            title=title.strip()[:300],
            body_zh=body_zh,
            body_en=body_en,
            severity=parse_choice(severity, Severity, "severity"),
            advisory_id=advisory.id if advisory else None,
            cves=all_cves,
            deadline=deadline,
            targeting="chosen" if tenant_ids is not None else "matched",
            published_by=self.actor.label,
            published_at=now,
        )
        self.session.add(bulletin)
        self.session.flush()
        targets = self._chosen(tenant_ids) if tenant_ids is not None else self._affected(advisory, all_cves)
        if not targets:
            raise Invalid("no tenant is affected: choose the tenants to send it to", code="bulletin_no_recipients")
        for tenant_id, matched in sorted(targets.items()):
            self._address(bulletin, tenant_id, matched, now)
        self._audit("bulletin.publish", "security_bulletin", bulletin.id, f"{bulletin.title} -> {len(targets)}", None)
        return bulletin

    def _advisory(self, ref: str) -> Advisory:
        return SecurityService(self.session, self.actor, settings=self.settings, clock=self.clock).get_advisory(ref)

    def _chosen(self, tenant_ids: Sequence[str]) -> dict[str, int]:
        access = AccessService(self.session)
        return {access.get_tenant(t, self.actor).id: 0 for t in tenant_ids}

    def _affected(self, advisory: Advisory | None, cves: Sequence[str]) -> dict[str, int]:
        """Tenants with unresolved matches of the advisory, or of any advisory naming one of the CVEs."""
        matches = self.session.scalars(select(AdvisoryMatch).where(AdvisoryMatch.resolution == ""))
        wanted = set(cves)
        counts: Counter[str] = Counter()
        for match in matches:
            if (advisory is not None and match.advisory_id == advisory.id) or wanted & set(match.cves):
                counts[match.tenant_id] += 1
        return dict(counts)

    def _address(self, bulletin: Bulletin, tenant_id: str, matched: int, now: dt.datetime) -> None:
        recipient = BulletinRecipient(id=new_id(), bulletin_id=bulletin.id, tenant_id=tenant_id, matched_assets=matched)
        self.session.add(recipient)
        self.session.flush()
        console = BulletinDelivery(
            id=new_id(),
            recipient_id=recipient.id,
            channel=Channel.CONSOLE.value,
            status=DeliveryStatus.SENT.value,
            attempts=1,
            sent_at=now,
        )
        self.session.add(console)
        contact = self.session.get(Contact, tenant_id)
        if contact is not None and contact.webhook_url:
            self._pending(recipient, Channel.WEBHOOK, contact.webhook_url, now)
        if contact is not None and contact.emails:
            self._pending(recipient, Channel.EMAIL, ", ".join(contact.emails), now)

    def _pending(self, recipient: BulletinRecipient, channel: Channel, target: str, now: dt.datetime) -> None:
        row = BulletinDelivery(
            id=new_id(),
            recipient_id=recipient.id,
            channel=channel.value,
            target=target[:1000],
            next_attempt_at=now + dt.timedelta(seconds=STALE_PENDING_S),
        )
        self.session.add(row)
        self.deliveries.append(row.id)

    def list_bulletins(self) -> list[tuple[Bulletin, list[BulletinRecipient]]]:
        """Platform operators: every bulletin with its recipients."""
        self._read()
        if not self.actor.is_platform:
            raise Forbidden("only platform operators see every bulletin; read your inbox", code="platform_only")
        bulletins = list(self.session.scalars(select(Bulletin).order_by(Bulletin.published_at.desc(), Bulletin.id)))
        recipients: dict[str, list[BulletinRecipient]] = {b.id: [] for b in bulletins}
        for row in self.session.scalars(select(BulletinRecipient).order_by(BulletinRecipient.tenant_id)):
            recipients.setdefault(row.bulletin_id, []).append(row)
        return [(b, recipients[b.id]) for b in bulletins]

    def get_bulletin(self, bulletin_id: str) -> tuple[Bulletin, list[RecipientView]]:
        """Platform operators: a bulletin and, per tenant, its receipt, acknowledgement, remediation, deliveries."""
        self._read()
        if not self.actor.is_platform:
            raise NotFound(f"bulletin '{bulletin_id[:40]}' not found", code="bulletin_not_found")
        bulletin = self.session.get(Bulletin, bulletin_id[:32])
        if bulletin is None:
            raise NotFound(f"bulletin '{bulletin_id[:40]}' not found", code="bulletin_not_found")
        rows = self.session.scalars(select(BulletinRecipient).where(BulletinRecipient.bulletin_id == bulletin.id))
        return bulletin, [self._recipient_view(r, bulletin) for r in rows]

    def redeliver(self, bulletin_id: str) -> list[str]:
        """Queue the failed webhook and e-mail deliveries of a bulletin, and those waiting for their next
        try, to be sent again now (platform operators)."""
        self._write()
        bulletin, views = self.get_bulletin(bulletin_id)  # a bulletin is not found for anyone else
        for view in views:
            for delivery in view.deliveries:
                if delivery.status in (DeliveryStatus.FAILED, DeliveryStatus.RETRYING):
                    delivery.status, delivery.error = DeliveryStatus.PENDING.value, ""
                    delivery.next_attempt_at = self.clock() + dt.timedelta(seconds=STALE_PENDING_S)
                    self.deliveries.append(delivery.id)
        self._audit("bulletin.redeliver", "security_bulletin", bulletin.id, f"{len(self.deliveries)}", None)
        return list(self.deliveries)

    def _recipient_view(self, recipient: BulletinRecipient, bulletin: Bulletin) -> RecipientView:
        deliveries = self.session.scalars(
            select(BulletinDelivery)
            .where(BulletinDelivery.recipient_id == recipient.id)
            .order_by(BulletinDelivery.channel)
        )
        return RecipientView(recipient, bulletin, list(deliveries), self.overdue(recipient, bulletin))

    def overdue(self, recipient: BulletinRecipient, bulletin: Bulletin) -> bool:
        return is_overdue(bulletin.deadline, recipient.remediation, self.clock())

    # --- bulletins: the tenant's inbox

    def inbox(self, *, tenant_id: str | None = None) -> list[RecipientView]:
        self._read()
        tenant = self._scope(tenant_id) or self.actor.tenant_id
        query = (
            select(BulletinRecipient, Bulletin)
            .join(Bulletin, Bulletin.id == BulletinRecipient.bulletin_id)
            .where(BulletinRecipient.tenant_id == tenant)
            .order_by(Bulletin.published_at.desc(), Bulletin.id)
        )
        return [self._recipient_view(r, b) for r, b in self.session.execute(query)]

    def inbox_item(self, bulletin_id: str, *, tenant_id: str | None = None, mark_opened: bool = True) -> RecipientView:
        """A bulletin as the tenant received it; reading it records the receipt (the first time).

        Platform operators name the tenant, or reach the one recipient of a bulletin sent to one.
        """
        self._read()
        query = (
            select(BulletinRecipient, Bulletin)
            .join(Bulletin, Bulletin.id == BulletinRecipient.bulletin_id)
            .where(Bulletin.id == bulletin_id[:32])
        )
        tenant = self._scope(tenant_id)
        rows = list(self.session.execute(query.where(BulletinRecipient.tenant_id == tenant) if tenant else query))
        if len(rows) > 1:
            own = [r for r in rows if r[0].tenant_id == self.actor.tenant_id]
            if not own:
                raise Invalid("the bulletin went to several tenants: name one", code="tenant_required")
            rows = own
        if not rows:
            raise NotFound(f"bulletin '{bulletin_id[:40]}' not found", code="bulletin_not_found")
        recipient, bulletin = rows[0]
        opener = recipient.tenant_id == self.actor.tenant_id  # an operator looking on is not the tenant opening it
        if mark_opened and opener and recipient.opened_at is None:
            recipient.opened_by, recipient.opened_at = self.actor.label, self.clock()
        return self._recipient_view(recipient, bulletin)

    def acknowledge_bulletin(self, bulletin_id: str, *, tenant_id: str | None = None) -> RecipientView:
        self._write()
        view = self.inbox_item(bulletin_id, tenant_id=tenant_id)
        recipient = view.recipient
        if recipient.acknowledged_at is None:
            now = self.clock()
            recipient.acknowledged_by, recipient.acknowledged_at = self.actor.label, now
            if recipient.opened_at is None:
                recipient.opened_by, recipient.opened_at = self.actor.label, now
            self._audit("bulletin.acknowledge", "security_bulletin", view.bulletin.id, "", recipient.tenant_id)
        return view

    def set_remediation(
        self, bulletin_id: str, status: str, note: str = "", *, tenant_id: str | None = None
    ) -> RecipientView:
        self._write()
        view = self.inbox_item(bulletin_id, tenant_id=tenant_id)
        recipient = view.recipient
        recipient.remediation = parse_choice(status, Remediation, "remediation")
        recipient.remediation_note = note.strip()[:1000]
        recipient.remediation_by, recipient.remediation_at = self.actor.label, self.clock()
        self._audit("bulletin.remediation", "security_bulletin", view.bulletin.id, status, recipient.tenant_id)
        return self._recipient_view(recipient, view.bulletin)

    # --- where bulletins go

    def get_contact(self, *, tenant_id: str | None = None) -> Contact:
        self._read()
        tenant = self.tenant_for(tenant_id)
        return self.session.get(Contact, tenant) or Contact(
            tenant_id=tenant, webhook_url="", webhook_secret="", emails=[]
        )

    def set_contact(
        self, *, webhook_url: str, webhook_secret: str | None, emails: Sequence[str], tenant_id: str | None = None
    ) -> Contact:
        """The tenant's webhook (signed with its secret) and e-mail addresses for bulletins."""
        self._write()
        tenant = self.tenant_for(tenant_id)
        try:
            url = check_webhook_url(webhook_url) if webhook_url.strip() else ""
            addresses = sorted({check_email_address(e) for e in emails if e.strip()})
        except ValueError as err:
            raise Invalid(str(err), code="contact_invalid") from None
        row = self.session.get(Contact, tenant)
        if row is None:
            row = Contact(tenant_id=tenant, webhook_secret="")
            self.session.add(row)
        row.webhook_url, row.emails = url, addresses
        if webhook_secret is not None:
            row.webhook_secret = self._sealer().seal(webhook_secret, bound_to=tenant) if webhook_secret else ""
        if url and not row.webhook_secret:
            raise Invalid("a webhook needs a secret to sign with", code="contact_secret_missing")
        row.updated_by, row.updated_at = self.actor.label, self.clock()
        self.session.flush()
        self._audit("contact.set", "security_contact", tenant, url or "no webhook", tenant)
        return row

    def _sealer(self) -> Sealer:
        if self.settings is None:
            raise Invalid("settings are needed to seal the webhook secret", code="settings_missing")
        return Sealer.of(self.settings, SEALING_PURPOSE)
