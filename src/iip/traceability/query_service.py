"""Query use cases: events by query or id, the top-level resources (event types, business steps,
locations, read points, dispositions), and named queries. Tenant scoping lives here.

A principal reads their own tenant. A platform operator reads every tenant, or the one named; a
lookup by id (an event, a named query by its id) reaches any tenant's object, as elsewhere in IIP.
Named queries are named by name within the tenant read, or by id.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import InstrumentedAttribute, Session

from iip.kernel.auth import AccessService, Principal, new_id
from iip.kernel.errors import Conflict, Invalid, NotFound
from iip.traceability.epcis.documents import CBV_WEB, EVENT_TYPES, VOCABULARIES
from iip.traceability.epcis.identifiers import IdentifierError, canonical
from iip.traceability.indexing import vocabulary_uri
from iip.traceability.models import ACTOR_LENGTH, Event, EventEpc, NamedQuery
from iip.traceability.query import (
    CLASS_ROLES,
    INSTANCE_ROLES,
    EpcMatch,
    EventQuery,
    QueryPage,
    parse_stored_query,
    run_query,
)

MAX_STORED_QUERY_CHARS = 20_000  # a named query's parameters, as JSON
MAX_NAMED_QUERIES_LISTED = 1000


@dataclass(frozen=True)
class Resource:
    """A top-level resource of the REST binding whose members are values of one event column."""

    name: str  # path segment: bizSteps, bizLocations, readPoints, dispositions, eventTypes
    member: str  # what one member is called (the path parameter): bizStep, ...
    column: InstrumentedAttribute[Any]
    field: str  # the EventQuery field its `/{value}/events` narrows
    vocabulary: str | None = None  # CBV vocabulary kind, for bizSteps and dispositions
    indexed: bool = False  # an index (tenant_id, column) lets distinct values be read one seek each


RESOURCES = {
    r.name: r
    for r in (
        Resource("eventTypes", "eventType", Event.event_type, "event_types", indexed=True),
        Resource("bizSteps", "bizStep", Event.biz_step, "biz_steps", "bizStep", indexed=True),
        Resource("dispositions", "disposition", Event.disposition, "dispositions", "disposition", indexed=True),
        Resource("bizLocations", "bizLocation", Event.biz_location, "biz_locations", indexed=True),
        Resource("readPoints", "readPoint", Event.read_point, "read_points", indexed=True),
    )
}


@dataclass(frozen=True)
class Members:
    members: list[str]
    next_page_token: str | None


@dataclass(frozen=True)
class NamedQueryPage:
    queries: list[NamedQuery]
    next_page_token: str | None


def _standard_terms(vocabulary: str) -> list[str]:
    from iip.traceability.epcis.validation import cbv_terms  # loads GS1's vocabulary files on first use

    return sorted(cbv_terms(vocabulary))


def member_name(resource: Resource, stored: str) -> str:
    """How a stored value is listed: a CBV web URI by its bare term, anything else as stored."""
    if resource.vocabulary is not None:
        term = CBV_WEB + VOCABULARIES[resource.vocabulary][1]
        return stored.removeprefix(term)
    return stored


def _collection_token(after: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": after}).encode()).decode().rstrip("=")


def _collection_after(token: str | None) -> str | None:
    if token is None:
        return None
    try:
        after = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))["after"]
    except (binascii.Error, ValueError, TypeError, KeyError):
        raise Invalid("nextPageToken is not a token this server issued", code="page_token") from None
    if not isinstance(after, str):
        raise Invalid("nextPageToken is not a token this server issued", code="page_token")
    return after


class QueryService:
    def __init__(self, session: Session, actor: Principal) -> None:
        self.session = session
        self.actor = actor

    # --- scoping

    def scope(self, tenant_id: str | None) -> str | None:
        """The tenant a read covers: the actor's own; a platform operator's named one, or None (every tenant)."""
        self.actor.require("traceability.read")
        if not self.actor.is_platform:
            return self.actor.tenant_id
        if tenant_id:
            return AccessService(self.session).get_tenant(tenant_id, self.actor).id
        return None

    def _tenant_for(self, tenant_id: str | None) -> str:
        """The tenant a new named query goes to: the actor's own, or (platform operators) the one named."""
        return AccessService(self.session).tenant_to_write(self.actor, tenant_id)

    # --- events

    def events(self, query: EventQuery, page_token: str | None, per_page: int, tenant_id: str | None) -> QueryPage:
        return run_query(self.session, self.scope(tenant_id), query, page_token, per_page)

    def event(self, event_id: str, tenant_id: str | None) -> list[Event]:
        """The events of an id (one per tenant at most; a platform operator may see several)."""
        scope = self.scope(tenant_id)
        statement = select(Event).where(Event.event_id == event_id)
        if scope is not None:
            statement = statement.where(Event.tenant_id == scope)
        events = list(self.session.scalars(statement.order_by(Event.id).limit(100)))
        if not events:
            raise NotFound("no event of this id", code="event_not_found")
        return events

    def epc_query(self, epc: str, query: EventQuery, tenant_id: str | None) -> EventQuery:
        """`query` narrowed to the events naming an EPC or class (any role); NotFound when none does."""
        try:
            value = canonical(epc.strip())
        except IdentifierError as err:
            raise Invalid(str(err), code="bad_identifier") from None
        scope = self.scope(tenant_id)
        known = select(EventEpc.id).where(EventEpc.epc == value)
        if scope is not None:
            known = known.where(EventEpc.tenant_id == scope)
        if self.session.scalar(known.limit(1)) is None:
            raise NotFound("no event names this EPC", code="epc_not_found")
        match = EpcMatch((*INSTANCE_ROLES, *CLASS_ROLES), (value,))
        return dataclasses.replace(query, epc_matches=(*query.epc_matches, match))

    def resource_query(
        self, resource: Resource, value: str, query: EventQuery, tenant_id: str | None
    ) -> EventQuery | None:
        """`query` narrowed to one member of a resource; None when its own parameters exclude that member.

        NotFound when the member is neither standard (a CBV term, one of the five event types) nor
        named by an event of the tenant read.
        """
        stored = self._stored_form(resource, value.strip())
        scope = self.scope(tenant_id)
        if not self._standard(resource, stored):
            known = select(Event.id).where(resource.column == stored)
            if scope is not None:
                known = known.where(Event.tenant_id == scope)
            if self.session.scalar(known.limit(1)) is None:
                raise NotFound(f"no such member of {resource.name}", code="resource_not_found")
        given: tuple[str, ...] = getattr(query, resource.field)
        if given and stored not in given:
            return None
        narrowed: dict[str, Any] = {resource.field: (stored,)}
        return dataclasses.replace(query, **narrowed)

    def _stored_form(self, resource: Resource, value: str) -> str:
        if resource.vocabulary is not None:
            return vocabulary_uri(value, resource.vocabulary, {})
        if resource.name in ("bizLocations", "readPoints"):
            try:
                return canonical(value)
            except IdentifierError as err:
                raise Invalid(str(err), code="bad_identifier") from None
        return value

    def _standard(self, resource: Resource, stored: str) -> bool:
        if resource.name == "eventTypes":
            return stored in EVENT_TYPES
        if resource.vocabulary is not None:
            return member_name(resource, stored) in _standard_terms(resource.vocabulary)
        return False

    # --- top-level resources

    def members(self, resource: Resource, page_token: str | None, per_page: int, tenant_id: str | None) -> Members:
        """A page of a resource's members, in order: the standard ones and those the tenant's events name."""
        after = _collection_after(page_token)
        scope = self.scope(tenant_id)
        if resource.name == "eventTypes":
            standard = sorted(EVENT_TYPES)
        elif resource.vocabulary is not None:
            standard = _standard_terms(resource.vocabulary)
        else:
            standard = []
        if resource.indexed or standard:
            # Few values (vocabularies) or an index to seek: read them all and page here.
            stored = self._distinct(resource, scope, None, None)
            every = sorted({*standard, *(member_name(resource, v) for v in stored)})
            chosen = [m for m in every if after is None or m > after][: per_page + 1]
        else:
            chosen = self._distinct(resource, scope, after, per_page + 1)
        members = chosen[:per_page]
        more = len(chosen) > per_page
        return Members(members, _collection_token(members[-1]) if more and members else None)

    def _distinct(self, resource: Resource, scope: str | None, after: str | None, limit: int | None) -> list[str]:
        column = resource.column
        where: list[ColumnElement[bool]] = [column.is_not(None), column != ""]
        if scope is not None:
            where.append(Event.tenant_id == scope)
        if resource.indexed and scope is not None:
            # A loose index scan: one seek per distinct value instead of reading every event.
            values: list[str] = []
            last = after
            while limit is None or len(values) < limit:
                step = select(func.min(column)).where(*where, *([column > last] if last is not None else []))
                found = self.session.scalar(step)
                if found is None or len(values) >= 100_000:
                    break
                values.append(found)
                last = found
            return values
        statement = select(column).where(*where, *([column > after] if after is not None else []))
        statement = statement.distinct().order_by(column)
        return list(self.session.scalars(statement if limit is None else statement.limit(limit)))

    # --- named queries

    def create_query(
        self, name: str, parameters: Mapping[str, Any], description: str = "", *, tenant_id: str | None = None
    ) -> NamedQuery:
        self.actor.require("traceability.write")
        tenant = self._tenant_for(tenant_id)
        parse_stored_query(parameters)  # refuses a query that would not run
        if len(json.dumps(parameters)) > MAX_STORED_QUERY_CHARS:
            raise Invalid(f"the query is longer than {MAX_STORED_QUERY_CHARS} characters as JSON", code="too_long")
        if self._by_name(tenant, name) is not None:
            raise Conflict("a query of this name exists", code="query_exists")
        row = NamedQuery(
            id=new_id(),
            tenant_id=tenant,
            name=name,
            description=description,
            parameters=dict(parameters),
            created_by=self.actor.label[:ACTOR_LENGTH],
        )
        try:
            with self.session.begin_nested():
                self.session.add(row)
        except IntegrityError:  # created at the same moment by another request
            raise Conflict("a query of this name exists", code="query_exists") from None
        return row

    def named_query(self, ref: str, tenant_id: str | None = None) -> NamedQuery:
        """A named query by its name in the tenant read (a platform operator's own by default), or by id."""
        scope = self.scope(tenant_id)
        row = self._by_name(scope or self.actor.tenant_id, ref)
        if row is None:
            by_id = self.session.get(NamedQuery, ref)
            if by_id is not None and (scope is None or by_id.tenant_id == scope):
                row = by_id
        if row is None:
            raise NotFound("no query of this name", code="query_not_found")
        return row

    def _by_name(self, tenant_id: str, name: str) -> NamedQuery | None:
        statement = select(NamedQuery).where(NamedQuery.tenant_id == tenant_id, NamedQuery.name == name)
        return self.session.scalar(statement)

    def named_queries(self, page_token: str | None, per_page: int, tenant_id: str | None) -> NamedQueryPage:
        scope = self.scope(tenant_id)
        after = _collection_after(page_token)
        statement = select(NamedQuery)
        if scope is not None:
            statement = statement.where(NamedQuery.tenant_id == scope)
        if after is not None:
            name, _, row_id = after.partition("\x1f")
            statement = statement.where(
                or_(NamedQuery.name > name, (NamedQuery.name == name) & (NamedQuery.id > row_id))
            )
        rows = list(self.session.scalars(statement.order_by(NamedQuery.name, NamedQuery.id).limit(per_page + 1)))
        page = rows[:per_page]
        more = len(rows) > per_page and page
        token = _collection_token(f"{page[-1].name}\x1f{page[-1].id}") if more else None
        return NamedQueryPage(page, token)

    def delete_query(self, ref: str, tenant_id: str | None = None) -> NamedQuery:
        self.actor.require("traceability.write")
        row = self.named_query(ref, tenant_id)
        self.session.delete(row)
        self.session.flush()
        return row

    def run_named(
        self, ref: str, page_token: str | None, per_page: int, tenant_id: str | None
    ) -> tuple[NamedQuery, QueryPage]:
        """A page of a named query's result, in the query's own tenant."""
        row = self.named_query(ref, tenant_id)
        query = parse_stored_query(row.parameters)
        return row, run_query(self.session, row.tenant_id, query, page_token, per_page)


def query_params(items: Sequence[tuple[str, str]], skip: frozenset[str]) -> dict[str, list[str]]:
    """A query string's parameters grouped by name (repeated ones kept in order), less those in `skip`."""
    grouped: dict[str, list[str]] = {}
    for name, value in items:
        if name not in skip:
            grouped.setdefault(name, []).append(value)
    return grouped
