"""Genealogy over the repository tables: what went into an object, and where what came from it went.

The graph is read from `traceability_event_epc` (identifiers canonical, by role), hop by hop: each
hop is one query over the whole frontier (IN lists chunked), never one query per node.

- Transformation: the inputs of a TransformationEvent went into each of its outputs, instance or
  class (a lot in `outputQuantityList` comes from every input, lots in `inputQuantityList` included).
- Aggregation: a child is contained in its parent from an ADD (or OBSERVE) until a DELETE of the
  pair, or a DELETE naming no children, at the same time or later. A removed child is no longer
  part of the parent's genealogy, nor the parent of the child's.

Edges always point from what went in to what it went into (`input_of`, `contained_in`), whichever
way the walk goes. Every node is visited once, so cycles end. Association and transaction events
are not genealogy and are not followed.

The whereabouts of a node (forward traces) come from the latest event naming it or, while it is
contained, naming any container it is in: its location (the event's bizLocation, else readPoint),
owner (the latest owning_party, else possessing_party, destination; else the party of its location's
GLN) and disposition.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

from sqlalchemy import Select, and_, bindparam, exists, select
from sqlalchemy.orm import Session

from iip.kernel.auth import AccessService, Principal
from iip.kernel.errors import Conflict, Forbidden, Invalid, NotFound
from iip.traceability.epcis import identifiers
from iip.traceability.epcis.documents import CBV_WEB
from iip.traceability.indexing import checked_identifier
from iip.traceability.models import Event, EventEpc, EventLink

Direction = Literal["backward", "forward"]
Kind = Literal["instance", "class"]

CHUNK = 500  # identifiers per IN list: far below SQLite's and PostgreSQL's parameter limits
DEFAULT_MAX_DEPTH = 50
MAX_NODES = 500_000
CLASS_ROLES = frozenset({"quantity", "child_quantity", "input_quantity", "output_quantity"})
# What went in (contents) and what it went into (products), by role.
CONTENT_ROLES = ("input", "input_quantity", "child", "child_quantity")
PRODUCT_ROLES = ("output", "output_quantity", "parent")
GENEALOGY_EVENTS = ("TransformationEvent", "AggregationEvent")
OWNING_PARTY = CBV_WEB + "SDT-owning_party"
POSSESSING_PARTY = CBV_WEB + "SDT-possessing_party"
LOCATION = CBV_WEB + "SDT-location"

_EPC = EventEpc.__table__
_EVENT = Event.__table__
_LINK = EventLink.__table__


@dataclass(frozen=True)
class Node:
    id: str  # canonical
    kind: Kind
    depth: int  # hops from the root


@dataclass(frozen=True)
class Edge:
    """`source` went into `target` in one event."""

    source: str
    target: str
    relation: Literal["input_of", "contained_in"]
    event_id: str  # the EPCIS eventID (or the event hash when none was given)
    event_type: str
    event_time: dt.datetime
    quantity: float | None = None  # of a class-level source
    uom: str | None = None


@dataclass(frozen=True)
class Whereabouts:
    """Where a node was last known to be, who had it, in which state, from which event."""

    last_event_id: str | None = None
    last_event_type: str | None = None
    last_event_time: dt.datetime | None = None
    biz_step: str | None = None
    location: str | None = None
    owner: str | None = None
    disposition: str | None = None
    ship_from: str | None = None  # the source location of the event that gave the location
    ship_to: str | None = None  # its destination location
    reference_type: str | None = None  # its first business transaction
    reference: str | None = None


@dataclass
class Genealogy:
    root: str
    direction: Direction
    nodes: list[Node]
    edges: list[Edge]
    truncated: bool = False  # the walk stopped at max_depth or MAX_NODES with nodes left to follow
    via: dict[str, str] = field(default_factory=dict)  # node -> the node it was first reached from
    quantities: dict[str, tuple[float | None, str | None]] = field(default_factory=dict)  # class node -> (q, uom)
    whereabouts: dict[str, Whereabouts] = field(default_factory=dict)  # forward traces only
    tenant_id: str | None = None  # the tenant walked
    _kinds: dict[str, Kind] | None = field(default=None, repr=False, compare=False)

    def lot_of(self, node: str) -> str | None:
        """The nearest class (lot) a node was reached through, itself when it is one."""
        if self._kinds is None or len(self._kinds) != len(self.nodes):
            self._kinds = {n.id: n.kind for n in self.nodes}
        kinds = self._kinds
        current: str | None = node
        seen: set[str] = set()
        while current is not None and current not in seen:
            if kinds.get(current) == "class":
                return current
            seen.add(current)
            current = self.via.get(current)
        return None


def identifier_kind(canonical: str) -> Kind:
    """`class` for a GTIN with or without a lot (LGTIN, SGTIN pattern), `instance` for anything else."""
    if canonical.startswith(identifiers.DL_BASE + "/01/") and "/21/" not in canonical:
        return "class"
    return "instance"


def _chunks(values: Sequence[str], size: int = CHUNK) -> Iterator[list[str]]:
    for start in range(0, len(values), size):
        yield list(values[start : start + size])


# --- tenant ------------------------------------------------------------------------------------


def tenant_for(session: Session, principal: Principal, identifier: str, tenant: str | None = None) -> str:
    """The tenant a trace reads: the principal's; a platform operator's named one, or the one holding the identifier."""
    access = AccessService(session)
    if tenant:
        if not principal.is_platform:
            if tenant == principal.tenant_id or tenant == access.get_tenant(principal.tenant_id).name:
                return principal.tenant_id
            raise Forbidden("only platform operators can choose the tenant", code="tenant_not_yours")
        try:
            return access.get_tenant(tenant).id
        except NotFound:
            return access.tenant_by_name(tenant).id
    if not principal.is_platform:
        return principal.tenant_id
    holders = list(
        session.scalars(select(_EPC.c.tenant_id).where(_EPC.c.epc == identifier).group_by(_EPC.c.tenant_id).limit(2))
    )
    if len(holders) > 1:
        raise Conflict(f"{identifier} is named in several tenants; name one with `tenant`", code="ambiguous_identifier")
    return holders[0] if holders else principal.tenant_id


def require_known(session: Session, tenant_id: str, identifier: str) -> None:
    found = session.scalar(select(_EPC.c.id).where(_EPC.c.tenant_id == tenant_id, _EPC.c.epc == identifier).limit(1))
    if found is None:
        raise NotFound(f"no event names {identifier}", code="identifier_not_found")


# --- the walk ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Link:
    near: str  # the frontier node
    far: str | None  # the other side (None: a DELETE naming no children)
    far_role: str | None
    quantity: float | None
    uom: str | None
    event_pk: int
    event_id: str
    event_type: str
    event_time: dt.datetime
    action: str | None


@lru_cache(maxsize=2)
def _hop_statement(direction: Direction) -> Select[Any]:
    """One hop's query, built once per direction (the IN list expands per call): compiled once, cached."""
    near_roles, far_roles = (
        (PRODUCT_ROLES, CONTENT_ROLES) if direction == "backward" else (CONTENT_ROLES, PRODUCT_ROLES)
    )
    near = _EPC.alias("near")
    far = _EPC.alias("far")
    return (
        select(
            near.c.epc,
            far.c.epc,
            far.c.role,
            far.c.quantity,
            far.c.uom,
            _EVENT.c.id,
            _EVENT.c.event_id,
            _EVENT.c.event_type,
            _EVENT.c.event_time,
            _EVENT.c.action,
        )
        .select_from(
            near.join(_EVENT, _EVENT.c.id == near.c.event_id).outerjoin(
                far, and_(far.c.event_id == near.c.event_id, far.c.role.in_(far_roles))
            )
        )
        .where(
            near.c.tenant_id == bindparam("tenant"),
            near.c.epc.in_(bindparam("epcs", expanding=True)),
            near.c.role.in_(near_roles),
            _EVENT.c.event_type.in_(GENEALOGY_EVENTS),
        )
    )


