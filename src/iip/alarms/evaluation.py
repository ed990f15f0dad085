"""Rule evaluation on the live stream: points, device status and events in, condition changes out.

`RuleEngine` holds, per tenant, one *instance* per (rule, device): a rule scoped to a profile has an
instance on every enabled device of the profile. Instances are indexed by the series they watch, so
a point costs one dictionary lookup (per distinct series of its batch) plus a call per instance that
watches it. Rule fields are copied into plain slotted objects when rules are loaded: nothing in the
path of a point touches pydantic.

Time is event time (the points' `ts_ms`, the events' `at`); only `tick(now_ms)` looks at the clock,
for what happens when nothing arrives: on/off delays that have run out, no-data timeouts, `hold_s`.
A point no newer than the last one an instance has seen for its series is ignored (delivery is at
least once, and batches arrive out of order), so a late or repeated point never flips a condition
back. Points of bad quality, and values that are not finite, only count as a sign of life for
no-data rules.

An instance turns a raw condition into changes: the condition must hold `on_delay_s` before the
change `active=True` is emitted (at the time it had held that long), and be clear `off_delay_s`
before `active=False`. Expressions (expression rules, deviations from another series,
`suppress_when`) read the newest value of every series they name; they are evaluated once per
timestamp, after all the points of that timestamp in the batch, so two metrics sent together never
raise a condition that neither value pair ever met.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from iip.alarms.expressions import CompiledExpression, Lookup, compile_expression
from iip.alarms.public import AlarmEvent
from iip.alarms.rules import (
    ConditionChange,
    DeviationRule,
    DigitalStateRule,
    EventRule,
    ExpressionRule,
    NoDataRule,
    RateOfChangeRule,
    RollingAverageRule,
    RuleKind,
    RuleSpec,
    Scope,
    ThresholdRule,
    VersionedRule,
)
from iip.devices.public import DevicePlacement
from iip.kernel.errors import Invalid
from iip.telemetry.public import DeviceStatus, Point, PointBatch, Quality

Out = list[ConditionChange]
Handler = Callable[[int, float, Out], None]
SeriesKey = tuple[str, str]

_INF: Final = math.inf
_NEVER: Final = -(2**63)
_BAD: Final = int(Quality.BAD)
_RESOLVED_LIMIT: Final = 200_000  # cached series entries per tenant before the cache starts over
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_PRIMED: Final = 2  # side of an instance primed as active without knowing which limit it passed
_PLACEHOLDER = re.compile(r"\{(device|metric|value|limit)(?::([^{}]*))?\}")


@dataclass(frozen=True, slots=True)
class Preview:
    """What a rule would have done over stored points: how often it became active, for how long in all."""

    activations: int
    active_ms: int
    changes: list[ConditionChange]


class RuleEngine:
    """Evaluates every tenant's rules as points, device status and events arrive (not thread-safe)."""

    def __init__(self) -> None:
        self._tenants: dict[str, _Tenant] = {}

    def load(self, tenant_id: str, rules: Sequence[VersionedRule], placements: Sequence[DevicePlacement]) -> None:
        """Replace the tenant's rules; raises `Invalid` (and changes nothing) for a rule it cannot evaluate.

        An instance whose rule version did not change keeps its running state (windows, delays, the
        newest values). One whose rule changed starts afresh but keeps being active if it was (as
        `prime` does), so an alarm raised by the old version is cleared by the new one. Instances of
        removed or disabled rules, and of devices no longer in scope, are dropped.
        """
        compiled: list[_Rule] = []
        keys: set[str] = set()
        for rule in rules:
            if rule.tenant_id != tenant_id:
                raise Invalid(f"rule '{rule.spec.key}' belongs to another tenant", code="rule_tenant_mismatch")
            if rule.spec.key in keys:
                raise Invalid(f"rule '{rule.spec.key}' is given twice", code="rule_duplicate")
            keys.add(rule.spec.key)
            if rule.spec.enabled:
                compiled.append(_Rule(rule.spec, rule.version))
        old = self._tenants.get(tenant_id)
        tenant = old if old is not None else _Tenant(tenant_id)
        instances: dict[tuple[str, str], _Instance] = {}
        queued: Out = []
        scopes = _Scopes(placements)
        for loaded in compiled:
            for device in scopes.devices(loaded.spec.scope):
                previous = tenant.instances.get((loaded.key, device))
                if previous is not None and previous.version == loaded.version:
                    instances[loaded.key, device] = previous
                    continue
                instance = _FACTORIES[loaded.kind](tenant, loaded, device)
                if previous is not None:
                    instance.inherit(previous, queued)
                instances[loaded.key, device] = instance
        tenant.rebuild(compiled, instances)
        tenant.queued.extend(queued)
        if compiled or tenant.queued:
            self._tenants[tenant_id] = tenant
        else:
            self._tenants.pop(tenant_id, None)

    def prime(self, tenant_id: str, active: Iterable[tuple[str, str]]) -> None:
        """Mark (rule key, device) pairs as active now (stored alarms after a restart).

        The engine does not raise them again and clears them once their condition is found clear.
        Pairs it has no instance for are ignored.
        """
        tenant = self._tenants.get(tenant_id)
        if tenant is None:
            return
        for pair in active:
            instance = tenant.instances.get(pair)
            if instance is not None:
                instance.prime()

    def on_points(self, batch: PointBatch) -> list[ConditionChange]:
        """Evaluate a batch of points (one tenant); returns the changes, in time order."""
        tenant = self._tenants.get(batch.tenant_id)
        if tenant is None:
            return []
        out: Out = tenant.take_queued()
        resolved = tenant.resolved
        entries = [resolved.get(key, _MISSING) for key in batch.series]
        for position, entry in enumerate(entries):
            if entry is _MISSING:
                entries[position] = tenant.resolve(batch.series[position])
        for index, ts, value, quality in zip(batch.series_index, batch.ts_ms, batch.value, batch.quality, strict=True):
            entry = entries[index]
            if entry is None:
                continue
            if quality < _BAD and -_INF < value < _INF:
                for handler in entry[0]:
                    handler(ts, value, out)
            else:
                for handler in entry[1]:
                    handler(ts, value, out)
        if tenant.dirty:
            tenant.flush(out)
        return _ordered(out)

    def on_status(self, status: DeviceStatus) -> list[ConditionChange]:
        """A device went online or offline: no-data rules that watch for it."""
        tenant = self._tenants.get(status.tenant_id)
        if tenant is None:
            return []
        out = tenant.take_queued()
        at = _ms(status.at)
        for instance in tenant.no_data_by_device.get(status.device, ()):
            instance.on_status(status.online, at, out)
        return _ordered(out)

    def on_event(self, event: AlarmEvent) -> list[ConditionChange]:
        """An event another context raised or cleared: event rules whose scope holds its subject."""
        tenant = self._tenants.get(event.tenant_id)
        if tenant is None:
            return []
        out = tenant.take_queued()
        at = _ms(event.at)
        for instance in tenant.events_by_subject.get(event.subject, ()):
            instance.on_event(event, at, out)
        return _ordered(out)

    def tick(self, now_ms: int) -> list[ConditionChange]:
        """What the passing of time decides: delays run out, no-data timeouts, event holds. About once a second."""
        out: Out = []
        for tenant in self._tenants.values():
            out.extend(tenant.take_queued())
            for no_data in tenant.no_data:
                no_data.check(now_ms, out)
            for event in list(tenant.held):
                event.expire(now_ms, out)
            for instance in list(tenant.pending):
                instance.confirm(now_ms, out)
        return _ordered(out)

    def rule_count(self) -> int:
        """Enabled rules loaded, over all tenants."""
        return sum(len(tenant.rules) for tenant in self._tenants.values())

    def instance_count(self) -> int:
        """(rule, device) pairs evaluated, over all tenants."""
        return sum(len(tenant.instances) for tenant in self._tenants.values())


