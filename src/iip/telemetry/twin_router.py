"""The device twin over HTTP: the whole twin or one path of it, desired attributes, a stream of changes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request, status
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field, JsonValue

from iip.api.deps import DbSession, audit_object, get_runtime, require
from iip.api.problems import problem_responses
from iip.kernel.auth import Principal
from iip.kernel.errors import Unavailable
from iip.telemetry.twin import TWINS_SERVICE, TwinRegistry, acting_tenant, subtree

router = APIRouter(prefix="/api", tags=["telemetry"], responses=problem_responses(401, 403, 422))


TenantQuery = Annotated[
    str | None,
    Query(
        max_length=100,
        description="Platform operators: the tenant to act in, by id or name (default: the device's, or yours).",
    ),
]


@dataclass(frozen=True, slots=True)
class Acting:
    principal: Principal
    tenant_id: str


def _acting(permission: str) -> Callable[..., Acting]:
    check = require(permission)

    def dependency(
        request: Request, session: DbSession, tenant: TenantQuery = None, principal: Principal = Depends(check)
    ) -> Acting:
        tenant_id = acting_tenant(session, principal, tenant, request.path_params.get("device"))
        # Twins keep their own short transactions; the request's, left open, would hold SQLite's write lock.
        session.commit()
        return Acting(principal, tenant_id)

    dependency.__name__ = check.__name__
    return dependency


DeviceKey = Annotated[str, Path(max_length=200, description="the device's key in its tenant")]
ReadAccess = Annotated[Acting, Depends(_acting("telemetry.read"))]
WriteAccess = Annotated[Acting, Depends(_acting("telemetry.write"))]


def twin_registry(request: Request) -> TwinRegistry:
    registry = get_runtime(request).services.get(TWINS_SERVICE)
    if not isinstance(registry, TwinRegistry):
        raise Unavailable("device twins are not running in this process", code="twins_unavailable")
    return registry


Twins = Annotated[TwinRegistry, Depends(twin_registry)]


class ConnectionOut(BaseModel):
    online: bool
    last_seen: dt.datetime | None
    since: dt.datetime | None = Field(description="when `online` last changed")
    reason: str = ""


class MetricOut(BaseModel):
    value: float | None = Field(description="null when the value is not a finite number")
    ts: dt.datetime
    quality: int = Field(description="0 good, 1 uncertain, 2 bad")


class AttributesOut(BaseModel):
    reported: dict[str, JsonValue]
    desired: dict[str, JsonValue]


class TwinOut(BaseModel):
    device: str
    connection: ConnectionOut
    metrics: dict[str, MetricOut]
    attributes: AttributesOut


class TwinSummary(ConnectionOut):
    device: str


class DesiredAccepted(BaseModel):
    device: str
    name: str
    value: JsonValue
    request_id: str = Field(description="the id of the command the devices context sends for this change")


@router.get("/twins", response_model=list[TwinSummary])
async def list_twins(
    actor: ReadAccess,
    twins: Twins,
    online: Annotated[bool | None, Query(description="only online (true) or offline (false) devices")] = None,
    after: Annotated[str, Query(max_length=200, description="the last device key of the previous page")] = "",
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> JSONResponse:
    """Connection summaries of your tenant's device twins, by device key."""
    return JSONResponse(await twins.summaries(actor.tenant_id, online=online, after=after, limit=limit))


@router.get(
    "/devices/{device}/twin/events",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "server-sent events"},
        **problem_responses(404, 409),
    },
)
async def twin_events(
    device: DeviceKey,
    request: Request,
    actor: ReadAccess,
    twins: Twins,
    last_event_id: Annotated[str | None, Header(max_length=100)] = None,
) -> StreamingResponse:
    """Server-sent events of the twin: `twin` (the whole twin), then a `patch` (JSON merge patch) per change.

    Reconnecting with `Last-Event-ID` resumes where the client left off while the change is still
    kept; otherwise the stream starts again with a `twin` event.
    """
    twin = await twins.require(actor.tenant_id, device)
    return StreamingResponse(
        twins.events(twin, last_event_id, request.is_disconnected),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/devices/{device}/twin", response_model=TwinOut, responses=problem_responses(404, 409))
async def get_twin(device: DeviceKey, actor: ReadAccess, twins: Twins) -> JSONResponse:
    """The device's twin: connection, the latest value of every metric, reported and desired attributes."""
    twin = await twins.require(actor.tenant_id, device)
    return JSONResponse(twin.document())


@router.get(
    "/devices/{device}/twin/{path:path}",
    response_model=JsonValue,
    responses=problem_responses(404, 409),
)
async def get_twin_path(device: DeviceKey, path: str, actor: ReadAccess, twins: Twins) -> JSONResponse:
    """One part of the twin at a slash path, e.g. `metrics/flow/value` or `attributes/desired`.

    A name holding `/` or `~` is written `~1` or `~0`, as in JSON Pointer.
    """
    twin = await twins.require(actor.tenant_id, device)
    return JSONResponse(subtree(twin.document(), path))


@router.put(
    "/devices/{device}/twin/attributes/desired/{name}",
    response_model=DesiredAccepted,
    status_code=status.HTTP_202_ACCEPTED,
    responses=problem_responses(404, 409, 503),
)
async def put_desired(
    device: DeviceKey,
    name: str,
    request: Request,
    actor: WriteAccess,
    twins: Twins,
    # Optional here so that null reaches the twin's own check, which says why it is refused.
    value: Annotated[JsonValue, Body(description="the desired value: any JSON value but null")] = None,
) -> DesiredAccepted:
    """Set a desired attribute; the devices context turns it into a command to the device."""
    audit_object(request, "device_twin", f"{device}/attributes/desired/{name}")
    change = await twins.set_desired(actor.tenant_id, device, name, value, actor.principal.id)
    return DesiredAccepted(device=device, name=name, value=change.value, request_id=change.request_id)


@router.delete(
    "/devices/{device}/twin/attributes/desired/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(404, 409),
)
async def delete_desired(device: DeviceKey, name: str, request: Request, actor: WriteAccess, twins: Twins) -> None:
    """Remove a desired attribute (no command is sent)."""
    audit_object(request, "device_twin", f"{device}/attributes/desired/{name}")
    await twins.delete_desired(actor.tenant_id, device, name)
