"""The device registry over HTTP: profiles, gateways, devices, tokens, the registry document, dead letters.

Thin: parse, call `DeviceRegistry`, shape. Objects are named by id or, within your tenant, by
name (profiles) or key (devices, gateways).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from pydantic import AwareDatetime
from sqlalchemy.orm import Session

from iip.api.deps import DbSession, audit_object, get_runtime, require
from iip.api.documents import DocumentFormat, Filter, TenantParam, declared_format, document_response
from iip.api.problems import problem_responses
from iip.devices.command_router import router as command_router
from iip.devices.ingest_router import read_body
from iip.devices.ingest_router import router as ingest_router
from iip.devices.profiles import DeviceProfile, Protocol
from iip.devices.registry_directory import registry_services
from iip.devices.schemas import (
    NO_NUL,
    DeadLetterOut,
    DeviceCreate,
    DeviceCreated,
    DeviceOut,
    DeviceUpdate,
    GatewayCreate,
    GatewayCreated,
    GatewayOut,
    GatewayUpdate,
    ImportReport,
    ProfileOut,
    PurgeResult,
    TokenIssued,
)
from iip.devices.service import (
    MAX_DOCUMENT_BYTES,
    DeviceRegistry,
    device_created,
    device_view,
    gateway_view,
    parse_document,
)
from iip.kernel.auth import Principal

router = APIRouter(tags=["devices"], responses=problem_responses(401, 403, 422))
router.include_router(ingest_router)
router.include_router(command_router)

Reader = Annotated[Principal, Depends(require("devices.read"))]
Writer = Annotated[Principal, Depends(require("devices.write"))]
Admin = Annotated[Principal, Depends(require("devices.admin"))]

ProfileRef = Annotated[str, Path(max_length=128, description="the profile's id, or its name in your tenant")]
GatewayRef = Annotated[str, Path(max_length=128, description="the gateway's id, or its key in your tenant")]
DeviceRef = Annotated[str, Path(max_length=128, description="the device's id, or its key in your tenant")]
Text = Annotated[str | None, Query(max_length=200, pattern=NO_NUL, description="part of the key, name or site")]

DOCUMENT_BODY: dict[str, Any] = {
    "description": "A registry document: `profiles`, `gateways` and `devices` lists, as YAML or JSON.",
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "profiles": {"type": "array", "items": {"type": "object"}},
                    "gateways": {"type": "array", "items": {"type": "object"}},
                    "devices": {"type": "array", "items": {"type": "object"}},
                },
            },
            "example": {
                "profiles": [
                    {
                        "name": "pump",
                        "protocol": "modbus",
                        "metrics": [{"name": "flow", "unit": "m3/h", "modbus": {"address": 0, "data_type": "float32"}}],
                    }
                ],
                "gateways": [{"key": "gw-1", "name": "Line 1 gateway", "site": "plant-a"}],
                "devices": [
                    {
                        "key": "pump-01",
                        "profile": "pump",
                        "site": "plant-a",
                        "connection": {"host": "10.0.4.21", "unit_id": 1},
                        "gateway": "gw-1",
                    }
                ],
            },
        },
        "application/yaml": {"schema": {"type": "string"}},
    },
}
DOCUMENT_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The registry document (no tokens).",
        "content": {"application/json": {"schema": {"type": "object"}}, "application/yaml": {}},
    }
}


def _registry(request: Request, session: Session, actor: Principal) -> DeviceRegistry:
    directory = registry_services(get_runtime(request)).directory
    return DeviceRegistry(session, actor, on_change=directory.invalidate)


# --- profiles


@router.get("/api/device-profiles", response_model=list[ProfileOut])
def list_profiles(
    request: Request,
    actor: Reader,
    session: DbSession,
    protocol: Protocol | None = None,
    q: Text = None,
) -> list[ProfileOut]:
    """Device profiles: your tenant's (every tenant's for platform operators)."""
    return _registry(request, session, actor).list_profiles(protocol=protocol, text=q)


@router.post(
    "/api/device-profiles",
    response_model=ProfileOut,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(404, 409),
)
def create_profile(
    body: DeviceProfile, request: Request, actor: Writer, session: DbSession, tenant_id: TenantParam = None
) -> ProfileOut:
    """Create a profile: what a kind of device measures and how each metric is read."""
    registry = _registry(request, session, actor)
    row = registry.create_profile(body, tenant_id=tenant_id)
    audit_object(request, "device_profile", row.id)
    return registry.describe_profile(row)


@router.get("/api/device-profiles/{profile}", response_model=ProfileOut, responses=problem_responses(404))
def get_profile(profile: ProfileRef, request: Request, actor: Reader, session: DbSession) -> ProfileOut:
    registry = _registry(request, session, actor)
    return registry.describe_profile(registry.get_profile(profile))


@router.put("/api/device-profiles/{profile}", response_model=ProfileOut, responses=problem_responses(404, 409))
def update_profile(
    profile: ProfileRef, body: DeviceProfile, request: Request, actor: Writer, session: DbSession
) -> ProfileOut:
    """Replace a profile's definition; its version grows by one when anything changed."""
    audit_object(request, "device_profile", profile)
    registry = _registry(request, session, actor)
    row = registry.update_profile(profile, body)
    audit_object(request, "device_profile", row.id)
    return registry.describe_profile(row)