def preview(
    rule: RuleSpec,
    device: str,
    points: Iterable[Point],
    lookup_other: Callable[[str, str], Iterable[Point]] | None = None,
    *,
    until_ms: int | None = None,
) -> Preview:
    """Replay stored points through one rule for one device: how often would it have fired?

    `points` are the device's points (any metrics, any order); `lookup_other(device, metric)` gives
    the points of another device's series the rule reads. Time advances with the points (and to
    `until_ms`, the end of the period, for no-data timeouts and for how long a last activation lasted).
    """
    tenant_id = "preview"
    spec = rule.model_copy(update={"enabled": True, "scope": Scope(device=device)})
    engine = RuleEngine()
    engine.load(tenant_id, [VersionedRule(tenant_id, spec, 0)], [])
    replay = list(points)
    if lookup_other is not None:
        for other_device, metric in sorted(_Rule(spec, 0).reads_other(device)):
            replay.extend(lookup_other(other_device, metric))
    replay.sort(key=lambda point: point.ts_ms)
    changes: Out = []
    position = 0
    while position < len(replay):
        ts = replay[position].ts_ms
        end = position
        while end < len(replay) and replay[end].ts_ms == ts:
            end += 1
        group = replay[position:end]
        # the clock just before these points: timeouts that ran out meanwhile, but no delay ends
        # without the points of this instant having their say
        changes += engine.tick(ts - 1)
        series = [(point.device, point.metric) for point in group]
        changes += engine.on_points(
            PointBatch.model_construct(
                tenant_id=tenant_id,
                series=series,
                series_index=list(range(len(group))),
                ts_ms=[ts] * len(group),
                value=[point.value for point in group],
                quality=[point.quality for point in group],
            )
        )
        position = end
    end_ms = until_ms if until_ms is not None else (replay[-1].ts_ms if replay else None)
    if end_ms is not None:
        changes += engine.tick(end_ms)
    return _summary(changes, end_ms)


def _summary(changes: Out, end_ms: int | None) -> Preview:
    activations = active_ms = 0
    since: int | None = None
    for change in changes:
        if change.active is True:
            activations += 1
            since = change.at_ms
        elif change.active is False and since is not None:
            active_ms += change.at_ms - since
            since = None
    if since is not None and end_ms is not None:
        active_ms += max(0, end_ms - since)
    return Preview(activations, active_ms, changes)


# --- rules, tenants and the index of what watches which series ---------------------------------


