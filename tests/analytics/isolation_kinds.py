"""Entries for `OBJECT_KINDS` in tests/api/test_tenant_isolation.py: the analytics context's routes.

Shaped as keyword arguments of that module's `ObjectKind`, merged like the other contexts' entries.
Tenant B's model is trained on a small file and carries the marker as its description; it is named
by id, and by its name (an alias that finds it only in its own tenant). Evaluating, scoring and
explaining change nothing, so their control cannot show in the re-read.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from tests.analytics.support import VARIABLES, csv_bytes, normal_data

if TYPE_CHECKING:
    from tests.api.test_tenant_isolation import Created, World

MODEL = "/api/analytics/models/{model}"
VERSION = MODEL + "/versions/{version}"
DATA = normal_data(60)
SAMPLE = dict(zip(VARIABLES, DATA.mean(axis=0).tolist(), strict=True))


def tenant_b_model(world: World) -> Created:
    """Version 1 of a model of tenant B whose description is the marker."""
    from tests.api.test_tenant_isolation import Created, marker

    mark = marker()
    name = f"m-{uuid.uuid4().hex[:10]}"
    response = world.client.post(
        "/api/analytics/models/file",
        files={"file": ("normal.csv", csv_bytes(DATA), "text/csv")},
        data={"name": name, "kind": "pca", "description": mark},
        headers=world.tenant_b.headers(),
    )
    assert response.status_code == 201, response.text
    version = response.json()
    # Named by ids: the walk looks for every parameter's value in other pages, and "1" is everywhere.
    return Created(
        {"model": version["model_id"], "version": version["id"]},
        mark,
        aliases=({"model": name, "version": "1"}, {"model": version["model_id"], "version": "latest"}),
    )


def _kind(read: str, bodies: dict[str, Any] | None = None, *, changes: bool = True) -> dict[str, Any]:
    return {"create": tenant_b_model, "read": read, "bodies": bodies or {}, "control_changes": changes}


RANGE = {"device": "pump-b", "start": "2026-01-05T08:00:00Z", "end": "2026-01-05T08:10:00Z", "interval_s": 60}
ANALYTICS_KINDS: dict[str, dict[str, Any]] = {
    MODEL: _kind(MODEL),
    VERSION: _kind(VERSION),
    VERSION + "/evaluate": _kind(VERSION, {"POST": RANGE}, changes=False),
    VERSION + "/score": _kind(VERSION, {"POST": {"samples": [SAMPLE]}}, changes=False),
    VERSION + "/contributions": _kind(VERSION, {"POST": {"samples": [SAMPLE]}}, changes=False),
    VERSION + "/deployments": _kind(VERSION, {"POST": {"device": "pump-b"}}),
    VERSION + "/retire": _kind(VERSION, {"POST": {}}),
}
