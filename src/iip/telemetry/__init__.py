"""Time-series telemetry and the device twin: the live digital mirror of the plant."""

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import APIRouter

from iip.kernel.module import Module
from iip.kernel.runtime import Runtime
from iip.telemetry import models as models
from iip.telemetry.cli import telemetry_app
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
    name="telemetry",
    title="Telemetry",
    router=router,
    cli={"telemetry": telemetry_app},
    lifespan=_lifespan,
    permissions=("telemetry.read", "telemetry.write"),
)
