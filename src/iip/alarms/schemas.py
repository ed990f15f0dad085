"""Request and response models of the alarms API (never ORM objects over the wire)."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from iip.alarms.lifecycle import MAX_COMMENT
from iip.alarms.public import AlarmState, Priority

NO_NUL = r"^[^\x00]*$"
Comment = Annotated[str, StringConstraints(max_length=MAX_COMMENT, pattern=NO_NUL)]
RequiredComment = Annotated[str, StringConstraints(min_length=1, max_length=MAX_COMMENT, pattern=NO_NUL)]
AlarmId = Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=r"^[0-9a-f]{1,32}$")]
MAX_BULK = 1000


# --- rules


class RuleOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    tenant_id: str
    key: str
    version: int = Field(description="the current version")
    kind: str
    title: str
    priority: Priority
    pack: str
    enabled: bool
    spec: dict[str, Any] = Field(description="the rule as stored (defaults left out)")
    created_at: dt.datetime
    updated_at: dt.datetime
    updated_by: str


class RuleVersionOut(BaseModel):
    version: int
    change: str = Field(description="create, update, enable, disable or import")
    spec: dict[str, Any]
    created_by: str
    created_at: dt.datetime


class RuleImportReport(BaseModel):
    created: list[str] = Field(default_factory=list, description="keys of the rules created")
    updated: list[str] = Field(default_factory=list, description="keys of the rules given a new version")
    unchanged: list[str] = Field(default_factory=list)


class RuleEnabled(BaseModel):
    enabled: bool


# --- alarms


class AlarmOut(BaseModel):
    id: str
    tenant_id: str
    rule_key: str
    rule_version: int
    device: str
    state: AlarmState
    active: bool = Field(description="whether the condition is present")
    acknowledged: bool
    announced: bool = Field(description="shown to operators: neither shelved, suppressed nor out of service")
    latched: bool
    shelved: bool
    shelved_until: dt.datetime | None
    shelved_by: str
    suppressed: bool
    out_of_service: bool
    priority: Priority
    position: str
    site: str
    message: str
    value: float | None
    first_activated_at: dt.datetime | None
    last_activated_at: dt.datetime | None
    acknowledged_at: dt.datetime | None
    acknowledged_by: str
    activation_count: int
    acknowledge_count: int
    sequence: int = Field(description="the sequence number of its newest history entry")
    created_at: dt.datetime
    last_change_at: dt.datetime


class AlarmPage(BaseModel):
    items: list[AlarmOut]
    total: int = Field(description="alarms matching the filter, over every page")
    offset: int
    limit: int


class AlarmGroup(BaseModel):
    """The alarms of one rule that match a filter."""

    rule_key: str
    priority: Priority = Field(description="the most urgent priority among them")
    alarms: int
    active: int
    unacknowledged: int
    devices: list[str] = Field(description="the first devices, in key order")


class HistoryOut(BaseModel):
    alarm_id: str
    sequence: int
    action: str
    state: AlarmState
    shelved: bool
    suppressed: bool
    out_of_service: bool
    rule_key: str
    rule_version: int
    device: str
    position: str
    priority: Priority
    value: float | None
    message: str
    actor: str = Field(description="who acted, as the audit log names them (`user:alice`); empty for the platform")
    actor_id: str = Field("", description="the id of that user or API key")
    comment: str
    at: dt.datetime


class HistoryPage(BaseModel):
    items: list[HistoryOut]
    total: int
    offset: int
    limit: int


class CommentOut(BaseModel):
    sequence: int = Field(description="the history entry it was made with")
    author: str
    author_id: str = Field("", description="the id of the user or API key that wrote it")
    text: str
    at: dt.datetime


class AlarmDetail(AlarmOut):
    comments: list[CommentOut]


# --- operator actions


class ActionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    comment: Comment = ""


class CommentBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: RequiredComment


class ShelveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    minutes: float = Field(gt=0, le=60 * 24 * 366, description="how long; at most the configured maximum")
    reason: RequiredComment = Field(description="why it is shelved (ISA-18.2 asks for one)")


class BulkAcknowledge(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[AlarmId] = Field(min_length=1, max_length=MAX_BULK)
    comment: Comment = ""


class BulkAcknowledged(BaseModel):
    acknowledged: list[str] = Field(description="ids of the alarms acknowledged now")
    skipped: list[str] = Field(description="ids of the alarms that had nothing to acknowledge")


class AlarmSort(StrEnum):
    PRIORITY = "priority"  # most urgent first, then newest change
    NEWEST = "newest"  # last change, newest first
    OLDEST = "oldest"
    DEVICE = "device"
    RULE = "rule"
