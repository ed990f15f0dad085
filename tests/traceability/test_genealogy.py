"""Genealogy over captured events, on SQLite and PostgreSQL: backward, forward, DELETE, cycles, identifiers."""

from __future__ import annotations

import pytest

from iip.kernel.db import Database
from iip.kernel.errors import Invalid, NotFound
from iip.traceability.epcis.identifiers import dl_to_urn
from iip.traceability.genealogy import Genealogy, trace
from tests.conftest import TenantFixture
from tests.traceability.genealogy_support import (
    C1,
    C2,
    C3,
    C4,
    DISTRIBUTOR,
    E1,
    F1,
    INGREDIENTS,
    P1,
    PAL1,
    PAL2,
    RETAIL_A,
    RETAIL_B,
    S1,
    U1,
    U2,
    U3,
    admin,
    bakery_events,
    capture,
    event,
    pack,
    party,
    place,
    quantity,
    sscc,
    unpack,
)


@pytest.fixture
def bakery(migrated_db: Database, tenant_a: TenantFixture) -> str:
    with migrated_db.session() as session:
        capture(session, tenant_a.id, bakery_events())
    return tenant_a.id


def run(db: Database, tenant_id: str, identifier: str, direction: str = "backward", **kwargs: object) -> Genealogy:
    with db.session() as session:
        return trace(session, admin(tenant_id), identifier, direction, **kwargs)  # type: ignore[arg-type]


def ids(genealogy: Genealogy) -> set[str]:
    return {n.id for n in genealogy.nodes}


def test_backward_from_a_pallet_finds_every_ingredient_lot(migrated_db: Database, bakery: str) -> None:
    result = run(migrated_db, bakery, PAL2)
    assert ids(result) == {PAL2, C3, C4, U1, U2, U3, P1} | INGREDIENTS
    kinds = {n.id: n.kind for n in result.nodes}
    assert kinds[F1] == kinds[P1] == "class"
    assert kinds[U1] == kinds[C3] == "instance"
    depth = {n.id: n.depth for n in result.nodes}
    assert (depth[C3], depth[U1], depth[P1], depth[F1], depth[E1]) == (1, 2, 2, 3, 3)
    relations = {(e.source, e.target, e.relation, e.event_type) for e in result.edges}
    assert (C3, PAL2, "contained_in", "AggregationEvent") in relations
    assert (P1, C4, "contained_in", "AggregationEvent") in relations
    assert (F1, U1, "input_of", "TransformationEvent") in relations
    assert (S1, P1, "input_of", "TransformationEvent") in relations
    flour_into_cake = next(e for e in result.edges if e.source == F1 and e.target == P1)
    assert (flour_into_cake.quantity, flour_into_cake.uom) == (100, "KGM")
    assert flour_into_cake.event_id.startswith("ni:///sha-256;")  # no eventID given: the hash names it
    assert not result.truncated


def test_forward_from_one_ingredient_lot_finds_every_case_and_where_it_went(migrated_db: Database, bakery: str) -> None:
    result = run(migrated_db, bakery, F1, "forward")
    assert ids(result) == {F1, P1, U1, U2, U3, C1, C2, C3, C4, PAL1, PAL2}
    where = result.whereabouts
    # C1 came off PAL1 at the distributor and went on to retailer A.
    assert where[C1].location == place(RETAIL_A)
    assert where[C1].owner == party(RETAIL_A)
    assert where[C1].disposition == "https://ref.gs1.org/cbv/Disp-sellable_accessible"
    # C2 stayed on PAL1 at the distributor: it has no event of its own since, its pallet does.
    assert where[C2].location == place(DISTRIBUTOR)
    assert where[C2].owner == party(DISTRIBUTOR)
    assert where[PAL1].location == place(DISTRIBUTOR)
    # The cakes went in C3 on PAL2 to retailer B.
    for unit in (U1, U2, U3, C3, C4, PAL2):
        assert where[unit].location == place(RETAIL_B), unit
        assert where[unit].owner == party(RETAIL_B), unit
        assert where[unit].last_event_type == "ObjectEvent"
    assert result.lot_of(C1) == P1
    assert result.lot_of(U1) == F1


