"""`iip id prefix delegate|undelegate`, and `iip id resolve --recursive`."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Annotated

import typer
from rich.table import Table

from iip.cli.context import fail, out_console, record, state, unit_of_work
from iip.identifiers.codec import DEFAULT_TTL, HandleValue, load_values, parse_handle, select_values
from iip.identifiers.delegation import DelegationService, parse_public_key
from iip.identifiers.upstream import build_resolver, fetch_node_key
from iip.kernel.auth import AccessService
from iip.kernel.errors import DomainError


def delegate_command(
    ctx: typer.Context,
    prefix: Annotated[str, typer.Argument(help="The prefix to delegate, e.g. 88.118.8")],
    node_url: Annotated[str, typer.Option("--node-url", help="REST base URL of the node homing it.")],
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant the delegation belongs to.")],
    public_key: Annotated[
        str | None, typer.Option("--public-key", help="Its Ed25519 key (raw, base64); default: from its /api/node/key.")
    ] = None,
    ttl: Annotated[int, typer.Option("--ttl", min=0, help="TTL of the referral values, seconds.")] = DEFAULT_TTL,
) -> None:
    """Delegate a prefix to the child node homing it; run again after the child rotates its key."""
    settings = state(ctx).settings
    node_url = node_url.rstrip("/")
    try:
        key = (
            parse_public_key(public_key)
            if public_key
            else fetch_node_key(node_url, timeout=settings.identifiers.resolver_timeout)
        )
    except DomainError as err:
        raise fail(err.message) from None
    with unit_of_work(ctx, "identifiers.prefix.delegate") as session:
        t = AccessService(session).tenant_by_name(tenant)
        delegated = DelegationService(session).delegate(
            t.id, prefix, node_url, key, role=settings.identifiers.role, actor="cli", ttl=ttl
        )
        record(session, "identifiers.prefix.delegate", object_type="prefix", object_id=delegated.prefix, tenant_id=t.id)
    out_console.print(
        f"prefix {delegated.prefix} delegated to {delegated.node_url} (key {base64.b64encode(key).decode()})"
    )


def undelegate_command(
    ctx: typer.Context, prefix: Annotated[str, typer.Argument(help="A prefix delegated from this node.")]
) -> None:
    """Withdraw a delegation: this node stops referring resolutions to the child."""
    with unit_of_work(ctx, "identifiers.prefix.undelegate") as session:
        removed = DelegationService(session).undelegate(prefix, actor="cli")
        record(session, "identifiers.prefix.undelegate", object_type="prefix", object_id=removed.prefix)
    out_console.print(f"prefix {removed.prefix} no longer delegated (was {removed.node_url})")


def resolve_recursively(ctx: typer.Context, handle: str, types: list[str], as_json: bool) -> None:
    """Resolve from the root node down (IIP_IDENTIFIERS__ROOT_URL), checking every signature."""
    st = state(ctx)
    try:
        name = parse_handle(handle)
        result = asyncio.run(build_resolver(st.settings, st.db).resolve(name))
    except DomainError as err:
        raise fail(err.message) from None
    values: list[HandleValue] = select_values(load_values(result.values), types, [])
    if as_json:
        body = {
            "responseCode": 1 if values else 200,
            "handle": result.handle,
            "values": [v.to_wire() for v in values],
            "node": result.node,
            "keyId": result.key_id,
            "referrals": [{"prefix": h.prefix, "node": h.node} for h in result.referrals],
        }
        typer.echo(json.dumps(body, ensure_ascii=False, indent=2))
        return
    table = Table("index", "type", "value")
    for v in values:
        shown = str(v.data.value) if v.data.format == "string" else json.dumps(v.data.value, ensure_ascii=False)
        table.add_row(str(v.index), v.type, shown)
    out_console.print(table)
    out_console.print(f"answered by {result.node}, signature checked with key {result.key_id}")
