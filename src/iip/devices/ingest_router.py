"""HTTP ingest: `POST /api/telemetry`, JSON lines or columnar JSON, with per-device tokens.

Who may send: a device with its token (`iipd_...`, lines may leave out `device`), a gateway with
its token (`iipg_...`, every line names one of its devices), or an API key with `devices.write`
(every line names a device of its tenant). Values are matched to metrics by the profile's MQTT keys,
else by the metrics' own names.

Each line (or columnar object) is taken whole or refused whole; refused ones are answered with
their reason and kept as dead letters. The points are written to the store before the answer
(the store is idempotent on series and timestamp, so a client may send again after any failure),
then published on the bus for twins and rules.

Requests authenticated by a device or gateway token are not written to the audit log: they are
the data path, at message rates; refused credentials and API-key requests are audited as usual.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from iip.api.deps import authenticate, get_runtime
from iip.api.problems import problem_responses
from iip.devices.directory import DeadLetterSink, KnownDevice
from iip.devices.profiles import DataType
from iip.devices.registry_directory import DbDeviceDirectory, KnownGateway, registry_services
from iip.devices.schemas import IngestResult, LineError
from iip.devices.service import DEVICE_TOKEN_PREFIX, GATEWAY_TOKEN_PREFIX
from iip.kernel.auth import Principal
from iip.kernel.bus import BusError
from iip.kernel.errors import DomainError, Invalid, Unauthenticated, Unavailable
from iip.kernel.runtime import Runtime
from iip.telemetry.public import TELEMETRY_POINTS, PointBatch, PointBatchBuilder, store_points

router = APIRouter(tags=["telemetry ingest"])

INGEST_PATH = "/api/telemetry"
MAX_INGEST_BYTES = 10 * 1024 * 1024
MAX_ERRORS_SHOWN = 1000
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl", "application/json-lines"})
MAX_TS_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
SOURCE = "http"

INGEST_BODY: dict[str, Any] = {
    "description": "Columnar JSON (an object or a list of objects), or JSON lines: one object per line, "
    'such as `{"device": "pump-01", "ts": 1767225600000, "values": {"flow": 1.2, "temp": 41.5}}`.',
    "required": True,
    "content": {
        "application/json": {
            "schema": {"oneOf": [{"type": "object"}, {"type": "array", "items": {"type": "object"}}]},
            "example": {
                "device": "pump-01",
                "ts": [1767225600000, 1767225601000],
                "values": {"flow": [1.2, 1.3], "temp": [41.5, None]},
            },
        },
        "application/x-ndjson": {"schema": {"type": "string"}},
    },
}


class MalformedBody(DomainError):
    """A body that is not UTF-8 JSON at all (400)."""

    code = "bad_request"
    title = "Bad request"


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 once it is larger than `limit` bytes (read no further)."""
    declared = request.headers.get("content-length", "")
    too_large = f"the body is larger than {limit // (1024 * 1024)} MiB"
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, too_large)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, too_large)
    return bytes(body)


# --- who is sending


@dataclass(frozen=True, slots=True)
class IngestCaller:
    tenant_id: str
    device: KnownDevice | None = None  # a device token
    gateway: KnownGateway | None = None  # a gateway token
    principal: Principal | None = None  # an API key (or console session)


def identify_caller(request: Request, runtime: Runtime, directory: DbDeviceDirectory) -> IngestCaller:
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    token = credentials.strip()
    if header and (scheme.lower() != "bearer" or not token):
        raise Unauthenticated("use 'Authorization: Bearer <device token, gateway token or API key>'")
    if token.startswith(DEVICE_TOKEN_PREFIX):
        device = directory.by_token(token)
        if device is None:
            raise Unauthenticated("unknown or revoked device token", code="bad_token")
        return IngestCaller(device.tenant_id, device=device)
    if token.startswith(GATEWAY_TOKEN_PREFIX):
        gateway = directory.gateway_by_token(token)
        if gateway is None:
            raise Unauthenticated("unknown or revoked gateway token", code="bad_token")
        return IngestCaller(gateway.tenant_id, gateway=gateway)
    with runtime.db.session() as session:
        principal = authenticate(request, session)
    principal.require("devices.write")
    return IngestCaller(principal.tenant_id, principal=principal)


# --- reading the body


