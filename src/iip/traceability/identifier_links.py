"""Identifiers that resolve to their trace page: the link source traceability gives `identifiers`.

A GS1 key the resolver answers (or a handle whose console record is shown) gets a
`gs1:traceability` link to the console trace page when the owning tenant's events name it. What is
looked up, in `traceability_event_epc` (its `(tenant_id, epc, role)` index):

- a GTIN alone: the GTIN's canonical Digital Link, or any instance or lot of it (the key range
  `[<gtin>, <gtin>0)`; an SGTIN pattern matches the same);
- a GTIN with a serial: that SGTIN (a lot in the path does not belong to an SGTIN); with a lot
  and no serial: that LGTIN;
- any other key, and a handle (`hdl:`), exactly in its canonical form.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from urllib.parse import urlencode

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from iip.console.web import N_
from iip.identifiers.public import ExtraLink, register_link_source, unregister_link_source
from iip.kernel.runtime import Runtime
from iip.traceability.epcis import identifiers
from iip.traceability.models import EventEpc

TRACE_PAGE = "/traceability/trace"
TRACEABILITY_LINK = "gs1:traceability"  # GS1 Web Vocabulary link type
TRACE_TITLE = N_("View trace")
GTIN = identifiers.DL_BASE + "/01/"


def lookup_form(identifier: str) -> tuple[str, bool] | None:
    """(the canonical identifier events are looked up by, whether what lies under it counts too); None
    for a value that is no identifier events can name."""
    try:
        canonical = identifiers.canonical(identifier.strip())
    except identifiers.IdentifierError:
        return None
    if not canonical.startswith((identifiers.HANDLE_BASE, identifiers.DL_BASE + "/")):
        return None
    if not canonical.startswith(GTIN):
        return canonical, False
    # The path's values stay escaped as the canonical form writes them: /01/{gtin}[/22/..][/10/..][/21/..]
    segments = canonical.removeprefix(GTIN).split("/")
    gtin, pairs = segments[0], dict(zip(segments[1::2], segments[2::2], strict=False))
    qualifier = next((ai for ai in ("21", "10") if ai in pairs), None)
    if qualifier is None:
        return f"{GTIN}{gtin}", True
    return f"{GTIN}{gtin}/{qualifier}/{pairs[qualifier]}", False


def has_events(session: Session, tenant_id: str, epc: str, *, under: bool = False) -> bool:
    """Whether an event of the tenant names `epc` (or, `under`, a GTIN or anything below it), in any role.

    One index range on `(tenant_id, epc)` either way. Below a GTIN, a canonical form goes on with
    "/" (a GTIN has 14 digits), so `[<gtin>, <gtin>0)` holds the GTIN and exactly what lies under it;
    an OR of the two would make SQLite and PostgreSQL read all the tenant's rows.
    """
    named = and_(EventEpc.epc >= epc, EventEpc.epc < epc + "0") if under else EventEpc.epc == epc
    found = session.scalar(select(EventEpc.id).where(EventEpc.tenant_id == tenant_id, named).limit(1))
    return found is not None


def trace_url(epc: str) -> str:
    """The console trace page of an identifier."""
    return f"{TRACE_PAGE}?{urlencode({'epc': epc})}"


def trace_links(session: Session, identifier: str, tenant_id: str) -> Sequence[ExtraLink]:
    """The `LinkSource` given to `identifiers`: a link to the trace page when the tenant's events name it."""
    found = lookup_form(identifier)
    if found is None or not has_events(session, tenant_id, found[0], under=found[1]):
        return ()
    return (ExtraLink(TRACEABILITY_LINK, trace_url(found[0]), title=TRACE_TITLE, permission="traceability.read"),)


@asynccontextmanager
async def identifier_links_lifespan(runtime: Runtime) -> AsyncIterator[None]:
    """Offer `trace_links` to the identifiers context while the platform runs."""
    register_link_source(runtime, trace_links)
    try:
        yield
    finally:
        unregister_link_source(runtime, trace_links)
