"""Consumes `telemetry.points` from the bus: writes the store and updates the twins."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from iip.kernel.runtime import Runtime


@asynccontextmanager
async def writer_lifespan(runtime: Runtime) -> AsyncIterator[None]:
    yield
