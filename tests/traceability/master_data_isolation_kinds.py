"""Entries for `OBJECT_KINDS` in tests/api/test_tenant_isolation.py: the master data read API.

Tenant B captures a document whose header names a business location only it uses, with the marker as
the location's name; the element's route shows the marker to whoever may read it and is a 404 to
anyone else.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from tests.traceability.query_support import epcis_document

if TYPE_CHECKING:
    from tests.api.test_tenant_isolation import Created, World

LOCATION = "urn:epcglobal:epcis:vtype:BusinessLocation"
NAME = "urn:epcglobal:cbv:mda#name"


def tenant_b_location(world: World) -> Created:
    from tests.api.test_tenant_isolation import Created, marker

    mark = marker()
    place = f"urn:example:place:{uuid.uuid4().hex}"
    event = {
        "type": "ObjectEvent",
        "eventTime": "2024-05-01T08:00:00+08:00",
        "eventTimeZoneOffset": "+08:00",
        "action": "OBSERVE",
        "epcList": [f"urn:example:item:{uuid.uuid4().hex}"],
        "bizLocation": {"id": place},
    }
    document = epcis_document([event])
    element = {"id": place, "attributes": [{"id": NAME, "attribute": mark}]}
    document["epcisHeader"] = {
        "epcisMasterData": {"vocabularyList": [{"type": LOCATION, "vocabularyElementList": [element]}]}
    }
    job = world.as_b("POST", "/epcis/capture", document)
    assert job["success"], job["errors"]
    return Created({"element_id": place}, mark)


MASTER_DATA_KINDS: dict[str, dict[str, Any]] = {
    "/api/traceability/masterdata/{element_id:path}": {
        "create": tenant_b_location,
        "read": "/api/traceability/masterdata?type=BusinessLocation",
    },
}
