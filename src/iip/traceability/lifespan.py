"""What runs while the platform runs: subscription delivery, and the trace links offered to `identifiers`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from iip.kernel.runtime import Runtime
from iip.traceability.identifier_links import identifier_links_lifespan
from iip.traceability.subscription_delivery import subscriptions_lifespan


@asynccontextmanager
async def traceability_lifespan(runtime: Runtime) -> AsyncIterator[None]:
    async with identifier_links_lifespan(runtime), subscriptions_lifespan(runtime):
        yield
