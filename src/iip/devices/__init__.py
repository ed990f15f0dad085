"""Plant connectivity: device registry and profiles, ingest over MQTT, Sparkplug B, Modbus, OPC UA and HTTP."""

from iip.kernel.module import CommandGroup, Manifest

manifest = Manifest(
    name="devices",
    depends_on=("telemetry",),
    cli={
        "devices": CommandGroup("iip.devices.cli:devices_app", "Device registry: profiles, devices, gateways."),
        "edge": CommandGroup(
            "iip.devices.edge.cli:edge_app",
            "Edge agent: polls devices beside the machines and forwards to the platform, storing while it is away.",
        ),
        "sim": CommandGroup(
            "iip.devices.sim.cli:sim_app",
            "Simulated plant: Modbus pumps and power meters, an OPC UA reactor, a Sparkplug B line, MQTT sensors.",
        ),
    },
)