class _Rule:
    """The fields of a rule every instance needs, read once from its pydantic spec."""

    __slots__ = ("expression", "key", "kind", "off_ms", "on_ms", "spec", "suppress", "template", "version")

    def __init__(self, spec: RuleSpec, version: int) -> None:
        self.spec = spec
        self.key = spec.key
        self.kind = spec.kind
        self.version = version
        self.template = spec.message
        self.on_ms = round(spec.on_delay_s * 1000)
        self.off_ms = round(spec.off_delay_s * 1000)
        self.expression = _compiled(spec, "expression", spec.expression) if isinstance(spec, ExpressionRule) else None
        self.suppress = None if spec.suppress_when is None else _compiled(spec, "suppress_when", spec.suppress_when)

    def reads_other(self, device: str) -> set[SeriesKey]:
        """Series of other devices the rule reads when applied to `device`."""
        series: set[SeriesKey] = set()
        for expression in (self.expression, self.suppress):
            if expression is not None:
                series |= expression.series
        spec = self.spec
        if isinstance(spec, DeviationRule) and spec.reference is not None:
            series.add(_series_key(spec.reference, device))
        return {key for key in series if key[0] != device}


def _compiled(spec: RuleSpec, field: str, text: str) -> CompiledExpression:
    try:
        return compile_expression(text)
    except Invalid as err:
        raise Invalid(
            f"rule '{spec.key}', {field}: {err.message}",
            code=err.instance_code,
            rule=spec.key,
            field=field,
            **err.details,
        ) from None


class _Scopes:
    """The devices a scope covers: the enabled devices of a profile, or one device unless it is disabled."""

    def __init__(self, placements: Sequence[DevicePlacement]) -> None:
        self.by_profile: dict[str, list[str]] = {}
        self.disabled: set[str] = set()
        for placement in placements:
            if placement.enabled:
                self.by_profile.setdefault(placement.profile, []).append(placement.key)
            else:
                self.disabled.add(placement.key)

    def devices(self, scope: Scope) -> list[str]:
        if scope.device is not None:
            return [] if scope.device in self.disabled else [scope.device]
        return self.by_profile.get(scope.profile or "", [])


def _series_key(ref: str, device: str) -> SeriesKey:
    other, _, metric = ref.rpartition("/")
    return (other or device, metric)


class _Reader(Protocol):
    """Something evaluated from the newest values of several series, once per timestamp."""

    dirty_ts: int | None

    def flush(self, out: Out) -> None: ...


class _Readers:
    """The newest value of one series, for the expressions that read it."""

    __slots__ = ("deps", "dirty", "key", "latest")

    def __init__(self, key: SeriesKey, latest: dict[SeriesKey, tuple[int, float]], dirty: list[_Reader]) -> None:
        self.key = key
        self.latest = latest
        self.dirty = dirty
        self.deps: list[_Reader] = []

    def on_point(self, ts: int, value: float, out: Out) -> None:
        newest = self.latest.get(self.key)
        if newest is not None and ts <= newest[0]:
            return
        deps = self.deps
        for dep in deps:
            # what an earlier timestamp saw is judged before this point changes it
            if dep.dirty_ts is not None and dep.dirty_ts != ts:
                dep.flush(out)
        self.latest[self.key] = (ts, value)
        for dep in deps:
            if dep.dirty_ts is None:
                self.dirty.append(dep)
            dep.dirty_ts = ts


_Entry = tuple[tuple[Handler, ...], tuple[Handler, ...]]  # handlers of good values, handlers of any point
_MISSING: Final[_Entry] = ((), ())


class _Tenant:
    """A tenant's instances and the indexes the paths of points, status and events use."""

    __slots__ = (
        "device_seen",
        "dirty",
        "events_by_subject",
        "held",
        "instances",
        "latest",
        "no_data",
        "no_data_by_device",
        "pending",
        "queued",
        "readers",
        "resolved",
        "rules",
        "seen",
        "tenant_id",
        "values",
    )

    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        self.rules: dict[str, _Rule] = {}
        self.instances: dict[tuple[str, str], _Instance] = {}
        self.values: dict[SeriesKey, list[Handler]] = {}
        self.seen: dict[SeriesKey, list[Handler]] = {}
        self.device_seen: dict[str, list[Handler]] = {}
        self.readers: dict[SeriesKey, _Readers] = {}
        self.resolved: dict[SeriesKey, _Entry | None] = {}
        self.latest: dict[SeriesKey, tuple[int, float]] = {}
        self.dirty: list[_Reader] = []
        self.pending: set[_Instance] = set()
        self.no_data: list[_NoData] = []
        self.no_data_by_device: dict[str, list[_NoData]] = {}
        self.events_by_subject: dict[str, list[_Event]] = {}
        self.held: set[_Event] = set()
        self.queued: Out = []

    def rebuild(self, rules: list[_Rule], instances: dict[tuple[str, str], _Instance]) -> None:
        self.rules = {rule.key: rule for rule in rules}
        self.instances = instances
        self.values, self.seen, self.device_seen, self.readers = {}, {}, {}, {}
        self.resolved = {}
        self.pending = {instance for instance in instances.values() if instance.since is not None}
        self.no_data, self.no_data_by_device, self.events_by_subject = [], {}, {}
        self.held = set()
        for instance in instances.values():
            instance.register(self)
        for key in [key for key in self.latest if key not in self.readers]:
            del self.latest[key]  # in place: the readers hold this dictionary

    # registration, called by the instances at load
    def watch(self, key: SeriesKey, handler: Handler) -> None:
        self.values.setdefault(key, []).append(handler)

    def watch_seen(self, key: SeriesKey | None, device: str, handler: Handler) -> None:
        if key is None:
            self.device_seen.setdefault(device, []).append(handler)
        else:
            self.seen.setdefault(key, []).append(handler)

    def read(self, key: SeriesKey, reader: _Reader) -> None:
        readers = self.readers.get(key)
        if readers is None:
            readers = self.readers[key] = _Readers(key, self.latest, self.dirty)
            self.watch(key, readers.on_point)
        readers.deps.append(reader)

    def read_all(self, expression: CompiledExpression, device: str, reader: _Reader) -> None:
        for name in expression.names:
            self.read((device, name), reader)
        for key in expression.series:
            self.read(key, reader)

    def resolve(self, key: SeriesKey) -> _Entry | None:
        """Every handler a point of `key` goes to, cached (a point nobody watches then costs one lookup)."""
        seen = (*self.seen.get(key, ()), *self.device_seen.get(key[0], ()))
        values = (*self.values.get(key, ()), *seen)
        entry = (values, seen) if values else None
        if len(self.resolved) >= _RESOLVED_LIMIT:
            self.resolved.clear()
        self.resolved[key] = entry
        return entry

    def flush(self, out: Out) -> None:
        for reader in self.dirty:
            if reader.dirty_ts is not None:
                reader.flush(out)
        self.dirty.clear()

    def take_queued(self) -> Out:
        if not self.queued:
            return []
        queued, self.queued = self.queued, []
        return queued


