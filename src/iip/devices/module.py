"""The devices context's `Module`: its API, console pages and the connectivity lifespan."""

from iip.devices import (
    manifest,
    models,  # noqa: F401 - registers the context's tables
)
from iip.devices.lifespan import devices_lifespan
from iip.devices.pages import PAGES, TEMPLATE_DIR, pages_router
from iip.devices.router import router
from iip.kernel.module import Module

module = Module(
    name=manifest.name,
    title="Devices",
    depends_on=manifest.depends_on,
    router=router,
    pages_router=pages_router,
    pages=PAGES,
    cli=manifest.cli,
    lifespan=devices_lifespan,
    permissions=("devices.read", "devices.operate", "devices.write", "devices.admin"),
    template_dir=TEMPLATE_DIR,
)
