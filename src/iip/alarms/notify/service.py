"""Use cases of notification configuration: channels, contacts, routes, and reading the delivery log.

Every call is scoped to the acting principal's tenant (platform operators reach every tenant by
id); another tenant's object is indistinguishable from a missing one. Objects are named by id or,
within the actor's tenant, by name. Reads need `alarms.read`, changes `alarms.write`.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from iip.alarms.notify.models import Channel, Contact, Delivery, Escalation, Route, RouteChannel
from iip.alarms.notify.repository import NotifyRepository
from iip.alarms.notify.routing import ChannelKind
from iip.alarms.notify.schemas import (
    ChannelCreate,
    ChannelCreated,
    ChannelOut,
    ChannelUpdate,
    ContactCreate,
    ContactOut,
    ContactUpdate,
    DeliveryOut,
    EmailChannelCreate,
    EscalationOut,
    RouteOut,
    RouteSpec,
    SecretIssued,
)
from iip.kernel.auth import AccessService, Principal, new_id
from iip.kernel.db import utcnow
from iip.kernel.errors import Conflict, Invalid, NotFound
from iip.kernel.sealing import Sealer
from iip.kernel.settings import Settings

READ = "alarms.read"
WRITE = "alarms.write"
# Part of every sealed channel secret's key: changing it makes the stored secrets unreadable.
CHANNEL_SECRET_PURPOSE = "alarms.notify.channel-secret"  # noqa: S105 - a name, not a secret


def channel_sealer(settings: Settings) -> Sealer:
    """Seals and opens webhook signing secrets (`Channel.secret`, bound to the channel's id)."""
    return Sealer.of(settings, CHANNEL_SECRET_PURPOSE)


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def channel_view(row: Channel) -> ChannelOut:
    return ChannelOut(
        id=row.id,
        tenant_id=row.tenant_id,
        name=row.name,
        kind=ChannelKind(row.kind).value,
        enabled=row.enabled,
        url=row.url,
        addresses=list(row.addresses),
        rate_limit=row.rate_limit,
        secret_set=bool(row.secret),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def contact_view(row: Contact) -> ContactOut:
    return ContactOut.model_validate(row, from_attributes=True)


def delivery_view(row: Delivery, channel_name: str) -> DeliveryOut:
    return DeliveryOut(
        id=row.id,
        tenant_id=row.tenant_id,
        channel_id=row.channel_id,
        channel=channel_name,
        kind=row.kind,
        alarm_id=row.alarm_id,
        sequence=row.sequence,
        status=row.status,
        attempts=row.attempts,
        last_error=row.last_error,
        recipients=list(row.recipients),
        digest_id=row.digest_id,
        next_attempt_at=row.next_attempt_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
        sent_at=row.sent_at,
        payload=dict(row.payload),
    )


class NotificationAdmin:
    """Channels, contacts and routes of the actor's tenant (every tenant for platform operators)."""

    def __init__(self, session: Session, actor: Principal) -> None:
        self.session = session
        self.actor = actor
        self.repo = NotifyRepository(session)

    # scoping

    @property
    def _visible_tenant(self) -> str | None:
        return None if self.actor.is_platform else self.actor.tenant_id

    def _tenant_for(self, tenant_id: str | None) -> str:
        if tenant_id and self.actor.is_platform and tenant_id != self.actor.tenant_id:
            return AccessService(self.session).get_tenant(tenant_id, self.actor).id
        return self.actor.tenant_id

    def _visible(self, row: Channel | Contact | Route | Delivery | Escalation | None) -> bool:
        return row is not None and (self.actor.is_platform or row.tenant_id == self.actor.tenant_id)

    def _flush(self, what: str) -> None:
        try:
            self.session.flush()
        except IntegrityError:
            # Checked before writing; only a concurrent change of the same names gets here.
            raise Conflict(f"{what} changed concurrently; try again", code="concurrent_change") from None

    # channels

    def list_channels(self, *, kind: ChannelKind | None = None) -> list[ChannelOut]:
        self.actor.require(READ)
        return [channel_view(c) for c in self.repo.channels(self._visible_tenant, kind=kind)]

    def get_channel(self, ref: str) -> Channel:
        self.actor.require(READ)
        row = self.repo.by_id(Channel, ref)
        if not self._visible(row):
            row = self.repo.channel(self.actor.tenant_id, ref)
        if row is None:
            raise NotFound(f"notification channel '{ref[:100]}' not found", code="channel_not_found")
        return row

    def create_channel(self, spec: ChannelCreate, sealer: Sealer, *, tenant_id: str | None = None) -> ChannelCreated:
        """Create a channel; a webhook's secret is stored sealed and answered this once."""
        self.actor.require(WRITE)
        tenant = self._tenant_for(tenant_id)
        if self.repo.channel(tenant, spec.name) is not None:
            raise Conflict(f"notification channel '{spec.name}' already exists", code="channel_exists")
        now = utcnow()
        row = Channel(
            id=new_id(),
            tenant_id=tenant,
            name=spec.name,
            kind=spec.kind,
            enabled=spec.enabled,
            rate_limit=spec.rate_limit,
            created_at=now,
            updated_at=now,
        )
        secret: str | None = None
        if isinstance(spec, EmailChannelCreate):
            row.addresses = list(spec.addresses)
        else:
            row.url = spec.url
            secret = spec.secret or new_secret()
            row.secret = sealer.seal(secret, bound_to=row.id)
        self.session.add(row)
        self._flush(f"notification channel '{spec.name}'")
        return ChannelCreated(**channel_view(row).model_dump(), secret=secret)

    def update_channel(self, ref: str, changes: ChannelUpdate) -> Channel:
        self.actor.require(WRITE)
        row = self.get_channel(ref)
        fields = changes.model_fields_set
        kind = ChannelKind(row.kind)
        if "url" in fields and kind is not ChannelKind.WEBHOOK:
            raise Invalid("url: only a webhook channel has a URL", code="not_a_webhook")
        if "addresses" in fields and kind is not ChannelKind.EMAIL:
            raise Invalid("addresses: only an e-mail channel has addresses", code="not_email")
        if changes.name is not None and changes.name != row.name:
            if self.repo.channel(row.tenant_id, changes.name) is not None:
                raise Conflict(f"notification channel '{changes.name}' already exists", code="channel_exists")
            row.name = changes.name
        if changes.enabled is not None:
            row.enabled = changes.enabled
        if changes.url is not None:
            row.url = changes.url
        if changes.addresses is not None:
            row.addresses = list(changes.addresses)
        if "rate_limit" in fields:
            row.rate_limit = changes.rate_limit
        row.updated_at = utcnow()
        self._flush(f"notification channel '{row.name}'")
        return row

    def rotate_secret(self, ref: str, sealer: Sealer) -> SecretIssued:
        """A new signing secret, stored sealed and answered this once."""
        self.actor.require(WRITE)
        row = self.get_channel(ref)
        if row.kind != ChannelKind.WEBHOOK:
            raise Invalid("only a webhook channel has a signing secret", code="not_a_webhook")
        secret = new_secret()
        row.secret = sealer.seal(secret, bound_to=row.id)
        row.updated_at = utcnow()
        self._flush(f"notification channel '{row.name}'")
        return SecretIssued(id=row.id, name=row.name, secret=secret)

    def delete_channel(self, ref: str) -> Channel:
        self.actor.require(WRITE)
        row = self.get_channel(ref)
        routes = self.repo.routes_naming(row.id)
        if routes:
            raise Conflict(
                f"notification channel '{row.name}' is used by route(s) {', '.join(routes)}: change them first",
                code="channel_in_use",
                routes=routes,
            )
        self.session.delete(row)
        self._flush(f"notification channel '{row.name}'")
        return row

    # contacts

    def list_contacts(self, *, role: str | None = None, site: str | None = None) -> list[ContactOut]:
        self.actor.require(READ)
        return [contact_view(c) for c in self.repo.contacts(self._visible_tenant, role=role, site=site)]

    def get_contact(self, ref: str) -> Contact:
        self.actor.require(READ)
        row = self.repo.by_id(Contact, ref)
        if not self._visible(row):
            row = self.repo.contact(self.actor.tenant_id, ref)
        if row is None:
            raise NotFound(f"contact '{ref[:100]}' not found", code="contact_not_found")
        return row

    def create_contact(self, spec: ContactCreate, *, tenant_id: str | None = None) -> Contact:
        self.actor.require(WRITE)
        tenant = self._tenant_for(tenant_id)
        name = spec.name.strip()
        if self.repo.contact(tenant, name) is not None:
            raise Conflict(f"contact '{name}' already exists", code="contact_exists")
        now = utcnow()
        row = Contact(
            id=new_id(),
            tenant_id=tenant,
            name=name,
            email=spec.email,
            role=spec.role,
            site=spec.site.strip(),
            enabled=spec.enabled,
            created_at=now,
            updated_at=now,
        )
        self.session.add(row)
        self._flush(f"contact '{name}'")
        return row

    def update_contact(self, ref: str, changes: ContactUpdate) -> Contact:
        self.actor.require(WRITE)
        row = self.get_contact(ref)
        if changes.name is not None and changes.name.strip() != row.name:
            name = changes.name.strip()
            if self.repo.contact(row.tenant_id, name) is not None:
                raise Conflict(f"contact '{name}' already exists", code="contact_exists")
            row.name = name
        if changes.email is not None:
            row.email = changes.email
        if changes.role is not None:
            row.role = changes.role
        if changes.site is not None:
            row.site = changes.site.strip()
        if changes.enabled is not None:
            row.enabled = changes.enabled
        row.updated_at = utcnow()
        self._flush(f"contact '{row.name}'")
        return row

    def delete_contact(self, ref: str) -> Contact:
        self.actor.require(WRITE)
        row = self.get_contact(ref)
        self.session.delete(row)
        self._flush(f"contact '{row.name}'")
        return row

    # routes

    def list_routes(self) -> list[RouteOut]:
        self.actor.require(READ)
        return self._route_views(self.repo.routes(self._visible_tenant))

    def get_route(self, ref: str) -> Route:
        self.actor.require(READ)
        row = self.repo.by_id(Route, ref)
        if not self._visible(row):
            row = self.repo.route(self.actor.tenant_id, ref)
        if row is None:
            raise NotFound(f"notification route '{ref[:100]}' not found", code="route_not_found")
        return row

    def describe_route(self, row: Route) -> RouteOut:
        return self._route_views([row])[0]

    def create_route(self, spec: RouteSpec, *, tenant_id: str | None = None) -> Route:
        self.actor.require(WRITE)
        tenant = self._tenant_for(tenant_id)
        if self.repo.route(tenant, spec.name) is not None:
            raise Conflict(f"notification route '{spec.name}' already exists", code="route_exists")
        now = utcnow()
        row = Route(id=new_id(), tenant_id=tenant, name=spec.name, created_at=now)
        self._apply_route(row, spec)
        return row

    def replace_route(self, ref: str, spec: RouteSpec) -> Route:
        """Replace a route's definition as a whole (its pending escalations keep their schedule)."""
        self.actor.require(WRITE)
        row = self.get_route(ref)
        if spec.name != row.name and self.repo.route(row.tenant_id, spec.name) is not None:
            raise Conflict(f"notification route '{spec.name}' already exists", code="route_exists")
        self._apply_route(row, spec)
        return row

    def delete_route(self, ref: str) -> Route:
        """Delete a route; its pending escalations go with it."""
        self.actor.require(WRITE)
        row = self.get_route(ref)
        self.session.delete(row)
        self._flush(f"notification route '{row.name}'")
        return row

    def _apply_route(self, row: Route, spec: RouteSpec) -> None:
        channels = self._channels_named(row.tenant_id, spec.channels, "channels")
        escalation = self._channels_named(row.tenant_id, spec.escalation_channels, "escalation_channels")
        if not channels and not escalation:
            raise Invalid("a route needs at least one channel (channels or escalation_channels)", code="no_channels")
        if spec.audience_role and not any(c.kind == ChannelKind.EMAIL for c in channels):
            raise Invalid(
                f"audience_role: the contacts of role '{spec.audience_role}' are reached by e-mail; "
                "add an e-mail channel to channels",
                code="audience_needs_email",
            )
        if (spec.escalate_after_min is None) != (not escalation):
            raise Invalid(
                "escalate_after_min and escalation_channels go together: give both or neither",
                code="escalation_incomplete",
            )
        if spec.escalation_role and not any(c.kind == ChannelKind.EMAIL for c in escalation):
            raise Invalid(
                f"escalation_role: the contacts of role '{spec.escalation_role}' are reached by e-mail; "
                "add an e-mail channel to escalation_channels",
                code="audience_needs_email",
            )
        row.name = spec.name
        row.enabled = spec.enabled
        row.priorities = [p.value for p in spec.priorities]
        row.sites = [s.strip() for s in spec.sites]
        row.actions = [a.value for a in spec.actions]
        row.audience_role = spec.audience_role
        row.escalate_after_min = spec.escalate_after_min
        row.escalation_role = spec.escalation_role
        row.updated_at = utcnow()
        if row not in self.session:
            self.session.add(row)
        self._flush(f"notification route '{spec.name}'")
        self.session.execute(delete(RouteChannel).where(RouteChannel.route_id == row.id))
        self.session.add_all(
            [RouteChannel(route_id=row.id, channel_id=c.id, escalation=False) for c in channels]
            + [RouteChannel(route_id=row.id, channel_id=c.id, escalation=True) for c in escalation]
        )
        self._flush(f"notification route '{spec.name}'")

    def _channels_named(self, tenant_id: str, refs: Sequence[str], field: str) -> list[Channel]:
        found: dict[str, Channel] = {}
        for ref in refs:
            row = self.repo.by_id(Channel, ref)
            if row is None or row.tenant_id != tenant_id:
                row = self.repo.channel(tenant_id, ref)
            if row is None:
                raise Invalid(f"{field}: unknown notification channel '{ref[:100]}'", code="unknown_channel")
            found[row.id] = row
        return list(found.values())

    def _route_views(self, rows: Sequence[Route]) -> list[RouteOut]:
        links = self.repo.route_channels(r.id for r in rows)
        names = self.repo.channel_names(c for pairs in links.values() for c, _ in pairs)
        return [
            RouteOut(
                id=r.id,
                tenant_id=r.tenant_id,
                name=r.name,
                enabled=r.enabled,
                priorities=r.priorities,
                sites=list(r.sites),
                actions=r.actions,
                audience_role=r.audience_role,
                channels=[names[c] for c, escalation in links[r.id] if not escalation],
                escalate_after_min=r.escalate_after_min,
                escalation_channels=[names[c] for c, escalation in links[r.id] if escalation],
                escalation_role=r.escalation_role,
                created_at=r.created_at,
                updated_at=r.updated_at,
            )
            for r in rows
        ]

    # the delivery log and escalations

    def list_deliveries(
        self,
        *,
        channel: str | None = None,
        alarm_id: str | None = None,
        status: str | None = None,
        kind: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[DeliveryOut]:
        self.actor.require(READ)
        channel_id = self.get_channel(channel).id if channel else None
        rows = self.repo.deliveries(
            self._visible_tenant,
            channel_id=channel_id,
            alarm_id=alarm_id,
            status=status,
            kind=kind,
            limit=limit,
            offset=offset,
        )
        names = self.repo.channel_names(r.channel_id for r in rows)
        return [delivery_view(r, names.get(r.channel_id, "")) for r in rows]

    def get_delivery(self, delivery_id: str) -> DeliveryOut:
        self.actor.require(READ)
        row = self.repo.by_id(Delivery, delivery_id)
        if row is None or not self._visible(row):
            raise NotFound(f"delivery '{delivery_id[:32]}' not found", code="delivery_not_found")
        return delivery_view(row, self.repo.channel_names([row.channel_id]).get(row.channel_id, ""))

    def list_escalations(
        self, *, status: str | None = None, alarm_id: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[EscalationOut]:
        self.actor.require(READ)
        rows = self.repo.escalations(self._visible_tenant, status=status, alarm_id=alarm_id, limit=limit, offset=offset)
        names = self.repo.route_names(r.route_id for r in rows)
        return [
            EscalationOut(
                id=r.id,
                tenant_id=r.tenant_id,
                route_id=r.route_id,
                route=names.get(r.route_id, ""),
                alarm_id=r.alarm_id,
                sequence=r.sequence,
                due_at=r.due_at,
                status=r.status,
                resolution=r.resolution,
                created_at=r.created_at,
                resolved_at=r.resolved_at,
            )
            for r in rows
        ]