def _hop_links(session: Session, tenant_id: str, frontier: Sequence[str], direction: Direction) -> list[_Link]:
    statement = _hop_statement(direction)
    links: list[_Link] = []
    for chunk in _chunks(frontier):
        for near_epc, far_epc, far_role, amount, uom, pk, event_id, event_type, event_time, action in session.execute(
            statement, {"tenant": tenant_id, "epcs": chunk}
        ):
            links.append(_Link(near_epc, far_epc, far_role, amount, uom, pk, event_id, event_type, event_time, action))
    return links


def _delete_all_times(session: Session, tenant_id: str, parents: Sequence[str]) -> dict[str, list[dt.datetime]]:
    """When each parent was emptied by a DELETE naming no children."""
    children = _EPC.alias("children")
    named_children = exists().where(children.c.event_id == _EPC.c.event_id, children.c.role.in_(CONTENT_ROLES))
    times: dict[str, list[dt.datetime]] = defaultdict(list)
    for chunk in _chunks(parents):
        statement = (
            select(_EPC.c.epc, _EVENT.c.event_time)
            .join(_EVENT, _EVENT.c.id == _EPC.c.event_id)
            .where(
                _EPC.c.tenant_id == tenant_id,
                _EPC.c.epc.in_(chunk),
                _EPC.c.role == "parent",
                _EVENT.c.event_type == "AggregationEvent",
                _EVENT.c.action == "DELETE",
                ~named_children,
            )
        )
        for parent, time in session.execute(statement):
            times[parent].append(time)
    return times


