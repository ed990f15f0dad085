"""`iip security pcap|assets|baseline|advisories|honeypot|monitor|bulletins`.

`pcap` reads a capture file and needs no database. The others act for the tenant named, as an
administrator of it; importing advisories and publishing bulletins act as the platform operator.
`honeypot` runs the decoy PLC and `monitor` watches an interface live, in the foreground until
interrupted. Alerts a `baseline check` stores reach the alarms context only through the API (the
CLI has no bus): they are listed at once in the console and the API. `monitor` publishes its new
alerts on the bus the settings name when that is NATS (`IIP_BUS`); the in-process bus of a CLI run
reaches no one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from sqlalchemy.orm import Session

from iip.cli.context import cli_principal, fail, out_console, state, unit_of_work

if TYPE_CHECKING:
    from iip.kernel.auth import Principal
    from iip.security.bulletins import BulletinService
    from iip.security.service import SecurityService

security_app = typer.Typer(
    help="ICS security: captures, assets, baselines, honeypot, advisories, bulletins.", no_args_is_help=True
)
assets_app = typer.Typer(help="The asset inventory: list, import a CSV.", no_args_is_help=True)
baseline_app = typer.Typer(
    help="Baselines: learn one from a capture, check a capture against it.", no_args_is_help=True
)
bulletins_app = typer.Typer(help="Early-warning bulletins: list, publish.", no_args_is_help=True)
advisories_app = typer.Typer(help="Security advisories (CSAF): import a directory, match assets.", no_args_is_help=True)
security_app.add_typer(assets_app, name="assets")
security_app.add_typer(baseline_app, name="baseline")
security_app.add_typer(bulletins_app, name="bulletins")
security_app.add_typer(advisories_app, name="advisories")

Tenant = Annotated[str, typer.Option("--tenant", help="Tenant name.")]
Site = Annotated[str, typer.Option("--site", help="The site (network) within the tenant.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
CaptureArg = Annotated[Path, typer.Argument(help="A pcap or pcapng file.")]
InboxOf = Annotated[
    str | None, typer.Option("--tenant", help="A tenant's inbox; without it, every bulletin (platform operator).")
]


def _actor(session: Session, tenant: str | None, *, platform: bool) -> Principal:
    from iip.kernel.auth import AccessService, Principal, Role

    who = cli_principal().removeprefix("cli:")
    if platform:
        return Principal("cli", who, who, "", Role.PLATFORM_OPERATOR)
    found = AccessService(session).tenant_by_name(tenant or "")
    return Principal("cli", who, who, found.id, Role.ADMIN)


def _service(ctx: typer.Context, session: Session, tenant: str | None, *, platform: bool = False) -> SecurityService:
    from iip.security.service import SecurityService

    return SecurityService(session, _actor(session, tenant, platform=platform), settings=state(ctx).settings)


def _bulletins(ctx: typer.Context, session: Session, tenant: str | None, *, platform: bool = False) -> BulletinService:
    from iip.security.bulletins import BulletinService

    return BulletinService(session, _actor(session, tenant, platform=platform), settings=state(ctx).settings)


def _read(path: Path, limit: int) -> bytes:
    try:
        if path.stat().st_size > limit:
            raise fail(f"{path}: larger than {limit // (1024 * 1024)} MiB")
        return path.read_bytes()
    except OSError as err:
        raise fail(f"cannot read {path}: {err.strerror}") from None


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, ensure_ascii=False, indent=2, default=str))


# --- pcap


def message_record(message: Any) -> dict[str, Any]:
    """One decoded ICS message as a JSON object (raw bytes as hex)."""
    return {
        "frame": message.frame,
        "time": message.time.isoformat() if message.time else None,
        "protocol": message.protocol.value,
        "direction": message.direction.value,
        "source": f"{message.source.host}:{message.source.port}",
        "destination": f"{message.destination.host}:{message.destination.port}",
        "unit": message.unit,
        "function": message.function,
        "function_name": message.function_name,
        "transaction": message.transaction,
        "address": message.address,
        "quantity": message.quantity,
        "values": message.values,
        "exception": message.exception,
        "exception_name": message.exception_name,
        "malformed": message.malformed,
        "fields": message.fields,
        "raw": message.raw.hex(),
    }


@security_app.command("pcap")
def pcap_command(
    file: CaptureArg,
    records: Annotated[bool, typer.Option("--records", help="Print every ICS message as a JSON line.")] = False,
    as_json: AsJson = False,
) -> None:
    """Decode a capture: packets, messages per protocol, malformed frames and drops by reason, hosts seen."""
    from iip.security.captures import decode_capture

    if not file.is_file():
        raise fail(f"{file}: no such file")

    def emit(_packet: Any, messages: list[Any]) -> None:
        for message in messages:
            typer.echo(json.dumps(message_record(message), ensure_ascii=False, default=str))

    summary = decode_capture(file, [emit] if records else [])
    if records:
        return
    document = {
        "file": str(file),
        "frames": summary.frames,
        "ip_packets": summary.packets,
        "messages": dict(summary.messages),
        "malformed": dict(summary.malformed),
        "dropped": dict(summary.dropped),
        "first_time": summary.first_time.isoformat() if summary.first_time else None,
        "last_time": summary.last_time.isoformat() if summary.last_time else None,
        "hosts": [{"address": a.address, "role": a.role, "protocols": a.protocols} for a in summary.assets],
        "error": summary.error,
    }
    if as_json:
        _print_json(document)
    else:
        table = Table("what", "count")
        table.add_row("frames", str(summary.frames))
        table.add_row("IP packets", str(summary.packets))
        for protocol, count in sorted(summary.messages.items()):
            table.add_row(f"{protocol} messages", str(count))
        for reason, count in summary.malformed.most_common():
            table.add_row(f"malformed: {escape(reason)}", str(count))
        for reason, count in summary.dropped.most_common():
            table.add_row(f"dropped: {escape(reason)}", str(count))
        table.add_row("hosts", str(len(summary.assets)))
        out_console.print(table)
        if summary.error:
            out_console.print(f"[yellow]stopped early:[/] {escape(summary.error)}")
    if summary.error and summary.frames == 0:
        raise typer.Exit(1)


# --- assets


@assets_app.command("list")
def assets_list(ctx: typer.Context, tenant: Tenant, site: Annotated[str | None, typer.Option("--site")] = None,
                as_json: AsJson = False) -> None:  # fmt: skip
    """The tenant's assets: observed, declared and imported."""
    from iip.security.service import AssetFilter

    with unit_of_work(ctx) as session:
        rows = _service(ctx, session, tenant).list_assets(where=AssetFilter(site=site))
        items: list[dict[str, Any]] = [
            {
                "site": r.site,
                "address": r.address,
                "name": r.name,
                "role": r.role,
                "vendor": r.vendor,
                "model": r.model,
                "firmware": r.firmware,
                "protocols": r.protocols,
                "criticality": r.criticality,
                "source": r.source,
                "last_seen": r.last_seen.isoformat() if r.last_seen else None,
            }
            for r in rows
        ]
    if as_json:
        _print_json(items)
        return
    table = Table("site", "address", "name", "role", "vendor / model / firmware", "protocols", "criticality", "source")
    for i in items:
        table.add_row(
            escape(i["site"]), i["address"], escape(i["name"]), escape(i["role"]),
            escape(" / ".join(v for v in (i["vendor"], i["model"], i["firmware"]) if v)),
            ", ".join(i["protocols"]), i["criticality"], i["source"],
        )  # fmt: skip
    out_console.print(table)


