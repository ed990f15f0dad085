"""Alarm rules as data: what each kind of rule watches, and its rationalisation.

A rule is scoped to a device profile (every device of that profile) or to one device, and is
stored versioned (a change makes a new version; alarms record the version that raised them). Rule
packs are YAML files of rules (`packs/*.yaml`). Nothing here evaluates a rule: see `evaluation`.

Series are named by metric: `metric` is a metric of the device the rule is applied to; a reference
to another device's metric is written `device-key/metric`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from iip.alarms.public import Priority

KEY = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,99}$")
METRIC = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,127}$")
SERIES_REF = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9_.\-:]{0,127}/)?[A-Za-z][A-Za-z0-9_.\-]{0,127}$")
MAX_EXPRESSION = 2000


class RuleKind(StrEnum):
    THRESHOLD = "threshold"
    DEVIATION = "deviation"
    RATE_OF_CHANGE = "rate_of_change"
    NO_DATA = "no_data"
    DIGITAL_STATE = "digital_state"
    EXPRESSION = "expression"
    ROLLING_AVERAGE = "rolling_average"
    EVENT = "event"


class Scope(BaseModel):
    """Exactly one of `profile` (every device of the profile) or `device` (one device key)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    profile: str | None = None
    device: str | None = None

    @model_validator(mode="after")
    def _one(self) -> Scope:
        if (self.profile is None) == (self.device is None):
            raise ValueError("a scope names exactly one of profile or device")
        return self


class Rationalisation(BaseModel):
    """What the operator needs to know (ISA-18.2 master alarm database)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cause: str = ""
    consequence: str = ""
    corrective_action: str = ""
    response_time_s: int | None = Field(default=None, ge=0, description="allowed response time")


class RuleBase(BaseModel):
    """Fields every rule has."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(description="unique in the tenant, lower case: a-z 0-9 _ . -")
    title: str = Field(min_length=1, max_length=200)
    description: str = ""
    scope: Scope
    priority: Priority = Priority.MEDIUM
    message: str = Field(
        default="", max_length=500, description="text of the alarm; {device} {metric} {value} {limit} filled in"
    )
    on_delay_s: float = Field(default=0.0, ge=0, le=86_400, description="condition must hold this long to raise")
    off_delay_s: float = Field(default=0.0, ge=0, le=86_400, description="condition must be clear this long to clear")
    latched: bool = Field(default=False, description="stays latched after return to normal until reset")
    suppress_when: str | None = Field(
        default=None,
        max_length=MAX_EXPRESSION,
        description="expression over the device's metrics; while true the alarm is suppressed by design",
    )
    position: str = Field(default="", max_length=100, description="operator position; default: the device's site")
    rationalisation: Rationalisation = Field(default_factory=Rationalisation)
    enabled: bool = True
    pack: str = Field(default="", description="the rule pack it came from, if any")

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        if not KEY.match(value):
            raise ValueError("a rule key is 1-100 characters of a-z 0-9 _ . - starting with a letter or digit")
        return value


def _metric(value: str) -> str:
    if not METRIC.match(value):
        raise ValueError(f"{value!r} is not a metric name")
    return value


def _series(value: str) -> str:
    if not SERIES_REF.match(value):
        raise ValueError(f"{value!r} is neither a metric name nor device-key/metric")
    return value


class ThresholdRule(RuleBase):
    """Active while the value is above `high` or below `low`; clears only past the deadband."""

    kind: Literal[RuleKind.THRESHOLD] = RuleKind.THRESHOLD
    metric: str
    high: float | None = None
    low: float | None = None
    deadband: float = Field(default=0.0, ge=0)

    _m = field_validator("metric")(_metric)

    @model_validator(mode="after")
    def _limits(self) -> ThresholdRule:
        if self.high is None and self.low is None:
            raise ValueError("a threshold rule needs high, low or both")
        if self.high is not None and self.low is not None and self.low >= self.high:
            raise ValueError("low must be below high")
        return self


class DeviationRule(RuleBase):
    """Active while |value - reference| exceeds `limit`; the reference is a setpoint or another series."""

    kind: Literal[RuleKind.DEVIATION] = RuleKind.DEVIATION
    metric: str
    setpoint: float | None = None
    reference: str | None = None
    limit: float = Field(gt=0)
    deadband: float = Field(default=0.0, ge=0)

    _m = field_validator("metric")(_metric)

    @field_validator("reference")
    @classmethod
    def _reference(cls, value: str | None) -> str | None:
        return None if value is None else _series(value)

    @model_validator(mode="after")
    def _one_reference(self) -> DeviationRule:
        if (self.setpoint is None) == (self.reference is None):
            raise ValueError("a deviation rule names exactly one of setpoint or reference")
        return self


