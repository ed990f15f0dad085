"""The one place where errors become HTTP: RFC 9457 problem+json with a stable `code`."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from iip.kernel.errors import (
    Conflict,
    DomainError,
    Forbidden,
    Invalid,
    NotFound,
    TooManyRequests,
    Unauthenticated,
    Unavailable,
)
from iip.kernel.logs import request_id_var

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

STATUS_BY_ERROR: dict[type[DomainError], int] = {
    NotFound: 404,
    Conflict: 409,
    Invalid: 422,
    Unauthenticated: 401,
    Forbidden: 403,
    TooManyRequests: 429,
    Unavailable: 503,
}

CODE_BY_STATUS = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}


def status_for(err: DomainError) -> int:
    for cls in type(err).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 400


def problem(
    status: int, code: str, title: str, detail: str, *, instance: str | None = None, **extra: Any
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"urn:iip:problem:{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if instance:
        body["instance"] = instance
    request_id = request_id_var.get()
    if request_id:
        body["request_id"] = request_id
    body.update({k: v for k, v in extra.items() if v is not None})
    headers = {"WWW-Authenticate": 'Bearer realm="iip"'} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _jsonable(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


async def domain_error_handler(request: Request, err: Exception) -> JSONResponse:
    if not isinstance(err, DomainError):  # registered for DomainError only
        raise err
    status = status_for(err)
    return problem(
        status, err.instance_code, err.title, err.message, instance=request.url.path, **_jsonable(err.details)
    )


async def validation_error_handler(request: Request, err: Exception) -> JSONResponse:
    if not isinstance(err, RequestValidationError):  # registered for RequestValidationError only
        raise err
    errors = [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
        for e in err.errors()
    ]
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    where = ".".join(first["loc"]) if first["loc"] else "request"
    return problem(
        422, "invalid", "Invalid input", f"{where}: {first['msg']}", instance=request.url.path, errors=errors
    )


async def http_error_handler(request: Request, err: Exception) -> JSONResponse:
    if not isinstance(err, StarletteHTTPException):  # registered for StarletteHTTPException only
        raise err
    code = CODE_BY_STATUS.get(err.status_code, "error")
    title = code.replace("_", " ").capitalize()
    response = problem(err.status_code, code, title, str(err.detail), instance=request.url.path)
    if err.headers:
        response.headers.update(err.headers)
    return response


async def data_error_handler(request: Request, err: Exception) -> JSONResponse:
    """A value the database refuses (e.g. NUL in PostgreSQL text) is bad input, not a server fault."""
    cause = err.orig if isinstance(err, DataError) else err
    logger.warning("database refused a value on %s %s: %s", request.method, request.url.path, cause)
    return problem(422, "invalid", "Invalid input", "a value was refused by the database", instance=request.url.path)


async def unhandled_error_handler(request: Request, err: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem(
        500,
        "internal_error",
        "Internal error",
        "an unexpected error occurred; see the server log",
        instance=request.url.path,
    )


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, domain_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(DataError, data_error_handler)
    app.add_exception_handler(Exception, unhandled_error_handler)


class Problem(BaseModel):
    """RFC 9457 problem details, with IIP's stable `code`."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    instance: str | None = None
    request_id: str | None = None


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for the problems a route can answer (documented as problem+json)."""
    return {s: {"model": Problem, "description": CODE_BY_STATUS[s].replace("_", " ")} for s in statuses}
