"""Entries for `OBJECT_KINDS` in tests/api/test_tenant_isolation.py: the EPCIS query routes.

Shaped as keyword arguments of that module's `ObjectKind`. Tenant B captures, through the API, an
event whose business transaction carries the marker and whose EPC, event type, business step,
disposition, location and read point are its own (URIs no other tenant uses), so each
`/{member}/events` route of that value shows the marker to whoever may read it and is a 404 to
anyone else. Path values never carry the marker: a refusal names the path it refuses.

Named queries are named by id; their name is an alias that only finds them in their own tenant.
A query's description carries the marker; for its events route, its name does (the result
document is named after the query), so that route is walked by id only.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from tests.traceability.query_support import epcis_document

if TYPE_CHECKING:
    from tests.api.test_tenant_isolation import Created, World


def _values() -> dict[str, str]:
    token = uuid.uuid4().hex
    return {
        "event_id": f"urn:uuid:{uuid.uuid4()}",
        "epc": f"urn:example:item:{token}",
        "event_type": f"urn:x:{token[:16]}",
        "biz_step": f"urn:example:step:{token}",
        "disposition": f"urn:example:disp:{token}",
        "biz_location": f"urn:example:place:{token}",
        "read_point": f"urn:example:reader:{token}",
    }


def tenant_b_event(world: World) -> Created:
    from tests.api.test_tenant_isolation import Created, marker

    mark = marker()
    values = _values()
    event = {
        "type": values["event_type"],
        "eventID": values["event_id"],
        "eventTime": "2024-05-01T08:00:00+08:00",
        "eventTimeZoneOffset": "+08:00",
        "action": "OBSERVE",
        "epcList": [values["epc"]],
        "bizStep": values["biz_step"],
        "disposition": values["disposition"],
        "readPoint": {"id": values["read_point"]},
        "bizLocation": {"id": values["biz_location"]},
        "bizTransactionList": [{"type": "po", "bizTransaction": f"urn:example:po:{mark}"}],
    }
    job = world.as_b("POST", "/epcis/capture", epcis_document([event]))
    assert job["success"], job["errors"]
    return Created(values, mark)


def tenant_b_query(world: World) -> Created:
    from tests.api.test_tenant_isolation import Created, marker

    mark = marker()
    definition = {"name": f"q-{uuid.uuid4().hex[:12]}", "query": {"EQ_bizStep": ["shipping"]}, "description": mark}
    created = world.as_b("POST", "/epcis/queries", definition)
    return Created({"query_name": created["id"]}, mark, aliases=({"query_name": created["name"]},))


def tenant_b_query_named_by_marker(world: World) -> Created:
    from tests.api.test_tenant_isolation import Created, marker

    mark = marker()
    created = world.as_b("POST", "/epcis/queries", {"name": mark, "query": {}})
    return Created({"query_name": created["id"]}, mark)


EVENT = "/epcis/events/{event_id:path}"
QUERY = "/epcis/queries/{query_name}"
MEMBER_ROUTES = (
    "/epcis/epcs/{epc:path}/events",
    "/epcis/eventTypes/{event_type:path}/events",
    "/epcis/bizSteps/{biz_step:path}/events",
    "/epcis/dispositions/{disposition:path}/events",
    "/epcis/bizLocations/{biz_location:path}/events",
    "/epcis/readPoints/{read_point:path}/events",
)

# Where B re-reads its event: a query document is dated when written, a list of B's places is not.
PLACES = "/epcis/bizLocations?perPage=1000"

QUERY_KINDS: dict[str, dict[str, Any]] = {
    **{path: {"create": tenant_b_event, "read": PLACES} for path in (EVENT, *MEMBER_ROUTES)},
    # The platform operator's DELETE removes the query, so the re-read cannot show the change.
    QUERY: {"create": tenant_b_query, "read": QUERY, "control_changes": False},
    f"{QUERY}/events": {"create": tenant_b_query_named_by_marker, "read": QUERY},
}
