"""Plant connectivity: device registry and profiles, ingest over MQTT, Sparkplug B, Modbus, OPC UA and HTTP."""

from iip.devices import models as models
from iip.devices.cli import devices_app
from iip.devices.edge.cli import edge_app
from iip.devices.lifespan import devices_lifespan
from iip.devices.pages import PAGES, TEMPLATE_DIR, pages_router
from iip.devices.router import router
from iip.devices.sim.cli import sim_app
from iip.kernel.module import Module

module = Module(
    name="devices",
    title="Devices",
    depends_on=("telemetry",),
    router=router,
    pages_router=pages_router,
    pages=PAGES,
    cli={"devices": devices_app, "edge": edge_app, "sim": sim_app},
    lifespan=devices_lifespan,
    permissions=("devices.read", "devices.operate", "devices.write", "devices.admin"),
    template_dir=TEMPLATE_DIR,
)