@assets_app.command("import")
def assets_import(ctx: typer.Context, file: Annotated[Path, typer.Argument(help="A CSV file.")], tenant: Tenant,
                  site: Site = "") -> None:  # fmt: skip
    """Declared assets from CSV (address, name, vendor, model, firmware, role, criticality, owner): all rows or none."""
    content = _read(file, 8 * 1024 * 1024)
    with unit_of_work(ctx, "security.assets.import") as session:
        rows = _service(ctx, session, tenant).import_assets_csv(content, site=site)
    typer.echo(f"imported {len(rows)} assets")


# --- baselines


@baseline_app.command("learn")
def baseline_learn(ctx: typer.Context, file: CaptureArg, tenant: Tenant, site: Site = "",
                   rate_window: Annotated[float, typer.Option("--rate-window", min=0.1)] = 10.0) -> None:  # fmt: skip
    """Learn a new baseline version for the site from a capture of normal traffic (it becomes active)."""
    from iip.security import ingest

    content = _read(file, ingest.MAX_CAPTURE_BYTES)
    with unit_of_work(ctx, "security.baseline.learn") as session:
        result = ingest.upload(
            _service(ctx, session, tenant), content, file.name, site=site, learn=True, rate_window_s=rate_window
        )
        assert result.baseline is not None  # noqa: S101 - learn=True always answers one
        version, summary = result.baseline.version, result.baseline.summary
    typer.echo(f"baseline version {version} of site '{site}': " + ", ".join(f"{k} {v}" for k, v in summary.items()))


