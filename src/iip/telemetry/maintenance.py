"""Continuous rollups and retention, run in the background while the platform runs."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from iip.kernel.runtime import Runtime


@asynccontextmanager
async def maintenance_lifespan(runtime: Runtime) -> AsyncIterator[None]:
    yield
