"""Query subscriptions (EPCIS 2.0 REST binding, webhooks): create, list, read and delete. Tenant scoping lives here.

A subscription belongs to a named query and to that query's tenant. It says where to deliver
(`dest`, http or https), when (`stream`: as events are captured; at the times of the binding's
cron-like `schedule`, see `subscription_schedule`; or every `scheduleSeconds`, an IIP extension),
and with which key the deliveries are signed: the client's `signatureToken`, or one made here and
answered once. The key is stored sealed (`kernel.sealing`, bound to the subscription's id), never
answered again.

Delivery (`subscription_delivery`) starts after the newest event stored when the subscription is
made, or, given `initialRecordTime`, at the first event of the tenant recorded since then.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from iip.kernel.auth import Principal, new_id
from iip.kernel.db import utcnow
from iip.kernel.errors import DomainError, Invalid, NotFound
from iip.kernel.sealing import Sealer
from iip.kernel.settings import Settings
from iip.traceability.models import ACTOR_LENGTH, Event, NamedQuery, Subscription
from iip.traceability.query import parse_stored_query
from iip.traceability.query_service import QueryService
from iip.traceability.subscription_schedule import ScheduleError, parse_schedule

# Part of every sealed signing key's key: changing it makes the stored keys unreadable.
SECRET_PURPOSE = "traceability.subscription-secret"  # noqa: S105 - a name, not a secret
MIN_TOKEN_CHARS = 16  # a shorter HMAC key is guessable
MAX_TOKEN_CHARS = 200
MAX_DEST_CHARS = 2000
MAX_SCHEDULE_SECONDS = 31 * 24 * 3600
MAX_PER_QUERY = 100  # subscriptions of one named query
SUBSCRIPTION_CONTROLS = "epcisException:SubscriptionControlsException"
URL = re.compile(r"^https?://[^/\s?#@]+(?::\d{1,5})?(?:[/?#]\S*)?$", re.IGNORECASE)


class SubscriptionControlsError(DomainError):
    """The binding's SubscriptionControlsException: a subscription that cannot work as asked (400)."""

    code = "subscription_controls"
    title = "Subscription error"

    def __init__(self, message: str) -> None:
        super().__init__(message, epcisException=SUBSCRIPTION_CONTROLS)


def subscription_sealer(settings: Settings) -> Sealer:
    """Seals and opens subscription signing keys (`Subscription.secret`, bound to the subscription's id)."""
    return Sealer.of(settings, SECRET_PURPOSE)


def new_signature_token() -> str:
    return secrets.token_urlsafe(32)


def check_destination(url: str) -> str:
    """An http(s) URL with a host and no credentials; raises SubscriptionControlsError otherwise."""
    url = url.strip()
    if len(url) > MAX_DEST_CHARS or not URL.match(url):
        raise SubscriptionControlsError("dest must be an http:// or https:// URL with a host, without user:password@")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as err:
        raise SubscriptionControlsError(f"dest is not a usable URL: {err}") from None
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise SubscriptionControlsError("dest names a port out of range")
    return url


@dataclass(frozen=True)
class SubscriptionRequest:
    """What a client asks for (the binding's QueryStreamSubscription or QueryScheduleSubscription, or an interval)."""

    destination: str
    signature_token: str | None = None
    stream: bool | None = None
    schedule_seconds: int | None = None
    report_if_empty: bool = False
    initial_record_time: dt.datetime | None = None
    schedule: Mapping[str, Any] | None = None  # the binding's cron-like schedule (`subscription_schedule`)


@dataclass(frozen=True)
class CreatedSubscription:
    subscription: Subscription
    query: NamedQuery
    signature_token: str | None  # made here: answered this once; None when the client gave its own


@dataclass(frozen=True)
class SubscriptionPage:
    subscriptions: list[Subscription]
    next_page_token: str | None


