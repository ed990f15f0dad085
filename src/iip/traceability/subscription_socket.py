"""Query subscriptions over a WebSocket (EPCIS 2.0 REST binding): `GET /epcis/queries/{queryName}/events`
with `Upgrade: websocket` and `stream=true`.

The handshake authenticates as any API call does (`Authorization: Bearer <API key>`) and needs
`traceability.read`; a platform operator names the tenant's query by id, or by name with `tenant_id`.
The server then sends the query's new matches as EPCISQueryDocuments (JSON text frames, each with
the connection's `subscriptionID`), in the order they were stored: the events captured after the
handshake, or those recorded since `initialRecordTime`. A capture in this process wakes the
connection at once; captures elsewhere are seen within `POLL_S`. Events are sent up to the settled
id only, as webhook deliveries are (`subscription_delivery`), so none is skipped while the
connection lasts; what is under way when it breaks is not sent again (a client that must see every
event uses a webhook subscription, which resumes). Messages from the client are ignored.

A handshake that cannot become a subscription is refused before it is accepted (the client sees
HTTP 403): no or a wrong API key, no permission, an unknown query, a missing `stream=true`, the
binding's schedule parameters (`second`, `minute`, ...: not supported), a bad `initialRecordTime`.
When the query is deleted the connection is closed (code 1000).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from dataclasses import dataclass

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.datastructures import QueryParams

from iip.kernel.auth import AccessService, new_id
from iip.kernel.db import Database
from iip.kernel.errors import DomainError, Unauthenticated
from iip.kernel.runtime import Runtime
from iip.traceability import subscription_signal
from iip.traceability.epcis.writer import json_document
from iip.traceability.models import NamedQuery
from iip.traceability.query import EventQuery, parse_stored_query
from iip.traceability.query_service import QueryService
from iip.traceability.subscription_delivery import BATCH, EventHorizon, encode, item, next_batch, settled_mark
from iip.traceability.subscriptions import SubscriptionControlsError, checked_initial_record_time, start_after

logger = logging.getLogger(__name__)

router = APIRouter()  # included by `subscriptions_router`, under its /epcis

POLL_S = 5.0
SCHEDULE_PARAMETERS = ("second", "minute", "hour", "dayOfMonth", "month", "dayOfWeek")
REASON_CHARS = 120  # a close frame's reason is at most 123 bytes


@dataclass(frozen=True, slots=True)
class Opened:
    """What a connection streams: one named query of one tenant, from one event id on."""

    subscription_id: str
    tenant_id: str
    query_id: str
    query_name: str
    query: EventQuery
    after: int


def _open(db: Database, authorization: str, query_ref: str, params: QueryParams) -> Opened:
    """Check a handshake and find what it subscribes to; raises a DomainError when it cannot."""
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthenticated("use 'Authorization: Bearer <API key>'")
    asked = [name for name in SCHEDULE_PARAMETERS if name in params]
    if asked:
        raise SubscriptionControlsError(f"schedules ({', '.join(asked)}) are not supported here; use stream=true")
    if params.get("stream", "").lower() != "true":
        raise SubscriptionControlsError("a WebSocket subscription needs stream=true")
    initial: dt.datetime | None = None
    if params.get("initialRecordTime"):
        try:
            initial = dt.datetime.fromisoformat(params["initialRecordTime"].replace("z", "Z"))
        except ValueError:
            raise SubscriptionControlsError("initialRecordTime is not a date-time") from None
    initial = checked_initial_record_time(initial)
    with db.session() as session:
        principal = AccessService(session).authenticate_api_key(key.strip())
        principal.require("traceability.read")
        named = QueryService(session, principal).named_query(query_ref, params.get("tenant_id") or None)
        return Opened(
            subscription_id=new_id(),
            tenant_id=named.tenant_id,
            query_id=named.id,
            query_name=named.name,
            query=parse_stored_query(named.parameters),
            after=start_after(session, named.tenant_id, initial),
        )


def _next(db: Database, opened: Opened, after: int, horizon: EventHorizon) -> tuple[str | None, int, bool]:
    """The next document to send (None: nothing new), the cursor after it, and whether the query still exists."""
    with db.session() as session:
        if session.get(NamedQuery, opened.query_id) is None:
            return None, after, False
        mark = settled_mark(session, horizon)
        events, cursor, _complete = next_batch(session, opened.tenant_id, opened.query, after, BATCH, mark)
        if not events:
            return None, cursor, True
        document = json_document(
            [item(e) for e in events], query_name=opened.query_name, subscription_id=opened.subscription_id
        )
        return encode(document).decode(), cursor, True


async def _until_closed(websocket: WebSocket) -> None:
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass  # the client has nothing to say here


@router.websocket("/queries/{query_name}/events")
async def query_events_socket(websocket: WebSocket, query_name: str) -> None:
    """Stream a named query's new matches over a WebSocket (see the module doc)."""
    runtime: Runtime = websocket.app.state.runtime
    authorization = websocket.headers.get("authorization", "")
    try:
        opened = await asyncio.to_thread(_open, runtime.db, authorization, query_name[:200], websocket.query_params)
    except DomainError as err:
        await websocket.close(code=1008, reason=err.message[:REASON_CHARS])
        return
    await websocket.accept()
    await _stream(websocket, runtime.db, opened)


async def _stream(websocket: WebSocket, db: Database, opened: Opened) -> None:
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()

    def heard(tenants: frozenset[str]) -> None:  # in the capturing thread
        if opened.tenant_id in tenants:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(wake.set)

    subscription_signal.listen(heard)
    closed = asyncio.create_task(_until_closed(websocket))
    horizon = EventHorizon()
    after = opened.after
    try:
        while not closed.done():
            wake.clear()
            text, after, exists = await asyncio.to_thread(_next, db, opened, after, horizon)
            if not exists:
                await websocket.close(code=1000, reason="the query was deleted")
                return
            if text is not None:
                await websocket.send_text(text)
                continue  # more may be waiting
            woken = asyncio.ensure_future(wake.wait())
            await asyncio.wait({closed, woken}, timeout=POLL_S, return_when=asyncio.FIRST_COMPLETED)
            woken.cancel()
    except (WebSocketDisconnect, OSError):
        return  # the client went away while we were sending
    finally:
        subscription_signal.unlisten(heard)
        closed.cancel()
        with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, OSError):
            await closed