def _ordered(out: Out) -> Out:
    if len(out) > 1:
        # suppression first at equal times: an alarm suppressed by design must not flash up
        out.sort(key=lambda change: (change.at_ms, change.suppressed is None))
    return out


def _ms(at: dt.datetime) -> int:
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    return (at - _EPOCH) // dt.timedelta(milliseconds=1)


# --- messages -----------------------------------------------------------------------------------


def _number(value: float | None) -> str:
    if value is None:
        return "unknown"
    return f"{value:.6g}"


def fill_message(template: str, device: str, metric: str, value: float | None, limit: float | None) -> str:
    """The template with {device} {metric} {value} {limit} (and {value:.1f}-style formats) filled in.

    Anything else in braces is left as written; a bad format falls back to the plain number.
    """
    numbers = {"value": value, "limit": limit}

    def replace(match: re.Match[str]) -> str:
        name, spec = match.group(1), match.group(2)
        if name == "device":
            return device
        if name == "metric":
            return metric
        number = numbers[name]
        if number is None:
            return "unknown" if name == "value" else ""
        if spec:
            try:
                return format(number, spec)
            except (ValueError, TypeError):
                pass
        return _number(number)

    return _PLACEHOLDER.sub(replace, template)


# --- instances: one rule on one device ------------------------------------------------------------


class _Instance:
    """The condition of one rule on one device, and its on/off delays."""

    __slots__ = (
        "active",
        "device",
        "emitted_at",
        "limit",
        "metric",
        "off_ms",
        "on_ms",
        "raw",
        "rule",
        "rule_key",
        "since",
        "suppression",
        "tenant",
        "value",
        "version",
    )

    def __init__(self, tenant: _Tenant, rule: _Rule, device: str, metric: str) -> None:
        self.tenant = tenant
        self.rule = rule
        self.rule_key = rule.key
        self.version = rule.version
        self.device = device
        self.metric = metric
        self.on_ms = rule.on_ms
        self.off_ms = rule.off_ms
        self.raw = False  # the condition as last evaluated
        self.active = False  # the condition as last emitted
        self.since: int | None = None  # when `raw` began to differ from `active`
        self.emitted_at = _NEVER
        self.value: float | None = None
        self.limit: float | None = None
        self.suppression = None if rule.suppress is None else _Suppression(self, rule.suppress)

    def register(self, tenant: _Tenant) -> None:
        if self.suppression is not None:
            tenant.read_all(self.suppression.expression, self.device, self.suppression)

    def judge(self, raw: bool, at: int, out: Out) -> None:
        """The condition as evaluated at `at`; emits a change once it has differed for its delay."""
        self.raw = raw
        if raw == self.active:
            if self.since is not None:
                self.since = None
                self.tenant.pending.discard(self)
            return
        since = self.since
        delay = self.on_ms if raw else self.off_ms
        if since is None:
            if delay <= 0:
                self.emit(raw, at, out)
                return
            self.since = at
            self.tenant.pending.add(self)
        elif at - since >= delay:
            self.emit(raw, since + delay, out)

    def confirm(self, now_ms: int, out: Out) -> None:
        """A pending change whose delay ran out by the clock (no point came to tell)."""
        since = self.since
        if since is None:
            self.tenant.pending.discard(self)
            return
        delay = self.on_ms if self.raw else self.off_ms
        if now_ms - since >= delay:
            self.emit(self.raw, since + delay, out)

    def emit(self, active: bool, at: int, out: Out) -> None:
        at = max(at, self.emitted_at)  # one alarm's changes never go back in time
        self.emitted_at = at
        self.active = active
        if self.since is not None:
            self.since = None
            self.tenant.pending.discard(self)
        text = self.default_message(active) if not self.rule.template else self.fill(self.rule.template)
        out.append(
            ConditionChange(
                self.tenant.tenant_id,
                self.rule_key,
                self.version,
                self.device,
                at,
                active=active,
                value=self.value,
                message=text,
            )
        )

    def fill(self, template: str) -> str:
        return fill_message(template, self.device, self.metric, self.value, self.limit)

    def default_message(self, active: bool) -> str:
        return self.fill("{metric} is abnormal ({value})" if active else "{metric} is back to normal ({value})")

    def prime(self) -> None:
        """Active now (an alarm stored before a restart): clear it when found clear, do not raise it again."""
        self.active = self.raw = True
        if self.since is not None:
            self.since = None
            self.tenant.pending.discard(self)

    def inherit(self, previous: _Instance, queued: Out) -> None:
        """Take over from the instance of an older version of the rule."""
        if previous.active:
            self.prime()
        self.emitted_at = previous.emitted_at
        old, new = previous.suppression, self.suppression
        if old is not None and old.suppressed:
            if new is not None:
                new.suppressed = True
            else:
                queued.append(
                    ConditionChange(
                        self.tenant.tenant_id, self.rule_key, self.version, self.device, old.eval_ts, suppressed=False
                    )
                )


