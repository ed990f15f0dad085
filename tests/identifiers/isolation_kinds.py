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
}