@baseline_app.command("check")
def baseline_check(
    ctx: typer.Context, file: CaptureArg, tenant: Tenant, site: Site = "", as_json: AsJson = False
) -> None:
    """Check a capture against the site's active baseline; the alerts are stored and printed."""
    from iip.security import ingest

    content = _read(file, ingest.MAX_CAPTURE_BYTES)
    with unit_of_work(ctx, "security.baseline.check") as session:
        result = ingest.upload(_service(ctx, session, tenant), content, file.name, site=site, check=True)
        items: list[dict[str, Any]] = [
            {
                "id": a.id,
                "kind": a.kind,
                "severity": a.severity,
                "techniques": a.techniques,
                "source": a.source,
                "destination": a.destination,
                "count": a.count,
                "first_time": a.first_time.isoformat(),
                "message": a.message,
            }
            for a in result.alerts
        ]
    if as_json:
        _print_json(items)
        return
    table = Table("severity", "kind", "ATT&CK", "source", "destination", "count")
    for i in items:
        table.add_row(
            i["severity"], i["kind"], ", ".join(i["techniques"]), i["source"], i["destination"], str(i["count"])
        )
    out_console.print(table)
    typer.echo(f"{len(items)} alerts")


# --- bulletins


@bulletins_app.command("list")
def bulletins_list(ctx: typer.Context, tenant: InboxOf = None, as_json: AsJson = False) -> None:
    """Bulletins with their recipients' progress, or one tenant's inbox."""
    with unit_of_work(ctx) as session:
        items: list[dict[str, Any]]
        if tenant is None:
            service = _bulletins(ctx, session, None, platform=True)
            items = [
                {
                    "id": b.id, "title": b.title, "severity": b.severity, "published_at": b.published_at.isoformat(),
                    "deadline": b.deadline.isoformat() if b.deadline else None,
                    "recipients": len(rs), "acknowledged": sum(r.acknowledged_at is not None for r in rs),
                    "done": sum(r.remediation in ("done", "not_applicable") for r in rs),
                    "overdue": sum(service.overdue(r, b) for r in rs),
                }
                for b, rs in service.list_bulletins()
            ]  # fmt: skip
        else:
            items = [
                {
                    "id": v.bulletin.id, "title": v.bulletin.title, "severity": v.bulletin.severity,
                    "published_at": v.bulletin.published_at.isoformat(),
                    "acknowledged": v.recipient.acknowledged_at is not None,
                    "remediation": v.recipient.remediation, "overdue": v.overdue,
                }
                for v in _bulletins(ctx, session, tenant).inbox()
            ]  # fmt: skip
    if as_json:
        _print_json(items)
        return
    for item in items:
        typer.echo("  ".join(f"{k}={v}" for k, v in item.items()))


@bulletins_app.command("publish")
def bulletins_publish(
    ctx: typer.Context,
    title: Annotated[str, typer.Option("--title")],
    severity: Annotated[str, typer.Option("--severity", help="low, medium, high, critical")],
    kind: Annotated[str, typer.Option("--kind", help="advisory or warning")] = "warning",
    body_zh: Annotated[str, typer.Option("--body-zh")] = "",
    body_en: Annotated[str, typer.Option("--body-en")] = "",
    advisory: Annotated[str | None, typer.Option("--advisory", help="The advisory's tracking id.")] = None,
    cves: Annotated[list[str] | None, typer.Option("--cve", help="A CVE id (repeatable).")] = None,
    deadline: Annotated[str | None, typer.Option("--deadline", help="ISO 8601 with a zone.")] = None,
    tenants: Annotated[
        list[str] | None, typer.Option("--to", help="A tenant name (repeatable); default: the affected.")
    ] = None,
) -> None:
    """Publish a bulletin as the platform operator (webhooks and e-mail go out when the platform delivers them)."""
    import datetime as dt

    from iip.kernel.auth import AccessService

    due = None
    if deadline:
        try:
            due = dt.datetime.fromisoformat(deadline)
        except ValueError:
            raise fail(f"--deadline: '{deadline}' is not an ISO 8601 time") from None
        if due.tzinfo is None:
            raise fail("--deadline: give the time with a zone, e.g. 2026-02-01T00:00:00+08:00")
    with unit_of_work(ctx, "security.bulletins.publish") as session:
        service = _bulletins(ctx, session, None, platform=True)
        tenant_ids = [AccessService(session).tenant_by_name(t).id for t in tenants] if tenants else None
        bulletin = service.publish_bulletin(
            kind=kind, title=title, severity=severity, body_zh=body_zh, body_en=body_en, advisory_ref=advisory,
            cves=cves or [], deadline=due, tenant_ids=tenant_ids,
        )  # fmt: skip
        bulletin_id, pending = bulletin.id, list(service.deliveries)
    if pending:
        import asyncio

        from iip.kernel.bus import MemoryBus
        from iip.kernel.runtime import Runtime
        from iip.security.delivery import deliver

        st = state(ctx)
        outcomes = asyncio.run(deliver(Runtime(settings=st.settings, db=st.db, bus=MemoryBus()), pending))
        failed = [o.error for o in outcomes.values() if not o.ok]
        for error in failed:
            out_console.print(f"[yellow]not delivered:[/] {escape(error)}")
    typer.echo(f"published bulletin {bulletin_id}")


