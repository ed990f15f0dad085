"""`iip edge`: run the edge agent, show its outbox."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import signal
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from iip.cli.context import fail, out_console
from iip.devices.edge.config import EdgeConfig, EdgeConfigError, load_config
from iip.devices.edge.outbox import OutboxError, read_counters, read_dead_letters

edge_app = typer.Typer(
    help="Edge agent: polls devices beside the machines and forwards to the platform, storing while it is away.",
    no_args_is_help=True,
)

ConfigFile = Annotated[Path, typer.Option("--config", "-c", help="Edge configuration file (YAML or JSON).")]


def _config(path: Path) -> EdgeConfig:
    try:
        return load_config(path)
    except EdgeConfigError as err:
        raise fail(str(err), code=2) from None


async def _serve(config: EdgeConfig) -> None:
    from iip.devices.edge.agent import EdgeAgent

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        agent = EdgeAgent(config)
        await agent.run(stop)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


@edge_app.command("run")
def run(config: ConfigFile) -> None:
    """Poll the configured devices and forward their points until SIGINT or SIGTERM."""
    from iip.devices.edge.agent import EdgeSourceError
    from iip.kernel.logs import configure_logging

    settings = _config(config)
    configure_logging(settings.log_level, settings.log_format)
    try:
        asyncio.run(_serve(settings))
    except EdgeSourceError as err:
        raise fail(str(err), code=2) from None
    except OutboxError as err:
        raise fail(str(err)) from None


@edge_app.command("check")
def check(config: ConfigFile) -> None:
    """Validate the configuration (connection settings included) and list the devices it polls."""
    from iip.devices.edge.agent import EdgeSourceError, build_sources

    settings = _config(config)
    try:
        build_sources(settings)
    except EdgeSourceError as err:
        raise fail(str(err), code=2) from None
    target = settings.mqtt.url if settings.mqtt and settings.transport.value == "mqtt" else settings.platform_url
    out_console.print(
        f"configuration ok: {settings.transport.value} to {escape(target)}, outbox {settings.outbox.path}",
        highlight=False,
        soft_wrap=True,
    )
    for device in settings.devices:
        profile = device.profile
        out_console.print(
            f"  {device.key}: {profile.protocol.value}, profile {profile.name}, {len(profile.metrics)} metrics",
            highlight=False,
            soft_wrap=True,
        )


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    age = max(0.0, time.time() - ms / 1000)
    moment = dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds")
    return f"{moment} ({age:.0f} s ago)"


@edge_app.command("status")
def status(
    config: ConfigFile,
    as_json: Annotated[bool, typer.Option("--json", help="Print the counters as one JSON object.")] = False,
) -> None:
    """Print the outbox counters (also while the agent runs)."""
    settings = _config(config)
    try:
        counters = read_counters(settings.outbox.path)
    except OutboxError as err:
        raise fail(str(err)) from None
    if as_json:
        out_console.print_json(json.dumps({"outbox": str(settings.outbox.path), **dataclasses.asdict(counters)}))
        return
    rows = [
        ("outbox", str(settings.outbox.path)),
        ("pending", str(counters.pending)),
        ("oldest pending", _when(counters.oldest_pending_ms)),
        ("queued", str(counters.queued)),
        ("sent", str(counters.sent)),
        ("dropped", str(counters.dropped)),
        ("rejected", str(counters.rejected)),
        ("dead-lettered", f"{counters.dead_lettered} ({counters.dead_letters} batches)"),
    ]
    for name, value in rows:
        out_console.print(f"{name + ':':<16}{escape(value)}", highlight=False, soft_wrap=True)


@edge_app.command("dead-letters")
def dead_letters(
    config: ConfigFile,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many, oldest first.")] = 20,
) -> None:
    """List the batches the platform refused as a whole, with its reason."""
    settings = _config(config)
    try:
        letters = read_dead_letters(settings.outbox.path, limit)
    except OutboxError as err:
        raise fail(str(err)) from None
    if not letters:
        out_console.print("no dead letters")
    for letter in letters:
        out_console.print(
            f"#{letter.id} {_when(letter.at_ms)}: {letter.points} points: {escape(letter.reason)}",
            highlight=False,
            soft_wrap=True,
        )
