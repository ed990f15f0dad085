"""A tenant's EPCIS master data: stored from captured documents' headers, read by the API, the CLI,
the console pages and the recall export.

Capture hands `store` the elements a document's header carries (`epcis.master_data`), inside the
job's savepoint, so a capture that stores no event (rollback) stores no master data either. An
element is one row per (tenant, vocabulary type, canonical id). Each attribute id a capture gives
replaces that attribute's values, the others stay: the newest capture wins per attribute, and every
value is kept as captured. Rows are created with `INSERT ... ON CONFLICT DO NOTHING` and then read
`FOR UPDATE` (PostgreSQL), so two captures naming one element merge one after the other.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from iip.kernel.auth import Principal, tenant_to_read
from iip.kernel.errors import Conflict, Invalid, NotFound
from iip.traceability.epcis.master_data import (
    BUSINESS_LOCATION,
    READ_POINT,
    Description,
    VocabularyElement,
    describe,
    full_type,
    lookup_key,
    merge_attributes,
)
from iip.traceability.models import MasterDataElement

CHUNK = 500  # keys per IN list
# Whose description names an identifier when several vocabularies hold it: locations first.
_PREFERRED_TYPES = (BUSINESS_LOCATION, READ_POINT, "urn:epcglobal:epcis:vtype:Location")


@dataclass
class _Incoming:
    element_id: str
    attributes: list[dict[str, Any]] = field(default_factory=list)
    children: list[str] | None = None
    prefixes: set[str] = field(default_factory=set)


def _prefixes_in(value: Any, known: Mapping[str, str]) -> Iterable[str]:
    """The context prefixes an attribute value's keys use (`example:Address` → `example`)."""
    if isinstance(value, Mapping):
        for key, inner in value.items():
            prefix = str(key).partition(":")[0]
            if prefix in known:
                yield prefix
            yield from _prefixes_in(inner, known)
    elif isinstance(value, list):
        for inner in value:
            yield from _prefixes_in(inner, known)


def _fold(elements: Sequence[VocabularyElement], context: Mapping[str, str]) -> dict[tuple[str, str], _Incoming]:
    """The document's elements by (type, key); an element given twice is merged, the later one winning."""
    folded: dict[tuple[str, str], _Incoming] = {}
    for element in elements:
        entry = folded.setdefault((element.type, element.key), _Incoming(element.id))
        entry.element_id = element.id
        entry.attributes = merge_attributes(entry.attributes, element.attributes)
        if element.children is not None:
            entry.children = list(element.children)
        for attribute in element.attributes:
            entry.prefixes.update(_prefixes_in(attribute["attribute"], context))
    return folded


def _insert_missing(session: Session, rows: list[dict[str, Any]]) -> None:
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    for start in range(0, len(rows), CHUNK):
        statement = insert(MasterDataElement).values(rows[start : start + CHUNK]).on_conflict_do_nothing()
        session.execute(statement)


def store(
    session: Session,
    tenant_id: str,
    elements: Sequence[VocabularyElement],
    context: Mapping[str, str],
    *,
    job_id: str | None,
    now: dt.datetime,
) -> int:
    """Store a captured document's master data for the tenant; the number of elements written."""
    folded = _fold(elements, context)
    if not folded:
        return 0
    blank: dict[str, Any] = {
        "attributes": [],
        "children": None,
        "context": {},
        "capture_job_id": job_id,
        "updated_at": now,
    }
    _insert_missing(
        session,
        [
            {"tenant_id": tenant_id, "vocabulary_type": kind, "element_key": key, "element_id": e.element_id, **blank}
            for (kind, key), e in folded.items()
        ],
    )
    keys = list(folded)
    for start in range(0, len(keys), CHUNK):
        chosen = keys[start : start + CHUNK]
        query = (
            select(MasterDataElement)
            .where(
                MasterDataElement.tenant_id == tenant_id,
                tuple_(MasterDataElement.vocabulary_type, MasterDataElement.element_key).in_(chosen),
            )
            .with_for_update()
        )
        for row in session.scalars(query):
            entry = folded[(row.vocabulary_type, row.element_key)]
            row.element_id = entry.element_id
            row.attributes = merge_attributes(row.attributes or [], entry.attributes)
            if entry.children is not None:
                row.children = entry.children
            row.context = {**(row.context or {}), **{p: context[p] for p in sorted(entry.prefixes)}}
            row.capture_job_id = job_id
            row.updated_at = now
    session.flush()
    return len(folded)


# --- reading