class RateOfChangeRule(RuleBase):
    """Active while the value changes faster than `limit` units per second (over `window_s`)."""

    kind: Literal[RuleKind.RATE_OF_CHANGE] = RuleKind.RATE_OF_CHANGE
    metric: str
    limit: float = Field(gt=0, description="units per second, either direction unless `direction` says")
    direction: Literal["both", "rising", "falling"] = "both"
    window_s: float = Field(default=60.0, gt=0, le=86_400)
    deadband: float = Field(default=0.0, ge=0)

    _m = field_validator("metric")(_metric)


class NoDataRule(RuleBase):
    """Active when the metric (or, without one, the device) sent nothing for `timeout_s`, or went offline."""

    kind: Literal[RuleKind.NO_DATA] = RuleKind.NO_DATA
    metric: str | None = None
    timeout_s: float = Field(default=300.0, gt=0, le=7 * 86_400)
    offline: bool = Field(default=True, description="also active while the device is reported offline")

    @field_validator("metric")
    @classmethod
    def _m(cls, value: str | None) -> str | None:
        return None if value is None else _metric(value)


class DigitalStateRule(RuleBase):
    """Active while a discrete metric is in one of `alarm_states` (or out of `normal_states`)."""

    kind: Literal[RuleKind.DIGITAL_STATE] = RuleKind.DIGITAL_STATE
    metric: str
    alarm_states: list[float] = Field(default_factory=list)
    normal_states: list[float] = Field(default_factory=list)

    _m = field_validator("metric")(_metric)

    @model_validator(mode="after")
    def _states(self) -> DigitalStateRule:
        if bool(self.alarm_states) == bool(self.normal_states):
            raise ValueError("a digital-state rule lists exactly one of alarm_states or normal_states")
        return self


class ExpressionRule(RuleBase):
    """Active while a boolean expression over the device's metrics (and other series) is true."""

    kind: Literal[RuleKind.EXPRESSION] = RuleKind.EXPRESSION
    expression: str = Field(min_length=1, max_length=MAX_EXPRESSION)


class RollingAverageRule(RuleBase):
    """Active while the average of the metric over the last `window_s` is above `high` or below `low`.

    For emission limits on rolling averages (e.g. hourly SO2 mg/m3).
    """

    kind: Literal[RuleKind.ROLLING_AVERAGE] = RuleKind.ROLLING_AVERAGE
    metric: str
    window_s: float = Field(gt=0, le=7 * 86_400)
    high: float | None = None
    low: float | None = None
    deadband: float = Field(default=0.0, ge=0)
    min_points: int = Field(default=1, ge=1, description="no judgement before this many points in the window")

    _m = field_validator("metric")(_metric)

    @model_validator(mode="after")
    def _limits(self) -> RollingAverageRule:
        if self.high is None and self.low is None:
            raise ValueError("a rolling-average rule needs high, low or both")
        return self


class EventRule(RuleBase):
    """Active while an `AlarmEvent` of `source`/`kind` is raised for a subject (cleared by its clear event or `hold_s`).

    The scope's device (or profile) limits the subjects; `min_severity` filters weak events.
    """

    kind: Literal[RuleKind.EVENT] = RuleKind.EVENT
    source: str = Field(min_length=1, max_length=50)
    event_kind: str = Field(default="*", max_length=100, description="exact kind, or a prefix ending in *")
    min_severity: float = 0.0
    hold_s: float | None = Field(default=None, gt=0, description="clear this long after the last raise")


RuleSpec = Annotated[
    ThresholdRule
    | DeviationRule
    | RateOfChangeRule
    | NoDataRule
    | DigitalStateRule
    | ExpressionRule
    | RollingAverageRule
    | EventRule,
    Field(discriminator="kind"),
]
RULE_ADAPTER: TypeAdapter[RuleSpec] = TypeAdapter(RuleSpec)
RULES_ADAPTER: TypeAdapter[list[RuleSpec]] = TypeAdapter(list[RuleSpec])


def parse_rule(data: Any) -> RuleSpec:
    """A rule from its JSON/YAML form; raises pydantic's ValidationError."""
    return RULE_ADAPTER.validate_python(data)


def rule_data(rule: RuleSpec) -> dict[str, Any]:
    """The JSON-ready form stored and exported (defaults left out)."""
    data: dict[str, Any] = rule.model_dump(mode="json", exclude_defaults=True)
    data["kind"] = rule.kind.value
    return data


@dataclass(frozen=True, slots=True)
class VersionedRule:
    """A stored rule: its spec and the version number it has in the tenant's rule store."""

    tenant_id: str
    spec: RuleSpec
    version: int


@dataclass(frozen=True, slots=True)
class ConditionChange:
    """What evaluation tells the alarm lifecycle: a condition or a suppression began or ended.

    Exactly one of `active` (the rule's condition was raised or cleared, after its delays) and
    `suppressed` (its `suppress_when` became true or false) is set.
    """

    tenant_id: str
    rule_key: str
    rule_version: int
    device: str  # device key, or an event's subject
    at_ms: int  # when it happened (the point's or event's time), Unix ms
    active: bool | None = None
    suppressed: bool | None = None
    value: float | None = None
    message: str = ""
