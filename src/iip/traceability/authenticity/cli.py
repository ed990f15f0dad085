"""`iip trace codes issue|verify|keys`: anti-counterfeit codes from the command line.

`issue` makes a batch for a tenant (and with `--out`, writes its codes as CSV, `-` for stdout);
`verify` checks a code against the database without recording a scan, or, with `--keys` and a
saved `GET /api/traceability/keys` document, offline; `keys` prints that document.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TextIO

import typer

from iip.cli.context import err_console, fail, out_console, record, state, unit_of_work

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from iip.kernel.auth import Principal
    from iip.traceability.authenticity.geo import Market

codes_app = typer.Typer(help="Anti-counterfeit codes: issue, verify, published keys.", no_args_is_help=True)

Tenant = Annotated[str, typer.Option("--tenant", help="Tenant name.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@codes_app.command("issue")
def issue_command(
    ctx: typer.Context,
    tenant: Tenant,
    gtin: Annotated[str, typer.Option("--gtin", help="GTIN-8, -12, -13 or -14.")],
    count: Annotated[int, typer.Option("--count", min=1, max=100_000, help="How many codes.")],
    lot: Annotated[str | None, typer.Option("--lot", help="Batch/lot (AI 10).")] = None,
    expiry: Annotated[str | None, typer.Option("--expiry", help="Expiry date, YYYY-MM-DD (AI 17).")] = None,
    market: Annotated[
        list[str] | None, typer.Option("--market", help="Intended market: CN, CN-GD, or 'CN-GD 23.13 113.26' (repeat).")
    ] = None,
    multi_use: Annotated[bool, typer.Option("--multi-use", help="Codes may be scanned any number of times.")] = False,
    resolver: Annotated[
        str | None,
        typer.Option("--resolver", help="Base URL of the codes (default: the tenant's policy, else <base URL>/v)."),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write the codes as CSV here ('-': stdout).")] = None,
) -> None:
    """Issue a batch of signed codes for a GTIN."""
    from iip.kernel.errors import Invalid
    from iip.traceability.authenticity.router import VERIFY_PREFIX
    from iip.traceability.authenticity.service import CodeService, IssueRequest

    settings = state(ctx).settings
    try:
        expiry_day = None if expiry is None else dt.date.fromisoformat(expiry)
    except ValueError:
        raise fail(f"--expiry: {expiry!r} is not a date such as 2027-12-31") from None
    markets = [_market(text) for text in market or ()]
    base = settings.identifiers.base_url
    with unit_of_work(ctx, "traceability.codes.issue") as session:
        actor = _principal(session, tenant)
        spec = IssueRequest(gtin, count, lot, expiry_day, markets, not multi_use, resolver)
        if resolver is None and not base and not _policy_resolver(session, actor.tenant_id):
            raise Invalid(
                "no resolver base: give --resolver, set the tenant's code policy, or IIP_IDENTIFIERS__BASE_URL",
                code="no_resolver",
            )
        service = CodeService(session, actor, settings)
        batch = service.issue(spec, default_resolver=(base + VERIFY_PREFIX) if base else "")
        record(
            session,
            "traceability.codes.issue",
            object_type="code_batch",
            object_id=batch.id,
            tenant_id=batch.tenant_id,
            detail=f"{count} codes for GTIN {batch.gtin}" + (f" lot {batch.lot}" if batch.lot else ""),
        )
        if out is not None:
            _write_csv(session, batch.id, out)
    summary = f"issued {batch.count} codes for GTIN {batch.gtin} in batch {batch.id} (key {batch.key_id})"
    (err_console if out is not None and str(out) == "-" else out_console).print(
        summary, highlight=False, soft_wrap=True
    )


def _market(text: str) -> Market:
    from iip.traceability.authenticity import geo

    parts = text.replace(",", " ").split()
    try:
        if len(parts) == 1:
            return geo.Market.of(parts[0])
        if len(parts) == 3:
            return geo.Market.of(parts[0], float(parts[1]), float(parts[2]))
    except (ValueError, geo.PlaceError) as err:
        raise fail(f"--market {text!r}: {err}") from None
    raise fail(f"--market {text!r}: write CN, CN-GD or 'CN-GD 23.13 113.26'")


def _policy_resolver(session: Session, tenant_id: str) -> str:
    from iip.traceability.authenticity.service import policy_of

    return policy_of(session, tenant_id).resolver


def _principal(session: Session, tenant: str) -> Principal:
    from iip.cli.context import cli_principal
    from iip.kernel.auth import AccessService, Principal, Role

    found = AccessService(session).tenant_by_name(tenant)
    who = cli_principal().removeprefix("cli:")
    return Principal("cli", who, who, found.id, Role.ADMIN)


def _write_csv(session: Session, batch_id: str, out: Path) -> None:
    import csv

    from iip.traceability.authenticity.codes import expiry_date
    from iip.traceability.authenticity.models import CodeBatch
    from iip.traceability.authenticity.service import batch_uris

    batch = session.get(CodeBatch, batch_id)
    assert batch is not None  # noqa: S101 - just issued
    expiry = "" if batch.expiry is None else str(expiry_date(batch.expiry))

    def write(stream: TextIO) -> None:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(("uri", "gtin", "serial", "lot", "expiry"))
        for serial, uri in batch_uris(session, batch):
            writer.writerow((uri, batch.gtin, serial, batch.lot or "", expiry))

    if str(out) == "-":
        write(sys.stdout)
        return
    try:
        with out.open("w", encoding="utf-8", newline="") as stream:
            write(stream)
    except OSError as err:
        raise fail(f"cannot write {out}: {err.strerror}") from None


@codes_app.command("verify")
def verify_command(
    ctx: typer.Context,
    uri: Annotated[str, typer.Argument(help="The code (its URI).")],
    keys: Annotated[
        Path | None,
        typer.Option("--keys", help="Check offline against this saved key set (GET /api/traceability/keys)."),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Check a code; exit 0 when it is genuine (offline: when its signature holds), 1 otherwise.

    Online, the answer is the one a scan would get, but no scan is recorded and no alert raised.
    """
    from iip.traceability.authenticity.codes import CodeError, keys_from_jwks, parse_uri, verify_offline

    if keys is not None:
        try:
            document = json.loads(keys.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise fail(f"cannot read the key set {keys}: {err}") from None
        held = verify_offline(uri, keys_from_jwks(document if isinstance(document, dict) else {}))
        try:
            key_id = parse_uri(uri).key_id
        except CodeError as err:
            key_id, reason = "", str(err)
        else:
            reason = "the signature holds" if held else "the signature does not hold under the key set"
        _answer(as_json, {"ok": held, "status": "signed" if held else "unknown", "reason": reason, "key_id": key_id})
        return
    from iip.traceability.authenticity.service import VerificationService

    with unit_of_work(ctx) as session:
        result = VerificationService(session, state(ctx).settings).verify(uri, record=False)
        body = {
            "ok": result.genuine,
            "status": result.status.value,
            "reason": result.reason,
            "gtin": None if result.link is None else result.link.gtin,
            "serial": None if result.link is None else result.link.serial,
            "scan_count": result.scan_count,
        }
    _answer(as_json, body)


def _answer(as_json: bool, body: Mapping[str, object]) -> None:
    if as_json:
        typer.echo(json.dumps(body, ensure_ascii=False))
    else:
        out_console.print(f"{body['status']}: {body['reason']}", highlight=False, soft_wrap=True)
    if not body["ok"]:
        raise typer.Exit(1)


@codes_app.command("keys")
def keys_command(ctx: typer.Context) -> None:
    """Print every tenant's published code signing keys (a JSON Web Key Set) for offline checks."""
    from iip.traceability.authenticity.codes import from_b64url, jwk
    from iip.traceability.authenticity.keys import published_keys

    with unit_of_work(ctx) as session:
        keys = [{**jwk(from_b64url(row.public_key)), "active": row.active} for row in published_keys(session)]
    typer.echo(json.dumps({"keys": keys}, indent=2))
