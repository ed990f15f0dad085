"""Commands over HTTP: send one to a device and wait for its acknowledgement, read the history.

`POST /api/devices/{device}/commands` answers 200 with the acknowledged command, 504 when the
device did not acknowledge it in time, 422 when the device (or the check before sending) refuses
it, 503 when the device cannot be reached. The command is recorded before it is sent, so a 504 or
a 503 names it (`command_id`) for a later `GET /api/commands/{id}`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StringConstraints

from iip.api.deps import DbSession, audit_object, authenticate, get_runtime, require
from iip.api.problems import Problem, problem, problem_responses
from iip.devices.commands import (
    MAX_TEXT,
    SERVICE_KEY,
    CommandOut,
    CommandService,
    CommandStatus,
    CommandTimedOut,
    command_history,
    get_command,
)
from iip.devices.profiles import NAME
from iip.kernel.auth import Principal
from iip.kernel.errors import Unavailable

router = APIRouter(tags=["devices"], responses=problem_responses(401, 403, 422))

Reader = Annotated[Principal, Depends(require("devices.read"))]
DeviceRef = Annotated[str, Path(max_length=128, description="the device's id, or its key in your tenant")]
CommandRef = Annotated[str, Path(max_length=32, description="the command's id")]
TextValue = Annotated[str, StringConstraints(max_length=MAX_TEXT, pattern=r"^[^\x00]*$")]


def command_sender(request: Request) -> Principal:
    """The acting principal, authenticated in a transaction of its own.

    A command waits for its device for seconds: holding the request's unit of work that long would
    keep SQLite's write lock from every other writer, the command's own record included.
    """
    with get_runtime(request).db.session() as session:
        principal = authenticate(request, session)
    principal.require("devices.write")
    return principal


Sender = Annotated[Principal, Depends(command_sender)]


class CommandRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metric: str = Field(min_length=1, max_length=128, pattern=NAME.pattern, examples=["setpoint"])
    value: StrictBool | StrictInt | StrictFloat | TextValue = Field(
        description="the value to set: a number, true/false or text, as the metric's data type takes", examples=[42.5]
    )
    timeout_s: float | None = Field(
        default=None, gt=0, le=600, description="how long to wait for the acknowledgement (default: the setting)"
    )


TIMEOUT_ANSWER: dict[int | str, dict[str, Any]] = {
    504: {"model": Problem, "description": "the device did not acknowledge the command in time (`command_timeout`)"}
}


def _service(request: Request) -> CommandService:
    service = get_runtime(request).services.get(SERVICE_KEY)
    if not isinstance(service, CommandService):
        raise Unavailable("commands are not running in this process", code="commands_unavailable")
    return service


@router.post(
    "/api/devices/{device}/commands",
    response_model=CommandOut,
    responses={**problem_responses(404, 409, 503), **TIMEOUT_ANSWER},
)
async def send_command(
    device: DeviceRef, body: CommandRequest, request: Request, actor: Sender
) -> CommandOut | JSONResponse:
    """Set a writable metric of a device and wait for the device to acknowledge it (engineers and admins)."""
    audit_object(request, "device", device)
    service = _service(request)

    def created(command_id: str) -> None:
        audit_object(request, "device_command", command_id)

    try:
        return await service.send(actor, device, body.metric, body.value, timeout_s=body.timeout_s, on_created=created)
    except CommandTimedOut as err:
        # The kernel maps Unavailable to 503; a deadline the device missed is a gateway timeout.
        details = {key: value for key, value in err.details.items() if isinstance(value, str)}
        return problem(504, err.instance_code, err.title, err.message, instance=request.url.path, **details)


@router.get("/api/devices/{device}/commands", response_model=list[CommandOut], responses=problem_responses(404))
def list_commands(
    device: DeviceRef,
    actor: Reader,
    session: DbSession,
    status: CommandStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[CommandOut]:
    """A device's commands, newest first (also of a device removed since, by its key)."""
    return command_history(session, actor, device, status=status, limit=limit)


@router.get("/api/commands/{command_id}", response_model=CommandOut, responses=problem_responses(404))
def read_command(command_id: CommandRef, actor: Reader, session: DbSession) -> CommandOut:
    return get_command(session, actor, command_id)
