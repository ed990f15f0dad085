"""The alarms context's `Module`: its API, console pages and the lifespans of the engine and notifications."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter

from iip.alarms import (
    manifest,
    models,  # noqa: F401 - registers the context's tables
)
from iip.alarms.feed import feed_lifespan, feed_router
from iip.alarms.lifespan import alarms_lifespan
from iip.alarms.notify import models as notify_models  # noqa: F401 - registers the notification tables
from iip.alarms.notify import notifications_lifespan
from iip.alarms.notify import router as notify_router
from iip.alarms.pages import PAGES, TEMPLATE_DIR, pages_router
from iip.alarms.router import router as alarms_router
from iip.kernel.module import Module
from iip.kernel.runtime import Runtime

router = APIRouter()
router.include_router(feed_router)  # before /api/alarms/{alarm_id}, which would take "feed" for an id
router.include_router(alarms_router)
router.include_router(notify_router)


@asynccontextmanager
async def lifespan(runtime: Runtime) -> AsyncIterator[None]:
    """Notifications first, so the rule engine's first alarm changes find their consumer subscribed."""
    async with notifications_lifespan(runtime), feed_lifespan(runtime), alarms_lifespan(runtime):
        yield


module = Module(
    name=manifest.name,
    title="Alarms",
    depends_on=manifest.depends_on,
    router=router,
    pages_router=pages_router,
    pages=PAGES,
    cli=manifest.cli,
    lifespan=lifespan,
    permissions=("alarms.read", "alarms.operate", "alarms.write", "alarms.admin"),
    template_dir=TEMPLATE_DIR,
)
