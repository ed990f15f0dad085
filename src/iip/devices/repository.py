"""Queries of the device registry and the dead letters. `tenant_id=None` means every tenant."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, and_, delete, func, or_, select
from sqlalchemy.orm import Session

from iip.devices.models import DeadLetter, Device, Gateway, Profile

ROW_ID = re.compile(r"^[0-9a-f]{32}$")
Row = TypeVar("Row", Device, Gateway, Profile)


def like_pattern(text: str) -> str:
    """`text` as a LIKE pattern matching it anywhere, its own wildcards taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _tenant(query: Select[tuple[Row]], model: type[Row], tenant_id: str | None) -> Select[tuple[Row]]:
    return query if tenant_id is None else query.where(model.tenant_id == tenant_id)


class RegistryRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    # any kind, by id

    def by_id(self, model: type[Row], row_id: str) -> Row | None:
        if not ROW_ID.match(row_id):
            return None
        return self.session.get(model, row_id)

    # profiles

    def profile(self, tenant_id: str, name: str) -> Profile | None:
        return self.session.scalar(select(Profile).where(Profile.tenant_id == tenant_id, Profile.name == name))

    def profiles(self, tenant_id: str | None, *, protocol: str | None = None, text: str | None = None) -> list[Profile]:
        query = _tenant(select(Profile), Profile, tenant_id)
        if protocol:
            query = query.where(Profile.protocol == protocol)
        if text:
            query = query.where(Profile.name.ilike(like_pattern(text), escape="\\"))
        return list(self.session.scalars(query.order_by(Profile.tenant_id, Profile.name)))

    def profile_usage(self, profile_ids: Iterable[str]) -> dict[str, int]:
        ids = list(profile_ids)
        if not ids:
            return {}
        rows = self.session.execute(
            select(Device.profile_id, func.count()).where(Device.profile_id.in_(ids)).group_by(Device.profile_id)
        )
        return {profile_id: int(count) for profile_id, count in rows}

    def devices_of_profile(self, profile_id: str) -> list[Device]:
        return list(self.session.scalars(select(Device).where(Device.profile_id == profile_id).order_by(Device.key)))

    # gateways

    def gateway(self, tenant_id: str, key: str) -> Gateway | None:
        return self.session.scalar(select(Gateway).where(Gateway.tenant_id == tenant_id, Gateway.key == key))

    def gateways(self, tenant_id: str | None, *, site: str | None = None, text: str | None = None) -> list[Gateway]:
        query = _tenant(select(Gateway), Gateway, tenant_id)
        if site:
            query = query.where(Gateway.site == site)
        if text:
            pattern = like_pattern(text)
            query = query.where(or_(Gateway.key.ilike(pattern, escape="\\"), Gateway.name.ilike(pattern, escape="\\")))
        return list(self.session.scalars(query.order_by(Gateway.tenant_id, Gateway.key)))

    def gateway_in_use(self, gateway_id: str) -> int:
        return self.session.scalar(select(func.count()).where(Device.gateway_id == gateway_id)) or 0

    # devices

    def device(self, tenant_id: str, key: str) -> Device | None:
        return self.session.scalar(select(Device).where(Device.tenant_id == tenant_id, Device.key == key))

    def devices(
        self,
        tenant_id: str | None,
        *,
        site: str | None = None,
        profile: str | None = None,
        protocol: str | None = None,
        gateway: str | None = None,
        text: str | None = None,
        enabled: bool | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Device]:
        query = _tenant(select(Device), Device, tenant_id)
        if site:
            query = query.where(Device.site == site)
        if profile or protocol:
            query = query.join(Profile, Profile.id == Device.profile_id)
            if profile:
                query = query.where(Profile.name == profile)
            if protocol:
                query = query.where(Profile.protocol == protocol)
        if gateway:
            query = query.join(Gateway, Gateway.id == Device.gateway_id).where(Gateway.key == gateway)
        if enabled is not None:
            query = query.where(Device.enabled == enabled)
        if text:
            pattern = like_pattern(text)
            query = query.where(
                or_(
                    Device.key.ilike(pattern, escape="\\"),
                    Device.display_name.ilike(pattern, escape="\\"),
                    Device.site.ilike(pattern, escape="\\"),
                )
            )
        query = query.order_by(Device.tenant_id, Device.key).offset(offset)
        if limit is not None:
            query = query.limit(limit)
        return list(self.session.scalars(query))

    def devices_by_sparkplug(self, ids: Iterable[tuple[str, str, str | None]]) -> list[Device]:
        """Devices (of any tenant) registered under any of these Sparkplug ids."""
        wanted = list(ids)
        if not wanted:
            return []
        conditions = [
            and_(
                Device.sparkplug_group_id == group,
                Device.sparkplug_edge_node_id == edge,
                Device.sparkplug_device_id.is_(None) if device is None else Device.sparkplug_device_id == device,
            )
            for group, edge, device in wanted
        ]
        found: list[Device] = []
        for at in range(0, len(conditions), 200):  # bounded statements for large imports
            found += self.session.scalars(select(Device).where(or_(*conditions[at : at + 200])))
        return found

    # dead letters

    def _letter_filters(
        self,
        tenant_id: str | None,
        device: str | None,
        source: str | None,
        since: dt.datetime | None,
        before: dt.datetime | None,
    ) -> list[ColumnElement[bool]]:
        filters: list[ColumnElement[bool]] = []
        if tenant_id is not None:
            filters.append(DeadLetter.tenant_id == tenant_id)
        if device:
            filters.append(DeadLetter.device == device)
        if source:
            filters.append(DeadLetter.source == source)
        if since is not None:
            filters.append(DeadLetter.received_at >= since)
        if before is not None:
            filters.append(DeadLetter.received_at < before)
        return filters

    def dead_letters(
        self,
        tenant_id: str | None,
        *,
        device: str | None = None,
        source: str | None = None,
        since: dt.datetime | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> Sequence[DeadLetter]:
        filters = self._letter_filters(tenant_id, device, source, since, None)
        if before_id is not None:
            filters.append(DeadLetter.id < before_id)
        query = select(DeadLetter).where(*filters).order_by(DeadLetter.id.desc()).limit(limit)
        return list(self.session.scalars(query))

    def purge_dead_letters(
        self,
        tenant_id: str | None,
        *,
        device: str | None = None,
        source: str | None = None,
        before: dt.datetime | None = None,
    ) -> int:
        filters = self._letter_filters(tenant_id, device, source, None, before)
        result: Any = self.session.execute(delete(DeadLetter).where(*filters))
        return int(result.rowcount or 0)
