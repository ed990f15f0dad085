"""Helpers the API tests share: the app's routes, problem+json checks, apps with changed settings."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import Any

import fastapi.routing
from fastapi import FastAPI
from fastapi.routing import APIRoute
from httpx import Response

from iip.api.app import create_app
from iip.kernel.runtime import Runtime

PROBLEM_JSON = "application/problem+json"
PROBLEM_FIELDS = ("type", "title", "status", "detail", "code", "request_id")
GENERATED_REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclasses.dataclass(frozen=True)
class RouteInfo:
    path: str
    methods: frozenset[str]
    route: APIRoute


def api_routes(app: FastAPI) -> Iterator[RouteInfo]:
    """Every APIRoute with its effective path.

    Recent FastAPI keeps included routers as one lazy entry in `app.routes`; a plain
    `isinstance(route, APIRoute)` loop would silently miss every module's routes.
    """
    iter_route_contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    if iter_route_contexts is None:
        for route in app.routes:
            if isinstance(route, APIRoute):
                yield RouteInfo(route.path, frozenset(route.methods), route)
        return
    for context in iter_route_contexts(app.routes):
        if isinstance(context.original_route, APIRoute):
            yield RouteInfo(str(context.path), frozenset(context.methods or ()), context.original_route)


def assert_problem(response: Response, status: int, code: str | None = None) -> dict[str, Any]:
    """An RFC 9457 problem with IIP's fields, the given status and (optionally) code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON), response.headers["content-type"]
    body: dict[str, Any] = response.json()
    missing = [field for field in PROBLEM_FIELDS if field not in body]
    assert not missing, f"problem lacks {missing}: {body}"
    assert body["status"] == status
    assert body["type"] == f"urn:iip:problem:{body['code']}"
    assert body["title"]
    assert body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]
    if code is not None:
        assert body["code"] == code, body
    return body


def app_with_api_settings(runtime: Runtime, **api: Any) -> FastAPI:
    """An app over the same database whose `settings.api` differs."""
    settings = runtime.settings.model_copy(update={"api": runtime.settings.api.model_copy(update=api)})
    return create_app(runtime=dataclasses.replace(runtime, settings=settings), configure_logs=False)