class _Suppression:
    """`suppress_when` of one instance: emits suppressed=True/False as the expression turns."""

    __slots__ = ("dirty_ts", "eval_ts", "expression", "lookup", "owner", "suppressed")

    def __init__(self, owner: _Instance, expression: CompiledExpression) -> None:
        self.owner = owner
        self.expression = expression
        self.lookup = _lookup(owner.tenant, owner.device)
        self.dirty_ts: int | None = None
        self.eval_ts = _NEVER
        self.suppressed = False

    def flush(self, out: Out) -> None:
        at = _evaluation_time(self.dirty_ts, self.eval_ts)
        self.dirty_ts = None
        self.eval_ts = at
        suppressed = self.expression.is_true(self.lookup)
        if suppressed == self.suppressed:
            return
        self.suppressed = suppressed
        owner = self.owner
        text = f"suppressed while {self.expression.text}" if suppressed else "suppression ended"
        out.append(
            ConditionChange(
                owner.tenant.tenant_id,
                owner.rule_key,
                owner.version,
                owner.device,
                at,
                suppressed=suppressed,
                message=text,
            )
        )


def _evaluation_time(dirty_ts: int | None, eval_ts: int) -> int:
    """When a reader is evaluated: the time of the points that made it dirty, never before its last evaluation."""
    return eval_ts if dirty_ts is None or dirty_ts < eval_ts else dirty_ts


def _lookup(tenant: _Tenant, device: str) -> Lookup:
    def lookup(other: str | None, metric: str) -> float | None:
        newest = tenant.latest.get((device if other is None else other, metric))
        return None if newest is None else newest[1]

    return lookup


def _side(side: int, x: float, high: float, low: float, high_clear: float, low_clear: float) -> int:
    """Which limit `x` is past (1 high, -1 low, 0 none); a side is left only past its clearing level."""
    if side == 1:
        if x > high_clear:
            return 1
        return -1 if x < low else 0
    if side == -1:
        if x < low_clear:
            return -1
        return 1 if x > high else 0
    if side == 0:
        return 1 if x > high else -1 if x < low else 0
    return 1 if x > high_clear else -1 if x < low_clear else 0  # primed: hold while past either clearing level


class _Limits(_Instance):
    """An instance judging one number against high/low limits with a deadband."""

    __slots__ = ("high", "high_clear", "last_ts", "low", "low_clear", "side")

    def __init__(
        self, tenant: _Tenant, rule: _Rule, device: str, metric: str, high: float | None, low: float | None, band: float
    ) -> None:
        super().__init__(tenant, rule, device, metric)
        self.high = _INF if high is None else high
        self.low = -_INF if low is None else low
        self.high_clear = self.high - band
        self.low_clear = self.low + band
        self.limit = high if high is not None else low
        self.side = 0
        self.last_ts = _NEVER

    def judge_side(self, x: float, at: int, out: Out) -> None:
        side = _side(self.side, x, self.high, self.low, self.high_clear, self.low_clear)
        self.side = side
        if side:
            self.limit = self.high if side == 1 else self.low
        if (side != 0) != self.active or self.since is not None:
            self.judge(side != 0, at, out)

    def prime(self) -> None:
        super().prime()
        self.side = _PRIMED


