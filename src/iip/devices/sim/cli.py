"""`iip sim run|catalog`: run the simulated plant standalone, print its registry document."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.markup import escape

from iip.cli.context import CliState, fail, out_console
from iip.devices.sim.catalog import PlantConfig, render_catalog
from iip.kernel.errors import DomainError
from iip.kernel.settings import DevicesSettings

if TYPE_CHECKING:
    from iip.devices.sim.plant import SimulatedPlant

sim_app = typer.Typer(
    help="Simulated plant: Modbus pumps and power meters, an OPC UA reactor, a Sparkplug B line, MQTT sensors.",
    no_args_is_help=True,
)

Tenant = Annotated[str, typer.Option("--tenant", help="Tenant whose MQTT topics the devices publish to.")]
Host = Annotated[str, typer.Option("--host", help="Address the Modbus and OPC UA servers listen on.")]
Advertise = Annotated[str, typer.Option("--advertise", help="Host the registry document points at (default: --host).")]
ModbusPort = Annotated[
    int,
    typer.Option("--modbus-port", help="Port of the pumps' Modbus server; the power meters use the next. 0: free."),
]
OpcUaPort = Annotated[int, typer.Option("--opcua-port", help="Port of the OPC UA reactor. 0: free.")]
Pumps = Annotated[int, typer.Option("--pumps", help="Modbus pumps.")]
Meters = Annotated[int, typer.Option("--meters", help="Modbus power meters (a main incomer, then feeders).")]
Sensors = Annotated[int, typer.Option("--sensors", help="MQTT room sensors.")]
Reactor = Annotated[bool, typer.Option("--reactor/--no-reactor", help="The OPC UA reactor.")]
Line = Annotated[bool, typer.Option("--line/--no-line", help="The Sparkplug B packaging line.")]
Mqtt = Annotated[bool, typer.Option("--mqtt/--no-mqtt", help="Devices publishing over MQTT (line, sensors, load).")]
Group = Annotated[str, typer.Option("--sparkplug-group", help="Sparkplug group id (default iip-sim-<tenant>).")]
EdgeNode = Annotated[str, typer.Option("--edge-node", help="Sparkplug edge node id of the packaging line.")]
MqttDevices = Annotated[int, typer.Option("--mqtt-devices", help="Lightweight MQTT devices for load tests.")]
LoadPrefix = Annotated[str, typer.Option("--load-prefix", help="Key prefix of the lightweight devices.")]

OPTION_OF = {  # PlantConfig field -> the option that sets it, for error messages
    "tenant": "--tenant",
    "host": "--host",
    "advertised_host": "--advertise",
    "pump_port": "--modbus-port",
    "meter_port": "--modbus-port",
    "opcua_port": "--opcua-port",
    "pumps": "--pumps",
    "meters": "--meters",
    "sensors": "--sensors",
    "broker_url": "--broker",
    "sparkplug_group": "--sparkplug-group",
    "edge_node": "--edge-node",
    "primary_host_id": "--primary-host",
    "mqtt_devices": "--mqtt-devices",
    "mqtt_rate": "--rate",
    "mqtt_connections": "--connections",
    "load_prefix": "--load-prefix",
    "period_s": "--period",
    "time_scale": "--time-scale",
}
FORMATS = ("yaml", "json")


def _devices_settings(ctx: typer.Context) -> DevicesSettings:
    """The platform's devices settings when run under `iip`, else the defaults."""
    state = ctx.find_root().obj
    return state.settings.devices if isinstance(state, CliState) else DevicesSettings()


