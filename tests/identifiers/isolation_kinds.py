"""Entries for `OBJECT_KINDS` in tests/api/test_tenant_isolation.py: the Handle API's routes.

Shaped as keyword arguments of that module's `ObjectKind`, so it can merge them without an import
cycle: `OBJECT_KINDS.update({path: ObjectKind(**kind) for path, kind in IDENTIFIER_KINDS.items()})`.

Resolution is public by design (anyone may resolve a handle's public values, as on any Handle
server), so another tenant's GET succeeds: what must hold is that it never shows B's values that are
not public. `public_read: True` marks that; B's marker lives only in such a value.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from iip.identifiers.service import HandleService

if TYPE_CHECKING:
    from tests.api.test_tenant_isolation import Created, World

HANDLE_ROUTE = "/api/handles/{prefix}/{suffix:path}"
HANDLE_READ = "/api/handles/{prefix}/{suffix}"


def tenant_b_handle(world: World) -> Created:
    """A prefix homed in tenant B and a handle in it whose only non-public value carries the marker."""
    from tests.api.test_tenant_isolation import Created, marker

    mark = marker()
    prefix = f"88.{uuid.uuid4().int % 10**6}.1"
    with world.runtime.db.session() as session:
        HandleService(session).create_prefix(world.tenant_b.id, prefix, "b-prefix-secret", actor="test")
    suffix = f"B-{uuid.uuid4().hex[:8]}"
    values = [
        {"index": 1, "type": "URL", "data": {"format": "string", "value": "https://b.example.com/item"}},
        {"index": 2, "type": "NOTE", "data": {"format": "string", "value": mark}, "permissions": "1100"},
    ]
    world.as_b("PUT", f"/api/handles/{prefix}/{suffix}", {"values": values})
    # Another spelling of the same handle: lookup is case-insensitive.
    return Created({"prefix": prefix, "suffix": suffix}, mark, aliases=({"prefix": prefix, "suffix": suffix.lower()},))


def tenant_b_handle_with_attributes(world: World) -> Created:
    """A handle of tenant B whose attributes carry the marker."""
    created = tenant_b_handle(world)
    path = ATTRIBUTES_ROUTE.replace("{suffix:path}", "{suffix}").format_map(created.params)
    world.as_b("PUT", path, {"template": None, "attributes": {"note": created.marker}})
    return created


ATTRIBUTES_ROUTE = "/api/identifiers/{prefix}/{suffix:path}/attributes"
# Templates are the same for every tenant: nothing of one tenant is named by these. Recursive
# resolution is public, as resolution is.
PUBLIC_ROUTES: frozenset[str] = frozenset({"/api/identifier-templates/{name}", "/api/resolve/{handle:path}"})


def tenant_b_filing(world: World) -> Created:
    """A pending filing of tenant B (under a parent prefix homed here); the company name is the marker."""
    from tests.api.test_tenant_isolation import Created, marker

    mark = marker()
    parent = f"86.{uuid.uuid4().int % 10**6}"
    with world.runtime.db.session() as session:
        HandleService(session).create_prefix(world.tenant_b.id, parent, "node-prefix-secret", actor="test")
    company = {
        "name": mark,
        "credit_code": "91350100M000100Y43",
        "address": "福州市",
        "contact_name": "李四",
        "contact_phone": "0591-0000000",
        "industry": "C34",
    }
    body = {"prefix": f"{parent}.1", "parent": parent, "company": company, "secret": "b-filing-secret"}
    filing = world.as_b("POST", "/api/filings", body)
    return Created({"filing_id": filing["id"]}, mark)


FILING = "/api/filings/{filing_id}"


def tenant_b_delegation(world: World) -> Created:
    """A prefix of tenant B delegated to a child node whose URL carries the marker."""
    from iip.identifiers.delegation import DelegationService
    from iip.kernel.settings import NodeRole
    from tests.api.test_tenant_isolation import Created, marker

    mark = marker()
    parent = f"87.{uuid.uuid4().int % 10**6}"
    with world.runtime.db.session() as session:
        HandleService(session).create_prefix(world.tenant_b.id, parent, "node-prefix-secret", actor="test")
        DelegationService(session).delegate(
            world.tenant_b.id,
            f"{parent}.1",
            f"https://{mark}.example.com",
            bytes(32),
            role=NodeRole.SECONDARY,
            actor="test",
        )
    return Created({"prefix": f"{parent}.1"}, mark)


DELEGATION = "/api/delegations/{prefix}"

REPLACEMENT = {"values": [{"index": 1, "type": "URL", "data": {"format": "string", "value": "https://a.example.com"}}]}

IDENTIFIER_KINDS: dict[str, dict[str, Any]] = {
    HANDLE_ROUTE: {
        "create": tenant_b_handle,
        "read": HANDLE_READ,
        "bodies": {"PUT": REPLACEMENT},
        # The platform operator's DELETE removes the handle, so the re-read cannot show the change.
        "control_changes": False,
        "public_read": True,
    },
    ATTRIBUTES_ROUTE: {
        "create": tenant_b_handle_with_attributes,
        "read": ATTRIBUTES_ROUTE,
        "bodies": {"PUT": {"template": "part", "attributes": {"part_number": "P-1", "supplier": "A"}}},
    },
    # Filings: one route each for reading, approving and rejecting.
    FILING: {"create": tenant_b_filing, "read": FILING},
    f"{FILING}/approve": {"create": tenant_b_filing, "read": FILING},
    f"{FILING}/reject": {"create": tenant_b_filing, "read": FILING, "bodies": {"POST": {"reason": "rejected by A"}}},
    # The platform operator's DELETE withdraws the delegation, so the re-read cannot show the change.
    DELEGATION: {"create": tenant_b_delegation, "read": DELEGATION, "control_changes": False},
    # Console pages: a record (B's marker is in a value only its tenant may read) and filing decisions.
    "/identifiers/records/{prefix}/{suffix:path}": {"create": tenant_b_handle, "read": HANDLE_READ},
    "/identifiers/filings/{filing_id}/approve": {"create": tenant_b_filing, "read": FILING},
    "/identifiers/filings/{filing_id}/reject": {
        "create": tenant_b_filing,
        "read": FILING,
        "bodies": {"POST": {"reason": "rejected by A"}},
    },
}