def descriptions(session: Session, tenant_id: str | None, identifiers: Iterable[str | None]) -> dict[str, Description]:
    """Name and address of each identifier (any form) the tenant's master data describes, by the identifier
    as given. A location vocabulary's description is preferred when several vocabularies hold it."""
    wanted: dict[str, list[str]] = {}
    for identifier in identifiers:
        if identifier:
            wanted.setdefault(lookup_key(identifier), []).append(identifier)
    if not wanted:
        return {}
    rank = {kind: index for index, kind in enumerate(_PREFERRED_TYPES)}
    best: dict[str, tuple[int, Description]] = {}
    keys = list(wanted)
    for start in range(0, len(keys), CHUNK):
        query = select(MasterDataElement).where(MasterDataElement.element_key.in_(keys[start : start + CHUNK]))
        if tenant_id is not None:
            query = query.where(MasterDataElement.tenant_id == tenant_id)
        for row in session.scalars(query):
            found = describe(row.attributes or [])
            order = rank.get(row.vocabulary_type, len(rank))
            if found is not None and (row.element_key not in best or order < best[row.element_key][0]):
                best[row.element_key] = (order, found)
    return {given: best[key][1] for key, names in wanted.items() if key in best for given in names}


def attributes_by_key(session: Session, tenant_id: str, keys: Iterable[str]) -> list[tuple[str, list[dict[str, Any]]]]:
    """(element key, attributes) of the tenant's elements of those canonical keys, in any vocabulary, a
    location vocabulary's first: one query per CHUNK keys."""
    wanted = sorted(set(keys))
    rank = {kind: index for index, kind in enumerate(_PREFERRED_TYPES)}
    rows: list[tuple[int, str, list[dict[str, Any]]]] = []
    for start in range(0, len(wanted), CHUNK):
        element = MasterDataElement
        query = select(element.vocabulary_type, element.element_key, element.attributes).where(
            element.tenant_id == tenant_id, element.element_key.in_(wanted[start : start + CHUNK])
        )
        rows += [(rank.get(kind, len(rank)), key, attributes or []) for kind, key, attributes in session.execute(query)]
    rows.sort(key=lambda row: row[0])
    return [(key, attributes) for _, key, attributes in rows]


@dataclass(frozen=True)
class MasterDataPage:
    elements: list[MasterDataElement]
    next_token: str | None


def _token(row: MasterDataElement) -> str:
    return base64.urlsafe_b64encode(str(row.id).encode()).decode().rstrip("=")


def _after(token: str) -> int:
    try:
        text = base64.urlsafe_b64decode(token.encode() + b"==").decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        text = ""
    if not text.isdigit():
        raise Invalid("nextPageToken is not one this server gave", code="bad_page_token")
    return int(text)


class MasterDataService:
    """The master data the principal's tenant captured (platform operators: any tenant, or the one named)."""

    def __init__(self, session: Session, principal: Principal) -> None:
        principal.require("traceability.read")
        self.session = session
        self.principal = principal

    def elements(
        self,
        vocabulary_type: str | None = None,
        *,
        per_page: int = 30,
        page_token: str | None = None,
        tenant_id: str | None = None,
    ) -> MasterDataPage:
        """Elements in the order first captured, a page at a time, of one vocabulary type (a URI, or a
        bare `vtype` name such as `BusinessLocation`) or of all."""
        query = select(MasterDataElement)
        scope = tenant_to_read(self.principal, tenant_id)
        if scope is not None:
            query = query.where(MasterDataElement.tenant_id == scope)
        if vocabulary_type:
            query = query.where(MasterDataElement.vocabulary_type == full_type(vocabulary_type))
        if page_token:
            query = query.where(MasterDataElement.id > _after(page_token))
        rows = list(self.session.scalars(query.order_by(MasterDataElement.id).limit(per_page + 1)))
        if len(rows) > per_page:
            return MasterDataPage(rows[:per_page], _token(rows[per_page - 1]))
        return MasterDataPage(rows, None)

    def element(
        self, element_id: str, vocabulary_type: str | None = None, *, tenant_id: str | None = None
    ) -> MasterDataElement:
        """The element an id (URN, Digital Link or any URI) names; Conflict when several vocabularies
        hold it and none is named."""
        text = element_id.strip()
        if not text:
            raise Invalid("name the element by its id", code="element_required")
        query = select(MasterDataElement).where(MasterDataElement.element_key == lookup_key(text))
        scope = tenant_to_read(self.principal, tenant_id)
        if scope is not None:
            query = query.where(MasterDataElement.tenant_id == scope)
        if vocabulary_type:
            query = query.where(MasterDataElement.vocabulary_type == full_type(vocabulary_type))
        rows = list(self.session.scalars(query.order_by(MasterDataElement.id).limit(50)))
        if not rows:
            raise NotFound(f"no master data for {text[:200]}", code="master_data_not_found")
        if len(rows) > 1:
            kinds = sorted({row.vocabulary_type for row in rows})
            tenants = {row.tenant_id for row in rows}
            if len(tenants) > 1:
                raise Conflict(f"{text[:200]} is described in several tenants; name one", code="ambiguous_element")
            raise Conflict(
                f"{text[:200]} is in several vocabularies ({', '.join(kinds)}); name one with `type`",
                code="ambiguous_element",
                types=kinds,
            )
        return rows[0]
