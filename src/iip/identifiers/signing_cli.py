"""`iip id verify HANDLE`, `iip id node-key`: record signatures and the node's signing key."""

from __future__ import annotations

import base64
import json
from typing import Annotated

import typer

from iip.cli.context import err_console, fail, out_console, record, state, unit_of_work
from iip.identifiers.codec import parse_handle
from iip.identifiers.repository import HandleRepository
from iip.identifiers.signing import (
    ALGORITHM,
    NodeKey,
    key_path,
    load_node_key,
    register,
    resign_records,
    rotate_node_key,
    verify_handle,
)


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


def node_key_command(
    ctx: typer.Context,
    rotate: Annotated[
        bool,
        typer.Option("--rotate", help="Make a new key and sign every record again (those the old key vouches for)."),
    ] = False,
) -> None:
    """Show the node's public signing key, creating the key in the data dir if there is none."""
    settings = state(ctx).settings
    try:
        key = rotate_key(ctx) if rotate else load_node_key(settings, create=True)
    except OSError as err:
        raise fail(f"cannot write {key_path(settings)}: {err.strerror}") from None
    out_console.print(f"{ALGORITHM} key {key.key_id} ({key_path(settings)})")
    out_console.print(f"public key (raw, base64): {base64.b64encode(key.public_bytes).decode()}")
    typer.echo(key.public_pem, nl=False)


def rotate_key(ctx: typer.Context) -> NodeKey:
    """A new key; records re-signed; the parent node must delegate again to publish the new key."""
    settings = state(ctx).settings
    with unit_of_work(ctx, "identifiers.node_key.rotate") as session:
        old, new = rotate_node_key(settings)
        result = resign_records(session, old, new)
        detail = f"{old.key_id if old else 'none'} -> {new.key_id}; {result.resigned} records re-signed"
        record(session, "identifiers.node_key.rotate", object_type="node_key", object_id=new.key_id, detail=detail)
        homed = [p.prefix for p in HandleRepository(session).prefixes(None) if not p.node_url]
    out_console.print(f"rotated: {detail}")
    for handle in result.skipped:
        err_console.print(f"not re-signed (its signature already failed): {handle}")
    if homed:
        new_key = base64.b64encode(new.public_bytes).decode()
        out_console.print("ask the parent node to delegate again, so that resolvers learn the new key:")
        for prefix in homed:
            out_console.print(f"  iip id prefix delegate {prefix} --node-url <this node> --public-key {new_key} ...")
    return new
