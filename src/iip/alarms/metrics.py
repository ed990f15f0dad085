"""Alarm management metrics (ISA-18.2 section 16 / EEMUA 191): rates per operator position, floods,
most frequent, chattering and stale alarms, computed from the alarm history.

`compute` reads the history as a stream, in any order. It keeps per alarm only its last state and
the times of its annunciations as 8-byte integers (`array`), never the records themselves: a
million activations cost 8 MB. Every activation counts as annunciated.

Windows are half-open: a window of 10 minutes starting at t holds the alarms at t <= at < t + 10 min.
The rate windows are aligned on `start` (the last one may be shorter); records at or after `end` are
ignored, records before `start` only count for the state of stale alarms.
"""

from __future__ import annotations

import datetime as dt
import heapq
from array import array
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from enum import Enum, StrEnum
from typing import Any

from iip.alarms.public import AlarmState, Priority
from iip.kernel.errors import Invalid


@dataclass(frozen=True, slots=True)
class HistoryRecord:
    """One entry of an alarm's history, as the metrics read it."""

    alarm_id: str
    rule_key: str
    device: str
    position: str
    priority: Priority
    action: str  # activate, clear, acknowledge, shelve, unshelve, suppress, unsuppress, ...
    state: AlarmState  # the state after the action
    at: dt.datetime


EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
ONE_US = dt.timedelta(microseconds=1)
US = 1_000_000
TEN_MINUTES_US = 600 * US
HOUR_US = 3600 * US
DAY_US = 86_400 * US
ACTIVATE = "activate"
ACTIVE_STATES = frozenset({AlarmState.UNACK_ACTIVE, AlarmState.ACK_ACTIVE})
MAX_WINDOWS = 1_000_000  # dense per-window counts beyond this are a mistake of window or range


class Verdict(StrEnum):
    """How a measured value compares with the ISA-18.2 target."""

    ACCEPTABLE = "acceptable"  # "very likely to be acceptable"
    MANAGEABLE = "manageable"  # above that, within the "maximum manageable"
    OVER = "over"


@dataclass(frozen=True, slots=True)
class Target:
    """An ISA-18.2 (table 5) / IEC 62682 performance target; a value is compared inclusively."""

    measure: str
    acceptable: float
    manageable: float | None
    text: str

    def verdict(self, value: float) -> Verdict:
        if value <= self.acceptable:
            return Verdict.ACCEPTABLE
        if self.manageable is not None and value <= self.manageable:
            return Verdict.MANAGEABLE
        return Verdict.OVER


# Per operator position. The rates are ISA-18.2's "annunciated alarms per time" (the standard's
# ~6 and ~12 are per hour, which is ~1 and ~2 per 10 minutes); more than 10 in 10 minutes is a flood.
POSITION_TARGETS = (
    Target("alarms_per_day", 150, 300, "~150 per day acceptable, ~300 maximum manageable"),
    Target("alarms_per_hour", 6, 12, "~6 per hour acceptable, ~12 maximum manageable"),
    Target("alarms_per_10_minutes", 1, 2, "~1 per 10 minutes acceptable, ~2 maximum manageable"),
    Target("percent_windows_in_flood", 1, None, "~<1% of 10-minute periods with more than 10 alarms"),
    Target("percent_time_in_flood", 1, None, "~<1% of the time in flood"),
)
SYSTEM_TARGETS = (
    Target("top_alarms_percent", 1, 5, "the 10 most frequent alarms: ~<1% to 5% at most of all alarms"),
    Target("chattering_alarms", 0, None, "no chattering alarms"),
    Target("stale_alarms", 4, None, "fewer than 5 stale alarms"),
    Target("critical_percent", 5, None, "~5% of annunciated alarms critical"),
    Target("medium_high_percent", 15, None, "~15% of annunciated alarms medium or high"),
)
# The recommended priority distribution of annunciated alarms (ISA-18.2, EEMUA 191): ~80/15/5 %.
PRIORITY_GROUPS: tuple[tuple[str, tuple[Priority, ...], float], ...] = (
    ("low", (Priority.LOW,), 80.0),
    ("medium_high", (Priority.MEDIUM, Priority.HIGH), 15.0),
    ("critical", (Priority.CRITICAL,), 5.0),
)


# --------------------------------------------------------------------------- the report