class _Threshold(_Limits):
    __slots__ = ()

    def __init__(self, tenant: _Tenant, rule: _Rule, device: str) -> None:
        spec = rule.spec
        assert isinstance(spec, ThresholdRule)  # noqa: S101 - chosen by kind
        super().__init__(tenant, rule, device, spec.metric, spec.high, spec.low, spec.deadband)

    def register(self, tenant: _Tenant) -> None:
        super().register(tenant)
        tenant.watch((self.device, self.metric), self.on_point)

    def on_point(self, ts: int, value: float, out: Out) -> None:
        if ts <= self.last_ts:
            return
        self.last_ts = ts
        self.value = value
        side = self.side
        if side == 0:  # the common case, kept inline: normal, nothing pending
            if value > self.high:
                side = 1
            elif value < self.low:
                side = -1
            elif not self.active and self.since is None:
                return
        else:
            side = _side(side, value, self.high, self.low, self.high_clear, self.low_clear)
        self.side = side
        if side:
            self.limit = self.high if side == 1 else self.low
        if (side != 0) != self.active or self.since is not None:
            self.judge(side != 0, ts, out)

    def default_message(self, active: bool) -> str:
        if not active:
            return self.fill("{metric} is back within limits ({value})")
        if self.side == -1:
            return self.fill("{metric} is below the low limit {limit} ({value})")
        return self.fill("{metric} is above the high limit {limit} ({value})")


class _Deviation(_Limits):
    """|value - reference| against `limit`: the reference is a setpoint, or the newest value of another series."""

    __slots__ = ("dirty_ts", "eval_ts", "lookup", "reference", "reference_text", "setpoint")

    def __init__(self, tenant: _Tenant, rule: _Rule, device: str) -> None:
        spec = rule.spec
        assert isinstance(spec, DeviationRule)  # noqa: S101 - chosen by kind
        super().__init__(tenant, rule, device, spec.metric, spec.limit, None, spec.deadband)
        self.setpoint = spec.setpoint if spec.setpoint is not None else 0.0  # read only without a reference
        self.reference = None if spec.reference is None else _series_key(spec.reference, device)
        self.reference_text = spec.reference if spec.reference is not None else _number(spec.setpoint)
        self.lookup = _lookup(tenant, device)
        self.dirty_ts: int | None = None
        self.eval_ts = _NEVER

    def register(self, tenant: _Tenant) -> None:
        super().register(tenant)
        if self.reference is None:
            tenant.watch((self.device, self.metric), self.on_point)
        else:
            tenant.read((self.device, self.metric), self)
            tenant.read(self.reference, self)

    def on_point(self, ts: int, value: float, out: Out) -> None:
        if ts <= self.last_ts:
            return
        self.last_ts = ts
        self.value = value
        self.judge_side(abs(value - self.setpoint), ts, out)

    def flush(self, out: Out) -> None:
        at = _evaluation_time(self.dirty_ts, self.eval_ts)
        self.dirty_ts = None
        self.eval_ts = at
        assert self.reference is not None  # noqa: S101 - registered only with a reference
        value = self.lookup(None, self.metric)
        reference = self.lookup(*self.reference)
        self.value = value
        if value is None or reference is None:  # unknown is not active
            self.side = 0
            if self.active or self.since is not None:
                self.judge(False, at, out)
            return
        self.judge_side(abs(value - reference), at, out)

    def default_message(self, active: bool) -> str:
        if not active:
            return self.fill(f"{{metric}} is back within {{limit}} of {self.reference_text} ({{value}})")
        return self.fill(f"{{metric}} deviates from {self.reference_text} by more than {{limit}} ({{value}})")


class _RateOfChange(_Limits):
    """The slope between the oldest point in the window and the newest, in units per second."""

    __slots__ = ("rate", "window", "window_ms")

    def __init__(self, tenant: _Tenant, rule: _Rule, device: str) -> None:
        spec = rule.spec
        assert isinstance(spec, RateOfChangeRule)  # noqa: S101 - chosen by kind
        high = spec.limit if spec.direction in {"both", "rising"} else None
        low = -spec.limit if spec.direction in {"both", "falling"} else None
        super().__init__(tenant, rule, device, spec.metric, high, low, spec.deadband)
        self.window_ms = round(spec.window_s * 1000)
        self.window: deque[tuple[int, float]] = deque()
        self.rate: float | None = None

    def register(self, tenant: _Tenant) -> None:
        super().register(tenant)
        tenant.watch((self.device, self.metric), self.on_point)

    def on_point(self, ts: int, value: float, out: Out) -> None:
        if ts <= self.last_ts:
            return
        self.last_ts = ts
        self.value = value
        window = self.window
        window.append((ts, value))
        horizon = ts - self.window_ms
        while window[0][0] < horizon:
            window.popleft()
        first_ts, first_value = window[0]
        if first_ts == ts:
            return  # one point: no rate yet
        self.rate = rate = (value - first_value) * 1000.0 / (ts - first_ts)
        self.judge_side(rate, ts, out)

    def fill(self, template: str) -> str:
        limit = None if self.limit is None else abs(self.limit)  # a falling limit is kept negative
        return fill_message(template, self.device, self.metric, self.value, limit)

    def default_message(self, active: bool) -> str:
        rate = _number(self.rate)
        if not active:
            return self.fill(f"{{metric}} changes at {rate}/s, within the limit again ({{value}})")
        return self.fill(f"{{metric}} changes at {rate}/s, faster than {{limit}}/s ({{value}})")


