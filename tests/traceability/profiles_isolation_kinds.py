"""Routes of tests/api/test_tenant_isolation.py's walk that name no tenant's object: the profile routes.

A profile is platform data shipped with the code (`traceability/profiles/data`), the same for every
tenant, and a check or report stores nothing; so there is no object of tenant B to reach.
"""

from __future__ import annotations

PUBLIC_ROUTES: frozenset[str] = frozenset(
    {
        "/api/traceability/profiles/{name}",
        "/api/traceability/profiles/{name}/check",
        "/api/traceability/profiles/{name}/report",
    }
)
