"""`iip`: the root command. Module command groups are mounted from the registry."""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import Annotated

import typer

from iip import __version__
from iip.cli.context import CliState, database_problem, err_console, fail, out_console, state
from iip.kernel.module import discover_modules
from iip.kernel.settings import SettingsError, load_settings

# Open event streams (twin changes) would otherwise hold a shutdown until every client leaves.
GRACEFUL_SHUTDOWN_S = 5


class HttpServer(StrEnum):
    UVICORN = "uvicorn"
    GRANIAN = "granian"


app = typer.Typer(
    name="iip",
    help="IIP, an open industrial internet platform.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")


def _version(value: bool) -> None:
    if value:
        out_console.print(f"iip {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Settings come from IIP_* environment variables (see README)."""
    try:
        ctx.obj = CliState(settings=load_settings())
    except SettingsError as err:
        raise fail(str(err), code=2) from None
    # Release pooled connections when the command ends (matters when the CLI runs in-process).
    ctx.call_on_close(ctx.obj.close)


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context, revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply the database migrations."""
    from sqlalchemy.exc import DBAPIError

    from iip.migrations.runner import upgrade

    st = state(ctx)
    try:
        with err_console.status(f"applying migrations to {revision}"):
            upgrade(st.db, revision)
    except DBAPIError as err:
        raise fail(f"migration failed: {database_problem(st.db, err)}") from None
    except Exception as err:  # noqa: BLE001 - one readable line for any migration failure
        raise fail(f"migration failed: {type(err).__name__}: {err}") from None
    out_console.print(f"database at revision {revision} ({st.db.backend})")


@db_app.command("current")
def db_current(ctx: typer.Context) -> None:
    """Show the applied revision."""
    from sqlalchemy.exc import DBAPIError

    from iip.migrations.runner import current_revision

    db = state(ctx).db
    try:
        revision = current_revision(db)
    except DBAPIError as err:
        raise fail(database_problem(db, err)) from None
    out_console.print(revision or "(empty)")


@app.command("run")
def run(
    ctx: typer.Context,
    demo: Annotated[bool, typer.Option(help="Create the demo tenant and login once, and load demo data.")] = False,
    host: Annotated[str | None, typer.Option(help="Override IIP_HOST.")] = None,
    port: Annotated[int | None, typer.Option(help="Override IIP_PORT.")] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Server processes sharing the port (one per core); each builds its own app, "
            "so events cross workers only on a shared bus (IIP_BUS=nats://...).",
        ),
    ] = 1,
    server: Annotated[
        HttpServer,
        typer.Option(help="HTTP server: uvicorn, or granian (Rust HTTP stack, more resolutions per core)."),
    ] = HttpServer.UVICORN,
) -> None:
    """Apply migrations and serve the API and console."""
    import uvicorn
    from sqlalchemy.exc import DBAPIError

    from iip.api.app import create_app
    from iip.kernel.runtime import Runtime
    from iip.migrations.runner import upgrade

    st = state(ctx)
    settings = st.settings
    if host or port:
        settings = settings.model_copy(update={k: v for k, v in {"host": host, "port": port}.items() if v})
    try:
        upgrade(st.db, "head")
    except DBAPIError as err:
        raise fail(f"cannot prepare the database: {database_problem(st.db, err)}") from None
    except Exception as err:  # noqa: BLE001
        raise fail(f"cannot prepare the database: {type(err).__name__}: {err}") from None
    # The serving process also runs connectivity (MQTT ingest, polling) unless the settings say
    # otherwise; with several workers each would connect with the same client id, so they do not.
    switches = {"mqtt_enabled": workers == 1, "polling_enabled": workers == 1, "simulate_plant": demo and workers == 1}
    chosen = settings.devices.model_fields_set
    devices = settings.devices.model_copy(update={k: v for k, v in switches.items() if k not in chosen})
    settings = settings.model_copy(update={"devices": devices})
    runtime = Runtime.build(settings)
    if demo:
        from iip.cli.demo import ensure_demo

        login = ensure_demo(runtime)
        out_console.print(f"demo login: [bold]{login.username}[/] / [bold]{login.password}[/] (tenant {login.tenant})")
    url = f"http://{settings.host}:{settings.port}"
    out_console.print(f"IIP {__version__} on [bold]{url}[/]  (console {url}/ , API docs {url}/docs)")
    if server is HttpServer.GRANIAN:
        runtime.db.dispose()
        serve_with_granian(settings.host, settings.port, workers)
        return
    if workers > 1:
        runtime.db.dispose()
        uvicorn.run(
            "iip.api.app:app_from_environment",
            factory=True,
            workers=workers,
            # A new worker answers the supervisor only once Python and uvicorn are loaded; uvicorn's
            # 5 s default restarts workers in a loop on a busy machine.
            timeout_worker_healthcheck=60,
            host=settings.host,
            port=settings.port,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        )
        return
    app_ = create_app(runtime=runtime)
    uvicorn.run(
        app_,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )


def serve_with_granian(host: str, port: int, workers: int) -> None:
    try:
        from granian.constants import Interfaces, Loops
        from granian.server import Server
    except ImportError:
        raise fail("granian is not installed: pip install 'iip[granian]'") from None
    # Each worker builds the app from IIP_* settings, as uvicorn's workers do.
    Server(
        "iip.api.app:app_from_environment",
        factory=True,
        interface=Interfaces.ASGI,
        address=host,
        port=port,
        workers=workers,
        loop=Loops.auto,
        websockets=False,
        log_access=False,
        respawn_failed_workers=True,
    ).serve()


def _mount_modules() -> None:
    for module in discover_modules():
        for name, group in module.cli.items():
            app.add_typer(group, name=name)


_mount_modules()


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


__all__ = ["app", "main"]