class _RollingAverage(_Limits):
    """The average over the last `window_s`, from a running sum (recomputed now and then against drift)."""

    __slots__ = ("min_points", "removed", "total", "window", "window_ms")

    def __init__(self, tenant: _Tenant, rule: _Rule, device: str) -> None:
        spec = rule.spec
        assert isinstance(spec, RollingAverageRule)  # noqa: S101 - chosen by kind
        super().__init__(tenant, rule, device, spec.metric, spec.high, spec.low, spec.deadband)
        self.window_ms = round(spec.window_s * 1000)
        self.min_points = spec.min_points
        self.window: deque[tuple[int, float]] = deque()
        self.total = 0.0
        self.removed = 0

    def register(self, tenant: _Tenant) -> None:
        super().register(tenant)
        tenant.watch((self.device, self.metric), self.on_point)

    def on_point(self, ts: int, value: float, out: Out) -> None:
        if ts <= self.last_ts:
            return
        self.last_ts = ts
        window = self.window
        window.append((ts, value))
        self.total += value
        horizon = ts - self.window_ms
        while window[0][0] <= horizon:
            self.total -= window.popleft()[1]
            self.removed += 1
        if self.removed > len(window) + 1024:
            # subtracting what left the window accumulates rounding error; start the sum over
            self.total = math.fsum(point[1] for point in window)
            self.removed = 0
        if len(window) < self.min_points:
            return  # too few points to judge
        self.value = average = self.total / len(window)
        self.judge_side(average, ts, out)

    def default_message(self, active: bool) -> str:
        spec = self.rule.spec
        assert isinstance(spec, RollingAverageRule)  # noqa: S101 - chosen by kind
        over = f"the average of {{metric}} over {spec.window_s:g} s"
        if not active:
            return self.fill(f"{over} is back within limits ({{value}})")
        where = "below the low" if self.side == -1 else "above the high"
        return self.fill(f"{over} is {where} limit {{limit}} ({{value}})")


class _DigitalState(_Instance):
    __slots__ = ("alarm_if_listed", "last_ts", "states")

    def __init__(self, tenant: _Tenant, rule: _Rule, device: str) -> None:
        spec = rule.spec
        assert isinstance(spec, DigitalStateRule)  # noqa: S101 - chosen by kind
        super().__init__(tenant, rule, device, spec.metric)
        self.alarm_if_listed = bool(spec.alarm_states)
        self.states = frozenset(spec.alarm_states or spec.normal_states)
        self.last_ts = _NEVER

    def register(self, tenant: _Tenant) -> None:
        super().register(tenant)
        tenant.watch((self.device, self.metric), self.on_point)

    def on_point(self, ts: int, value: float, out: Out) -> None:
        if ts <= self.last_ts:
            return
        self.last_ts = ts
        self.value = value
        raw = (value in self.states) == self.alarm_if_listed
        if raw != self.active or self.since is not None:
            self.judge(raw, ts, out)

    def default_message(self, active: bool) -> str:
        if active:
            return self.fill("{metric} is in alarm state {value}")
        return self.fill("{metric} is back in a normal state ({value})")


class _Expression(_Instance):
    __slots__ = ("dirty_ts", "eval_ts", "expression", "lookup")

    def __init__(self, tenant: _Tenant, rule: _Rule, device: str) -> None:
        assert rule.expression is not None  # noqa: S101 - chosen by kind
        self.expression = rule.expression
        super().__init__(tenant, rule, device, rule.expression.text)
        self.lookup = _lookup(tenant, device)
        self.dirty_ts: int | None = None
        self.eval_ts = _NEVER

    def register(self, tenant: _Tenant) -> None:
        super().register(tenant)
        tenant.read_all(self.expression, self.device, self)

    def flush(self, out: Out) -> None:
        at = _evaluation_time(self.dirty_ts, self.eval_ts)
        self.dirty_ts = None
        self.eval_ts = at
        result = self.expression.evaluate(self.lookup)
        raw = result is not None and bool(result)  # unknown is not active
        if raw != self.active or self.since is not None:
            self.judge(raw, at, out)

    def default_message(self, active: bool) -> str:
        return f"{self.expression.text} holds" if active else f"{self.expression.text} no longer holds"


class _NoData(_Instance):
    """Active while nothing arrived for `timeout_s` (by `tick`), or while the device is reported offline."""

    __slots__ = ("last_seen", "offline", "status_ts", "timed_out", "timeout_ms", "watch_metric", "watch_offline")

    def __init__(self, tenant: _Tenant, rule: _Rule, device: str) -> None:
        spec = rule.spec
        assert isinstance(spec, NoDataRule)  # noqa: S101 - chosen by kind
        super().__init__(tenant, rule, device, spec.metric or "")
        self.watch_metric = spec.metric
        self.timeout_ms = round(spec.timeout_s * 1000)
        self.watch_offline = spec.offline
        self.last_seen: int | None = None  # None until the first point or tick: the clock starts then
        self.offline = False
        self.status_ts = _NEVER
        self.timed_out = False

    def register(self, tenant: _Tenant) -> None:
        super().register(tenant)
        key = None if self.watch_metric is None else (self.device, self.watch_metric)
        tenant.watch_seen(key, self.device, self.on_seen)
        tenant.no_data.append(self)
        tenant.no_data_by_device.setdefault(self.device, []).append(self)

    def on_seen(self, ts: int, value: float, out: Out) -> None:
        last = self.last_seen
        if last is not None and ts <= last:
            return
        self.last_seen = ts
        if self.offline and ts > self.status_ts:
            self.offline = False  # data newer than the offline report: the device is back
        self.timed_out = False
        if self.offline != self.active or self.since is not None:
            self.judge(self.offline, ts, out)

    def check(self, now_ms: int, out: Out) -> None:
        last = self.last_seen
        if last is None:
            self.last_seen = now_ms
            return
        if not self.timed_out and now_ms - last >= self.timeout_ms:
            self.timed_out = True
            self.judge(True, last + self.timeout_ms, out)

    def on_status(self, online: bool, at: int, out: Out) -> None:
        if at < self.status_ts:
            return
        self.status_ts = at
        if not self.watch_offline:
            return
        self.offline = not online
        condition = self.offline or self.timed_out
        if condition != self.active or self.since is not None:
            self.judge(condition, at, out)

    def default_message(self, active: bool) -> str:
        if not active:
            return f"{self.device} is sending data again"
        if self.offline:
            return f"{self.device} is offline"
        what = f"{self.watch_metric} of {self.device}" if self.watch_metric else self.device
        return f"no data from {what} for {self.timeout_ms / 1000:g} s"