@dataclass(frozen=True, slots=True)
class PositionRates:
    """Annunciated alarms of one operator position over the range."""

    position: str
    annunciated: int
    windows: int  # rate windows in the range
    per_window_average: float
    per_window_max: int
    windows_over_threshold: int  # windows with more than `flood_threshold` alarms
    percent_windows_over_threshold: float
    per_10_minutes_average: float
    per_hour_average: float
    per_day_average: float
    floods: int
    percent_time_in_flood: float


@dataclass(frozen=True, slots=True)
class FloodPeriod:
    """A flood at one position: from the first alarm of the first window holding more than the
    threshold until the count in the trailing window falls back to the threshold (clipped to `end`)."""

    position: str
    start: dt.datetime
    end: dt.datetime
    count: int  # alarms annunciated in the flood
    peak: int  # most alarms in any one window of it


@dataclass(frozen=True, slots=True)
class FrequentAlarm:
    rule_key: str
    device: str
    position: str
    priority: Priority
    count: int
    percent: float  # of all annunciated alarms


@dataclass(frozen=True, slots=True)
class ChatteringAlarm:
    """An alarm activated `chatter_count` or more times within `chatter_window`."""

    rule_key: str
    device: str
    position: str
    activations: int  # in the range
    max_in_window: int  # most activations within any one chatter window
    first_at: dt.datetime  # the activation completing its first chattering burst


@dataclass(frozen=True, slots=True)
class StaleAlarm:
    """An alarm active (acknowledged or not) for longer than `stale_after` at `end`."""

    alarm_id: str
    rule_key: str
    device: str
    position: str
    priority: Priority
    state: AlarmState
    active_since: dt.datetime
    active_hours: float


@dataclass(frozen=True, slots=True)
class PriorityShare:
    priority: Priority
    count: int
    percent: float


@dataclass(frozen=True, slots=True)
class PriorityGroup:
    """Annunciated alarms of some priorities against the recommended share."""

    name: str
    priorities: tuple[Priority, ...]
    count: int
    percent: float
    recommended_percent: float


@dataclass(frozen=True, slots=True)
class TargetCheck:
    """One measure against its ISA-18.2 target; `position` is None for the whole system."""

    measure: str
    position: str | None
    value: float
    acceptable: float
    manageable: float | None
    verdict: Verdict
    target: str