# --- advisories


@advisories_app.command("import")
def advisories_import(
    ctx: typer.Context, directory: Annotated[Path, typer.Argument(help="A directory of CSAF JSON files.")]
) -> None:
    """Import every CSAF advisory under the directory (as the platform operator); unreadable files are listed."""
    from iip.security import ingest

    if not directory.is_dir():
        raise fail(f"{directory}: not a directory")
    with unit_of_work(ctx, "security.advisories.import") as session:
        stored, refused = ingest.import_advisory_directory(_service(ctx, session, None, platform=True), directory)
        count = len(stored)
    for reason in refused:
        out_console.print(f"[yellow]refused:[/] {escape(reason)}", highlight=False, soft_wrap=True)
    typer.echo(f"imported {count} advisories, refused {len(refused)}")


@advisories_app.command("match")
def advisories_match(ctx: typer.Context, tenant: Tenant, as_json: AsJson = False) -> None:
    """Match the tenant's assets (vendor, model, firmware) against every stored advisory."""
    from iip.security import ingest

    with unit_of_work(ctx, "security.advisories.match") as session:
        service = _service(ctx, session, tenant)
        ingest.match_tenant(service)
        items: list[dict[str, Any]] = [
            {
                "address": v.asset.address,
                "advisory": v.advisory.tracking_id,
                "status": v.match.status,
                "max_cvss": v.match.max_cvss,
                "cves": v.match.cves,
                "resolution": v.match.resolution,
            }
            for v in service.list_matches()
        ]
    if as_json:
        _print_json(items)
        return
    table = Table("address", "advisory", "status", "CVSS", "CVEs", "resolution")
    for i in items:
        cvss = "-" if i["max_cvss"] is None else f"{i['max_cvss']:.1f}"
        table.add_row(i["address"], i["advisory"], i["status"], cvss, ", ".join(i["cves"][:5]), i["resolution"] or "-")
    out_console.print(table)
    typer.echo(f"{len(items)} matches")


# --- honeypot


@security_app.command("intel")
def intel_command(
    ctx: typer.Context,
    tenant: Annotated[
        str | None,
        typer.Option("--tenant", help="What this tenant sees; without it, every entry with its sources (operator)."),
    ] = None,
    days: Annotated[float | None, typer.Option("--days", min=0.001, help="Seen within the last days.")] = None,
    as_json: AsJson = False,
) -> None:
    """The platform's threat intelligence: every address a decoy saw, most recent first."""
    import datetime as dt

    with unit_of_work(ctx) as session:
        service = _service(ctx, session, tenant, platform=tenant is None)
        since = service.clock() - dt.timedelta(days=days) if days else None
        items: list[dict[str, Any]] = [
            {
                "address": e.address, "first_seen": e.first_seen.isoformat(), "last_seen": e.last_seen.isoformat(),
                "sightings": e.sightings, "protocols": e.protocols, "counts": e.counts, "notable": e.notable,
                **({"sources": [{"tenant": s.tenant_name, "sightings": s.sightings,
                                 "last_seen": s.last_seen.isoformat()} for s in e.sources]} if tenant is None else {}),
            }
            for e in service.shared_indicators(since=since)
        ]  # fmt: skip
    if as_json:
        _print_json(items)
        return
    columns = ["address", "last seen", "sightings", "protocols", "notable"] + (["sources"] if tenant is None else [])
    table = Table(*columns)
    for i in items:
        cells = [i["address"], i["last_seen"][:19], str(i["sightings"]), ", ".join(i["protocols"]),
                 escape(", ".join(i["notable"]) or "-")]  # fmt: skip
        if tenant is None:
            cells.append(escape(", ".join(f"{s['tenant']} ({s['sightings']})" for s in i["sources"])))
        table.add_row(*cells)
    out_console.print(table)


