"""ORM models of alarm rules, alarms and their history (tables prefixed `alarms_`).

Rules are versioned: `alarms_rule` holds the current version of each rule key of a tenant and
`alarms_rule_version` every version ever stored (who, when, what kind of change). A deleted rule
keeps its row (`deleted_at`) so its versions stay readable and a rule created again under the same
key continues the numbering: an alarm's `rule_version` always names one stored spec.

`alarms_alarm` holds one row per (tenant, rule key, device) with its ISA-18.2 state; every
transition appends to `alarms_history` with the alarm's next sequence number. Alarms and history
name the rule and device by key, not by foreign key: the history outlives both.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Double,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from iip.kernel.db import Base, utcnow

RULE_KEY_LENGTH = 100  # rules.KEY
DEVICE_LENGTH = 200  # a device key, or an event's subject
ACTOR_LENGTH = 200  # a principal label, as the audit log names it


class Rule(Base):
    """The current version of one rule of one tenant."""

    __tablename__ = "alarms_rule"
    __table_args__ = (UniqueConstraint("tenant_id", "key"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("kernel_tenant.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(RULE_KEY_LENGTH))
    version: Mapped[int] = mapped_column(Integer)  # the current version
    kind: Mapped[str] = mapped_column(String(30))  # copied from the spec, for filtering
    title: Mapped[str] = mapped_column(String(200))
    priority: Mapped[str] = mapped_column(String(10))
    pack: Mapped[str] = mapped_column(String(100), default="")
    enabled: Mapped[bool] = mapped_column(default=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)  # rules.rule_data of the current version
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH), default="")
    deleted_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class RuleVersion(Base):
    """One stored version of a rule: its whole spec, and who made it when."""

    __tablename__ = "alarms_rule_version"
    __table_args__ = (UniqueConstraint("rule_id", "version"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    rule_id: Mapped[str] = mapped_column(ForeignKey("alarms_rule.id", ondelete="CASCADE"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("kernel_tenant.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    change: Mapped[str] = mapped_column(String(20))  # create, update, disable, enable, delete, import
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Alarm(Base):
    """The alarm of one rule on one device: its state, flags and counters."""

    __tablename__ = "alarms_alarm"
    __table_args__ = (
        UniqueConstraint("tenant_id", "rule_key", "device"),
        # The console's active-alarm list: by state, most urgent first.
        Index("ix_alarms_alarm_tenant_id_state_priority_rank", "tenant_id", "state", "priority_rank"),
        Index("ix_alarms_alarm_tenant_id_last_change_at", "tenant_id", "last_change_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("kernel_tenant.id", ondelete="CASCADE"))
    rule_key: Mapped[str] = mapped_column(String(RULE_KEY_LENGTH))
    rule_version: Mapped[int] = mapped_column(Integer)
    device: Mapped[str] = mapped_column(String(DEVICE_LENGTH))
    state: Mapped[str] = mapped_column(String(20))
    latched: Mapped[bool] = mapped_column(default=False)
    shelved: Mapped[bool] = mapped_column(default=False)
    shelved_until: Mapped[dt.datetime | None] = mapped_column(default=None, index=True)
    shelved_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH), default="")
    suppressed: Mapped[bool] = mapped_column(default=False)
    out_of_service: Mapped[bool] = mapped_column(default=False)
    priority: Mapped[str] = mapped_column(String(10))
    priority_rank: Mapped[int] = mapped_column(SmallInteger)  # 0 most urgent, for sorting
    position: Mapped[str] = mapped_column(String(100), default="")
    site: Mapped[str] = mapped_column(String(200), default="")
    message: Mapped[str] = mapped_column(String(500), default="")
    value: Mapped[float | None] = mapped_column(Double, default=None)
    # Unix ms of the last condition and suppression change applied: older or repeated ones are skipped.
    condition_ms: Mapped[int | None] = mapped_column(BigInteger, default=None)
    suppression_ms: Mapped[int | None] = mapped_column(BigInteger, default=None)
    first_activated_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    last_activated_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    acknowledged_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    acknowledged_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH), default="")
    activation_count: Mapped[int] = mapped_column(Integer, default=0)
    acknowledge_count: Mapped[int] = mapped_column(Integer, default=0)
    sequence: Mapped[int] = mapped_column(Integer, default=0)  # of its newest history entry
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_change_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AlarmHistory(Base):
    """One transition of one alarm, with what the alarm was right after it."""

    __tablename__ = "alarms_history"
    __table_args__ = (
        UniqueConstraint("alarm_id", "sequence"),
        # The tenant's journal and the metrics read by time.
        Index("ix_alarms_history_tenant_id_at", "tenant_id", "at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    alarm_id: Mapped[str] = mapped_column(ForeignKey("alarms_alarm.id", ondelete="CASCADE"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("kernel_tenant.id", ondelete="CASCADE"))
    sequence: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(20))
    state: Mapped[str] = mapped_column(String(20))  # after the action
    shelved: Mapped[bool] = mapped_column(default=False)
    suppressed: Mapped[bool] = mapped_column(default=False)
    out_of_service: Mapped[bool] = mapped_column(default=False)
    # Copied from the alarm at the time: metrics count by the position and priority then in force.
    rule_key: Mapped[str] = mapped_column(String(RULE_KEY_LENGTH))
    rule_version: Mapped[int] = mapped_column(Integer)
    device: Mapped[str] = mapped_column(String(DEVICE_LENGTH))
    position: Mapped[str] = mapped_column(String(100), default="")
    priority: Mapped[str] = mapped_column(String(10))
    value: Mapped[float | None] = mapped_column(Double, default=None)
    message: Mapped[str] = mapped_column(String(500), default="")
    actor: Mapped[str] = mapped_column(String(ACTOR_LENGTH), default="")
    # The label says who in words; the id tells apart two API keys of one name, and outlives a rename.
    actor_id: Mapped[str] = mapped_column(String(32), default="", server_default="")
    comment: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[dt.datetime] = mapped_column()


class AlarmComment(Base):
    """An operator's comment on an alarm (from `comment`, or given with an acknowledgement, shelving ...)."""

    __tablename__ = "alarms_comment"
    __table_args__ = (Index("ix_alarms_comment_alarm_id_at", "alarm_id", "at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    alarm_id: Mapped[str] = mapped_column(ForeignKey("alarms_alarm.id", ondelete="CASCADE"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("kernel_tenant.id", ondelete="CASCADE"), index=True)
    sequence: Mapped[int] = mapped_column(Integer)  # the history entry it was made with
    author: Mapped[str] = mapped_column(String(ACTOR_LENGTH))
    author_id: Mapped[str] = mapped_column(String(32), default="", server_default="")
    text: Mapped[str] = mapped_column(Text)
    at: Mapped[dt.datetime] = mapped_column()
