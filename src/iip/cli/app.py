"""`iip`: the root command. Context command groups are listed from the registry and imported when run."""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import Annotated

import typer
from typer import _click as click  # typer bundles its own click; its groups take these types
from typer.core import TyperGroup
from typer.models import TyperInfo

from iip import __version__
from iip.cli.context import CliState, database_problem, err_console, fail, out_console, state
from iip.kernel.module import CommandGroup, discover_command_groups

# Open event streams (twin changes) would otherwise hold a shutdown until every client leaves.
GRACEFUL_SHUTDOWN_S = 5


class HttpServer(StrEnum):
    UVICORN = "uvicorn"
    GRANIAN = "granian"


class DeclaredGroup(TyperGroup):
    """A context's command group as `iip --help` lists it: its name and help, its Typer app not imported."""

    def __init__(self, name: str, declared: CommandGroup) -> None:
        super().__init__(name=name, help=declared.help)
        self.declared = declared


class RootGroup(TyperGroup):
    """The root command: its own commands, then every context's groups, each imported only when run.

    `iip --help` lists a group from its declaration; running it, or asking for its help, imports the
    Typer app the declaration names.
    """

    LISTING = "iip.listing"  # ctx.meta key, set while the help of the root is written

    def _add_context_groups(self) -> None:
        if getattr(self, "_context_groups_added", False):
            return
        self._context_groups_added = True
        for name, group in discover_command_groups().items():
            if name in self.commands:
                continue
            # A context without a manifest has built its Typer app already.
            self.commands[name] = (
                DeclaredGroup(name, group) if isinstance(group, CommandGroup) else self._mount(name, group)
            )

    def _mount(self, name: str, group: typer.Typer) -> click.Command:
        # As `app.add_typer(group, name=name)` would have mounted it.
        return typer.main.get_group_from_info(
            TyperInfo(group, name=name, options_metavar=self.options_metavar or "[OPTIONS]"),
            pretty_exceptions_short=app.pretty_exceptions_short,
            rich_markup_mode=self.rich_markup_mode,
            suggest_commands=self.suggest_commands,
        )

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._add_context_groups()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        self._add_context_groups()
        command = super().get_command(ctx, cmd_name)
        if isinstance(command, DeclaredGroup) and not ctx.meta.get(self.LISTING):
            command = self.commands[cmd_name] = self._mount(cmd_name, command.declared.load())
        return command

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        ctx.meta[self.LISTING] = True
        try:
            super().format_help(ctx, formatter)
        finally:
            del ctx.meta[self.LISTING]


app = typer.Typer(
    cls=RootGroup,
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
    from iip.kernel.settings import SettingsError, load_settings

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


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


__all__ = ["app", "main"]
