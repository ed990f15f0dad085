"""Entries for `OBJECT_KINDS` in tests/api/test_tenant_isolation.py: the analytics console pages.

Tenant B's model is the one `isolation_kinds.tenant_b_model` trains; every page of a version shows
the model's description, which is the marker. Charts and estimates change nothing; deploying and
retiring change the version's status.
"""

from __future__ import annotations

from typing import Any

from tests.analytics.isolation_kinds import VERSION as API_VERSION
from tests.analytics.isolation_kinds import tenant_b_model

MODEL = "/analytics/models/{model}"
VERSION = MODEL + "/versions/{version}"


def _kind(bodies: dict[str, Any] | None = None, *, changes: bool = True) -> dict[str, Any]:
    return {"create": tenant_b_model, "read": API_VERSION, "bodies": bodies or {}, "control_changes": changes}


PAGE_KINDS: dict[str, dict[str, Any]] = {
    MODEL: _kind(),
    VERSION + "/monitor": _kind(changes=False),
    VERSION + "/contributions": _kind(changes=False),
    VERSION + "/rul": _kind(changes=False),
    VERSION + "/deploy": _kind({"POST": {"device": "pump-b"}}),
    VERSION + "/retire": _kind({"POST": {}}),
}
