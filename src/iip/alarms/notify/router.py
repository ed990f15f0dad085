"""Alarm notifications over HTTP, under /api/alarm-notifications: channels, routes, contacts, the log.

Thin: parse, call `NotificationAdmin` (or the dispatcher for a test message), shape. Objects are
named by id or, within your tenant, by name. Reading needs `alarms.read`, changing `alarms.write`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status

from iip.alarms.notify.dispatcher import SERVICE_KEY, NotificationDispatcher
from iip.alarms.notify.routing import ChannelKind
from iip.alarms.notify.schemas import (
    NO_NUL,
    ChannelCreate,
    ChannelCreated,
    ChannelOut,
    ChannelUpdate,
    ContactCreate,
    ContactOut,
    ContactUpdate,
    DeliveryKind,
    DeliveryOut,
    DeliveryStatus,
    EscalationOut,
    EscalationStatus,
    RouteOut,
    RouteSpec,
    SampleAlarm,
    SecretIssued,
)
from iip.alarms.notify.service import READ, WRITE, NotificationAdmin, channel_sealer, channel_view, contact_view
from iip.api.deps import DbSession, audit_object, authenticate, get_runtime, require
from iip.api.problems import problem_responses
from iip.kernel.auth import Principal
from iip.kernel.sealing import Sealer

PREFIX = "/api/alarm-notifications"
router = APIRouter(prefix=PREFIX, tags=["alarms"], responses=problem_responses(401, 403, 422))

Reader = Annotated[Principal, Depends(require(READ))]
Writer = Annotated[Principal, Depends(require(WRITE))]

ChannelRef = Annotated[str, Path(max_length=100, description="the channel's id, or its name in your tenant")]
RouteRef = Annotated[str, Path(max_length=100, description="the route's id, or its name in your tenant")]
ContactRef = Annotated[str, Path(max_length=200, description="the contact's id, or its name in your tenant")]
DeliveryRef = Annotated[str, Path(max_length=32, description="the delivery id")]
TenantParam = Annotated[
    str | None,
    Query(max_length=32, pattern=NO_NUL, description="Platform operators: the tenant to act in (default: yours)."),
]
Filter = Annotated[str | None, Query(max_length=200, pattern=NO_NUL)]
Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0, le=10**9)]


def message_sender(request: Request) -> Principal:
    """The acting principal, authenticated in a transaction of its own.

    A test message waits for its receiver for seconds: holding the request's unit of work that long
    would keep SQLite's write lock from every other writer, the delivery's own record included.
    """
    with get_runtime(request).db.session() as session:
        principal = authenticate(request, session)
    principal.require(WRITE)
    return principal


Sender = Annotated[Principal, Depends(message_sender)]


def secret_sealer(request: Request) -> Sealer:
    return channel_sealer(get_runtime(request).settings)


SecretSealer = Annotated[Sealer, Depends(secret_sealer)]


def _dispatcher(request: Request) -> NotificationDispatcher:
    runtime = get_runtime(request)
    running = runtime.services.get(SERVICE_KEY)
    if isinstance(running, NotificationDispatcher):
        return running
    # Not started in this process (an API-only replica): a test message needs no consumer.
    return NotificationDispatcher(
        runtime.db,
        runtime.bus,
        runtime.settings.alarms.notifications,
        sealer=channel_sealer(runtime.settings),
        periodic=False,
    )


# --- channels


@router.get("/channels", response_model=list[ChannelOut])
def list_channels(actor: Reader, session: DbSession, kind: ChannelKind | None = None) -> list[ChannelOut]:
    """Notification channels: your tenant's (every tenant's for platform operators). Secrets are never shown."""
    return NotificationAdmin(session, actor).list_channels(kind=kind)


@router.post(
    "/channels", response_model=ChannelCreated, status_code=status.HTTP_201_CREATED, responses=problem_responses(409)
)
def create_channel(
    body: ChannelCreate,
    request: Request,
    actor: Writer,
    session: DbSession,
    sealer: SecretSealer,
    tenant_id: TenantParam = None,
) -> ChannelCreated:
    """Create a webhook or e-mail channel; a webhook's signing secret is answered this once."""
    created = NotificationAdmin(session, actor).create_channel(body, sealer, tenant_id=tenant_id)
    audit_object(request, "alarm_notification_channel", created.id)
    return created