class _Event(_Instance):
    """Active while a matching event is raised for the device: per event kind, until cleared or held out."""

    __slots__ = ("event_kind", "hold_ms", "last_event", "min_severity", "prefix", "primed", "raised", "seen", "source")

    def __init__(self, tenant: _Tenant, rule: _Rule, device: str) -> None:
        spec = rule.spec
        assert isinstance(spec, EventRule)  # noqa: S101 - chosen by kind
        super().__init__(tenant, rule, device, spec.event_kind)
        self.source = spec.source
        self.prefix = spec.event_kind[:-1] if spec.event_kind.endswith("*") else None
        self.event_kind = spec.event_kind
        self.min_severity = spec.min_severity
        self.hold_ms = None if spec.hold_s is None else round(spec.hold_s * 1000)
        self.raised: dict[str, int] = {}  # kind -> when last raised
        self.seen: dict[str, int] = {}  # kind -> time of its newest event
        self.primed: int | None = None  # primed as active: when the hold began (set by the first tick)
        self.last_event: AlarmEvent | None = None

    def register(self, tenant: _Tenant) -> None:
        super().register(tenant)
        tenant.events_by_subject.setdefault(self.device, []).append(self)
        if self.hold_ms is not None and (self.raised or self.primed is not None):
            tenant.held.add(self)

    def matches(self, event: AlarmEvent) -> bool:
        if event.source != self.source:
            return False
        if self.prefix is not None:
            return event.kind.startswith(self.prefix)
        return event.kind == self.event_kind

    def on_event(self, event: AlarmEvent, at: int, out: Out) -> None:
        if not self.matches(event):
            return
        kind = event.kind
        newest = self.seen.get(kind)
        if newest is not None and at < newest:
            return
        if event.active:
            if event.severity < self.min_severity:
                return
            self.raised[kind] = at
            self.value = event.severity
            self.last_event = event
        else:
            self.raised.pop(kind, None)
            self.primed = None
        self.seen[kind] = at
        self.held_update()
        self.judge(bool(self.raised) or self.primed is not None, at, out)

    def expire(self, now_ms: int, out: Out) -> None:
        hold = self.hold_ms
        if hold is None:
            self.held_update()
            return
        if self.primed == _NEVER:
            self.primed = now_ms  # the hold of a primed alarm starts when the clock is first known
        expired = [kind for kind, at in self.raised.items() if now_ms - at >= hold]
        at = _NEVER
        for kind in expired:
            at = max(at, self.raised.pop(kind) + hold)
        if self.primed is not None and now_ms - self.primed >= hold:
            at = max(at, self.primed + hold)
            self.primed = None
        self.held_update()
        if at != _NEVER:
            self.judge(bool(self.raised) or self.primed is not None, at, out)

    def held_update(self) -> None:
        if self.hold_ms is not None and (self.raised or self.primed is not None):
            self.tenant.held.add(self)
        else:
            self.tenant.held.discard(self)

    def prime(self) -> None:
        super().prime()
        if not self.raised:
            self.primed = _NEVER  # the hold starts at the next tick
            self.held_update()

    def default_message(self, active: bool) -> str:
        event = self.last_event
        kind = event.kind if event is not None else self.event_kind
        if active and event is not None and event.message:
            return event.message
        what = f"{self.source} {kind} on {self.device}"
        return what if active else f"{what} cleared"

    def fill(self, template: str) -> str:
        event = self.last_event
        metric = event.kind if event is not None else self.event_kind
        return fill_message(template, self.device, metric, self.value, self.min_severity)


_FACTORIES: Final[dict[RuleKind, Callable[[_Tenant, _Rule, str], _Instance]]] = {
    RuleKind.THRESHOLD: _Threshold,
    RuleKind.DEVIATION: _Deviation,
    RuleKind.RATE_OF_CHANGE: _RateOfChange,
    RuleKind.NO_DATA: _NoData,
    RuleKind.DIGITAL_STATE: _DigitalState,
    RuleKind.EXPRESSION: _Expression,
    RuleKind.ROLLING_AVERAGE: _RollingAverage,
    RuleKind.EVENT: _Event,
}
