"""Queries over GS1 links. Tenant filtering is the caller's choice: the resolver reads across tenants."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from iip.identifiers.models import Gs1Link


class Gs1LinkRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, link_id: int, tenant_id: str | None) -> Gs1Link | None:
        """The link, or None if absent or (when `tenant_id` is given) another tenant's."""
        link = self.session.get(Gs1Link, link_id)
        if link is None or (tenant_id is not None and link.tenant_id != tenant_id):
            return None
        return link

    def list_links(
        self,
        tenant_id: str | None,
        *,
        gs1_key: str | None = None,
        qualifiers: str | None = None,
        link_type: str | None = None,
        handle: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Gs1Link]:
        query: Select[tuple[Gs1Link]] = select(Gs1Link)
        if tenant_id is not None:
            query = query.where(Gs1Link.tenant_id == tenant_id)
        if gs1_key is not None:
            query = query.where(Gs1Link.gs1_key == gs1_key)
        if qualifiers is not None:
            query = query.where(Gs1Link.qualifiers == qualifiers)
        if link_type is not None:
            query = query.where(Gs1Link.link_type == link_type)
        if handle is not None:
            query = query.where(Gs1Link.handle == handle)
        query = query.order_by(Gs1Link.gs1_key, Gs1Link.qualifiers, Gs1Link.id).limit(limit).offset(offset)
        return list(self.session.scalars(query))

    def for_resolution(self, gs1_key: str, qualifier_levels: Sequence[str]) -> list[Gs1Link]:
        """Every link of the key at any of the given qualifier levels, whoever owns it."""
        query = (
            select(Gs1Link)
            .where(Gs1Link.gs1_key == gs1_key, Gs1Link.qualifiers.in_(list(qualifier_levels)))
            .order_by(Gs1Link.id)
        )
        return list(self.session.scalars(query))

    def key_owner(self, gs1_key: str) -> str | None:
        """The tenant that already links this key, if any."""
        return self.session.scalar(select(Gs1Link.tenant_id).where(Gs1Link.gs1_key == gs1_key).limit(1))

    def find_same(self, link: Gs1Link) -> Gs1Link | None:
        """A link equal to `link` on the columns of the table's unique constraint."""
        return self.session.scalar(
            select(Gs1Link).where(
                Gs1Link.gs1_key == link.gs1_key,
                Gs1Link.qualifiers == link.qualifiers,
                Gs1Link.link_type == link.link_type,
                Gs1Link.language == link.language,
                Gs1Link.media_type == link.media_type,
                Gs1Link.href == link.href,
            )
        )

    def defaults_at(self, gs1_key: str, qualifiers: str, language: str) -> list[Gs1Link]:
        query = select(Gs1Link).where(
            Gs1Link.gs1_key == gs1_key,
            Gs1Link.qualifiers == qualifiers,
            Gs1Link.language == language,
            Gs1Link.is_default.is_(True),
        )
        return list(self.session.scalars(query))

    def has_level(self, gs1_key: str, qualifiers: str) -> bool:
        query = select(Gs1Link.id).where(Gs1Link.gs1_key == gs1_key, Gs1Link.qualifiers == qualifiers).limit(1)
        return self.session.scalar(query) is not None

    def add(self, link: Gs1Link) -> Gs1Link:
        self.session.add(link)
        self.session.flush()
        return link

    def delete(self, link: Gs1Link) -> None:
        self.session.delete(link)
        self.session.flush()