def _removed(
    removals: dict[tuple[str, str | None], list[dt.datetime]], parent: str, child: str, added: dt.datetime
) -> bool:
    return any(t >= added for t in removals.get((parent, child), ())) or any(
        t >= added for t in removals.get((parent, None), ())
    )


_Reach = tuple[Edge, str, Kind, float | None, str | None]


def _hop_edges(session: Session, tenant_id: str, frontier: Sequence[str], direction: Direction) -> list[_Reach]:
    """The edges one hop from the frontier finds, each with the node it reaches, its kind and its quantity there."""
    links = _hop_links(session, tenant_id, frontier, direction)
    removals: dict[tuple[str, str | None], list[dt.datetime]] = defaultdict(list)
    candidates: list[_Reach] = []
    for link in links:
        if link.event_type == "AggregationEvent" and link.action == "DELETE":
            parent, child = (link.near, link.far) if direction == "backward" else (link.far, link.near)
            if parent is not None:
                removals[(parent, child)].append(link.event_time)
            continue
        if link.far is None or link.far_role is None:
            continue
        far_kind: Kind = "class" if link.far_role in CLASS_ROLES else "instance"
        if direction == "backward":
            source, target = link.far, link.near
            quantity, uom = link.quantity, link.uom
        else:
            source, target = link.near, link.far
            quantity, uom = None, None
        relation: Literal["input_of", "contained_in"] = (
            "input_of" if link.event_type == "TransformationEvent" else "contained_in"
        )
        edge = Edge(source, target, relation, link.event_id, link.event_type, link.event_time, quantity, uom)
        candidates.append((edge, link.far, far_kind, link.quantity, link.uom))
    if direction == "forward":
        parents = sorted({c[0].target for c in candidates if c[0].relation == "contained_in"})
        for parent, times in _delete_all_times(session, tenant_id, parents).items():
            removals[(parent, None)].extend(times)
    return [
        reach
        for reach in candidates
        if reach[0].relation != "contained_in"
        or not _removed(removals, reach[0].target, reach[0].source, reach[0].event_time)
    ]


