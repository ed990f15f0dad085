"""`iip id verify HANDLE`, `iip id node-key`: record signatures and the node's signing key."""

from __future__ import annotations

import base64
import json
from typing import Annotated

import typer

from iip.cli.context import fail, out_console, state, unit_of_work
from iip.identifiers.codec import parse_handle
from iip.identifiers.signing import ALGORITHM, key_path, load_node_key, register, verify_handle


def use_node_key(ctx: typer.Context) -> None:
    """Records written by `iip id` commands are signed with the key in the data dir (callback of `iip id`)."""
    register(state(ctx).settings)


def verify_command(
    ctx: typer.Context,
    handle: Annotated[str, typer.Argument(help="prefix/suffix")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Check a record's signature; exit 0 when it holds, 1 when it fails or cannot be checked."""
    settings = state(ctx).settings
    with unit_of_work(ctx) as session:
        result = verify_handle(session, load_node_key(settings, create=False), parse_handle(handle))
    if as_json:
        body = {"handle": result.handle, "ok": result.ok, "reason": result.reason, "key_id": result.key_id}
        typer.echo(json.dumps(body, ensure_ascii=False))
        if not result.ok:
            raise typer.Exit(1)
        return
    if not result.ok:
        raise fail(f"{result.handle}: signature check failed: {result.reason}")
    out_console.print(f"{result.handle}: signature ok (node key {result.key_id})")


def node_key_command(ctx: typer.Context) -> None:
    """Show the node's public signing key, creating the key in the data dir if there is none."""
    settings = state(ctx).settings
    try:
        key = load_node_key(settings, create=True)
    except OSError as err:
        raise fail(f"cannot write {key_path(settings)}: {err.strerror}") from None
    out_console.print(f"{ALGORITHM} key {key.key_id} ({key_path(settings)})")
    out_console.print(f"public key (raw, base64): {base64.b64encode(key.public_bytes).decode()}")
    typer.echo(key.public_pem, nl=False)