def _page_token(row: Subscription) -> str:
    raw = json.dumps({"at": row.created_at.isoformat(), "id": row.id}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _page_after(token: str) -> tuple[dt.datetime, str]:
    try:
        found = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        at, row_id = dt.datetime.fromisoformat(found["at"]), found["id"]
    except (binascii.Error, ValueError, TypeError, KeyError):
        raise Invalid("nextPageToken is not a token this server issued", code="page_token") from None
    if not isinstance(row_id, str) or at.tzinfo is None:
        raise Invalid("nextPageToken is not a token this server issued", code="page_token")
    return at, row_id


def _checked(request: SubscriptionRequest, now: dt.datetime) -> SubscriptionRequest:
    """The request, refused (SubscriptionControlsError) when it does not say one workable way to deliver."""
    ways = [
        name
        for name, given in (
            ("stream: true", bool(request.stream)),
            ("schedule", request.schedule is not None),
            ("scheduleSeconds", request.schedule_seconds is not None),
        )
        if given
    ]
    if len(ways) > 1:
        together = " and ".join(ways)
        raise SubscriptionControlsError(f"give one of stream: true, schedule or scheduleSeconds, not {together}")
    if not ways:
        raise SubscriptionControlsError("say when to deliver: stream: true, a schedule, or scheduleSeconds")
    schedule = None
    if request.schedule is not None:
        try:
            schedule = parse_schedule(request.schedule, now=now).as_json()
        except ScheduleError as err:
            raise SubscriptionControlsError(str(err)) from None
    if request.schedule_seconds is not None and not 1 <= request.schedule_seconds <= MAX_SCHEDULE_SECONDS:
        raise SubscriptionControlsError(f"scheduleSeconds must be between 1 and {MAX_SCHEDULE_SECONDS}")
    if request.stream and request.report_if_empty:
        raise SubscriptionControlsError("reportIfEmpty applies to scheduled subscriptions, not to a stream")
    token = request.signature_token
    if token is not None and not MIN_TOKEN_CHARS <= len(token) <= MAX_TOKEN_CHARS:
        raise SubscriptionControlsError(
            f"signatureToken must have {MIN_TOKEN_CHARS} to {MAX_TOKEN_CHARS} characters (it is the signing key)"
        )
    initial = checked_initial_record_time(request.initial_record_time)
    destination = check_destination(request.destination)
    return SubscriptionRequest(
        destination=destination,
        signature_token=token,
        stream=bool(request.stream),
        schedule_seconds=request.schedule_seconds,
        report_if_empty=request.report_if_empty,
        initial_record_time=initial,
        schedule=schedule,
    )


def next_run(schedule: Mapping[str, Any] | None, schedule_seconds: int | None, now: dt.datetime) -> dt.datetime | None:
    """When a scheduled subscription is next due after `now`: its schedule's next time, or `now` plus its
    interval; None for a stream, and for a schedule that fires no more."""
    if schedule is not None:
        try:
            return parse_schedule(schedule).next_after(now)
        except ScheduleError:
            return None  # checked when made; a stored one that no longer reads is never due
    if schedule_seconds is not None:
        return now + dt.timedelta(seconds=schedule_seconds)
    return None


def start_after(session: Session, tenant_id: str, initial: dt.datetime | None) -> int:
    """The event id a new subscription starts after: the newest stored, or the last before `initial` was recorded."""
    newest = session.scalar(select(func.max(Event.id))) or 0
    if initial is None:
        return int(newest)
    first = session.scalar(select(func.min(Event.id)).where(Event.tenant_id == tenant_id, Event.record_time >= initial))
    return int(newest) if first is None else int(first) - 1


def checked_initial_record_time(initial: dt.datetime | None) -> dt.datetime | None:
    """`initialRecordTime` in UTC; SubscriptionControlsError without an offset or out of range."""
    if initial is None:
        return None
    if initial.tzinfo is None:
        raise SubscriptionControlsError("initialRecordTime needs a time zone offset")
    try:
        return initial.astimezone(dt.UTC)
    except OverflowError:
        raise SubscriptionControlsError("initialRecordTime is out of range") from None


class SubscriptionService:
    """Subscriptions of the named queries the actor may read (platform operators: any tenant's)."""

    def __init__(self, session: Session, actor: Principal) -> None:
        self.session = session
        self.actor = actor
        self.queries = QueryService(session, actor)

    def create(
        self, query_ref: str, request: SubscriptionRequest, sealer: Sealer, *, tenant_id: str | None = None
    ) -> CreatedSubscription:
        self.actor.require("traceability.write")
        query = self.queries.named_query(query_ref, tenant_id)
        now = utcnow()
        wanted = _checked(request, now)
        parse_stored_query(query.parameters)  # a query that no longer runs would fail every delivery
        held = self.session.scalar(select(func.count(Subscription.id)).where(Subscription.query_id == query.id))
        if (held or 0) >= MAX_PER_QUERY:
            raise SubscriptionControlsError(f"the query has {MAX_PER_QUERY} subscriptions already")
        token = wanted.signature_token or new_signature_token()
        row = Subscription(
            id=new_id(),
            tenant_id=query.tenant_id,
            query_id=query.id,
            destination=wanted.destination,
            stream=bool(wanted.stream),
            schedule=dict(wanted.schedule) if wanted.schedule is not None else None,
            schedule_seconds=wanted.schedule_seconds,
            report_if_empty=wanted.report_if_empty,
            initial_record_time=wanted.initial_record_time,
            after_event=start_after(self.session, query.tenant_id, wanted.initial_record_time),
            attempts=0,
            next_attempt_at=None if wanted.stream else next_run(wanted.schedule, wanted.schedule_seconds, now),
            last_error="",
            active=True,
            created_by=self.actor.label[:ACTOR_LENGTH],
            created_at=now,
        )
        row.secret = sealer.seal(token, bound_to=row.id)
        self.session.add(row)
        self.session.flush()
        return CreatedSubscription(row, query, None if wanted.signature_token else token)

    def list(
        self, query_ref: str, page_token: str | None, per_page: int, *, tenant_id: str | None = None
    ) -> tuple[NamedQuery, SubscriptionPage]:
        """The query's active subscriptions, oldest first, a page at a time."""
        query = self.queries.named_query(query_ref, tenant_id)
        statement = select(Subscription).where(
            Subscription.query_id == query.id, Subscription.tenant_id == query.tenant_id, Subscription.active
        )
        if page_token:
            at, row_id = _page_after(page_token)
            statement = statement.where(
                or_(Subscription.created_at > at, (Subscription.created_at == at) & (Subscription.id > row_id))
            )
        statement = statement.order_by(Subscription.created_at, Subscription.id).limit(per_page + 1)
        rows = list(self.session.scalars(statement))
        page = rows[:per_page]
        token = _page_token(page[-1]) if len(rows) > per_page and page else None
        return query, SubscriptionPage(page, token)

    def get(
        self, query_ref: str, subscription_id: str, *, tenant_id: str | None = None
    ) -> tuple[NamedQuery, Subscription]:
        query = self.queries.named_query(query_ref, tenant_id)
        row = self.session.get(Subscription, subscription_id)
        if row is None or row.query_id != query.id or row.tenant_id != query.tenant_id or not row.active:
            raise NotFound("no subscription of this id on this query", code="subscription_not_found")
        return query, row

    def delete(self, query_ref: str, subscription_id: str, *, tenant_id: str | None = None) -> Subscription:
        """Unsubscribe: nothing more is delivered (a delivery under way when this commits is its last)."""
        self.actor.require("traceability.write")
        _query, row = self.get(query_ref, subscription_id, tenant_id=tenant_id)
        self.session.delete(row)
        self.session.flush()
        return row