@router.delete(
    "/api/device-profiles/{profile}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problem_responses(404, 409),
)
def delete_profile(profile: ProfileRef, request: Request, actor: Writer, session: DbSession) -> None:
    """Delete a profile no device uses (409 while one does)."""
    audit_object(request, "device_profile", profile)
    row = _registry(request, session, actor).delete_profile(profile)
    audit_object(request, "device_profile", row.id)


# --- gateways


@router.get("/api/gateways", response_model=list[GatewayOut])
def list_gateways(
    request: Request, actor: Reader, session: DbSession, site: Filter = None, q: Text = None
) -> list[GatewayOut]:
    return [gateway_view(g) for g in _registry(request, session, actor).list_gateways(site=site, text=q)]


@router.post(
    "/api/gateways",
    response_model=GatewayCreated,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(404, 409),
)
def create_gateway(
    body: GatewayCreate, request: Request, actor: Writer, session: DbSession, tenant_id: TenantParam = None
) -> GatewayCreated:
    """Create a gateway; the answer carries its access token once (`issue_token`)."""
    row, token = _registry(request, session, actor).create_gateway(
        body, tenant_id=tenant_id, with_token=body.issue_token
    )
    audit_object(request, "gateway", row.id)
    return GatewayCreated(**gateway_view(row).model_dump(), token=token)


@router.get("/api/gateways/{gateway}", response_model=GatewayOut, responses=problem_responses(404))
def get_gateway(gateway: GatewayRef, request: Request, actor: Reader, session: DbSession) -> GatewayOut:
    return gateway_view(_registry(request, session, actor).get_gateway(gateway))


@router.patch("/api/gateways/{gateway}", response_model=GatewayOut, responses=problem_responses(404))
def update_gateway(
    gateway: GatewayRef, body: GatewayUpdate, request: Request, actor: Writer, session: DbSession
) -> GatewayOut:
    audit_object(request, "gateway", gateway)
    row = _registry(request, session, actor).update_gateway(gateway, body)
    audit_object(request, "gateway", row.id)
    return gateway_view(row)


@router.delete(
    "/api/gateways/{gateway}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problem_responses(404, 409),
)
def delete_gateway(gateway: GatewayRef, request: Request, actor: Writer, session: DbSession) -> None:
    """Delete a gateway no device is reached through (409 while one is)."""
    audit_object(request, "gateway", gateway)
    row = _registry(request, session, actor).delete_gateway(gateway)
    audit_object(request, "gateway", row.id)


@router.post("/api/gateways/{gateway}/token", response_model=TokenIssued, responses=problem_responses(404))
def rotate_gateway_token(gateway: GatewayRef, request: Request, actor: Writer, session: DbSession) -> TokenIssued:
    """A new access token for the gateway (shown once); the previous one stops working."""
    audit_object(request, "gateway", gateway)
    row, token = _registry(request, session, actor).rotate_gateway_token(gateway)
    audit_object(request, "gateway", row.id)
    return TokenIssued(
        key=row.key, token=token, token_prefix=row.token_prefix or "", token_created_at=row.token_created_at
    )


@router.delete("/api/gateways/{gateway}/token", response_model=GatewayOut, responses=problem_responses(404))
def revoke_gateway_token(gateway: GatewayRef, request: Request, actor: Writer, session: DbSession) -> GatewayOut:
    """Revoke the gateway's token: it sends nothing more until a new one is issued."""
    audit_object(request, "gateway", gateway)
    row = _registry(request, session, actor).revoke_gateway_token(gateway)
    audit_object(request, "gateway", row.id)
    return gateway_view(row)


# --- devices and the registry document


