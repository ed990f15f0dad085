"""Entries for `OBJECT_KINDS` in tests/api/test_tenant_isolation.py: the alarms context's routes.

Shaped as keyword arguments of that module's `ObjectKind`, merged like the other contexts' entries:
`OBJECT_KINDS.update({path: ObjectKind(**kind) for path, kind in ALARM_KINDS.items()})`. Alarms are
raised the way evaluation raises them (`AlarmService.apply`), with the marker as their message;
rules carry the marker as their title. Rules are named by id; their key is an alias that only finds
them in their own tenant.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import TYPE_CHECKING, Any

from iip.alarms.rules import ConditionChange
from iip.alarms.service import AlarmService

if TYPE_CHECKING:
    from tests.api.test_tenant_isolation import Created, World

ALARM = "/api/alarms/{alarm_id}"
RULE = "/api/alarm-rules/{rule}"
# PUT replaces a rule by a spec with its own key, and the bodies are fixed: that rule has a fixed key.
SHARED_RULE_KEY = "isolation.shared"


def rule_spec(key: str, title: str, **more: Any) -> dict[str, Any]:
    return {
        "key": key,
        "kind": "threshold",
        "title": title,
        "scope": {"profile": "boiler"},
        "metric": "pressure",
        "high": 1.6,
        **more,
    }


def tenant_b_rule(world: World) -> Created:
    """A rule of tenant B whose title is the marker."""
    from tests.api.test_tenant_isolation import Created, marker

    mark = marker()
    rule = world.as_b("POST", "/api/alarm-rules", rule_spec(f"r-{uuid.uuid4().hex[:10]}", mark))
    return Created({"rule": rule["id"]}, mark, aliases=({"rule": rule["key"]},))


def tenant_b_shared_rule(world: World) -> Created:
    """Tenant B's rule of the fixed key (created, or given a new title if an earlier walk made it)."""
    from tests.api.test_tenant_isolation import Created, marker

    mark = marker()
    headers = world.tenant_b.headers()
    response = world.client.post("/api/alarm-rules", json=rule_spec(SHARED_RULE_KEY, mark), headers=headers)
    if response.status_code == 409:
        response = world.client.put(
            f"/api/alarm-rules/{SHARED_RULE_KEY}", json=rule_spec(SHARED_RULE_KEY, mark), headers=headers
        )
    assert response.is_success, response.text
    return Created({"rule": response.json()["id"]}, mark, aliases=({"rule": SHARED_RULE_KEY},))


def _raise(
    world: World, rule_key: str, device: str, mark: str, *, active: bool = True, at_ms: int | None = None
) -> str:
    change = ConditionChange(
        world.tenant_b.id, rule_key, 1, device, at_ms or time.time_ns() // 1_000_000, active=active, message=mark
    )
    with world.runtime.db.session() as session:
        service = AlarmService(session)
        [applied] = service.apply([change])
        return applied.alarm_id


def tenant_b_alarm(world: World, **rule: Any) -> Created:
    """An active, unacknowledged alarm of tenant B whose message is the marker."""
    from tests.api.test_tenant_isolation import Created, marker

    mark = marker()
    key = f"a-{uuid.uuid4().hex[:10]}"
    world.as_b("POST", "/api/alarm-rules", rule_spec(key, "alarm rule", **rule))
    alarm_id = _raise(world, key, f"dev-{uuid.uuid4().hex[:8]}", mark)
    return Created({"alarm_id": alarm_id}, mark)


def tenant_b_shelved_alarm(world: World) -> Created:
    created = tenant_b_alarm(world)
    world.as_b("POST", f"/api/alarms/{created.params['alarm_id']}/shelve", {"minutes": 60, "reason": "shelved by B"})
    return created