class Rejection(Exception):
    """A line (or columnar object) refused whole, with the reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class ParsedBody:
    """What a body amounts to: the points taken, and each refused line with its reason."""

    batch: PointBatch
    accepted_lines: int = 0
    errors: list[tuple[int, str, bytes, str | None]] = field(default_factory=list)  # line, reason, raw, device
    syntax_errors: int = 0  # lines that were not UTF-8 JSON objects


def _items(body: bytes, media_type: str, parsed: ParsedBody) -> Iterator[tuple[int, Any, bytes]]:
    """(line number, decoded JSON, raw bytes) of each line or columnar object."""
    if media_type in NDJSON_TYPES:
        for number, line in enumerate(body.split(b"\n"), start=1):
            raw = line.strip()
            if not raw:
                continue
            try:
                yield number, json.loads(raw.decode("utf-8")), raw
            except UnicodeDecodeError:
                parsed.errors.append((number, "not UTF-8", raw, None))
                parsed.syntax_errors += 1
            except ValueError as err:
                parsed.errors.append((number, f"not JSON: {err}", raw, None))
                parsed.syntax_errors += 1
        return
    try:
        document = json.loads(body.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise MalformedBody("the body is not UTF-8") from None
    except ValueError as err:
        raise MalformedBody(f"the body is not JSON: {err}") from None
    items = document if isinstance(document, list) else [document]
    for number, item in enumerate(items, start=1):
        yield number, item, body if len(items) == 1 else json.dumps(item, ensure_ascii=False).encode()


def _timestamp(value: Any, now_ms: int) -> int:
    if value is None:
        return now_ms
    if isinstance(value, bool):
        raise Rejection("ts must be milliseconds since 1970 or an ISO 8601 time")
    if isinstance(value, int | float):
        # Compared as they are: a huge int is out of range, not an OverflowError.
        if (isinstance(value, float) and not math.isfinite(value)) or not 0 <= value <= MAX_TS_MS:
            raise Rejection(f"ts {str(value)[:40]} is out of range (milliseconds since 1970)")
        return int(value)
    if isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value)
        except ValueError:
            raise Rejection(f"ts '{value[:40]}' is not an ISO 8601 time") from None
        if moment.tzinfo is None:
            raise Rejection(f"ts '{value[:40]}' has no time zone (add Z or +08:00)")
        ts = int(moment.timestamp() * 1000)
        if not 0 <= ts <= MAX_TS_MS:
            raise Rejection(f"ts '{value[:40]}' is before 1970")
        return ts
    raise Rejection("ts must be milliseconds since 1970 or an ISO 8601 time")


def _number(device: KnownDevice, metric: str, value: Any) -> float | str:
    """The value to store for `metric`: a number, or a string for a string metric (twin attribute)."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:
            raise Rejection(f"{metric}: {str(value)[:40]} is out of range") from None
        if not math.isfinite(number):
            raise Rejection(f"{metric}: not a finite number")
        return number
    spec = device.profile.metric(metric) if device.profile is not None else None
    if isinstance(value, str) and spec is not None and spec.data_type is DataType.STRING:
        return value
    raise Rejection(f"{metric}: expected a number, got {type(value).__name__ if value is not None else 'null'}")


class BodyReader:
    """Turns a body's lines into a tenant's points for one caller."""

    def __init__(self, caller: IngestCaller, directory: DbDeviceDirectory, max_future_skew_s: int) -> None:
        self.caller = caller
        self.directory = directory
        self.now_ms = time.time_ns() // 1_000_000
        self.latest_ms = self.now_ms + max_future_skew_s * 1000
        self.builder = PointBatchBuilder(caller.tenant_id, source=SOURCE)

    def read(self, body: bytes, media_type: str) -> ParsedBody:
        parsed = ParsedBody(batch=PointBatch(tenant_id=self.caller.tenant_id))
        for number, item, raw in _items(body, media_type, parsed):
            claimed = item.get("device") if isinstance(item, dict) else None
            try:
                self._take(item)
            except Rejection as rejection:
                # Filed under the device the line claims (its counter grows if it is registered).
                parsed.errors.append((number, rejection.reason, raw, claimed if isinstance(claimed, str) else None))
            else:
                parsed.accepted_lines += 1
        parsed.batch = self.builder.build()
        return parsed

    def _device(self, claimed: Any) -> KnownDevice:
        caller = self.caller
        if caller.device is not None:
            if claimed is not None and claimed != caller.device.key:
                raise Rejection(f"the token is for device '{caller.device.key}', not '{str(claimed)[:128]}'")
            return caller.device
        if claimed is None:
            raise Rejection("device: missing (required unless a device token is used)")
        if not isinstance(claimed, str):
            raise Rejection("device: must be a string")
        device = self.directory.by_name(caller.tenant_id, claimed)
        if device is None:
            disabled = self.directory.is_disabled(caller.tenant_id, claimed)
            raise Rejection(f"device '{claimed[:128]}' is {'disabled' if disabled else 'not registered'}")
        if caller.gateway is not None and device.gateway != caller.gateway.key:
            raise Rejection(f"device '{claimed[:128]}' is not reached through gateway '{caller.gateway.key}'")
        return device

    def _metric(self, device: KnownDevice, name: Any) -> str:
        metric = device.mqtt_keys.get(name) if isinstance(name, str) else None
        if metric is None and isinstance(name, str) and device.profile is not None and device.profile.metric(name):
            metric = name  # the metric's own name, as the edge agent sends it, when no MQTT key took it
        if metric is None:
            raise Rejection(f"unknown metric '{str(name)[:128]}' for device '{device.key}'")
        return metric

    def _checked_ts(self, value: Any) -> int:
        ts = _timestamp(value, self.now_ms)
        if ts > self.latest_ms:
            raise Rejection(f"ts {ts} is more than {(self.latest_ms - self.now_ms) // 1000} s in the future")
        return ts

    def _take(self, item: Any) -> None:
        if not isinstance(item, dict):
            raise Rejection("must be a JSON object")
        device = self._device(item.get("device"))
        values = item.get("values")
        if not isinstance(values, dict) or not values:
            raise Rejection("values: must be a non-empty object of metric values")
        stamps = item.get("ts")
        points: list[tuple[str, int, float | str]] = []
        if isinstance(stamps, list):  # columnar
            times = [self._checked_ts(stamp) for stamp in stamps]
            for name, column in values.items():
                metric = self._metric(device, name)
                if not isinstance(column, list) or len(column) != len(times):
                    raise Rejection(f"values.{metric}: must be a list of {len(times)} values, one per ts")
                points += [
                    (metric, ts, _number(device, metric, value))
                    for ts, value in zip(times, column, strict=True)
                    if value is not None  # columns may be sparse
                ]
        else:
            ts = self._checked_ts(stamps)
            for name, value in values.items():
                metric = self._metric(device, name)
                points.append((metric, ts, _number(device, metric, value)))
        for metric, ts, value in points:
            if isinstance(value, str):
                self.builder.attribute(device.key, metric, value)
            else:
                self.builder.add(device.key, metric, ts, value)