def _config(ctx: typer.Context, *, mqtt: bool, broker: str | None, modbus_port: int, **fields: Any) -> PlantConfig:
    if modbus_port == 65_535:
        raise fail("--modbus-port: the power meters need the next port; use 65534 or lower", code=2)
    fields["pump_port"] = modbus_port
    fields["meter_port"] = modbus_port + 1 if modbus_port else 0
    if not mqtt:
        fields["broker_url"] = ""
    elif broker is not None:
        fields["broker_url"] = broker
    try:
        return PlantConfig.for_platform(_devices_settings(ctx), **fields)
    except ValidationError as err:
        first = err.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        message = str(first["msg"]).removeprefix("Value error, ")
        raise fail(f"{OPTION_OF.get(field, field)}: {message}", code=2) from None


@sim_app.command("catalog")
def catalog(
    ctx: typer.Context,
    tenant: Tenant = "demo",
    file: Annotated[str | None, typer.Argument(help="Where to write; stdout when left out.")] = None,
    document_format: Annotated[str, typer.Option("--format", help="yaml or json.")] = "yaml",
    host: Host = "127.0.0.1",
    advertise: Advertise = "",
    modbus_port: ModbusPort = 5020,
    opcua_port: OpcUaPort = 4840,
    pumps: Pumps = 6,
    meters: Meters = 7,
    sensors: Sensors = 10,
    reactor: Reactor = True,
    line: Line = True,
    mqtt: Mqtt = True,
    sparkplug_group: Group = "",
    edge_node: EdgeNode = "line-1",
    mqtt_devices: MqttDevices = 0,
    load_prefix: LoadPrefix = "load",
) -> None:
    """Print the registry document (profiles and devices) of the plant `iip sim run` runs with the same options.

    Import it with `iip devices import plant.yaml --tenant <tenant>`.
    """
    if document_format not in FORMATS:
        raise fail(f"--format: unknown format '{document_format}': expected yaml or json", code=2)
    config = _config(
        ctx,
        mqtt=mqtt,
        broker=None,
        modbus_port=modbus_port,
        tenant=tenant,
        host=host,
        advertised_host=advertise,
        opcua_port=opcua_port,
        pumps=pumps,
        meters=meters,
        sensors=sensors,
        reactor=reactor,
        packaging_line=line,
        sparkplug_group=sparkplug_group,
        edge_node=edge_node,
        mqtt_devices=mqtt_devices,
        load_prefix=load_prefix,
    )
    try:
        text = render_catalog(config, document_format)
    except DomainError as err:
        raise fail(err.message, code=2) from None
    if file is None:
        typer.echo(text, nl=False)
        return
    try:
        Path(file).write_text(text, encoding="utf-8")
    except OSError as err:
        raise fail(f"cannot write {file}: {err.strerror}") from None
    out_console.print(f"wrote {escape(file)}", highlight=False)


