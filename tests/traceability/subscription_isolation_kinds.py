"""Entries for `OBJECT_KINDS` in tests/api/test_tenant_isolation.py: the EPCIS subscription routes.

Shaped as keyword arguments of that module's `ObjectKind`. Tenant B makes a named query and a
subscription to it whose `dest` carries the marker. Queries are named by id; their name is an alias
that only finds them in their own tenant. B re-reads the query's subscription list, which a
subscription made or removed changes.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.api.test_tenant_isolation import Created, World

SUBSCRIPTIONS = "/epcis/queries/{query_name}/subscriptions"
SUBSCRIPTION = "/epcis/queries/{query_name}/subscriptions/{subscription_id}"
# Port 9 (discard) on the loopback: nothing listens, so deliveries fail and are retried, harmlessly.
NEW_SUBSCRIPTION = {"dest": "http://127.0.0.1:9/made-by-a", "stream": True}


def tenant_b_subscription(world: World) -> Created:
    from tests.api.test_tenant_isolation import Created, marker

    mark = marker()
    query = world.as_b("POST", "/epcis/queries", {"name": f"q-{uuid.uuid4().hex[:12]}", "query": {}})
    subscription = world.as_b(
        "POST", f"/epcis/queries/{query['id']}/subscriptions", {"dest": f"http://127.0.0.1:9/{mark}", "stream": True}
    )
    params = {"query_name": query["id"], "subscription_id": subscription["subscriptionID"]}
    alias = {**params, "query_name": query["name"]}
    return Created(params, mark, aliases=(alias,))


SUBSCRIPTION_KINDS: dict[str, dict[str, Any]] = {
    SUBSCRIPTIONS: {"create": tenant_b_subscription, "read": SUBSCRIPTIONS, "bodies": {"POST": NEW_SUBSCRIPTION}},
    SUBSCRIPTION: {"create": tenant_b_subscription, "read": SUBSCRIPTIONS},
}