# --- the route


def file_rejections(sink: DeadLetterSink, caller: IngestCaller, parsed: ParsedBody) -> None:
    token_device = caller.device.key if caller.device is not None else None
    for _line, reason, raw, device in parsed.errors:
        sink.record(
            source=SOURCE,
            reason=reason,
            raw=raw,
            topic=INGEST_PATH,
            tenant_id=caller.tenant_id,
            device=token_device or device,
        )


@router.post(
    INGEST_PATH,
    response_model=IngestResult,
    responses=problem_responses(400, 401, 403, 413, 415, 422, 503),
    openapi_extra={"requestBody": INGEST_BODY},
)
async def ingest_telemetry(request: Request) -> IngestResult:
    """Store telemetry sent over HTTP; answers what was taken and why each refused line was refused.

    `application/x-ndjson`: `{"device": "pump-01", "ts": <ms or ISO 8601>, "values": {"flow": 1.2}}`
    per line. `application/json`: `{"device": ..., "ts": [t1, t2], "values": {"flow": [v1, v2]}}` or a
    list of those (null leaves a value out). 400/422 when nothing is usable.
    """
    runtime = get_runtime(request)
    services = registry_services(runtime)
    caller = await run_in_threadpool(identify_caller, request, runtime, services.directory)
    if caller.principal is None:
        request.state.audit_done = True
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json" and media_type not in NDJSON_TYPES:
        raise HTTPException(415, "send application/x-ndjson (JSON lines) or application/json (columnar)")
    body = await read_body(request, MAX_INGEST_BYTES)
    reader = BodyReader(caller, services.directory, runtime.settings.devices.max_future_skew_s)
    try:
        parsed = await run_in_threadpool(reader.read, body, media_type)
    except MalformedBody:
        services.dead_letters.record(
            source=SOURCE, reason="the body is not UTF-8 JSON", raw=body, topic=INGEST_PATH, tenant_id=caller.tenant_id
        )
        raise
    file_rejections(services.dead_letters, caller, parsed)
    errors = [LineError(line=line, reason=reason) for line, reason, _raw, _device in parsed.errors[:MAX_ERRORS_SHOWN]]
    if not parsed.accepted_lines:
        if not parsed.errors:
            raise MalformedBody("the body holds no lines")
        listed = [e.model_dump() for e in errors]
        message = f"nothing usable: line {errors[0].line}: {errors[0].reason}"
        if parsed.syntax_errors == len(parsed.errors):
            raise MalformedBody(message, errors=listed, rejected=len(parsed.errors))
        raise Invalid(message, code="nothing_usable", errors=listed, rejected=len(parsed.errors))
    if len(parsed.batch) or parsed.batch.attributes:
        await run_in_threadpool(store_points, runtime, parsed.batch)
        try:
            await runtime.bus.publish(TELEMETRY_POINTS, parsed.batch)
        except BusError as err:
            raise Unavailable(f"stored, but not published ({err}); send again") from None
    return IngestResult(accepted=len(parsed.batch), rejected=len(parsed.errors), errors=errors)
