"""Entries for `OBJECT_KINDS` in tests/api/test_tenant_isolation.py: the traceability genealogy route.

Shaped as keyword arguments of that module's `ObjectKind`. Tenant B captures a transformation of one
identifier into another (URNs that are no GS1 identifiers are matched as written) whose eventID
carries the marker, so the genealogy of the output shows the marker to whoever may read it.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from tests.traceability.genealogy_support import capture, event

if TYPE_CHECKING:
    from tests.api.test_tenant_isolation import Created, World

GENEALOGY = "/epcis/genealogy/{epc:path}"


def tenant_b_identifier(world: World) -> Created:
    from tests.api.test_tenant_isolation import Created, marker

    mark = marker()
    made = f"urn:example:lot:{uuid.uuid4().hex}"
    transformation = event(
        "TransformationEvent",
        "01T08:00",
        eventID=f"urn:example:event:{mark}",
        inputEPCList=[f"urn:example:lot:{uuid.uuid4().hex}"],
        outputEPCList=[made],
    )
    with world.runtime.db.session() as session:
        capture(session, world.tenant_b.id, [transformation])
    return Created({"epc": made}, mark)


GENEALOGY_KINDS: dict[str, dict[str, Any]] = {
    GENEALOGY: {"create": tenant_b_identifier, "read": GENEALOGY},
}
