"""Locations under a location: the `children` of a tenant's stored location master data, followed
transitively, for the standard query's `WD_readPoint` and `WD_bizLocation` ("with descendants").

Children are read from elements of the vocabulary the parameter names (`ReadPoint` or
`BusinessLocation`), one level per query (the keys of a level in IN lists), and compared in the form
events are indexed in (`indexing.canonical_identifier`), so a child written as a URN matches an
event that wrote its Digital Link. Each tenant's hierarchy is its own: another tenant's master data
never adds a location. A location reached twice (a cycle, or two parents) is followed once.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from iip.kernel.errors import Invalid
from iip.traceability.indexing import canonical_identifier
from iip.traceability.models import MasterDataElement

MAX_DESCENDANTS = 10_000  # locations one WD_ parameter may widen to (they become IN lists)
_CHUNK = 500  # keys per IN list


def descendants(
    session: Session, tenant_id: str | None, vocabulary_type: str, roots: Iterable[str], *, parameter: str
) -> dict[str, frozenset[str]]:
    """Per tenant (only the one given; every tenant for None), the locations under the canonical `roots`
    in its master data of `vocabulary_type`, the roots themselves left out; tenants with none are absent.

    Invalid (code `query_too_large`) when more than MAX_DESCENDANTS are found.
    """
    named = frozenset(roots)
    reached: dict[str, set[str]] = {}
    # Tenant → keys whose children are read next; None before the first level (the roots, in every tenant).
    frontier: dict[str, set[str]] | None = None
    keys = set(named)
    total = 0
    while keys:
        following: dict[str, set[str]] = {}
        for tenant, key, children in _children(session, tenant_id, vocabulary_type, sorted(keys)):
            if frontier is not None and key not in frontier.get(tenant, ()):
                continue  # a key another tenant reached
            seen = reached.setdefault(tenant, set())
            for child in children:
                found = canonical_identifier(child)
                if found in named or found in seen:
                    continue
                seen.add(found)
                following.setdefault(tenant, set()).add(found)
                total += 1
                if total > MAX_DESCENDANTS:
                    raise Invalid(
                        f"query parameter {parameter}: more than {MAX_DESCENDANTS} locations are under it",
                        code="query_too_large",
                        parameter=parameter,
                    )
        frontier = following
        keys = set().union(*following.values()) if following else set()
    return {tenant: frozenset(found) for tenant, found in reached.items() if found}


def _children(
    session: Session, tenant_id: str | None, vocabulary_type: str, keys: list[str]
) -> Iterable[tuple[str, str, list[str]]]:
    """(tenant, element key, children as written) of the elements of those keys that list children."""
    for start in range(0, len(keys), _CHUNK):
        element = MasterDataElement
        statement = select(element.tenant_id, element.element_key, element.children).where(
            element.vocabulary_type == vocabulary_type, element.element_key.in_(keys[start : start + _CHUNK])
        )
        if tenant_id is not None:
            statement = statement.where(MasterDataElement.tenant_id == tenant_id)
        for tenant, key, children in session.execute(statement):
            if isinstance(children, list):
                yield tenant, key, [c for c in children if isinstance(c, str) and c.strip()]