@router.get("/channels/{channel}", response_model=ChannelOut, responses=problem_responses(404))
def get_channel(channel: ChannelRef, actor: Reader, session: DbSession) -> ChannelOut:
    return channel_view(NotificationAdmin(session, actor).get_channel(channel))


@router.patch("/channels/{channel}", response_model=ChannelOut, responses=problem_responses(404, 409))
def update_channel(
    channel: ChannelRef, body: ChannelUpdate, request: Request, actor: Writer, session: DbSession
) -> ChannelOut:
    audit_object(request, "alarm_notification_channel", channel)
    row = NotificationAdmin(session, actor).update_channel(channel, body)
    audit_object(request, "alarm_notification_channel", row.id)
    return channel_view(row)


@router.delete(
    "/channels/{channel}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problem_responses(404, 409),
)
def delete_channel(channel: ChannelRef, request: Request, actor: Writer, session: DbSession) -> None:
    """Delete a channel no route uses (409 while one does), with its delivery log."""
    audit_object(request, "alarm_notification_channel", channel)
    row = NotificationAdmin(session, actor).delete_channel(channel)
    audit_object(request, "alarm_notification_channel", row.id)


@router.post("/channels/{channel}/secret", response_model=SecretIssued, responses=problem_responses(404))
def rotate_secret(
    channel: ChannelRef, request: Request, actor: Writer, session: DbSession, sealer: SecretSealer
) -> SecretIssued:
    """A new signing secret for a webhook (answered this once); the previous one stops signing at once."""
    audit_object(request, "alarm_notification_channel", channel)
    issued = NotificationAdmin(session, actor).rotate_secret(channel, sealer)
    audit_object(request, "alarm_notification_channel", issued.id)
    return issued


@router.post("/channels/{channel}/test", response_model=DeliveryOut, responses=problem_responses(404))
async def send_test(
    channel: ChannelRef, request: Request, actor: Sender, body: SampleAlarm | None = None
) -> DeliveryOut:
    """Send a made-up alarm through the channel now, once, and answer the delivery (`sent` or `failed`)."""
    audit_object(request, "alarm_notification_channel", channel)
    delivery = await _dispatcher(request).send_test(actor, channel, body.message if body else "")
    audit_object(request, "alarm_notification_channel", delivery.channel_id)
    return delivery


# --- routes


@router.get("/routes", response_model=list[RouteOut])
def list_routes(actor: Reader, session: DbSession) -> list[RouteOut]:
    return NotificationAdmin(session, actor).list_routes()


@router.post("/routes", response_model=RouteOut, status_code=status.HTTP_201_CREATED, responses=problem_responses(409))
def create_route(
    body: RouteSpec, request: Request, actor: Writer, session: DbSession, tenant_id: TenantParam = None
) -> RouteOut:
    """Create a route: which alarm changes go to which channels and people, and where they escalate."""
    admin = NotificationAdmin(session, actor)
    row = admin.create_route(body, tenant_id=tenant_id)
    audit_object(request, "alarm_notification_route", row.id)
    return admin.describe_route(row)


@router.get("/routes/{route}", response_model=RouteOut, responses=problem_responses(404))
def get_route(route: RouteRef, actor: Reader, session: DbSession) -> RouteOut:
    admin = NotificationAdmin(session, actor)
    return admin.describe_route(admin.get_route(route))