def walk(
    session: Session,
    tenant_id: str,
    root: str,
    direction: Direction,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_nodes: int = MAX_NODES,
) -> Genealogy:
    """Breadth-first over the graph from `root` (canonical), one query per hop over the whole frontier."""
    nodes: dict[str, Node] = {root: Node(root, identifier_kind(root), 0)}
    edges: dict[tuple[str, str, str, str, dt.datetime], Edge] = {}
    via: dict[str, str] = {}
    quantities: dict[str, tuple[float | None, str | None]] = {}
    frontier = [root]
    depth = 0
    truncated = False
    while frontier:
        if depth >= max_depth or len(nodes) >= max_nodes:
            truncated = True
            break
        depth += 1
        reached: list[str] = []
        for edge, far, kind, amount, uom in _hop_edges(session, tenant_id, frontier, direction):
            edges.setdefault((edge.source, edge.target, edge.relation, edge.event_id, edge.event_time), edge)
            if amount is not None and far not in quantities:
                quantities[far] = (amount, uom)  # what the first event reaching it says: produced or consumed
            if far in nodes or len(nodes) >= max_nodes:
                continue
            nodes[far] = Node(far, kind, depth)
            via[far] = edge.target if direction == "backward" else edge.source
            reached.append(far)
        frontier = reached
    ordered_edges = sorted(edges.values(), key=lambda e: (e.event_time, e.source, e.target, e.event_id))
    return Genealogy(
        root,
        direction,
        sorted(nodes.values(), key=lambda n: (n.depth, n.id)),
        ordered_edges,
        truncated,
        via,
        quantities,
        tenant_id=tenant_id,
    )


# --- whereabouts --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Seen:
    """An event as whereabouts need it."""

    pk: int
    event_id: str
    event_type: str
    time: dt.datetime
    biz_step: str | None
    disposition: str | None
    read_point: str | None
    biz_location: str | None


_OWN_EVENTS = (
    select(
        _EPC.c.epc,
        _EPC.c.quantity,
        _EPC.c.uom,
        _EVENT.c.id,
        _EVENT.c.event_id,
        _EVENT.c.event_type,
        _EVENT.c.event_time,
        _EVENT.c.biz_step,
        _EVENT.c.disposition,
        _EVENT.c.read_point,
        _EVENT.c.biz_location,
    )
    .join(_EVENT, _EVENT.c.id == _EPC.c.event_id)
    .where(_EPC.c.tenant_id == bindparam("tenant"), _EPC.c.epc.in_(bindparam("epcs", expanding=True)))
)


def _own_events(
    session: Session, tenant_id: str, ids: Sequence[str]
) -> tuple[dict[str, list[_Seen]], dict[str, tuple[float | None, str | None]]]:
    """Every event naming each identifier, and the latest quantity a class-level row gave it."""
    events: dict[int, _Seen] = {}
    by_node: dict[str, list[_Seen]] = defaultdict(list)
    quantities: dict[str, tuple[dt.datetime, float | None, str | None]] = {}
    statement = _OWN_EVENTS
    for chunk in _chunks(ids):
        for epc, quantity, uom, pk, *rest in session.execute(statement, {"tenant": tenant_id, "epcs": chunk}):
            seen = events.get(pk)
            if seen is None:
                seen = events[pk] = _Seen(pk, *rest)
            by_node[epc].append(seen)
            if quantity is not None and (epc not in quantities or quantities[epc][0] <= seen.time):
                quantities[epc] = (seen.time, quantity, uom)
    return by_node, {epc: (q, u) for epc, (_t, q, u) in quantities.items()}


def _links(session: Session, event_pks: Iterable[int]) -> dict[int, list[tuple[str, str, str]]]:
    """(kind, type, value) of each event's business transactions, sources and destinations."""
    out: dict[int, list[tuple[str, str, str]]] = defaultdict(list)
    pks = sorted(set(event_pks))
    for start in range(0, len(pks), CHUNK):
        # The events are the tenant's already; filtering on the tenant too would lead SQLite to the
        # (tenant, kind, value) index and a scan of every link of the tenant.
        statement = select(_LINK.c.event_id, _LINK.c.kind, _LINK.c.type, _LINK.c.value).where(
            _LINK.c.event_id.in_(pks[start : start + CHUNK])
        )
        for pk, kind, link_type, value in session.execute(statement):
            out[pk].append((kind, link_type, value))
    return out


def location_party(location: str | None) -> str | None:
    """The party of a GLN-identified location (`.../414/{GLN}` → `.../417/{GLN}`); None for other locations."""
    prefix = identifiers.DL_BASE + "/414/"
    if location is None or not location.startswith(prefix):
        return None
    return identifiers.DL_BASE + "/417/" + location[len(prefix) :].split("/", 1)[0]


def _latest(events: Iterable[_Seen]) -> _Seen | None:
    return max(events, key=lambda e: (e.time, e.pk), default=None)


