"""Plant connectivity: device registry and profiles, ingest over MQTT, Sparkplug B, Modbus, OPC UA and HTTP."""

from iip.devices import models as models
from iip.devices.cli import devices_app
from iip.devices.router import router
from iip.kernel.module import Module

module = Module(
    name="devices",
    title="Devices",
    depends_on=("telemetry",),
    router=router,
    cli={"devices": devices_app},
    permissions=("devices.read", "devices.operate", "devices.write", "devices.admin"),
)