def test_forward_from_another_lot_reaches_only_what_it_went_into(migrated_db: Database, bakery: str) -> None:
    assert ids(run(migrated_db, bakery, S1, "forward")) == {S1, P1, C1, C2, C4, PAL1, PAL2}
    assert ids(run(migrated_db, bakery, E1, "forward")) == {E1, U1, U2, U3, C3, PAL2}


def test_an_aggregation_delete_ends_containment(migrated_db: Database, bakery: str) -> None:
    # C1 was taken off PAL1: PAL1 no longer contains it, nor is C1 in PAL1.
    backward = run(migrated_db, bakery, PAL1)
    assert C2 in ids(backward)
    assert C1 not in ids(backward)
    assert ids(run(migrated_db, bakery, C1, "forward")) == {C1}
    assert ids(run(migrated_db, bakery, C2, "forward")) == {C2, PAL1}


def test_a_delete_naming_no_children_empties_the_parent_until_the_next_add(
    migrated_db: Database, tenant_a: TenantFixture
) -> None:
    box, tote, item = sscc(500), sscc(501), sscc(502)
    with migrated_db.session() as session:
        capture(
            session,
            tenant_a.id,
            [
                pack("10T08:00", box, 1, children=[item]),
                unpack("10T09:00", box, 1),  # no children: everything comes out
                pack("10T10:00", tote, 1, children=[item]),
            ],
        )
    assert ids(run(migrated_db, tenant_a.id, item, "forward")) == {item, tote}
    assert ids(run(migrated_db, tenant_a.id, box)) == {box}
    with migrated_db.session() as session:
        capture(session, tenant_a.id, [pack("10T11:00", box, 1, children=[item])])
    assert ids(run(migrated_db, tenant_a.id, item, "forward")) == {item, tote, box}


def test_cycles_terminate(migrated_db: Database, tenant_a: TenantFixture) -> None:
    first, second = sscc(600), sscc(601)
    lot_a, lot_b = P1.replace("/10/P1", "/10/CYCLE-A"), P1.replace("/10/P1", "/10/CYCLE-B")
    with migrated_db.session() as session:
        capture(
            session,
            tenant_a.id,
            [
                event(
                    "TransformationEvent",
                    "11T08:00",
                    inputQuantityList=[quantity(lot_a, 1)],
                    outputQuantityList=[quantity(lot_b, 1)],
                ),
                event(
                    "TransformationEvent",
                    "11T09:00",
                    inputQuantityList=[quantity(lot_b, 1)],
                    outputQuantityList=[quantity(lot_a, 1)],
                ),
                pack("11T10:00", first, 1, children=[second]),
                pack("11T11:00", second, 1, children=[first]),
            ],
        )
    for root, expected in ((lot_a, {lot_a, lot_b}), (first, {first, second})):
        for direction in ("backward", "forward"):
            result = run(migrated_db, tenant_a.id, root, direction)
            assert ids(result) == expected
            assert len(result.edges) == 2
            assert not result.truncated


def test_urn_and_digital_link_give_the_same_genealogy(migrated_db: Database, bakery: str) -> None:
    by_link = run(migrated_db, bakery, PAL2)
    by_urn = run(migrated_db, bakery, dl_to_urn(PAL2))
    assert by_urn.nodes == by_link.nodes
    assert by_urn.edges == by_link.edges
    lot_by_urn = run(migrated_db, bakery, dl_to_urn(F1), "forward")
    assert ids(lot_by_urn) == ids(run(migrated_db, bakery, F1, "forward"))


def test_max_depth_stops_the_walk_and_says_so(migrated_db: Database, bakery: str) -> None:
    result = run(migrated_db, bakery, PAL2, max_depth=1)
    assert ids(result) == {PAL2, C3, C4}
    assert result.truncated


def test_unknown_and_broken_identifiers(migrated_db: Database, bakery: str, tenant_b: TenantFixture) -> None:
    with pytest.raises(NotFound):
        run(migrated_db, bakery, sscc(999))
    with pytest.raises(Invalid):
        run(migrated_db, bakery, PAL2[:-1] + ("0" if PAL2[-1] != "0" else "1"))  # wrong check digit
    # Another tenant's identifiers are unknown here.
    with pytest.raises(NotFound):
        run(migrated_db, tenant_b.id, PAL2)
