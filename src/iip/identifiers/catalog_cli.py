"""`iip id import FILE` (bulk registration from CSV or JSON lines) and `iip id search`."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from iip.cli.context import fail, out_console, progress_bar, unit_of_work
from iip.identifiers import catalog
from iip.kernel.auth import AccessService, Principal, Role

IMPORT_CHUNK = 10_000
MAX_ERRORS_SHOWN = 50


OPTIMIZE_AFTER = 10_000  # handles imported at once, past which the search index is merged again


def _line_count(path: Path) -> int:
    with path.open("rb") as source:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: source.read(1 << 20), b""))


def import_command(
    ctx: typer.Context,
    file: Annotated[
        Path, typer.Argument(help="CSV with a header (handle,url,template,attr.<name>,value.<TYPE>) or JSON lines.")
    ],
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant name (must own the prefixes).")],
    file_format: Annotated[
        str, typer.Option("--format", help="csv or jsonl; by default from the file name (.jsonl, .ndjson: JSON lines).")
    ] = "",
) -> None:
    """Register the handles of a file, all or none; bad rows are listed by line number."""
    if not file.is_file():
        raise fail(f"no such file: {file}")
    kind = file_format or ("jsonl" if file.suffix.lower() in {".jsonl", ".ndjson", ".json"} else "csv")
    if kind not in {"csv", "jsonl"}:
        raise fail(f"unknown format '{kind}': expected csv or jsonl")
    total = max(_line_count(file) - (1 if kind == "csv" else 0), 0)
    with unit_of_work(ctx, "identifiers.handle.import") as session, file.open(encoding="utf-8-sig", newline="") as src:
        t = AccessService(session).tenant_by_name(tenant)
        # The operator at the console acts for the tenant named, as an administrator of it.
        actor = Principal("cli", "cli", "cli", t.id, Role.ADMIN)
        rows = catalog.csv_rows(src) if kind == "csv" else catalog.json_line_rows(src)
        registration = catalog.BulkRegistration(session, actor, source="cli")
        try:
            with progress_bar() as progress:
                task = progress.add_task(f"importing {file.name}", total=total)
                while chunk := list(itertools.islice(rows, IMPORT_CHUNK)):
                    registration.add(chunk)
                    progress.advance(task, len(chunk))
        except BaseException:
            registration.close()  # its writer thread is done with the session before the rollback
            raise
        try:
            count = registration.finish()
        except catalog.BatchRejected as err:
            for error in err.errors[:MAX_ERRORS_SHOWN]:
                out_console.print(f"line {error.line}: {error.handle} {error.message}", highlight=False, markup=False)
            if len(err.errors) > MAX_ERRORS_SHOWN:
                out_console.print(f"... and {len(err.errors) - MAX_ERRORS_SHOWN} more")
            raise
    out_console.print(f"registered {count} handles from {file.name}")
    if count >= OPTIMIZE_AFTER:
        with unit_of_work(ctx) as session:
            if catalog.optimize_search_index(session):
                out_console.print("search index optimised")


def optimize_search_command(ctx: typer.Context) -> None:
    """Merge the full-text search index (SQLite), as an import of many handles does by itself."""
    with unit_of_work(ctx) as session:
        done = catalog.optimize_search_index(session)
    out_console.print("search index optimised" if done else "nothing to do: PostgreSQL's index needs no merging")


def search_command(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="Words of the handle, URL or attribute values.")] = "",
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant name.")] = "",
    prefix: Annotated[str | None, typer.Option("--prefix")] = None,
    template: Annotated[str | None, typer.Option("--template")] = None,
    attributes: Annotated[list[str] | None, typer.Option("--attr", help="NAME=VALUE, repeatable.")] = None,
    page: Annotated[int, typer.Option("--page", min=1)] = 1,
    page_size: Annotated[int, typer.Option("--page-size", min=1, max=500)] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Search the handles of a tenant (all tenants without --tenant)."""
    wanted = {}
    for item in attributes or []:
        name, eq, value = item.partition("=")
        if not eq:
            raise typer.BadParameter(f"'{item}': expected NAME=VALUE")
        wanted[name] = value
    with unit_of_work(ctx) as session:
        if tenant:
            actor = Principal("cli", "cli", "cli", AccessService(session).tenant_by_name(tenant).id, Role.VIEWER)
        else:
            actor = Principal("cli", "cli", "cli", "", Role.PLATFORM_OPERATOR)
        query_spec = catalog.SearchQuery(query, prefix, template, wanted, page, page_size)
        found = catalog.search(session, query_spec, actor)
        items = [(row.handle, catalog.url_of(row), row.template, row.attributes) for row in found.items]
    if as_json:
        body = {
            "total": found.total,
            "total_exact": found.total_exact,
            "items": [{"handle": h, "url": u, "template": t, "attributes": a} for h, u, t, a in items],
        }
        typer.echo(json.dumps(body, ensure_ascii=False, indent=2))
        return
    table = Table(
        "handle", "url", "template", "attributes", title=f"{found.total}{'' if found.total_exact else '+'} found"
    )
    for handle, url, template_name, attrs in items:
        table.add_row(handle, url or "", template_name or "", json.dumps(attrs, ensure_ascii=False))
    out_console.print(table)
