"""ORM models of alarm notifications (tables prefixed `alarms_notify_`).

Channels (webhook, e-mail), contacts (people by role and site) and routes (which alarm changes go
to which channels and people, and where they escalate) are configured per tenant. Every message is
a row of `alarms_notify_delivery` before it is sent: the row is the delivery log, the retry queue
and, through its unique (channel, dedup key), what keeps a redelivered bus message from notifying
twice. Pending escalations are rows too, so they survive a restart.

Deliveries and escalations name the alarm by id without a foreign key: the log outlives the alarm.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from iip.kernel.db import Base, utcnow

NAME_LENGTH = 100
ALARM_ID_LENGTH = 64
URL_LENGTH = 2000
EMAIL_LENGTH = 254  # RFC 5321 path limit
ROLE_LENGTH = 100
SITE_LENGTH = 200  # devices' site
SECRET_LENGTH = 200  # a webhook signing secret as issued or given
SEALED_SECRET_LENGTH = 400  # stored sealed: a secret of SECRET_LENGTH takes 314


class Channel(Base):
    """Where notifications are sent: a webhook (URL and signing secret) or a list of e-mail addresses."""

    __tablename__ = "alarms_notify_channel"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("kernel_tenant.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    kind: Mapped[str] = mapped_column(String(10))  # webhook, email
    enabled: Mapped[bool] = mapped_column(default=True)
    url: Mapped[str] = mapped_column(String(URL_LENGTH), default="")
    # Sealed (iip.kernel.sealing), not hashed: signing needs the secret itself. Empty for e-mail;
    # a value stored before sealing is plain until the channel next sends or gets a new secret.
    secret: Mapped[str] = mapped_column(String(SEALED_SECRET_LENGTH), default="")
    addresses: Mapped[list[str]] = mapped_column(JSON, default=list)
    rate_limit: Mapped[int | None] = mapped_column(Integer, default=None)  # None: the setting
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Contact(Base):
    """A person notifications reach by role ("shift_engineer") and site (empty: every site)."""

    __tablename__ = "alarms_notify_contact"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name"),
        Index("ix_alarms_notify_contact_tenant_id_role", "tenant_id", "role"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("kernel_tenant.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(EMAIL_LENGTH))
    role: Mapped[str] = mapped_column(String(ROLE_LENGTH))
    site: Mapped[str] = mapped_column(String(SITE_LENGTH), default="")
    enabled: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Route(Base):
    """Which alarm changes are notified where, and where they escalate when not acknowledged in time.

    Empty `priorities` or `sites` match every one; `actions` are the lifecycle actions notified.
    """

    __tablename__ = "alarms_notify_route"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("kernel_tenant.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    enabled: Mapped[bool] = mapped_column(default=True)
    priorities: Mapped[list[str]] = mapped_column(JSON, default=list)
    sites: Mapped[list[str]] = mapped_column(JSON, default=list)
    actions: Mapped[list[str]] = mapped_column(JSON, default=list)
    audience_role: Mapped[str] = mapped_column(String(ROLE_LENGTH), default="")
    escalate_after_min: Mapped[int | None] = mapped_column(Integer, default=None)
    escalation_role: Mapped[str] = mapped_column(String(ROLE_LENGTH), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class RouteChannel(Base):
    """A channel a route notifies at once (`escalation` false) or when it escalates (true)."""

    __tablename__ = "alarms_notify_route_channel"

    route_id: Mapped[str] = mapped_column(ForeignKey("alarms_notify_route.id", ondelete="CASCADE"), primary_key=True)
    # The service refuses to delete a channel a route names; CASCADE only serves a tenant's removal.
    channel_id: Mapped[str] = mapped_column(
        ForeignKey("alarms_notify_channel.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    escalation: Mapped[bool] = mapped_column(primary_key=True)


class Delivery(Base):
    """One message to one channel: what is sent, to whom, and what became of it.

    Status: `pending` (not tried yet), `retrying` (failed, tried again at `next_attempt_at`),
    `sent`, `failed` (refused for good or out of attempts), `held` (over the channel's rate limit,
    waiting for its window to end) and `digested` (sent inside the digest `digest_id`).
    """

    __tablename__ = "alarms_notify_delivery"
    __table_args__ = (
        UniqueConstraint("channel_id", "dedup_key"),
        Index("ix_alarms_notify_delivery_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_alarms_notify_delivery_tenant_id_created_at", "tenant_id", "created_at"),
        Index("ix_alarms_notify_delivery_channel_id_window_start", "channel_id", "window_start"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # the X-IIP-Delivery of webhooks
    tenant_id: Mapped[str] = mapped_column(ForeignKey("kernel_tenant.id", ondelete="CASCADE"))
    channel_id: Mapped[str] = mapped_column(ForeignKey("alarms_notify_channel.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20))  # notification, escalation, digest, test
    dedup_key: Mapped[str] = mapped_column(String(200))
    alarm_id: Mapped[str] = mapped_column(String(ALARM_ID_LENGTH), default="", index=True)
    sequence: Mapped[int | None] = mapped_column(Integer, default=None)
    status: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)  # what is sent, without the delivery id
    recipients: Mapped[list[str]] = mapped_column(JSON, default=list)  # e-mail addresses
    window_start: Mapped[dt.datetime | None] = mapped_column(default=None)  # the rate window it counted in
    digest_id: Mapped[str | None] = mapped_column(String(32), default=None)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    # A sender holds a delivery until then; a crashed sender's claim runs out and another tries it.
    claimed_until: Mapped[dt.datetime | None] = mapped_column(default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class Escalation(Base):
    """An escalation waiting for its time: fired unless the alarm is acknowledged (or shelved...) first."""

    __tablename__ = "alarms_notify_escalation"
    __table_args__ = (
        UniqueConstraint("route_id", "alarm_id", "sequence"),
        Index("ix_alarms_notify_escalation_status_due_at", "status", "due_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("kernel_tenant.id", ondelete="CASCADE"))
    route_id: Mapped[str] = mapped_column(ForeignKey("alarms_notify_route.id", ondelete="CASCADE"))
    alarm_id: Mapped[str] = mapped_column(String(ALARM_ID_LENGTH), index=True)
    sequence: Mapped[int] = mapped_column(Integer)  # of the activation that started it
    change: Mapped[dict[str, Any]] = mapped_column(JSON)  # that AlarmChange
    due_at: Mapped[dt.datetime] = mapped_column()
    status: Mapped[str] = mapped_column(String(20))  # pending, fired, cancelled
    resolution: Mapped[str] = mapped_column(String(300), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[dt.datetime | None] = mapped_column(default=None)
