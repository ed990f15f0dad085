"""Request ids, structured access logs, metrics, security headers and the audit trail of writes."""

from __future__ import annotations

import logging
import re
import time
import uuid
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import Metric
from starlette.concurrency import run_in_threadpool
from starlette.routing import Match

from iip.api.deps import client_address, get_runtime
from iip.api.problems import problem, unhandled_error_handler
from iip.kernel import audit
from iip.kernel.auth import Principal
from iip.kernel.logs import request_id_var
from iip.kernel.settings import Mode

logger = logging.getLogger("iip.http")

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(self)",  # the code verification page offers it
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        "script-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
    ),
}
# FastAPI's interactive docs load Swagger UI from jsdelivr; only /docs and /redoc may do so.
DOCS_CSP = (
    "default-src 'self'; img-src 'self' data: https://fastapi.tiangolo.com; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net"
)


LATENCY_BUCKETS = tuple(Histogram.DEFAULT_BUCKETS)  # ends with +Inf


class RouteTally:
    """One route and status counted in plain numbers, added to the Prometheus metrics when collected.

    For a path answering in microseconds, `Counter.inc` and `Histogram.observe` (a lock each, a
    bucket search) are a sizeable part of the answer. Counts are added to the histogram's sum and
    buckets directly; should a prometheus_client release no longer have them, each request is
    observed as usual instead. Recorded and collected in the event loop's thread.
    """

    def __init__(self, requests: Any, latency: Any) -> None:
        self.requests = requests
        self.latency = latency
        self.direct = not (hasattr(latency, "_sum") and len(getattr(latency, "_buckets", ())) == len(LATENCY_BUCKETS))
        self.count = 0
        self.total = 0.0
        self.buckets = [0] * len(LATENCY_BUCKETS)

    def record(self, elapsed: float) -> None:
        if self.direct:
            self.requests.inc()
            self.latency.observe(elapsed)
            return
        self.count += 1
        self.total += elapsed
        self.buckets[bisect_left(LATENCY_BUCKETS, elapsed)] += 1

    def flush(self) -> None:
        if not self.count:
            return
        count, total, buckets = self.count, self.total, self.buckets
        self.count, self.total, self.buckets = 0, 0.0, [0] * len(LATENCY_BUCKETS)
        self.requests.inc(count)
        self.latency._sum.inc(total)
        for bucket, n in zip(self.latency._buckets, buckets, strict=True):
            if n:
                bucket.inc(n)


class _TallyFlush:
    """A collector that yields nothing: registered first, it adds the tallies before the metrics are read."""

    def __init__(self, tallies: list[RouteTally]) -> None:
        self.tallies = tallies

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterable[Metric]:
        for tally in self.tallies:
            tally.flush()
        return ()


class HttpMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.tallies: list[RouteTally] = []
        self.registry.register(_TallyFlush(self.tallies))
        self.requests = Counter(
            "iip_http_requests", "HTTP requests handled", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "iip_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=self.registry,
            buckets=LATENCY_BUCKETS,
        )

    def tally(self, method: str, route: str, status: int) -> RouteTally:
        """A cheap counter for a hot path's answers, shown with every other request's metrics."""
        tally = RouteTally(self.requests.labels(method, route, str(status)), self.latency.labels(method, route))
        self.tallies.append(tally)
        return tally


def route_template(request: Request) -> str:
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    for candidate in request.app.router.routes:
        match, _ = candidate.matches(request.scope)
        if match is Match.FULL:
            return str(getattr(candidate, "path", "unmatched"))
    return "unmatched"


def _has_nul(request: Request) -> bool:
    return "\x00" in request.url.path or any("\x00" in k or "\x00" in v for k, v in request.query_params.multi_items())


def outcome_of(status: int) -> str:
    if status < 400:
        return "success"
    if status in (401, 403):
        return "denied"
    return "failure"


def _record_audit(request: Request, status: int, template: str) -> None:
    runtime = get_runtime(request)
    principal: Principal | None = getattr(request.state, "principal", None)
    object_type, object_id = getattr(request.state, "audit_object", ("", ""))
    if not object_id and request.path_params:
        # The object is named by the segment before its id: /api/users/{user_id}/unlock acts on "users".
        segments = [s for s in template.split("/") if s]
        params = [i for i, s in enumerate(segments) if s.startswith("{")]
        names = [s for s in segments[: params[-1] if params else None] if not s.startswith("{")]
        object_type = object_type or (names[-1] if names else "")
        object_id = ",".join(str(v) for v in request.path_params.values())
    record = audit.AuditRecord(
        action=f"{request.method} {template}",
        outcome=outcome_of(status),
        object_type=object_type,
        object_id=object_id,
        detail=f"status={status}",
        source=client_address(request),
    )
    with runtime.db.session() as session:
        if principal is not None:
            audit.append(session, principal, record)
        else:
            audit.append(session, "anonymous", record)


def install_middleware(app: FastAPI, metrics: HttpMetrics) -> None:
    @app.middleware("http")
    async def platform_middleware(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        incoming = request.headers.get("x-request-id", "")
        request_id = incoming if REQUEST_ID_RE.match(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        try:
            response: Response
            rejected = _has_nul(request)
            if rejected:
                # PostgreSQL cannot store or compare NUL; no route has a use for it.
                response = problem(400, "bad_request", "Bad request", "the URL contains a NUL character")
            else:
                try:
                    response = await call_next(request)
                except Exception as err:  # noqa: BLE001 - answered here so the 500 gets the request id, headers and audit
                    response = await unhandled_error_handler(request, err)
            elapsed = time.perf_counter() - started
            template = route_template(request)
            metrics.requests.labels(request.method, template, str(response.status_code)).inc()
            metrics.latency.labels(request.method, template).observe(elapsed)
            response.headers["X-Request-ID"] = request_id
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            if template in ("/docs", "/redoc"):
                response.headers["Content-Security-Policy"] = DOCS_CSP
            settings = get_runtime(request).settings
            if settings.mode is Mode.PRODUCTION:
                response.headers["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"
            if (
                request.method in STATE_CHANGING
                and template != "unmatched"
                and not rejected
                and not getattr(request.state, "audit_done", False)
            ):
                try:
                    await run_in_threadpool(_record_audit, request, response.status_code, template)
                except Exception:
                    logger.exception("could not write the audit entry for %s %s", request.method, template)
            logger.info(
                "%s %s %d",
                request.method,
                request.url.path,
                response.status_code,
                extra={
                    "method": request.method,
                    "path": request.url.path,
                    "status": response.status_code,
                    "duration_ms": round(elapsed * 1000, 2),
                    "route": template,
                },
            )
            return response
        finally:
            request_id_var.reset(token)
