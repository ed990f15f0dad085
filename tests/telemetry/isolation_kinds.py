"""Entries for `OBJECT_KINDS` in tests/api/test_tenant_isolation.py: the device twin's routes.

Shaped as keyword arguments of that module's `ObjectKind`, merged like the identifiers' entries:
`OBJECT_KINDS.update({path: ObjectKind(**kind) for path, kind in TWIN_KINDS.items()})`.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

from iip.telemetry.public import TELEMETRY_POINTS, PointBatchBuilder, store_points
from iip.telemetry.twin import now_ms

if TYPE_CHECKING:
    from tests.api.test_tenant_isolation import Created, World

TWIN = "/api/devices/{device}/twin"


def tenant_b_twin(world: World) -> Created:
    """A device of tenant B that has reported (its reported attribute is the marker) and has a desired value."""
    from tests.api.test_tenant_isolation import Created, marker

    mark = marker()
    device = f"dev-{uuid.uuid4().hex[:10]}"
    builder = PointBatchBuilder(world.tenant_b.id, source="test")
    builder.add(device, "flow", now_ms(), 1.0)
    builder.attribute(device, "note", mark)
    portal = world.client.portal
    assert portal is not None
    portal.call(world.runtime.bus.publish, TELEMETRY_POINTS, builder.build())
    deadline = time.monotonic() + 10
    while mark not in world.client.get(TWIN.format(device=device), headers=world.tenant_b.headers()).text:
        assert time.monotonic() < deadline, "the twin of tenant B's device did not appear"
        time.sleep(0.01)
    world.as_b("PUT", f"{TWIN.format(device=device)}/attributes/desired/setpoint", 1)
    return Created({"device": device, "path": "attributes/reported/note", "name": "setpoint"}, mark)


TWIN_KINDS: dict[str, dict[str, Any]] = {
    TWIN: {"create": tenant_b_twin, "read": TWIN},
    TWIN + "/{path:path}": {"create": tenant_b_twin, "read": TWIN},
    TWIN + "/attributes/desired/{name}": {"create": tenant_b_twin, "read": TWIN, "bodies": {"PUT": {"target": 2}}},
    # A stream: the walker must read it with `client.stream` and stop after the first event.
    TWIN + "/events": {"create": tenant_b_twin, "read": TWIN},
}


def tenant_b_series(world: World) -> Created:
    """A device of tenant B with stored points; the marker is its metric's name."""
    from tests.api.test_tenant_isolation import Created, marker

    mark = marker()
    device = f"dev-{uuid.uuid4().hex[:10]}"
    builder = PointBatchBuilder(world.tenant_b.id, source="test")
    now = now_ms()
    for i in range(3):
        builder.add(device, mark, now - 60_000 * i, float(i))
    store_points(world.runtime, builder.build())
    return Created({"device": device}, mark)


STORE = "/api/telemetry/devices/{device}"
TWIN_KINDS.update(
    {
        f"{STORE}/{view}": {"create": tenant_b_series, "read": f"{STORE}/series"}
        for view in ("series", "points", "buckets", "latest", "export")
    }
)
