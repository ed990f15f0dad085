"""What other contexts may use of `identifiers`: the handles other documents name, and links to add to ours.

Handles. Another context meets an IIP identifier written as a URI: `hdl:88.118.8/X`, the Handle
System proxy `https://hdl.handle.net/88.118.8/X`, or a Handle REST URL `https://<host>/api/handles/88.118.8/X`
(this platform's, or any Handle server's: the path is HANDLE.NET's REST API). `handle_named_by`
says which handle such a URI names; `HandleName.key` is the lower-case form lookups use.

Link sources. A context that knows more about an identifier than we do (traceability: its events)
registers a `LinkSource` in its lifespan with `register_link_source`. Given a session, an
identifier (a GS1 Digital Link on id.gs1.org without data attributes, or `hdl:prefix/suffix`) and
the tenant that owns it here, a source answers extra links. The GS1 resolver adds them to a key's
linkset and follows one on a `linkType` redirect when the key has no link of that type itself; a
handle's console record page shows them. A source must be cheap (an indexed lookup): the resolver
asks it on linkset and `linkType` requests, never on a plain scan.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from iip.identifiers.codec import HandleName, InvalidHandle, parse_handle

if TYPE_CHECKING:  # kept out of the import: the EPCIS codec reads handles in capture worker processes
    from sqlalchemy.orm import Session

    from iip.kernel.runtime import Runtime

__all__ = [
    "ExtraLink",
    "HandleName",
    "InvalidHandle",
    "LinkSource",
    "extra_links",
    "handle_named_by",
    "register_link_source",
    "unregister_link_source",
]

logger = logging.getLogger(__name__)

HANDLE_SCHEME = "hdl:"
HANDLE_PROXIES = frozenset({"hdl.handle.net"})  # the Handle System's global HTTP proxy
HANDLE_API_PATH = "/api/handles/"
LINK_SOURCES_SERVICE = "identifiers.link_sources"  # the registered sources in `Runtime.services`
# What text in a handle form starts with (a user and a port may precede the proxy's path).
_HANDLE_FORM = re.compile(
    r"hdl:|https?://(?:[^/?#@]*@)?(?:hdl\.handle\.net(?::\d*)?/|[^/?#]*/api/handles/)", re.IGNORECASE
)


def handle_named_by(text: str) -> HandleName | None:
    """The handle a URI names in one of the handle forms (see the module doc); None for any other text.

    The suffix is percent-decoded; a query string or fragment (`?noredirect`, `?index=1`) is not part
    of the name. Raises `InvalidHandle` for a URI in a handle form that names no valid handle.
    """
    value = text.strip()
    if _HANDLE_FORM.match(value) is None:  # most text is not: answer it without parsing a URL
        return None
    head = value[:8].lower()
    if head.startswith(HANDLE_SCHEME):
        name = value[len(HANDLE_SCHEME) :].split("?", 1)[0].split("#", 1)[0]
    elif head.startswith(("http://", "https://")):
        parts = urlsplit(value)
        if (parts.hostname or "").lower() in HANDLE_PROXIES:
            name = parts.path[1:]
        elif parts.path.startswith(HANDLE_API_PATH):
            name = parts.path[len(HANDLE_API_PATH) :]
        else:
            return None
    else:
        return None
    return parse_handle(unquote(name))


@dataclass(frozen=True, slots=True)
class ExtraLink:
    """A link a source adds to an identifier's own."""

    link_type: str  # e.g. "gs1:traceability"
    href: str  # an absolute URL, or a path on this platform ("/traceability/trace?epc=...")
    title: str = ""  # a message id the console translates
    permission: str | None = None  # what a console user needs to follow it; None: anyone
    media_type: str = ""
    language: str = ""


LinkSource = Callable[["Session", str, str], Sequence[ExtraLink]]  # (session, identifier, tenant id) -> links


def register_link_source(runtime: Runtime, source: LinkSource) -> None:
    sources: list[LinkSource] = runtime.services.setdefault(LINK_SOURCES_SERVICE, [])
    if source not in sources:
        sources.append(source)


def unregister_link_source(runtime: Runtime, source: LinkSource) -> None:
    sources: list[LinkSource] = runtime.services.get(LINK_SOURCES_SERVICE, [])
    if source in sources:
        sources.remove(source)


def extra_links(runtime: Runtime, session: Session, identifier: str, tenant_id: str) -> list[ExtraLink]:
    """What every registered source adds for an identifier of a tenant; a failing source adds nothing.

    Each source runs in a savepoint, so one that fails leaves the request's transaction usable.
    """
    found: list[ExtraLink] = []
    for source in list(runtime.services.get(LINK_SOURCES_SERVICE, ())):
        try:
            with session.begin_nested():
                found.extend(source(session, identifier, tenant_id))
        except Exception:  # another context's fault must not break resolution
            logger.exception("link source %r failed for %s", source, identifier)
    return found
