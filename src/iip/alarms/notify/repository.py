"""Queries of alarm notifications. `tenant_id=None` means every tenant (platform operators)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from typing import TypeVar

from sqlalchemy import CursorResult, Select, func, or_, select, update
from sqlalchemy.orm import Session

from iip.alarms.notify.models import Channel, Contact, Delivery, Escalation, Route, RouteChannel
from iip.alarms.notify.routing import ChannelInfo, ChannelKind, ContactInfo, RouteRule

ROW_ID = re.compile(r"^[0-9a-f]{32}$")
Row = TypeVar("Row", Channel, Contact, Route, Delivery, Escalation)

SENDABLE = ("pending", "retrying")
# Messages that count against a channel's rate limit (a digest and a test do not).
LIMITED_KINDS = ("notification", "escalation")


def _tenant(query: Select[tuple[Row]], model: type[Row], tenant_id: str | None) -> Select[tuple[Row]]:
    return query if tenant_id is None else query.where(model.tenant_id == tenant_id)


def channel_info(row: Channel) -> ChannelInfo:
    return ChannelInfo(row.id, row.name, ChannelKind(row.kind), row.enabled, tuple(row.addresses), row.rate_limit)


def contact_info(row: Contact) -> ContactInfo:
    return ContactInfo(row.email, row.role, row.site, row.enabled)


class NotifyRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def by_id(self, model: type[Row], row_id: str) -> Row | None:
        if not ROW_ID.match(row_id):
            return None
        return self.session.get(model, row_id)

    # channels

    def channel(self, tenant_id: str, name: str) -> Channel | None:
        return self.session.scalar(select(Channel).where(Channel.tenant_id == tenant_id, Channel.name == name))

    def channels(self, tenant_id: str | None, *, kind: str | None = None) -> list[Channel]:
        query = _tenant(select(Channel), Channel, tenant_id)
        if kind:
            query = query.where(Channel.kind == kind)
        return list(self.session.scalars(query.order_by(Channel.tenant_id, Channel.name)))

    def channel_names(self, ids: Iterable[str]) -> dict[str, str]:
        wanted = list(set(ids))
        if not wanted:
            return {}
        rows = self.session.execute(select(Channel.id, Channel.name).where(Channel.id.in_(wanted)))
        return dict(rows.all())

    def routes_naming(self, channel_id: str) -> list[str]:
        query = (
            select(Route.name)
            .join(RouteChannel, RouteChannel.route_id == Route.id)
            .where(RouteChannel.channel_id == channel_id)
            .distinct()
            .order_by(Route.name)
        )
        return list(self.session.scalars(query))

    # contacts

    def contact(self, tenant_id: str, name: str) -> Contact | None:
        return self.session.scalar(select(Contact).where(Contact.tenant_id == tenant_id, Contact.name == name))

    def contacts(self, tenant_id: str | None, *, role: str | None = None, site: str | None = None) -> list[Contact]:
        query = _tenant(select(Contact), Contact, tenant_id)
        if role:
            query = query.where(Contact.role == role)
        if site is not None:
            query = query.where(Contact.site == site)
        return list(self.session.scalars(query.order_by(Contact.tenant_id, Contact.name)))

    # routes

    def route(self, tenant_id: str, name: str) -> Route | None:
        return self.session.scalar(select(Route).where(Route.tenant_id == tenant_id, Route.name == name))

    def routes(self, tenant_id: str | None) -> list[Route]:
        return list(
            self.session.scalars(_tenant(select(Route), Route, tenant_id).order_by(Route.tenant_id, Route.name))
        )

    def route_channels(self, route_ids: Iterable[str]) -> dict[str, list[tuple[str, bool]]]:
        """(channel id, escalation) per route id, in channel name order."""
        ids = list(route_ids)
        found: dict[str, list[tuple[str, bool]]] = {route_id: [] for route_id in ids}
        if not ids:
            return found
        query = (
            select(RouteChannel.route_id, RouteChannel.channel_id, RouteChannel.escalation)
            .join(Channel, Channel.id == RouteChannel.channel_id)
            .where(RouteChannel.route_id.in_(ids))
            .order_by(Channel.name)
        )
        for route_id, channel_id, escalation in self.session.execute(query):
            found[route_id].append((channel_id, escalation))
        return found

    def route_rules(self, routes: Sequence[Route]) -> list[RouteRule]:
        links = self.route_channels(r.id for r in routes)
        return [
            RouteRule(
                id=r.id,
                name=r.name,
                priorities=frozenset(r.priorities),
                sites=frozenset(r.sites),
                actions=frozenset(r.actions),
                audience_role=r.audience_role,
                channels=tuple(c for c, escalation in links[r.id] if not escalation),
                escalate_after_min=r.escalate_after_min,
                escalation_channels=tuple(c for c, escalation in links[r.id] if escalation),
                escalation_role=r.escalation_role,
                enabled=r.enabled,
            )
            for r in routes
        ]

    def routing_of(self, tenant_id: str) -> tuple[list[RouteRule], dict[str, ChannelInfo], list[ContactInfo]]:
        """Everything routing a change of the tenant needs: enabled routes, channels, enabled contacts."""
        routes = list(self.session.scalars(select(Route).where(Route.tenant_id == tenant_id, Route.enabled.is_(True))))
        if not routes:
            return [], {}, []
        channels = {c.id: channel_info(c) for c in self.channels(tenant_id)}
        contacts = [
            contact_info(c)
            for c in self.session.scalars(
                select(Contact).where(Contact.tenant_id == tenant_id, Contact.enabled.is_(True))
            )
        ]
        return self.route_rules(routes), channels, contacts

    # deliveries

    def delivery(self, channel_id: str, dedup_key: str) -> Delivery | None:
        return self.session.scalar(
            select(Delivery).where(Delivery.channel_id == channel_id, Delivery.dedup_key == dedup_key)
        )

    def deliveries_by_key(
        self, channel_ids: Iterable[str], dedup_keys: Iterable[str]
    ) -> dict[tuple[str, str], tuple[str, str]]:
        """(id, status) of the deliveries of these channels with these keys, by (channel id, key)."""
        channels = sorted(set(channel_ids))
        keys = sorted(set(dedup_keys))
        found: dict[tuple[str, str], tuple[str, str]] = {}
        if not channels:
            return found
        for first in range(0, len(keys), 500):
            query = select(Delivery.channel_id, Delivery.dedup_key, Delivery.id, Delivery.status).where(
                Delivery.channel_id.in_(channels), Delivery.dedup_key.in_(keys[first : first + 500])
            )
            for channel_id, key, delivery_id, status in self.session.execute(query):
                found[channel_id, key] = (delivery_id, status)
        return found

    def deliveries(
        self,
        tenant_id: str | None,
        *,
        channel_id: str | None = None,
        alarm_id: str | None = None,
        status: str | None = None,
        kind: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Delivery]:
        query = _tenant(select(Delivery), Delivery, tenant_id)
        if channel_id:
            query = query.where(Delivery.channel_id == channel_id)
        if alarm_id:
            query = query.where(Delivery.alarm_id == alarm_id)
        if status:
            query = query.where(Delivery.status == status)
        if kind:
            query = query.where(Delivery.kind == kind)
        query = query.order_by(Delivery.created_at.desc(), Delivery.id.desc()).limit(limit).offset(offset)
        return list(self.session.scalars(query))

    def counted_in_window(self, channel_id: str, window_start: dt.datetime) -> int:
        """Messages a channel was allowed to send in the rate window starting at `window_start`."""
        query = select(func.count()).where(
            Delivery.channel_id == channel_id,
            Delivery.window_start == window_start,
            Delivery.kind.in_(LIMITED_KINDS),
            Delivery.status.not_in(("held", "digested")),
        )
        return self.session.scalar(query) or 0

    def due_deliveries(self, now: dt.datetime, limit: int) -> list[str]:
        query = (
            select(Delivery.id)
            .where(
                Delivery.status.in_(SENDABLE),
                Delivery.next_attempt_at <= now,
                or_(Delivery.claimed_until.is_(None), Delivery.claimed_until <= now),
            )
            .order_by(Delivery.next_attempt_at)
            .limit(limit)
        )
        return list(self.session.scalars(query))

    def claim(self, delivery_id: str, now: dt.datetime, until: dt.datetime) -> bool:
        """Take a due delivery for sending until `until`; False when it is not due or another sender holds it."""
        statement = (
            update(Delivery)
            .where(
                Delivery.id == delivery_id,
                Delivery.status.in_(SENDABLE),
                or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= now),
                or_(Delivery.claimed_until.is_(None), Delivery.claimed_until <= now),
            )
            .values(claimed_until=until)
            .execution_options(synchronize_session=False)
        )
        result = self.session.execute(statement)
        return isinstance(result, CursorResult) and result.rowcount == 1

    def replace_secret(self, channel_id: str, stored: str, replacement: str) -> bool:
        """Store `replacement` as the channel's secret unless the secret changed since it was read as `stored`."""
        statement = (
            update(Channel)
            .where(Channel.id == channel_id, Channel.secret == stored)
            .values(secret=replacement)
            .execution_options(synchronize_session=False)
        )
        result = self.session.execute(statement)
        return isinstance(result, CursorResult) and result.rowcount == 1

    def ended_windows(self, ended_by: dt.datetime) -> list[tuple[str, dt.datetime]]:
        """(channel id, window start) of held messages whose window started before `ended_by`."""
        query = (
            select(Delivery.channel_id, Delivery.window_start)
            .where(Delivery.status == "held", Delivery.window_start <= ended_by)
            .distinct()
            .order_by(Delivery.window_start)
        )
        return [(channel_id, start) for channel_id, start in self.session.execute(query) if start]

    def held(self, channel_id: str, window_start: dt.datetime) -> list[Delivery]:
        query = (
            select(Delivery)
            .where(
                Delivery.channel_id == channel_id,
                Delivery.window_start == window_start,
                Delivery.status == "held",
            )
            .order_by(Delivery.created_at, Delivery.id)
        )
        return list(self.session.scalars(query))

    # escalations

    def pending_escalations(self, alarm_id: str, *, route_id: str | None = None) -> list[Escalation]:
        query = select(Escalation).where(Escalation.alarm_id == alarm_id, Escalation.status == "pending")
        if route_id is not None:
            query = query.where(Escalation.route_id == route_id)
        return list(self.session.scalars(query))

    def escalation(self, route_id: str, alarm_id: str, sequence: int) -> Escalation | None:
        return self.session.scalar(
            select(Escalation).where(
                Escalation.route_id == route_id, Escalation.alarm_id == alarm_id, Escalation.sequence == sequence
            )
        )

    def due_escalations(self, now: dt.datetime, limit: int) -> list[str]:
        query = (
            select(Escalation.id)
            .where(Escalation.status == "pending", Escalation.due_at <= now)
            .order_by(Escalation.due_at)
            .limit(limit)
        )
        return list(self.session.scalars(query))

    def take_escalation(self, escalation_id: str, status: str, resolution: str, now: dt.datetime) -> bool:
        """Move a pending escalation to `status`; False when it was no longer pending (another took it)."""
        statement = (
            update(Escalation)
            .where(Escalation.id == escalation_id, Escalation.status == "pending")
            .values(status=status, resolution=resolution[:300], resolved_at=now)
            .execution_options(synchronize_session=False)
        )
        result = self.session.execute(statement)
        return isinstance(result, CursorResult) and result.rowcount == 1

    def escalations(
        self,
        tenant_id: str | None,
        *,
        status: str | None = None,
        alarm_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Escalation]:
        query = _tenant(select(Escalation), Escalation, tenant_id)
        if status:
            query = query.where(Escalation.status == status)
        if alarm_id:
            query = query.where(Escalation.alarm_id == alarm_id)
        query = query.order_by(Escalation.created_at.desc(), Escalation.id.desc()).limit(limit).offset(offset)
        return list(self.session.scalars(query))

    def route_names(self, ids: Iterable[str]) -> dict[str, str]:
        wanted = list(set(ids))
        if not wanted:
            return {}
        rows = self.session.execute(select(Route.id, Route.name).where(Route.id.in_(wanted)))
        return dict(rows.all())