@router.get("/api/devices", response_model=list[DeviceOut])
def list_devices(
    request: Request,
    actor: Reader,
    session: DbSession,
    site: Filter = None,
    profile: Filter = None,
    protocol: Protocol | None = None,
    gateway: Filter = None,
    q: Text = None,
    enabled: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> list[DeviceOut]:
    """Devices: your tenant's (every tenant's for platform operators), by key."""
    rows = _registry(request, session, actor).list_devices(
        site=site,
        profile=profile,
        protocol=protocol,
        gateway=gateway,
        text=q,
        enabled=enabled,
        limit=limit,
        offset=offset,
    )
    return [device_view(d) for d in rows]


@router.post(
    "/api/devices",
    response_model=DeviceCreated,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(404, 409),
)
def create_device(
    body: DeviceCreate, request: Request, actor: Writer, session: DbSession, tenant_id: TenantParam = None
) -> DeviceCreated:
    """Register a device; the answer carries its access token once (`issue_token`)."""
    row, token = _registry(request, session, actor).create_device(
        body, tenant_id=tenant_id, with_token=body.issue_token
    )
    audit_object(request, "device", row.id)
    return device_created(row, token)


@router.get("/api/devices/export", responses=DOCUMENT_ANSWER, response_class=Response)
def export_devices(
    request: Request,
    actor: Reader,
    session: DbSession,
    document_format: DocumentFormat = "json",
    tenant_id: TenantParam = None,
) -> Response:
    """The registry document of a tenant: what `import` takes back (tokens are never exported)."""
    document = _registry(request, session, actor).export_document(tenant_id=tenant_id)
    return document_response(document, document_format)


async def document_body(request: Request) -> bytes:
    return await read_body(request, MAX_DOCUMENT_BYTES)


@router.post(
    "/api/devices/import",
    response_model=ImportReport,
    responses=problem_responses(404, 409, 413),
    openapi_extra={"requestBody": DOCUMENT_BODY},
)
def import_devices(
    request: Request,
    body: Annotated[bytes, Depends(document_body)],
    actor: Writer,
    session: DbSession,
    tenant_id: TenantParam = None,
) -> ImportReport:
    """Create or update the document's profiles, gateways and devices: all of them, or (422) none.

    Items are matched by name or key, so importing the same document again changes nothing.
    """
    document_format = declared_format(request)
    audit_object(request, "device_registry", tenant_id or actor.tenant_id)
    document = parse_document(body, document_format)
    return _registry(request, session, actor).import_document(document, tenant_id=tenant_id)


@router.get("/api/devices/{device}", response_model=DeviceOut, responses=problem_responses(404))
def get_device(device: DeviceRef, request: Request, actor: Reader, session: DbSession) -> DeviceOut:
    return device_view(_registry(request, session, actor).get_device(device))


@router.patch("/api/devices/{device}", response_model=DeviceOut, responses=problem_responses(404, 409))
def update_device(
    device: DeviceRef, body: DeviceUpdate, request: Request, actor: Writer, session: DbSession
) -> DeviceOut:
    """Change a device; `gateway` or `sparkplug` set to null detach them."""
    audit_object(request, "device", device)
    row = _registry(request, session, actor).update_device(device, body)
    audit_object(request, "device", row.id)
    return device_view(row)


@router.delete(
    "/api/devices/{device}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problem_responses(404),
)
def delete_device(device: DeviceRef, request: Request, actor: Writer, session: DbSession) -> None:
    """Remove a device from the registry (its stored telemetry stays)."""
    audit_object(request, "device", device)
    row = _registry(request, session, actor).delete_device(device)
    audit_object(request, "device", row.id)


@router.post("/api/devices/{device}/token", response_model=TokenIssued, responses=problem_responses(404))
def rotate_device_token(device: DeviceRef, request: Request, actor: Writer, session: DbSession) -> TokenIssued:
    """A new access token for the device (shown once); the previous one stops working."""
    audit_object(request, "device", device)
    row, token = _registry(request, session, actor).rotate_device_token(device)
    audit_object(request, "device", row.id)
    return TokenIssued(
        key=row.key, token=token, token_prefix=row.token_prefix or "", token_created_at=row.token_created_at
    )


@router.delete("/api/devices/{device}/token", response_model=DeviceOut, responses=problem_responses(404))
def revoke_device_token(device: DeviceRef, request: Request, actor: Writer, session: DbSession) -> DeviceOut:
    """Revoke the device's token: it sends nothing more until a new one is issued."""
    audit_object(request, "device", device)
    row = _registry(request, session, actor).revoke_device_token(device)
    audit_object(request, "device", row.id)
    return device_view(row)


# --- dead letters


@router.get("/api/dead-letters", response_model=list[DeadLetterOut])
def list_dead_letters(
    request: Request,
    actor: Reader,
    session: DbSession,
    device: Filter = None,
    source: Annotated[str | None, Query(max_length=20, pattern=NO_NUL, examples=["mqtt"])] = None,
    since: AwareDatetime | None = None,
    before_id: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="for the next (older) page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[DeadLetterOut]:
    """Messages ingest refused, newest first, with the reason; raw bytes as text, or base64 when not UTF-8."""
    return _registry(request, session, actor).dead_letters(
        device=device, source=source, since=since, before_id=before_id, limit=limit
    )


@router.delete("/api/dead-letters", response_model=PurgeResult)
def purge_dead_letters(
    request: Request,
    actor: Admin,
    session: DbSession,
    device: Filter = None,
    source: Annotated[str | None, Query(max_length=20, pattern=NO_NUL)] = None,
    before: AwareDatetime | None = None,
) -> PurgeResult:
    """Delete the dead letters matching every filter given (all of your tenant's without filters)."""
    audit_object(request, "dead_letters", device or source or "*")
    deleted = _registry(request, session, actor).purge_dead_letters(device=device, source=source, before=before)
    return PurgeResult(deleted=deleted)
