"""Monitoring and early warning: streaming alarm rules, the ISA-18.2 alarm lifecycle, notifications."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter

from iip.alarms import models as models
from iip.alarms.cli import alarms_app, rules_app
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
    name="alarms",
    title="Alarms",
    depends_on=("telemetry", "devices"),
    router=router,
    pages_router=pages_router,
    pages=PAGES,
    cli={"alarms": alarms_app, "rules": rules_app},
    lifespan=lifespan,
    permissions=("alarms.read", "alarms.operate", "alarms.write", "alarms.admin"),
    template_dir=TEMPLATE_DIR,
)
