"""Entries for the tenant isolation walk (`tests/api/test_tenant_isolation.py`) for GS1 routes.

`OBJECT_KINDS` has the same shape as the table there; `PUBLIC_ROUTES` lists the parameterised
routes that name no tenant's object (the public GS1 resolver), which the walk must not expect
an entry for.
"""

from __future__ import annotations

import uuid

from biip.checksums import gs1_standard_check_digit

from iip.identifiers.models import Gs1Link
from tests.api.test_tenant_isolation import Created, ObjectKind, World, marker

GS1_LINK = "/api/gs1/links/{link_id}"
GS1_LINKS = "/api/gs1/links"


def random_gtin() -> str:
    """A GTIN-14 with a valid check digit that no other test uses."""
    payload = f"95{uuid.uuid4().int % 10**10:010d}"
    return f"0{payload}{gs1_standard_check_digit('0' + payload)}"


def gs1_link(world: World) -> Created:
    mark = marker()
    # Written directly with a large id: a small integer id such as "1" shows up on any page by chance,
    # which the walk would read as a leak.
    link_id = 10**8 + uuid.uuid4().int % 10**9
    with world.runtime.db.session() as session:
        session.add(
            Gs1Link(
                id=link_id,
                tenant_id=world.tenant_b.id,
                gs1_key=f"01/{random_gtin()}",
                qualifiers="",
                link_type="gs1:pip",
                href="https://b.example/",
                title=mark,
                is_default=True,
            )
        )
    return Created({"link_id": str(link_id)}, mark)


OBJECT_KINDS: dict[str, ObjectKind] = {
    # Re-read through the list: after the platform operator's DELETE the link itself is gone.
    GS1_LINK: ObjectKind(gs1_link, GS1_LINKS),
}

PUBLIC_ROUTES: frozenset[str] = frozenset(
    path
    for ai, name in (
        ("01", "gtin"),
        ("00", "sscc"),
        ("414", "gln"),
        ("415", "payTo"),
        ("417", "partyGln"),
        ("8004", "giai"),
        ("8003", "grai"),
        ("8006", "itip"),
        ("8013", "gmn"),
        ("8010", "cpid"),
        ("8017", "gsrnp"),
        ("8018", "gsrn"),
        ("255", "gcn"),
        ("253", "gdti"),
        ("401", "ginc"),
        ("402", "gsin"),
    )
    for path in (f"/{ai}/{{{name}}}", f"/{ai}/{{{name}}}/{{qualifiers:path}}")
)
