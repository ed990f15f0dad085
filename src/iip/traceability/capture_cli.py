"""`iip trace capture FILE --tenant NAME [--mode rollback|proceed]`: capture an EPCIS document from a file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from iip.cli.context import err_console, fail, out_console, record, unit_of_work
from iip.kernel.auth import AccessService, Principal, Role

if TYPE_CHECKING:
    from iip.traceability.capture_validation import Syntax

MAX_PROBLEMS_SHOWN = 50
SUFFIXES: dict[str, Syntax] = {".json": "json", ".jsonld": "json", ".xml": "xml"}


def _show(problems: list[dict[str, str]]) -> None:
    for problem in problems[:MAX_PROBLEMS_SHOWN]:
        line = f"{problem['location'] or '/'}: {problem['message']}"
        err_console.print(line, highlight=False, markup=False, soft_wrap=True)
    if len(problems) > MAX_PROBLEMS_SHOWN:
        err_console.print(f"... and {len(problems) - MAX_PROBLEMS_SHOWN} more", highlight=False)


def capture_command(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="An EPCIS document (or one event), JSON/JSON-LD or XML.")],
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant name: the events go to its repository.")],
    mode: Annotated[
        str,
        typer.Option(
            "--mode", help="rollback: one invalid event and nothing is stored; proceed: the valid events are stored."
        ),
    ] = "rollback",
) -> None:
    """Validate, hash and store the events of a document; invalid ones are listed by location."""
    from iip.traceability.capture import MODES, CaptureService, DocumentRejected

    if mode not in MODES:
        raise typer.BadParameter(f"expected one of {', '.join(MODES)}", param_hint="--mode")
    if not file.is_file():
        raise fail(f"no such file: {file}")
    data = file.read_bytes()
    syntax = SUFFIXES.get(file.suffix.lower())  # by content when the name does not say
    with unit_of_work(ctx, "traceability.capture") as session:
        target = AccessService(session).tenant_by_name(tenant)
        # The operator at the console captures for the tenant named, as an engineer of it.
        actor = Principal("cli", "cli", "cli", target.id, Role.ENGINEER)
        try:
            job = CaptureService(session).capture(actor, data, syntax=syntax, mode=mode)
        except DocumentRejected as err:
            _show([{"location": i.location, "message": i.message} for i in err.issues])
            raise
        record(
            session,
            "traceability.capture",
            object_type="capture_job",
            object_id=job.id,
            tenant_id=target.id,
            outcome="success" if job.success else "failure",
            detail=f"{file.name}: {job.captured_count} of {job.event_count} events stored",
        )
    summary = (
        f"capture {job.id}: {job.captured_count} of {job.event_count} events stored, "
        f"{job.duplicate_count} duplicates dropped"
    )
    if job.success:
        out_console.print(summary, highlight=False, soft_wrap=True)
        return
    _show(job.errors)
    what = "nothing stored (rollback)" if mode == "rollback" else f"{len(job.errors)} problems"
    raise fail(f"{summary}; {what}")
