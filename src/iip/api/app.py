"""`create_app(settings)`: the FastAPI application, built by iterating the registered modules."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp

from iip import __version__
from iip.api.middleware import HttpMetrics, install_middleware
from iip.api.problems import PROBLEM_JSON, Problem, install_problem_handlers
from iip.kernel.bus import BusError
from iip.kernel.logs import configure_logging
from iip.kernel.module import AsgiLayer
from iip.kernel.runtime import Runtime
from iip.kernel.settings import Settings

logger = logging.getLogger(__name__)


class Health(BaseModel):
    status: str
    version: str


class Readiness(BaseModel):
    status: str
    checks: dict[str, str]


DESCRIPTION = (
    "Open industrial internet platform: identifiers, connectivity, monitoring, traceability, energy, security."
)


def operation_id(route: APIRoute) -> str:
    """Stable operation ids: `<tag>.<function name>`, e.g. `access.list_users`."""
    tag = route.tags[0] if route.tags else "platform"
    return f"{tag}.{route.name}"


class PlatformApp(FastAPI):
    """FastAPI with the modules' ASGI layers (`Module.asgi_layers`) outside its whole middleware stack.

    `add_middleware` would put them inside Starlette's error middleware and FastAPI's own, which a
    layer that answers its requests itself and hands everything else on does not need, and which
    cost each of its requests several calls.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outer_layers: list[Callable[[ASGIApp], ASGIApp]] = []

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        for layer in reversed(self.outer_layers):
            stack = layer(stack)
        return stack


def _with_runtime(layer: AsgiLayer, runtime: Runtime, inner: ASGIApp) -> ASGIApp:
    return layer(inner, runtime)


def create_app(
    settings: Settings | None = None, *, runtime: Runtime | None = None, configure_logs: bool = True
) -> FastAPI:
    if runtime is None:
        if settings is None:
            raise ValueError("create_app needs settings or a runtime")
        runtime = Runtime.build(settings)
    settings = runtime.settings
    if configure_logs:
        configure_logging(settings.log_level, settings.log_format.value)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await runtime.bus.start()
        async with AsyncExitStack() as stack:
            for module in runtime.modules:
                if module.lifespan is not None:
                    await stack.enter_async_context(module.lifespan(runtime))
            logger.info("IIP %s started with modules: %s", __version__, ", ".join(m.name for m in runtime.modules))
            # What start-up built lives as long as the process: out of the collector's sight, a full
            # collection under load walks only what requests allocate (a shorter pause in the tail).
            gc.collect()
            gc.freeze()
            yield
        await runtime.bus.close()
        runtime.db.dispose()

    app = PlatformApp(
        title="IIP",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
        docs_url="/docs",
        redoc_url=None,
        # Metrics are Prometheus' (/metrics); FastAPI's OpenTelemetry hook costs a check per request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.runtime = runtime
    metrics = HttpMetrics()
    app.state.metrics = metrics

    install_problem_handlers(app)
    install_middleware(app, metrics)
    if settings.api.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.api.cors_origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
        )

    for module in runtime.modules:
        for layer in module.asgi_layers:
            # Outermost, so such a layer sees requests first and adds what the platform middleware would.
            app.outer_layers.append(functools.partial(_with_runtime, layer, runtime))

    app.include_router(platform_router(runtime, metrics))

    for module in runtime.modules:
        if module.router is not None:
            app.include_router(module.router)

    from iip.console.app import mount_console

    mount_console(app, runtime)

    install_openapi(app)
    return app


def app_from_environment() -> FastAPI:
    """The app from IIP_* settings: what each server worker process builds (`iip run --workers`)."""
    from iip.kernel.settings import load_settings

    app = create_app(load_settings())
    # As `iip run` asks uvicorn (access_log=False): the platform middleware logs each request once.
    logging.getLogger("uvicorn.access").propagate = False
    return app


def platform_router(runtime: Runtime, metrics: HttpMetrics) -> APIRouter:
    """Liveness, readiness and Prometheus metrics."""
    router = APIRouter(tags=["platform"])
    module_up = Gauge("iip_module_healthy", "1 when a module reports healthy", ["module"], registry=metrics.registry)

    @router.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        """Liveness: the process answers."""
        return Health(status="ok", version=__version__)

    @router.get(
        "/readyz",
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "a dependency is unreachable"}},
    )
    async def readyz(response: Response) -> Readiness:
        """Readiness: the database and the bus are reachable."""
        checks: dict[str, str] = {}
        try:
            await run_in_threadpool(runtime.db.ping)
            checks["database"] = "ok"
        except Exception as err:  # noqa: BLE001 - any failure means not ready
            checks["database"] = f"error: {type(err).__name__}"
        try:
            await asyncio.wait_for(runtime.bus.ping(), timeout=2)
            checks["bus"] = "ok"
        except (BusError, TimeoutError) as err:
            checks["bus"] = f"error: {err or type(err).__name__}"
        ready = all(v == "ok" for v in checks.values())
        if not ready:
            response.status_code = 503
        return Readiness(status="ok" if ready else "unavailable", checks=checks)

    @router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
    async def prometheus_metrics(request: Request) -> Response:
        """Prometheus text exposition."""
        for module in runtime.modules:
            if module.health is not None:
                try:
                    report = await run_in_threadpool(module.health, runtime)
                    module_up.labels(module.name).set(1 if report.ok else 0)
                except Exception:  # noqa: BLE001 - a failing check is an unhealthy module
                    module_up.labels(module.name).set(0)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router


def install_openapi(app: FastAPI) -> None:
    """OpenAPI with the Problem schema, bearer auth, and problem+json error bodies."""
    from fastapi.openapi.utils import get_openapi

    def custom_openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.setdefault("components", {})
        components.setdefault("schemas", {}).setdefault("Problem", Problem.model_json_schema())
        components["securitySchemes"] = {"apiKey": {"type": "http", "scheme": "bearer", "description": "IIP API key"}}
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                if not isinstance(operation, dict):
                    continue
                for status, resp in operation.get("responses", {}).items():
                    body = resp.get("content", {}).get("application/json", {})
                    if status.startswith(("4", "5")) and body.get("schema", {}).get("$ref", "").endswith("/Problem"):
                        resp["content"] = {PROBLEM_JSON: body}
        app.openapi_schema = schema
        return schema

    app.openapi = custom_openapi  # type: ignore[method-assign]