@sim_app.command("run")
def run(
    ctx: typer.Context,
    tenant: Tenant = "demo",
    broker: Annotated[
        str | None,
        typer.Option(
            "--broker",
            help="mqtt://[user:password@]host:port to publish to; default IIP_DEVICES__MQTT_URL, "
            "else the embedded broker of `iip run` (IIP_DEVICES__EMBEDDED_BROKER_PORT).",
        ),
    ] = None,
    host: Host = "127.0.0.1",
    advertise: Advertise = "",
    modbus_port: ModbusPort = 5020,
    opcua_port: OpcUaPort = 4840,
    pumps: Pumps = 6,
    meters: Meters = 7,
    sensors: Sensors = 10,
    reactor: Reactor = True,
    line: Line = True,
    mqtt: Mqtt = True,
    sparkplug_group: Group = "",
    edge_node: EdgeNode = "line-1",
    primary_host: Annotated[
        str, typer.Option("--primary-host", help="Sparkplug host id whose STATE the line waits for.")
    ] = "",
    mqtt_devices: MqttDevices = 0,
    rate: Annotated[float, typer.Option("--rate", help="Messages per second of each lightweight device.")] = 1.0,
    connections: Annotated[
        int, typer.Option("--connections", help="Connections the lightweight devices share; 0: one per device.")
    ] = 0,
    load_prefix: LoadPrefix = "load",
    period: Annotated[float, typer.Option("--period", help="Seconds between updates of the signals.")] = 1.0,
    time_scale: Annotated[float, typer.Option("--time-scale", help="Simulated seconds per real second.")] = 1.0,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same signals.")] = 1,
    faults: Annotated[
        bool, typer.Option("--faults/--no-faults", help="Random faults: pump cavitation and wear, machine stops.")
    ] = True,
    duration: Annotated[float, typer.Option("--duration", help="Stop after this many seconds; 0: at Ctrl+C.")] = 0.0,
    document: Annotated[
        Path | None, typer.Option("--document", help="Write the registry document of the running plant here.")
    ] = None,
    stats_every: Annotated[
        float, typer.Option("--stats-every", help="Print the MQTT counters every this many seconds; 0: at the end.")
    ] = 0.0,
) -> None:
    """Run the simulated plant until Ctrl+C (SIGINT) or SIGTERM."""
    if duration < 0 or stats_every < 0:
        raise fail("--duration and --stats-every cannot be negative", code=2)
    config = _config(
        ctx,
        mqtt=mqtt,
        broker=broker,
        modbus_port=modbus_port,
        tenant=tenant,
        host=host,
        advertised_host=advertise,
        opcua_port=opcua_port,
        pumps=pumps,
        meters=meters,
        sensors=sensors,
        reactor=reactor,
        packaging_line=line,
        sparkplug_group=sparkplug_group,
        edge_node=edge_node,
        primary_host_id=primary_host,
        mqtt_devices=mqtt_devices,
        mqtt_rate=rate,
        mqtt_connections=connections,
        load_prefix=load_prefix,
        period_s=period,
        time_scale=time_scale,
        seed=seed,
        faults=faults,
    )
    if not logging.getLogger().handlers:  # a host process (tests, `iip run`) keeps its own logging
        from iip.kernel.logs import configure_logging

        configure_logging("WARNING", "text")
    logging.getLogger("asyncua").setLevel(logging.ERROR)  # it warns of running without security
    try:
        asyncio.run(_serve(config, duration, document, stats_every))
    except DomainError as err:
        raise fail(err.message) from None


async def _serve(config: PlantConfig, duration: float, document: Path | None, stats_every: float) -> None:
    from iip.devices.sim.plant import SimulatedPlant

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with SimulatedPlant(config) as plant:
            for part in plant.summary():
                out_console.print(escape(part.describe()), highlight=False, soft_wrap=True)
            if document is not None:
                try:
                    await asyncio.to_thread(document.write_text, render_catalog(plant.config), encoding="utf-8")
                except OSError as err:
                    raise fail(f"cannot write {document}: {err.strerror}") from None
                out_console.print(f"registry document: {escape(str(document))}", highlight=False)
            until = f"for {duration:g} s" if duration else "until Ctrl+C"
            out_console.print(f"simulated plant running {until}", highlight=False)
            deadline = loop.time() + duration if duration else None
            while not stop.is_set():
                wait = stats_every or 3600.0
                if deadline is not None:
                    wait = min(wait, max(deadline - loop.time(), 0.0))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
                if deadline is not None and loop.time() >= deadline:
                    break
                if stats_every and not stop.is_set():
                    _print_stats(plant)
            _print_stats(plant)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def _print_stats(plant: SimulatedPlant) -> None:
    stats = plant.mqtt_stats
    line = f"steps {plant.steps}"
    if stats.connections:
        line += (
            f"; mqtt: connected {stats.connected}/{stats.connections}, published {stats.published}, "
            f"acknowledged {stats.acknowledged}, dropped {stats.dropped}"
        )
    if plant.edge_node is not None:
        node = plant.edge_node.stats
        line += f"; sparkplug: births {node.births}, data {node.data_messages}, commands {node.commands}"
    out_console.print(line, highlight=False, soft_wrap=True)