def _whereabouts(events: list[_Seen], links: dict[int, list[tuple[str, str, str]]]) -> Whereabouts:
    latest = _latest(events)
    if latest is None:
        return Whereabouts()
    placed = _latest(e for e in events if e.biz_location or e.read_point)
    owned = _latest(
        e
        for e in events
        if any(k == "destination" and t in (OWNING_PARTY, POSSESSING_PARTY) for k, t, _ in links[e.pk])
    )
    disposed = _latest(e for e in events if e.disposition)
    location = (placed.biz_location or placed.read_point) if placed else None
    owner = _destination_owner(links[owned.pk]) if owned is not None else None
    if owner is None and placed is not None:
        owner = location_party(placed.biz_location)
    from_event = links[placed.pk] if placed else []
    reference = next(((t, v) for k, t, v in from_event if k == "bizTransaction"), None)
    return Whereabouts(
        last_event_id=latest.event_id,
        last_event_type=latest.event_type,
        last_event_time=latest.time,
        biz_step=latest.biz_step,
        location=location,
        owner=owner,
        disposition=disposed.disposition if disposed else None,
        ship_from=next((v for k, t, v in from_event if k == "source" and t == LOCATION), None),
        ship_to=next((v for k, t, v in from_event if k == "destination" and t == LOCATION), None),
        reference_type=(reference[0] or None) if reference else None,
        reference=reference[1] if reference else None,
    )


def _destination_owner(links: list[tuple[str, str, str]]) -> str | None:
    parties = {t: v for k, t, v in links if k == "destination"}
    return parties.get(OWNING_PARTY) or parties.get(POSSESSING_PARTY)


def locate(session: Session, tenant_id: str, genealogy: Genealogy) -> None:
    """Fill `genealogy.whereabouts` (and class quantities) for every node of a forward trace."""
    ids = [n.id for n in genealogy.nodes]
    own, quantities = _own_events(session, tenant_id, ids)
    for node, quantity in quantities.items():
        genealogy.quantities.setdefault(node, quantity)
    containers: dict[str, list[tuple[str, dt.datetime]]] = defaultdict(list)
    for edge in genealogy.edges:
        if edge.relation == "contained_in":
            containers[edge.source].append((edge.target, edge.event_time))
    memo: dict[str, list[_Seen]] = {}

    def events_of(node: str, visiting: frozenset[str]) -> list[_Seen]:
        # A node's events, and its containers' events from the time it was put in them.
        if node in memo:
            return memo[node]
        found = {e.pk: e for e in own.get(node, ())}
        for container, since in containers.get(node, ()):
            if container in visiting:
                continue  # containment cycles end here
            for event in events_of(container, visiting | {node}):
                if event.time >= since:
                    found.setdefault(event.pk, event)
        result = list(found.values())
        memo[node] = result
        return result

    all_events = {node: events_of(node, frozenset()) for node in ids}
    links = _links(session, (e.pk for events in all_events.values() for e in events))
    genealogy.whereabouts = {node: _whereabouts(events, links) for node, events in all_events.items()}


# --- use case -----------------------------------------------------------------------------------


def trace(
    session: Session,
    principal: Principal,
    identifier: str,
    direction: Direction = "backward",
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    tenant: str | None = None,
    max_nodes: int = MAX_NODES,
) -> Genealogy:
    """The genealogy of an identifier (URN or Digital Link) in the principal's tenant; forward traces are located."""
    principal.require("traceability.read")
    if max_depth < 1:
        raise Invalid("maxDepth must be at least 1", code="invalid_depth")
    root = checked_identifier(identifier)
    tenant_id = tenant_for(session, principal, root, tenant)
    require_known(session, tenant_id, root)
    genealogy = walk(session, tenant_id, root, direction, max_depth=max_depth, max_nodes=max_nodes)
    if direction == "forward":
        locate(session, tenant_id, genealogy)
    return genealogy


def describe(value: Any) -> str:
    """An identifier as people read it: its EPC URN when one can be made, else as stored."""
    if not isinstance(value, str) or not value.startswith(identifiers.DL_BASE):
        return str(value or "")
    try:
        return identifiers.dl_to_urn(value)
    except identifiers.IdentifierError:
        return value
