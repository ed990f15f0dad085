"""What commands share: settings built once, the database, readable errors, audit of CLI actions."""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape

# SQLAlchemy and the kernel's database code are imported where used: `iip --help`, `--version` and
# commands that touch no database do not pay for them.
if TYPE_CHECKING:
    from rich.progress import Progress
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.orm import Session

    from iip.kernel.db import Database
    from iip.kernel.settings import Settings

err_console = Console(stderr=True)
out_console = Console()


@dataclass
class CliState:
    settings: Settings
    _db: Database | None = field(default=None, repr=False)

    @property
    def db(self) -> Database:
        from iip.kernel.db import Database

        if self._db is None:
            try:
                self.settings.ensure_data_dir()
            except OSError as err:
                raise fail(f"cannot use the data dir {self.settings.data_dir} (IIP_DATA_DIR): {err.strerror}") from None
            self._db = Database(self.settings.effective_database_url)
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.dispose()
            self._db = None


def state(ctx: typer.Context) -> CliState:
    obj = ctx.find_root().obj
    if not isinstance(obj, CliState):
        raise RuntimeError("the root callback did not build the CLI state")
    return obj


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one readable line to stderr and return an Exit to raise."""
    line = " ".join(message.split())  # driver messages span lines (psycopg adds a hint line)
    err_console.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def database_problem(db: Database, err: DBAPIError) -> str:
    """The driver's own message, without SQLAlchemy's statement dump and link."""
    from sqlalchemy.exc import OperationalError

    what = "database unavailable" if isinstance(err, OperationalError) else "database error"
    message = f"{what} ({db.engine.url.render_as_string(hide_password=True)}): {err.orig}"
    if getattr(err.orig, "sqlstate", None) == "42P01" or "no such table" in str(err.orig):
        message += "; run `iip db upgrade` first"
    return message


def cli_principal() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"cli:{user}@{socket.gethostname()}"


@contextmanager
def unit_of_work(ctx: typer.Context, action: str | None = None) -> Iterator[Session]:
    """A transaction for one command; domain and database errors become one-line messages.

    With `action`, a refused command is audited too (in its own transaction, since the command's
    own one is rolled back).
    """
    from sqlalchemy.exc import DBAPIError

    from iip.kernel.errors import DomainError

    db = state(ctx).db
    try:
        with db.session() as session:
            yield session
    except DomainError as err:
        if action is not None:
            with db.session() as session:
                record(session, action, outcome="failure", detail=err.message)
        raise fail(err.message) from None
    except DBAPIError as err:
        raise fail(database_problem(db, err)) from None


def record(
    session: Session,
    action: str,
    *,
    object_type: str = "",
    object_id: str = "",
    tenant_id: str | None = None,
    outcome: str = "success",
    detail: str = "",
) -> None:
    """Append a CLI action to the audit log (inside the command's transaction)."""
    from iip.kernel import audit

    audit.append(
        session,
        cli_principal(),
        audit.AuditRecord(
            action=f"cli {action}",
            outcome=outcome,
            object_type=object_type,
            object_id=object_id,
            detail=detail,
            source="cli",
        ),
        tenant_id=tenant_id,
    )


def progress_bar() -> Progress:
    """A progress bar on stderr (stdout stays clean for scripts); hidden when stderr is not a terminal."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,
    )
