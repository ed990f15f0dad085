"""Entries for `OBJECT_KINDS` in tests/api/test_tenant_isolation.py: the notification routes.

Shaped as keyword arguments of that module's `ObjectKind`, so it can merge them without an import
cycle, once the router is mounted:
`OBJECT_KINDS.update({path: ObjectKind(**kind) for path, kind in NOTIFY_KINDS.items()})`.
Objects are named by id; their name is an alias that only finds them in their own tenant.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from tests.alarms.notify.conftest import free_port

if TYPE_CHECKING:
    from tests.api.test_tenant_isolation import Created, World

P = "/api/alarm-notifications"
CHANNEL = f"{P}/channels/{{channel}}"
ROUTE = f"{P}/routes/{{route}}"
CONTACT = f"{P}/contacts/{{contact}}"
DELIVERY = f"{P}/deliveries/{{delivery}}"
ROUTE_CHANNEL = "isolation-channel"  # the channel every route of tenant B names, so a PUT body can too


def _nowhere(path: str = "hook") -> str:
    """A webhook URL nobody listens on: a test message to it fails at once, without leaving the machine."""
    return f"http://127.0.0.1:{free_port()}/{path}"


def _name(kind: str) -> str:
    # Not the marker: a name is echoed by the answer for a name that is not found.
    return f"{kind}-{uuid.uuid4().hex[:10]}"


def tenant_b_channel(world: World) -> Created:
    """A webhook channel of tenant B whose URL carries the marker."""
    from tests.api.test_tenant_isolation import Created, marker

    mark = marker()
    body = {"kind": "webhook", "name": _name("channel"), "url": _nowhere(mark)}
    channel = world.as_b("POST", f"{P}/channels", body)
    return Created({"channel": channel["id"]}, mark, aliases=({"channel": channel["name"]},))


def _route_channel(world: World) -> None:
    found = world.client.get(f"{P}/channels/{ROUTE_CHANNEL}", headers=world.tenant_b.headers())
    if found.status_code == 404:
        world.as_b("POST", f"{P}/channels", {"kind": "webhook", "name": ROUTE_CHANNEL, "url": _nowhere()})


def tenant_b_route(world: World) -> Created:
    """A route of tenant B for the site named by the marker."""
    from tests.api.test_tenant_isolation import Created, marker

    _route_channel(world)
    mark = marker()
    route = world.as_b("POST", f"{P}/routes", {"name": _name("route"), "sites": [mark], "channels": [ROUTE_CHANNEL]})
    return Created({"route": route["id"]}, mark, aliases=({"route": route["name"]},))


def tenant_b_contact(world: World) -> Created:
    """A contact of tenant B at the site named by the marker."""
    from tests.api.test_tenant_isolation import Created, marker

    mark = marker()
    body = {"name": _name("contact"), "email": "b@example.com", "role": "shift_engineer", "site": mark}
    contact = world.as_b("POST", f"{P}/contacts", body)
    return Created({"contact": contact["id"]}, mark, aliases=({"contact": contact["name"]},))


def tenant_b_delivery(world: World) -> Created:
    """A (failed) test message of tenant B whose text is the marker."""
    from tests.api.test_tenant_isolation import Created, marker

    channel = tenant_b_channel(world)
    mark = marker()
    delivery = world.as_b("POST", f"{P}/channels/{channel.params['channel']}/test", {"message": mark})
    return Created({"delivery": delivery["id"]}, mark)


NOTIFY_KINDS: dict[str, dict[str, Any]] = {
    # The platform operator's DELETE removes the object, so the re-read cannot show the change.
    CHANNEL: {
        "create": tenant_b_channel,
        "read": CHANNEL,
        "bodies": {"PATCH": {"enabled": False}},
        "control_changes": False,
    },
    f"{CHANNEL}/secret": {"create": tenant_b_channel, "read": CHANNEL, "control_changes": False},
    f"{CHANNEL}/test": {"create": tenant_b_channel, "read": CHANNEL, "control_changes": False},
    ROUTE: {
        "create": tenant_b_route,
        "read": ROUTE,
        "bodies": {"PUT": {"name": "changed-by-a", "channels": [ROUTE_CHANNEL]}},
        "control_changes": False,
    },
    CONTACT: {
        "create": tenant_b_contact,
        "read": CONTACT,
        "bodies": {"PATCH": {"site": "changed by A"}},
        "control_changes": False,
    },
    DELIVERY: {"create": tenant_b_delivery, "read": DELIVERY},
}