@security_app.command("honeypot")
def honeypot_command(
    ctx: typer.Context,
    tenant: Tenant,
    seed: Annotated[str, typer.Option("--seed", help="Makes the decoy's identity and values its own.")],
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "0.0.0.0",  # noqa: S104 - a decoy is meant to be reached
    modbus_port: Annotated[int, typer.Option("--modbus-port", min=0, max=65535, help="0: none.")] = 502,
    s7_port: Annotated[int, typer.Option("--s7-port", min=0, max=65535, help="0: none.")] = 102,
    flush: Annotated[float, typer.Option("--flush", min=0.1, help="Seconds between writes of sightings.")] = 5.0,
) -> None:
    """Run the decoy PLC (Modbus/TCP and S7comm) until interrupted; visitors become the tenant's indicators."""
    import asyncio

    from iip.kernel.auth import AccessService
    from iip.security.decoy import run_recording_decoy
    from iip.security.honeypot.server import HoneypotConfig, RunningHoneypot

    db = state(ctx).db
    with unit_of_work(ctx) as session:
        tenant_id = AccessService(session).tenant_by_name(tenant).id
    config = HoneypotConfig(
        seed=seed, host=host, modbus_port=modbus_port or None, s7_port=s7_port or None
    )  # fmt: skip

    def started(decoy: RunningHoneypot) -> None:
        identity = decoy.identity
        typer.echo(
            f"decoy {identity.vendor} {identity.model} listening: modbus {decoy.modbus_port or '-'}, "
            f"s7 {decoy.s7_port or '-'}; Ctrl-C stops it"
        )

    async def main() -> int:
        stop = asyncio.Event()
        recorder = await run_recording_decoy(db, tenant_id, config, stop, flush_s=flush, started=started)
        return recorder.recorded

    try:
        recorded = asyncio.run(main())
    except KeyboardInterrupt:
        recorded = -1
    except OSError as err:
        raise fail(f"cannot listen: {err.strerror or err}") from None
    if recorded >= 0:
        typer.echo(f"recorded {recorded} sightings")


# --- live monitoring


@security_app.command("monitor")
def monitor_command(
    ctx: typer.Context,
    interface: Annotated[str, typer.Argument(help="The network interface, e.g. eth1 (needs root or CAP_NET_RAW).")],
    tenant: Tenant,
    site: Site = "",
    seconds: Annotated[
        float | None, typer.Option("--seconds", min=0.1, help="Stop after this long; default: until Ctrl-C.")
    ] = None,
    flush: Annotated[float, typer.Option("--flush", min=0.1, help="Seconds between writes of hosts and alerts.")] = 1.0,
) -> None:
    """Watch an interface live: hosts into the inventory, alerts against the site's active baseline."""
    import asyncio

    from iip.kernel.auth import AccessService
    from iip.kernel.bus import create_bus
    from iip.security.monitor import LiveMonitor, monitor_limits
    from iip.security.publishing import publish_alert_events

    st = state(ctx)
    with unit_of_work(ctx) as session:
        tenant_id = AccessService(session).tenant_by_name(tenant).id

    def started(monitor: LiveMonitor) -> None:
        version = monitor.state.baseline_version
        against = f"baseline version {version}" if version else "no active baseline: inventory only"
        until = f"for {seconds:g} s" if seconds else "until Ctrl-C"
        typer.echo(f"monitoring {interface} for site '{site}' ({against}), {until}")

    async def main() -> LiveMonitor:
        bus = create_bus(st.settings.bus) if st.settings.bus != "memory" else None
        if bus is not None:
            await bus.start()

        async def publish(events: Any) -> None:
            if bus is not None:
                await publish_alert_events(bus, events)

        limits, detection = monitor_limits(st.settings.security)
        monitor = LiveMonitor(
            st.db, tenant_id, site, publish=publish, flush_s=flush, detection=detection, limits=limits,
            settings=st.settings,
        )  # fmt: skip
        stop = asyncio.Event()
        if seconds:
            asyncio.get_running_loop().call_later(seconds, stop.set)
        try:
            await monitor.run(interface, stop, started=started)
        finally:
            if bus is not None:
                await bus.close()
        return monitor

    try:
        monitor = asyncio.run(main())
    except KeyboardInterrupt:
        return
    except OSError as err:
        raise fail(f"cannot capture on {interface}: {err.strerror or err}") from None
    summary, done = monitor.summary, monitor.state
    messages = ", ".join(f"{p} {n}" for p, n in sorted(summary.messages.items())) or "no ICS messages"
    typer.echo(f"{summary.packets} packets ({messages}), {sum(summary.malformed.values())} malformed")
    typer.echo(f"{done.hosts_written} host updates, {done.new_alerts} new alerts ({done.findings_written} findings)")
    if done.error:
        raise fail(f"stopped early: {done.error}")
