"""Queries of rules, alarms and their history. `tenant_id=None` means every tenant."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, case, func, or_, select
from sqlalchemy.orm import Session

from iip.alarms.lifecycle import ACTIVE_STATES, UNACKNOWLEDGED_STATES
from iip.alarms.models import Alarm, AlarmComment, AlarmHistory, Rule, RuleVersion
from iip.alarms.public import AlarmState, Priority
from iip.alarms.schemas import AlarmSort

ROW_ID = re.compile(r"^[0-9a-f]{32}$")
GroupBy = Literal["rule", "device"]
STREAM_CHUNK = 5000  # history rows fetched at a time when streaming
HISTORY_RECORD_COLUMNS = (
    AlarmHistory.alarm_id,
    AlarmHistory.rule_key,
    AlarmHistory.device,
    AlarmHistory.position,
    AlarmHistory.priority,
    AlarmHistory.action,
    AlarmHistory.state,
    AlarmHistory.at,
)


def like_pattern(text: str) -> str:
    """`text` as a LIKE pattern matching it anywhere, its own wildcards taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


@dataclass(frozen=True, slots=True)
class AlarmFilter:
    """What an alarm list is limited to; None (or empty) leaves a criterion out."""

    states: Sequence[AlarmState] = ()
    priorities: Sequence[Priority] = ()
    site: str | None = None
    position: str | None = None
    device: str | None = None
    rule_key: str | None = None
    text: str | None = None  # part of the message, device or rule key
    shelved: bool | None = None
    suppressed: bool | None = None
    out_of_service: bool | None = None


SORTS: dict[AlarmSort, tuple[Any, ...]] = {
    AlarmSort.PRIORITY: (Alarm.priority_rank, Alarm.last_change_at.desc(), Alarm.id),
    AlarmSort.NEWEST: (Alarm.last_change_at.desc(), Alarm.id),
    AlarmSort.OLDEST: (Alarm.last_change_at, Alarm.id),
    AlarmSort.DEVICE: (Alarm.device, Alarm.rule_key, Alarm.id),
    AlarmSort.RULE: (Alarm.rule_key, Alarm.device, Alarm.id),
}


class AlarmRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    # --- rules

    def rule_by_id(self, rule_id: str) -> Rule | None:
        return self.session.get(Rule, rule_id) if ROW_ID.match(rule_id) else None

    def rule(self, tenant_id: str, key: str) -> Rule | None:
        return self.session.scalar(select(Rule).where(Rule.tenant_id == tenant_id, Rule.key == key))

    def rules(
        self,
        tenant_id: str | None,
        *,
        enabled: bool | None = None,
        kind: str | None = None,
        pack: str | None = None,
        text: str | None = None,
    ) -> list[Rule]:
        query = select(Rule).where(Rule.deleted_at.is_(None))
        if tenant_id is not None:
            query = query.where(Rule.tenant_id == tenant_id)
        if enabled is not None:
            query = query.where(Rule.enabled.is_(enabled))
        if kind:
            query = query.where(Rule.kind == kind)
        if pack is not None:
            query = query.where(Rule.pack == pack)
        if text:
            pattern = like_pattern(text)
            query = query.where(or_(Rule.key.ilike(pattern, escape="\\"), Rule.title.ilike(pattern, escape="\\")))
        return list(self.session.scalars(query.order_by(Rule.tenant_id, Rule.key)))

    def rules_by_key(self, tenant_id: str, keys: Sequence[str]) -> dict[str, Rule]:
        if not keys:
            return {}
        rows = self.session.scalars(select(Rule).where(Rule.tenant_id == tenant_id, Rule.key.in_(keys)))
        return {row.key: row for row in rows}

    def versions(self, rule_id: str) -> list[RuleVersion]:
        query = select(RuleVersion).where(RuleVersion.rule_id == rule_id).order_by(RuleVersion.version)
        return list(self.session.scalars(query))

    def version(self, rule_id: str, version: int) -> RuleVersion | None:
        return self.session.scalar(
            select(RuleVersion).where(RuleVersion.rule_id == rule_id, RuleVersion.version == version)
        )

    def version_specs(self, tenant_id: str, wanted: Sequence[tuple[str, int]]) -> dict[tuple[str, int], dict[str, Any]]:
        """The stored specs of (rule key, version) pairs of a tenant; pairs not stored are left out."""
        if not wanted:
            return {}
        keys = sorted({key for key, _ in wanted})
        query = (
            select(Rule.key, RuleVersion.version, RuleVersion.spec)
            .join(RuleVersion, RuleVersion.rule_id == Rule.id)
            .where(Rule.tenant_id == tenant_id, Rule.key.in_(keys))
            .where(RuleVersion.version.in_(sorted({version for _, version in wanted})))
        )
        return {(key, version): spec for key, version, spec in self.session.execute(query)}

    # --- alarms

    def alarm_by_id(self, alarm_id: str) -> Alarm | None:
        return self.session.get(Alarm, alarm_id) if ROW_ID.match(alarm_id) else None

    def alarms_by_id(self, alarm_ids: Sequence[str], *, lock: bool = False) -> list[Alarm]:
        ids = sorted({a for a in alarm_ids if ROW_ID.match(a)})
        if not ids:
            return []
        query = select(Alarm).where(Alarm.id.in_(ids)).order_by(Alarm.id)
        if lock:
            # Locked rows as they are now, not as this session last saw them.
            query = query.with_for_update().execution_options(populate_existing=True)
        return list(self.session.scalars(query))

    def alarms_for(self, tenant_id: str, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Alarm]:
        """The alarms of (rule key, device) pairs of a tenant, locked for the transaction."""
        if not pairs:
            return {}
        keys = sorted({key for key, _ in pairs})
        devices = sorted({device for _, device in pairs})
        query = (
            select(Alarm)
            .where(Alarm.tenant_id == tenant_id, Alarm.rule_key.in_(keys), Alarm.device.in_(devices))
            .order_by(Alarm.id)  # one lock order, so concurrent batches do not deadlock
            .with_for_update()
        )
        wanted = set(pairs)
        return {(a.rule_key, a.device): a for a in self.session.scalars(query) if (a.rule_key, a.device) in wanted}

    def alarms_of_rule(self, tenant_id: str, rule_key: str) -> list[Alarm]:
        query = select(Alarm).where(Alarm.tenant_id == tenant_id, Alarm.rule_key == rule_key).order_by(Alarm.id)
        return list(self.session.scalars(query.with_for_update()))

    def shelves_expired(self, now: dt.datetime) -> list[Alarm]:
        query = (
            select(Alarm)
            .where(Alarm.shelved.is_(True), Alarm.shelved_until <= now)
            .order_by(Alarm.id)
            .with_for_update()
        )
        return list(self.session.scalars(query))

    def _filtered(self, tenant_id: str | None, where: AlarmFilter) -> list[ColumnElement[bool]]:
        conditions: list[ColumnElement[bool]] = []
        if tenant_id is not None:
            conditions.append(Alarm.tenant_id == tenant_id)
        if where.states:
            conditions.append(Alarm.state.in_([s.value for s in where.states]))
        if where.priorities:
            conditions.append(Alarm.priority.in_([p.value for p in where.priorities]))
        for column, value in (
            (Alarm.site, where.site),
            (Alarm.position, where.position),
            (Alarm.device, where.device),
            (Alarm.rule_key, where.rule_key),
        ):
            if value is not None:
                conditions.append(column == value)
        for flag, wanted in (
            (Alarm.shelved, where.shelved),
            (Alarm.suppressed, where.suppressed),
            (Alarm.out_of_service, where.out_of_service),
        ):
            if wanted is not None:
                conditions.append(flag.is_(wanted))
        if where.text:
            pattern = like_pattern(where.text)
            conditions.append(
                or_(
                    Alarm.message.ilike(pattern, escape="\\"),
                    Alarm.device.ilike(pattern, escape="\\"),
                    Alarm.rule_key.ilike(pattern, escape="\\"),
                )
            )
        return conditions

    def alarms(
        self, tenant_id: str | None, where: AlarmFilter, *, sort: AlarmSort, offset: int, limit: int
    ) -> tuple[list[Alarm], int]:
        conditions = self._filtered(tenant_id, where)
        total = self.session.scalar(select(func.count()).select_from(Alarm).where(and_(True, *conditions))) or 0
        query = select(Alarm).where(and_(True, *conditions)).order_by(*SORTS[sort]).offset(offset).limit(limit)
        return list(self.session.scalars(query)), int(total)

    def groups(
        self,
        tenant_id: str | None,
        where: AlarmFilter,
        *,
        by: GroupBy = "rule",
        offset: int = 0,
        limit: int | None = None,
    ) -> list[tuple[str, int, int, int, int]]:
        """(rule key or device, alarms, active, unacknowledged, most urgent rank) per rule or device, busiest
        first; counted in the database, one page of groups read."""
        column = Alarm.rule_key if by == "rule" else Alarm.device
        active = func.sum(case((Alarm.state.in_([s.value for s in ACTIVE_STATES]), 1), else_=0))
        unacknowledged = func.sum(case((Alarm.state.in_([s.value for s in UNACKNOWLEDGED_STATES]), 1), else_=0))
        query = (
            select(column, func.count(), active, unacknowledged, func.min(Alarm.priority_rank))
            .where(and_(True, *self._filtered(tenant_id, where)))
            .group_by(column)
            .order_by(func.count().desc(), column)
            .offset(offset)
            .limit(limit)
        )
        return [
            (key, int(n), int(a or 0), int(u or 0), int(rank)) for key, n, a, u, rank in self.session.execute(query)
        ]

    def group_count(self, tenant_id: str | None, where: AlarmFilter, *, by: GroupBy = "rule") -> int:
        """How many rules (or devices) have alarms matching `where`."""
        column = Alarm.rule_key if by == "rule" else Alarm.device
        query = select(func.count(func.distinct(column))).where(and_(True, *self._filtered(tenant_id, where)))
        return int(self.session.scalar(query) or 0)

    def group_devices(
        self, tenant_id: str | None, where: AlarmFilter, rule_keys: Sequence[str], per_rule: int
    ) -> dict[str, list[str]]:
        """The first `per_rule` devices (by key) of each rule's matching alarms."""
        return self._members(tenant_id, where, Alarm.rule_key, Alarm.device, rule_keys, per_rule)

    def group_rules(
        self, tenant_id: str | None, where: AlarmFilter, devices: Sequence[str], per_device: int
    ) -> dict[str, list[str]]:
        """The first `per_device` rule keys of each device's matching alarms."""
        return self._members(tenant_id, where, Alarm.device, Alarm.rule_key, devices, per_device)

    def _members(
        self,
        tenant_id: str | None,
        where: AlarmFilter,
        group: Any,
        member: Any,
        names: Sequence[str],
        per_group: int,
    ) -> dict[str, list[str]]:
        if not names:
            return {}
        # Numbered in the database, so a group of 10,000 alarms sends `per_group` rows, not 10,000.
        numbered = (
            select(group.label("name"), member.label("member"))
            .add_columns(func.row_number().over(partition_by=group, order_by=member).label("n"))
            .where(and_(True, *self._filtered(tenant_id, where)), group.in_(names))
            .subquery()
        )
        query = (
            select(numbered.c.name, numbered.c.member)
            .where(numbered.c.n <= per_group)
            .order_by(numbered.c.name, numbered.c.member)
        )
        found: dict[str, list[str]] = {}
        for name, value in self.session.execute(query):
            found.setdefault(name, []).append(value)
        return found

    # --- history

    def history(self, alarm_id: str, *, offset: int, limit: int) -> tuple[list[AlarmHistory], int]:
        where = AlarmHistory.alarm_id == alarm_id
        total = self.session.scalar(select(func.count()).select_from(AlarmHistory).where(where)) or 0
        query = select(AlarmHistory).where(where).order_by(AlarmHistory.sequence).offset(offset).limit(limit)
        return list(self.session.scalars(query)), int(total)

    def tenant_history(
        self,
        tenant_id: str | None,
        *,
        start: dt.datetime | None,
        end: dt.datetime | None,
        offset: int,
        limit: int,
        device: str | None = None,
        rule_key: str | None = None,
    ) -> tuple[list[AlarmHistory], int]:
        conditions = self._history_range(tenant_id, start, end)
        if device is not None:
            conditions.append(AlarmHistory.device == device)
        if rule_key is not None:
            conditions.append(AlarmHistory.rule_key == rule_key)
        total = self.session.scalar(select(func.count()).select_from(AlarmHistory).where(and_(True, *conditions))) or 0
        query = (
            select(AlarmHistory)
            .where(and_(True, *conditions))
            .order_by(AlarmHistory.at.desc(), AlarmHistory.id.desc())
            .offset(offset)
            .limit(limit)
        )
        return list(self.session.scalars(query)), int(total)

    @staticmethod
    def _history_range(
        tenant_id: str | None, start: dt.datetime | None, end: dt.datetime | None
    ) -> list[ColumnElement[bool]]:
        conditions: list[ColumnElement[bool]] = []
        if tenant_id is not None:
            conditions.append(AlarmHistory.tenant_id == tenant_id)
        if start is not None:
            conditions.append(AlarmHistory.at >= start)
        if end is not None:
            conditions.append(AlarmHistory.at < end)
        return conditions

    def history_between(self, tenant_id: str | None, start: dt.datetime, end: dt.datetime) -> Iterator[tuple[Any, ...]]:
        """(alarm id, rule key, device, position, priority, action, state, at) of the entries in [start, end),
        streamed in chunks by id: plain tuples, no ORM objects, for histories of millions of entries."""
        conditions = self._history_range(tenant_id, start, end)
        columns = (*HISTORY_RECORD_COLUMNS, AlarmHistory.id)
        last_id = 0
        while True:
            query = (
                select(*columns)
                .where(and_(True, *conditions), AlarmHistory.id > last_id)
                .order_by(AlarmHistory.id)
                .limit(STREAM_CHUNK)
            )
            rows = self.session.execute(query).all()
            if not rows:
                return
            for row in rows:
                yield tuple(row[:-1])
            last_id = rows[-1][-1]

    def history_before(self, tenant_id: str | None, start: dt.datetime) -> list[AlarmHistory]:
        """Per alarm, its newest entry before `start` and its newest activation before `start`.

        Enough for the metrics to know which alarms were standing at `start`, and since when.
        """
        newest: list[Any] = [func.max(AlarmHistory.sequence)]
        conditions = [*self._history_range(tenant_id, None, start)]
        latest = select(AlarmHistory.alarm_id, *newest).where(and_(True, *conditions)).group_by(AlarmHistory.alarm_id)
        activated = (
            select(AlarmHistory.alarm_id, *newest)
            .where(and_(True, *conditions), AlarmHistory.action == "activate")
            .group_by(AlarmHistory.alarm_id)
        )
        wanted = {(a, s) for query in (latest, activated) for a, s in self.session.execute(query)}
        found: list[AlarmHistory] = []
        pairs = sorted(wanted)
        for first in range(0, len(pairs), 500):
            chunk = pairs[first : first + 500]
            ids = sorted({a for a, _ in chunk})
            rows = self.session.scalars(
                select(AlarmHistory)
                .where(AlarmHistory.alarm_id.in_(ids))
                .where(AlarmHistory.sequence.in_(sorted({s for _, s in chunk})))
            )
            found += [row for row in rows if (row.alarm_id, row.sequence) in wanted]
        return found

    # --- comments

    def comments(self, alarm_id: str) -> list[AlarmComment]:
        query = (
            select(AlarmComment)
            .where(AlarmComment.alarm_id == alarm_id)
            .order_by(AlarmComment.at, AlarmComment.sequence)
        )
        return list(self.session.scalars(query))