@dataclass(frozen=True, slots=True)
class MetricsReport:
    start: dt.datetime
    end: dt.datetime
    window_s: float
    flood_threshold: int
    chatter_count: int
    chatter_window_s: float
    stale_after_s: float
    records: int  # history records read
    annunciated: int
    positions: tuple[PositionRates, ...]
    floods: tuple[FloodPeriod, ...]
    most_frequent: tuple[FrequentAlarm, ...]
    top_percent: float  # share of all alarms taken by `most_frequent`
    chattering: tuple[ChatteringAlarm, ...]
    stale: tuple[StaleAlarm, ...]
    priorities: tuple[PriorityShare, ...]
    priority_groups: tuple[PriorityGroup, ...]
    targets: tuple[TargetCheck, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: times in ISO 8601 (UTC), enums as their values."""
        data: dict[str, Any] = _jsonable(asdict(self))
        return data


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    return value


# --------------------------------------------------------------------------- reading the stream


class _Annunciations:
    """The activation times (µs since 1970) of one alarm at one position, in arrival order."""

    __slots__ = ("in_order", "last", "priority", "times")

    def __init__(self, priority: Priority) -> None:
        self.times = array("q")
        self.in_order = True
        self.last = -(2**63)
        self.priority = priority

    def add(self, at_us: int, priority: Priority) -> None:
        if at_us < self.last:
            self.in_order = False
        else:
            self.last = at_us
            self.priority = priority  # the newest priority names it
        self.times.append(at_us)

    def ordered(self) -> array[int]:
        if not self.in_order:
            # A transient list only for this alarm's activations.
            self.times = array("q", sorted(self.times))
            self.in_order = True
        return self.times


class _AlarmTrack:
    """What the stale measure keeps of one alarm: its newest state and when it last activated."""

    __slots__ = ("activated_us", "device", "first_us", "last_us", "position", "priority", "rule_key", "state")

    def __init__(self, record: HistoryRecord, at_us: int) -> None:
        self.rule_key = record.rule_key
        self.device = record.device
        self.position = record.position
        self.priority = record.priority
        self.state = record.state
        self.first_us = at_us
        self.last_us = at_us
        self.activated_us: int | None = None


@dataclass(slots=True)
class _History:
    records: int
    positions: set[str]
    annunciations: dict[tuple[str, str, str], _Annunciations]  # (rule key, device, position)
    alarms: dict[str, _AlarmTrack]
    priorities: Counter[Priority]


def _us(at: dt.datetime, what: str) -> int:
    try:
        return (at - EPOCH) // ONE_US
    except TypeError:
        raise Invalid(f"{what} has no time zone: give times in UTC or with an offset") from None


def _read(records: Iterable[HistoryRecord], start_us: int, end_us: int) -> _History:
    history = _History(0, set(), {}, {}, Counter())
    annunciations = history.annunciations
    alarms = history.alarms
    for record in records:
        history.records += 1
        at_us = _us(record.at, f"the history record of alarm {record.alarm_id!r}")
        if at_us >= end_us:
            continue
        alarm = alarms.get(record.alarm_id)
        if alarm is None:
            alarm = alarms[record.alarm_id] = _AlarmTrack(record, at_us)
        elif at_us >= alarm.last_us:
            alarm.last_us = at_us
            alarm.state = record.state
            alarm.position = record.position
            alarm.priority = record.priority
        elif at_us < alarm.first_us:
            alarm.first_us = at_us
        activation = record.action == ACTIVATE
        if activation and (alarm.activated_us is None or at_us > alarm.activated_us):
            alarm.activated_us = at_us
        if at_us < start_us:
            continue
        history.positions.add(record.position)
        if activation:
            key = (record.rule_key, record.device, record.position)
            series = annunciations.get(key)
            if series is None:
                series = annunciations[key] = _Annunciations(record.priority)
            series.add(at_us, record.priority)
            history.priorities[record.priority] += 1
    return history


# --------------------------------------------------------------------------- scans over ordered times


class _PositionScan:
    """Rate windows and floods of one position, fed its activation times in order.

    A flood is the union of the windows [t, t + window) that start at an alarm and hold more than
    `threshold` alarms; it ends exactly when the trailing window's count falls back to the threshold.
    """

    __slots__ = (
        "bin",
        "bin_count",
        "bin_max",
        "bins_over",
        "floods",
        "open",
        "open_count",
        "open_end",
        "open_peak",
        "open_start",
        "pending",
        "start_us",
        "threshold",
        "total",
        "window_us",
    )

    def __init__(self, start_us: int, window_us: int, threshold: int) -> None:
        self.start_us = start_us
        self.window_us = window_us
        self.threshold = threshold
        self.total = 0
        self.bin = -1
        self.bin_count = 0
        self.bin_max = 0
        self.bins_over = 0
        self.pending: deque[int] = deque()  # alarms whose window [t, t + window) is not complete yet
        self.floods: list[tuple[int, int, int, int]] = []  # start, end, count, peak
        self.open = False
        self.open_start = self.open_end = self.open_count = self.open_peak = 0

    def push(self, at_us: int) -> None:
        self.total += 1
        window_bin = (at_us - self.start_us) // self.window_us
        if window_bin != self.bin:
            self._close_bin()
            self.bin = window_bin
        self.bin_count += 1
        pending = self.pending
        while pending and pending[0] + self.window_us <= at_us:
            anchor = pending.popleft()
            self._anchor(anchor, len(pending) + 1)
        pending.append(at_us)

    def finish(self) -> None:
        self._close_bin()
        pending = self.pending
        while pending:
            anchor = pending.popleft()
            self._anchor(anchor, len(pending) + 1)
        if self.open:
            self._close_flood()

    def _close_bin(self) -> None:
        if self.bin_count:
            self.bin_max = max(self.bin_max, self.bin_count)
            self.bins_over += self.bin_count > self.threshold
        self.bin_count = 0

    def _anchor(self, anchor: int, count: int) -> None:
        """The window starting at `anchor` is complete and holds `count` alarms."""
        flooding = count > self.threshold
        if self.open:
            if anchor < self.open_end or (flooding and anchor == self.open_end):
                self.open_count += 1
                if flooding:
                    self.open_end = anchor + self.window_us
                    self.open_peak = max(self.open_peak, count)
                return
            self._close_flood()
        if flooding:
            self.open = True
            self.open_start, self.open_end, self.open_count, self.open_peak = anchor, anchor + self.window_us, 1, count

    def _close_flood(self) -> None:
        self.floods.append((self.open_start, self.open_end, self.open_count, self.open_peak))
        self.open = False


def _chatter(times: Iterable[int], window_us: int, count: int) -> tuple[int, int, int | None]:
    """(activations, most within any window, the time the first burst completed)."""
    recent: deque[int] = deque()
    activations = most = 0
    first: int | None = None
    for at_us in times:
        activations += 1
        while recent and at_us - recent[0] >= window_us:
            recent.popleft()
        recent.append(at_us)
        most = max(most, len(recent))
        if first is None and len(recent) >= count:
            first = at_us
    return activations, most, first


# --------------------------------------------------------------------------- compute


def _checked(
    start: dt.datetime, end: dt.datetime, spans: dict[str, dt.timedelta], counts: dict[str, int]
) -> tuple[int, int]:
    start_us, end_us = _us(start, "start"), _us(end, "end")
    if end_us <= start_us:
        raise Invalid("end must be after start")
    for name, span in spans.items():
        if span < ONE_US:
            raise Invalid(f"{name} must be at least one microsecond")
    for name, value in counts.items():
        if value < 0:
            raise Invalid(f"{name} cannot be negative")
    return start_us, end_us


def _time(at_us: int) -> dt.datetime:
    return EPOCH + dt.timedelta(microseconds=at_us)


def _percent(part: float, whole: float) -> float:
    return 100.0 * part / whole if whole else 0.0


def compute(
    records: Iterable[HistoryRecord],
    *,
    start: dt.datetime,
    end: dt.datetime,
    flood_threshold: int = 10,
    window: dt.timedelta = dt.timedelta(minutes=10),
    chatter_count: int = 3,
    chatter_window: dt.timedelta = dt.timedelta(minutes=1),
    stale_after: dt.timedelta = dt.timedelta(hours=24),
    top: int = 10,
) -> MetricsReport:
    """The alarm management metrics of the history in [start, end); records may come in any order."""
    start_us, end_us = _checked(
        start,
        end,
        {"window": window, "chatter_window": chatter_window},
        {"flood_threshold": flood_threshold, "top": top, "stale_after": stale_after // ONE_US},
    )
    if chatter_count < 2:
        raise Invalid("chatter_count must be at least 2")
    window_us, chatter_us = window // ONE_US, chatter_window // ONE_US
    span_us = end_us - start_us
    history = _read(records, start_us, end_us)
    total = sum(history.priorities.values())

    by_position: dict[str, list[_Annunciations]] = {position: [] for position in history.positions}
    by_alarm: dict[tuple[str, str], list[tuple[str, _Annunciations]]] = {}
    for (rule_key, device, position), series in history.annunciations.items():
        by_position[position].append(series)
        by_alarm.setdefault((rule_key, device), []).append((position, series))

    positions: list[PositionRates] = []
    floods: list[FloodPeriod] = []
    targets: list[TargetCheck] = []
    windows = -(-span_us // window_us)
    for position in sorted(by_position):
        scan = _PositionScan(start_us, window_us, flood_threshold)
        for at_us in heapq.merge(*(series.ordered() for series in by_position[position])):
            scan.push(at_us)
        scan.finish()
        periods = [FloodPeriod(position, _time(s), _time(min(e, end_us)), n, p) for s, e, n, p in scan.floods]
        floods += periods
        flood_us = sum(min(e, end_us) - s for s, e, _, _ in scan.floods)
        rates = PositionRates(
            position=position,
            annunciated=scan.total,
            windows=windows,
            per_window_average=scan.total / windows,
            per_window_max=scan.bin_max,
            windows_over_threshold=scan.bins_over,
            percent_windows_over_threshold=_percent(scan.bins_over, windows),
            per_10_minutes_average=scan.total * TEN_MINUTES_US / span_us,
            per_hour_average=scan.total * HOUR_US / span_us,
            per_day_average=scan.total * DAY_US / span_us,
            floods=len(periods),
            percent_time_in_flood=_percent(flood_us, span_us),
        )
        positions.append(rates)
        measured = {
            "alarms_per_day": rates.per_day_average,
            "alarms_per_hour": rates.per_hour_average,
            "alarms_per_10_minutes": rates.per_10_minutes_average,
            "percent_windows_in_flood": rates.percent_windows_over_threshold,
            "percent_time_in_flood": rates.percent_time_in_flood,
        }
        targets += [_check(target, position, measured[target.measure]) for target in POSITION_TARGETS]

    frequent: list[FrequentAlarm] = []
    chattering: list[ChatteringAlarm] = []
    for (rule_key, device), parts in by_alarm.items():
        main_position, main = max(parts, key=lambda part: (len(part[1].times), part[0]))
        count = sum(len(series.times) for _, series in parts)
        frequent.append(FrequentAlarm(rule_key, device, main_position, main.priority, count, _percent(count, total)))
        times: Iterable[int] = (
            parts[0][1].ordered() if len(parts) == 1 else heapq.merge(*(s.ordered() for _, s in parts))
        )
        activations, most, first = _chatter(times, chatter_us, chatter_count)
        if first is not None:
            chattering.append(ChatteringAlarm(rule_key, device, main_position, activations, most, _time(first)))
    frequent.sort(key=lambda alarm: (-alarm.count, alarm.rule_key, alarm.device))
    most_frequent = tuple(frequent[:top])
    top_percent = _percent(sum(alarm.count for alarm in most_frequent), total)
    chattering.sort(key=lambda alarm: (-alarm.max_in_window, -alarm.activations, alarm.rule_key, alarm.device))

    stale = tuple(_stale(history.alarms, end_us, stale_after // ONE_US))

    priorities = tuple(
        PriorityShare(p, history.priorities[p], _percent(history.priorities[p], total)) for p in Priority
    )
    groups = tuple(
        PriorityGroup(
            name,
            members,
            sum(history.priorities[p] for p in members),
            _percent(sum(history.priorities[p] for p in members), total),
            recommended,
        )
        for name, members, recommended in PRIORITY_GROUPS
    )
    group_percent = {group.name: group.percent for group in groups}
    measured_system = {
        "top_alarms_percent": top_percent,
        "chattering_alarms": float(len(chattering)),
        "stale_alarms": float(len(stale)),
        "critical_percent": group_percent["critical"],
        "medium_high_percent": group_percent["medium_high"],
    }
    targets += [_check(target, None, measured_system[target.measure]) for target in SYSTEM_TARGETS]

    return MetricsReport(
        start=_time(start_us),
        end=_time(end_us),
        window_s=window_us / US,
        flood_threshold=flood_threshold,
        chatter_count=chatter_count,
        chatter_window_s=chatter_us / US,
        stale_after_s=stale_after / dt.timedelta(seconds=1),
        records=history.records,
        annunciated=total,
        positions=tuple(positions),
        floods=tuple(sorted(floods, key=lambda flood: (flood.start, flood.position))),
        most_frequent=most_frequent,
        top_percent=top_percent,
        chattering=tuple(chattering),
        stale=stale,
        priorities=priorities,
        priority_groups=groups,
        targets=tuple(targets),
    )


def _check(target: Target, position: str | None, value: float) -> TargetCheck:
    return TargetCheck(
        target.measure, position, value, target.acceptable, target.manageable, target.verdict(value), target.text
    )


def _stale(alarms: dict[str, _AlarmTrack], end_us: int, stale_after_us: int) -> Iterator[StaleAlarm]:
    found: list[tuple[int, str, _AlarmTrack]] = []
    for alarm_id, alarm in alarms.items():
        if alarm.state not in ACTIVE_STATES:
            continue
        # Without its activation in the history, it has been active at least since its first record.
        since = alarm.activated_us if alarm.activated_us is not None else alarm.first_us
        if end_us - since > stale_after_us:
            found.append((since, alarm_id, alarm))
    for since, alarm_id, alarm in sorted(found, key=lambda item: (item[0], item[1])):
        yield StaleAlarm(
            alarm_id,
            alarm.rule_key,
            alarm.device,
            alarm.position,
            alarm.priority,
            alarm.state,
            _time(since),
            round((end_us - since) / HOUR_US, 3),
        )


def window_counts(
    records: Iterable[HistoryRecord],
    *,
    start: dt.datetime,
    end: dt.datetime,
    window: dt.timedelta = dt.timedelta(minutes=10),
) -> dict[str, list[int]]:
    """Annunciated alarms per rate window and position over [start, end), for a rate chart.

    The windows are those of `compute`: aligned on `start`, the last one possibly shorter.
    """
    start_us, end_us = _checked(start, end, {"window": window}, {})
    window_us = window // ONE_US
    windows = -(-(end_us - start_us) // window_us)
    if windows > MAX_WINDOWS:
        raise Invalid(f"the range holds {windows} windows, more than {MAX_WINDOWS}: use a longer window")
    history = _read(records, start_us, end_us)
    counts = {position: [0] * windows for position in sorted(history.positions)}
    for (_, _, position), series in history.annunciations.items():
        bins = counts[position]
        for at_us in series.times:
            bins[(at_us - start_us) // window_us] += 1
    return counts
