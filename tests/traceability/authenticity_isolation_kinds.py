"""Entries for `OBJECT_KINDS` in tests/api/test_tenant_isolation.py: anti-counterfeit code routes.

Shaped as keyword arguments of that module's `ObjectKind`. A batch of tenant B carries the marker
as its lot (19 characters of GS1's set 82), so its JSON, its CSV export and its console page show
it; a mark carries it as its reason. `PUBLIC_ROUTES` lists the consumer's verification page, which
names a code rather than a tenant's object and answers anyone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.api.test_tenant_isolation import Created, World

BATCH = "/api/traceability/code-batches/{batch_id}"
MARK = "/api/traceability/code-marks/{mark_id}"
GTIN = "09506000134352"


def tenant_b_batch(world: World) -> Created:
    from tests.api.test_tenant_isolation import Created, marker

    mark = marker()
    batch = world.as_b("POST", "/api/traceability/code-batches", {"gtin": GTIN, "count": 2, "lot": mark})
    return Created({"batch_id": batch["id"]}, mark)


def tenant_b_mark(world: World) -> Created:
    from tests.api.test_tenant_isolation import Created, marker

    mark = marker()
    # Its own lot, so that it recalls none of the batches other entries create.
    body = {"kind": "recall", "gtin": GTIN, "lot": mark, "reason": mark}
    created = world.as_b("POST", "/api/traceability/code-marks", body)
    return Created({"mark_id": created["id"]}, mark)


AUTHENTICITY_KINDS: dict[str, dict[str, Any]] = {
    BATCH: {"create": tenant_b_batch, "read": BATCH},
    f"{BATCH}/codes.csv": {"create": tenant_b_batch, "read": BATCH},
    MARK: {"create": tenant_b_mark, "read": MARK},
    # console
    "/traceability/codes/{batch_id}": {"create": tenant_b_batch, "read": BATCH},
    "/traceability/codes/{batch_id}/marks": {
        "create": tenant_b_batch,
        "read": BATCH,
        "bodies": {"POST": {"kind": "recall", "reason": "by A"}},
    },
}

PUBLIC_ROUTES: frozenset[str] = frozenset({"/v/{code:path}"})