@router.put("/routes/{route}", response_model=RouteOut, responses=problem_responses(404, 409))
def replace_route(route: RouteRef, body: RouteSpec, request: Request, actor: Writer, session: DbSession) -> RouteOut:
    """Replace a route's whole definition."""
    audit_object(request, "alarm_notification_route", route)
    admin = NotificationAdmin(session, actor)
    row = admin.replace_route(route, body)
    audit_object(request, "alarm_notification_route", row.id)
    return admin.describe_route(row)


@router.delete(
    "/routes/{route}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response, responses=problem_responses(404)
)
def delete_route(route: RouteRef, request: Request, actor: Writer, session: DbSession) -> None:
    """Delete a route and its pending escalations."""
    audit_object(request, "alarm_notification_route", route)
    row = NotificationAdmin(session, actor).delete_route(route)
    audit_object(request, "alarm_notification_route", row.id)


# --- contacts


@router.get("/contacts", response_model=list[ContactOut])
def list_contacts(actor: Reader, session: DbSession, role: Filter = None, site: Filter = None) -> list[ContactOut]:
    return NotificationAdmin(session, actor).list_contacts(role=role, site=site)


@router.post(
    "/contacts", response_model=ContactOut, status_code=status.HTTP_201_CREATED, responses=problem_responses(409)
)
def create_contact(
    body: ContactCreate, request: Request, actor: Writer, session: DbSession, tenant_id: TenantParam = None
) -> ContactOut:
    """Add a person notifications reach by role and site."""
    row = NotificationAdmin(session, actor).create_contact(body, tenant_id=tenant_id)
    audit_object(request, "alarm_notification_contact", row.id)
    return contact_view(row)


@router.get("/contacts/{contact}", response_model=ContactOut, responses=problem_responses(404))
def get_contact(contact: ContactRef, actor: Reader, session: DbSession) -> ContactOut:
    return contact_view(NotificationAdmin(session, actor).get_contact(contact))


@router.patch("/contacts/{contact}", response_model=ContactOut, responses=problem_responses(404, 409))
def update_contact(
    contact: ContactRef, body: ContactUpdate, request: Request, actor: Writer, session: DbSession
) -> ContactOut:
    audit_object(request, "alarm_notification_contact", contact)
    row = NotificationAdmin(session, actor).update_contact(contact, body)
    audit_object(request, "alarm_notification_contact", row.id)
    return contact_view(row)


@router.delete(
    "/contacts/{contact}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problem_responses(404),
)
def delete_contact(contact: ContactRef, request: Request, actor: Writer, session: DbSession) -> None:
    audit_object(request, "alarm_notification_contact", contact)
    row = NotificationAdmin(session, actor).delete_contact(contact)
    audit_object(request, "alarm_notification_contact", row.id)


# --- the delivery log and escalations


@router.get("/deliveries", response_model=list[DeliveryOut], responses=problem_responses(404))
def list_deliveries(
    actor: Reader,
    session: DbSession,
    channel: Filter = None,
    alarm_id: Filter = None,
    status: DeliveryStatus | None = None,
    kind: DeliveryKind | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[DeliveryOut]:
    """The delivery log, newest first: what was sent where, what failed and why, what waits for a retry."""
    return NotificationAdmin(session, actor).list_deliveries(
        channel=channel, alarm_id=alarm_id, status=status, kind=kind, limit=limit, offset=offset
    )


@router.get("/deliveries/{delivery}", response_model=DeliveryOut, responses=problem_responses(404))
def get_delivery(delivery: DeliveryRef, actor: Reader, session: DbSession) -> DeliveryOut:
    return NotificationAdmin(session, actor).get_delivery(delivery)


@router.get("/escalations", response_model=list[EscalationOut])
def list_escalations(
    actor: Reader,
    session: DbSession,
    status: EscalationStatus | None = None,
    alarm_id: Filter = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[EscalationOut]:
    """Escalations, newest first: pending ones with their time, fired and cancelled ones with why."""
    return NotificationAdmin(session, actor).list_escalations(
        status=status, alarm_id=alarm_id, limit=limit, offset=offset
    )
