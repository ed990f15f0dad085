"""Entries for `OBJECT_KINDS` in tests/api/test_tenant_isolation.py: the device registry's routes.

Shaped as keyword arguments of that module's `ObjectKind`, so it can merge them without an import
cycle: `OBJECT_KINDS.update({path: ObjectKind(**kind) for path, kind in DEVICE_KINDS.items()})`.
Objects are named by id; their name or key is an alias that only finds them in their own tenant.
"""

from __future__ import annotations

import random
import uuid
from typing import TYPE_CHECKING, Any

from iip.devices.polling import SERVICE_KEY as POLLING_SERVICE

if TYPE_CHECKING:
    from tests.api.test_tenant_isolation import Created, World

PROFILE = "/api/device-profiles/{profile}"
GATEWAY = "/api/gateways/{gateway}"
DEVICE = "/api/devices/{device}"
METRICS = [{"name": "flow", "unit": "m3/h"}]


def tenant_b_profile(world: World) -> Created:
    """A profile of tenant B whose description is the marker."""
    from tests.api.test_tenant_isolation import Created, marker

    mark = marker()
    body = {"name": f"p-{uuid.uuid4().hex[:8]}", "description": mark, "protocol": "http", "metrics": METRICS}
    profile = world.as_b("POST", "/api/device-profiles", body)
    return Created({"profile": profile["id"]}, mark, aliases=({"profile": profile["name"]},))


def tenant_b_gateway(world: World) -> Created:
    """A gateway of tenant B, named by the marker, with a token (so that a revocation would show)."""
    from tests.api.test_tenant_isolation import Created, marker

    mark = marker()
    gateway = world.as_b("POST", "/api/gateways", {"key": f"gw-{uuid.uuid4().hex[:8]}", "name": mark})
    return Created({"gateway": gateway["id"]}, mark, aliases=({"gateway": gateway["key"]},))


def tenant_b_device(world: World) -> Created:
    """A device of tenant B, its display name the marker, with a token (so that a revocation would show)."""
    from tests.api.test_tenant_isolation import Created

    profile = tenant_b_profile(world)
    name = world.as_b("GET", f"/api/device-profiles/{profile.params['profile']}")["name"]
    body = {"key": f"d-{uuid.uuid4().hex[:8]}", "profile": name, "display_name": profile.marker}
    device = world.as_b("POST", "/api/devices", body)
    return Created({"device": device["id"]}, profile.marker, aliases=({"device": device["key"]},))


DEVICE_KINDS: dict[str, dict[str, Any]] = {
    # The platform operator's DELETE removes the object, so the re-read cannot show the change.
    PROFILE: {
        "create": tenant_b_profile,
        "read": PROFILE,
        "bodies": {"PUT": {"name": "changed-by-a", "protocol": "http", "metrics": METRICS}},
        "control_changes": False,
    },
    GATEWAY: {
        "create": tenant_b_gateway,
        "read": GATEWAY,
        "bodies": {"PATCH": {"name": "changed by A"}},
        "control_changes": False,
    },
    f"{GATEWAY}/token": {"create": tenant_b_gateway, "read": GATEWAY},
    DEVICE: {
        "create": tenant_b_device,
        "read": DEVICE,
        "bodies": {"PATCH": {"display_name": "changed by A"}},
        "control_changes": False,
    },
    f"{DEVICE}/token": {"create": tenant_b_device, "read": DEVICE},
}


def tenant_b_commanded_device(world: World) -> Created:
    """A simulated device of tenant B, polled by this process, with one command in its history.

    Polled so that the platform operator's command (the walk's control) is acknowledged. The
    marker is the command's value, which only the history shows.
    """
    from tests.api.test_tenant_isolation import Created

    value = round(random.uniform(10, 90), 6)  # noqa: S311 - a marker, not a secret
    metrics = [{"name": "setpoint", "unit": "bar", "writable": True}]
    profile = {"name": f"p-{uuid.uuid4().hex[:8]}", "protocol": "simulated", "metrics": metrics}
    world.as_b("POST", "/api/device-profiles", profile)
    device = world.as_b("POST", "/api/devices", {"key": f"d-{uuid.uuid4().hex[:8]}", "profile": profile["name"]})
    portal = world.client.portal
    assert portal is not None
    portal.call(world.runtime.services[POLLING_SERVICE].refresh)
    command = world.as_b("POST", f"/api/devices/{device['key']}/commands", {"metric": "setpoint", "value": value})
    params = {"device": device["id"], "command_id": command["id"]}
    return Created(params, repr(value), aliases=({"device": device["key"], "command_id": command["id"]},))


COMMAND_BODY = {"metric": "setpoint", "value": 3.25}
DEVICE_KINDS.update(
    {
        f"{DEVICE}/commands": {
            "create": tenant_b_commanded_device,
            "read": f"{DEVICE}/commands",
            "bodies": {"POST": COMMAND_BODY},
        },
        "/api/commands/{command_id}": {"create": tenant_b_commanded_device, "read": f"{DEVICE}/commands"},
    }
)

# The console's pages name objects the same way (by id; key or name within one's own tenant).
DEVICE_KINDS.update(
    {
        "/devices/profiles/{profile}": {"create": tenant_b_profile, "read": PROFILE},
        "/devices/{device}": {"create": tenant_b_device, "read": DEVICE},
        "/devices/{device}/commands": {
            "create": tenant_b_commanded_device,
            "read": f"{DEVICE}/commands",
            "bodies": {"POST": {"metric": "setpoint", "value": "3.25"}},
        },
    }
)