def tenant_b_latched_alarm(world: World) -> Created:
    """A latched alarm of tenant B, acknowledged and returned to normal: waiting for its reset."""
    created = tenant_b_alarm(world, latched=True)
    alarm_id = created.params["alarm_id"]
    alarm = world.as_b("POST", f"/api/alarms/{alarm_id}/acknowledge")
    _raise(
        world, alarm["rule_key"], alarm["device"], created.marker, active=False, at_ms=time.time_ns() // 1_000_000 + 1
    )
    assert world.as_b("GET", f"/api/alarms/{alarm_id}")["state"] == "latched"
    return created


def tenant_b_alarm_out_of_service(world: World) -> Created:
    created = tenant_b_alarm(world)
    world.as_b("POST", f"/api/alarms/{created.params['alarm_id']}/out-of-service", {"comment": "by B"})
    return created


ALARM_KINDS: dict[str, dict[str, Any]] = {
    ALARM: {"create": tenant_b_alarm, "read": ALARM},
    f"{ALARM}/history": {"create": tenant_b_alarm, "read": ALARM},
    f"{ALARM}/acknowledge": {"create": tenant_b_alarm, "read": ALARM, "bodies": {"POST": {"comment": "by A"}}},
    f"{ALARM}/shelve": {"create": tenant_b_alarm, "read": ALARM, "bodies": {"POST": {"minutes": 30, "reason": "A"}}},
    f"{ALARM}/unshelve": {"create": tenant_b_shelved_alarm, "read": ALARM},
    f"{ALARM}/comments": {"create": tenant_b_alarm, "read": ALARM, "bodies": {"POST": {"text": "written by A"}}},
    f"{ALARM}/reset": {"create": tenant_b_latched_alarm, "read": ALARM},
    f"{ALARM}/out-of-service": {"create": tenant_b_alarm, "read": ALARM},
    f"{ALARM}/return-to-service": {"create": tenant_b_alarm_out_of_service, "read": ALARM},
    # The platform operator's DELETE removes the rule, so the re-read cannot show the change.
    RULE: {
        "create": tenant_b_shared_rule,
        "read": RULE,
        "bodies": {"PUT": rule_spec(SHARED_RULE_KEY, "changed by A")},
        "control_changes": False,
    },
    f"{RULE}/enabled": {"create": tenant_b_rule, "read": RULE, "bodies": {"PUT": {"enabled": False}}},
    f"{RULE}/versions": {"create": tenant_b_rule, "read": RULE},
}

# The console pages of the same objects: forms, answered with pages.
PAGE_ALARM = "/alarms/{alarm_id}"
PAGE_RULE = "/alarms/rules/{rule}"
ALARM_KINDS.update(
    {
        PAGE_ALARM: {"create": tenant_b_alarm, "read": ALARM},
        f"{PAGE_ALARM}/acknowledge": {"create": tenant_b_alarm, "read": ALARM, "bodies": {"POST": {"comment": "A"}}},
        f"{PAGE_ALARM}/shelve": {
            "create": tenant_b_alarm,
            "read": ALARM,
            "bodies": {"POST": {"minutes": "30", "reason": "A"}},
        },
        f"{PAGE_ALARM}/unshelve": {"create": tenant_b_shelved_alarm, "read": ALARM},
        f"{PAGE_ALARM}/comments": {"create": tenant_b_alarm, "read": ALARM, "bodies": {"POST": {"text": "by A"}}},
        f"{PAGE_ALARM}/reset": {"create": tenant_b_latched_alarm, "read": ALARM},
        f"{PAGE_ALARM}/out-of-service": {"create": tenant_b_alarm, "read": ALARM},
        f"{PAGE_ALARM}/return-to-service": {"create": tenant_b_alarm_out_of_service, "read": ALARM},
        PAGE_RULE: {
            "create": tenant_b_shared_rule,
            "read": RULE,
            "bodies": {"POST": {"action": "save", "document": json.dumps(rule_spec(SHARED_RULE_KEY, "changed by A"))}},
        },
        f"{PAGE_RULE}/enabled": {"create": tenant_b_rule, "read": RULE, "bodies": {"POST": {"enabled": "false"}}},
    }
)
