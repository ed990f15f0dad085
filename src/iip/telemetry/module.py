"""The telemetry context's `Module`: its API and the lifespans of the writer and store maintenance."""

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import APIRouter

from iip.kernel.module import Module
from iip.kernel.runtime import Runtime
from iip.telemetry import (
    manifest,
    models,  # noqa: F401 - registers the context's tables
)
from iip.telemetry.maintenance import maintenance_lifespan
from iip.telemetry.router import router as query_router
from iip.telemetry.twin_router import router as twin_router
from iip.telemetry.writer import writer_lifespan

router = APIRouter()
router.include_router(query_router)
router.include_router(twin_router)


@asynccontextmanager
async def _lifespan(runtime: Runtime) -> AsyncIterator[None]:
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(writer_lifespan(runtime))
        await stack.enter_async_context(maintenance_lifespan(runtime))
        yield


module = Module(
    name=manifest.name,
    title="Telemetry",
    depends_on=manifest.depends_on,
    router=router,
    cli=manifest.cli,
    lifespan=_lifespan,
    permissions=("telemetry.read", "telemetry.write"),
)
