"""The EPCIS query schedule of a subscription (the binding's cron-like `schedule`): read it, and say when it fires.

A schedule has up to six fields, `second` (0-59), `minute` (0-59), `hour` (0-23), `dayOfMonth`
(1-31), `month` (1-12) and `dayOfWeek` (1-7, 1 is Monday). Each is a string in the EPCIS grammar,
a comma-separated list of elements, each a number or a range in square brackets:

    QueryScheduleField ::= Element ("," Element)*     Element ::= Number | "[" Number "-" Number "]"

Two more spellings are read: a JSON integer for a single number (the binding's examples write
`"minute": 5` as well as `"minute": "5"`), and an element followed by `/step` (`0/30`, `[0-30]/10`),
which the binding's own subscription example uses: from the element's first value to its last (the
field's last for a number) in steps of `step`.

A time fires when every field matches it, in UTC (the standard leaves the time zone to the
service). dayOfMonth and dayOfWeek must both match when both are given, as EPCIS says (Unix cron
takes either). An omitted field matches any value, except that fields finer than the finest one
given are fixed at their first value: `{"hour": "1", "minute": "5"}` fires daily at 01:05:00, once,
as the binding's example says, not at every second of that minute; `{"dayOfWeek": "1"}` fires on
Mondays at 00:00:00; `{"month": "1"}` on 1 January at midnight. To fire at every second of a
minute, say so: `"second": "[0-59]"`.
"""

from __future__ import annotations

import bisect
import calendar
import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# name -> (first, last), finest first
FIELDS: dict[str, tuple[int, int]] = {
    "second": (0, 59),
    "minute": (0, 59),
    "hour": (0, 23),
    "dayOfMonth": (1, 31),
    "month": (1, 12),
    "dayOfWeek": (1, 7),
}
# How fine each field is; dayOfMonth and dayOfWeek both name a day.
_LEVEL = {"second": 0, "minute": 1, "hour": 2, "dayOfMonth": 3, "dayOfWeek": 3, "month": 4}
_ELEMENT = re.compile(r"(?:(\d{1,4})|\[(\d{1,4})-(\d{1,4})\])(?:/(\d{1,4}))?")
MAX_FIELD_CHARS = 200
DECEMBER = 12
HORIZON_YEARS = 100  # a schedule that fires at all fires within this (29 February on a weekday: ≤ 40 years)


class ScheduleError(ValueError):
    """A schedule that cannot be read or never fires; `field` names the part at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def _values(name: str, raw: Any) -> tuple[int, ...]:
    where = f"schedule.{name}"
    first, last = FIELDS[name]
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    if not isinstance(raw, str):
        raise ScheduleError(where, 'must be a string such as "5", "1,15" or "[1-5]"')
    text = raw.replace(" ", "")
    if not text or len(text) > MAX_FIELD_CHARS:
        raise ScheduleError(where, f"must list numbers or [low-high] ranges from {first} to {last}")
    found: set[int] = set()
    for element in text.split(","):
        match = _ELEMENT.fullmatch(element)
        if match is None:
            raise ScheduleError(where, f'{element!r} is not a number or a [low-high] range (e.g. "5", "[1-5]", "0/15")')
        single, low_text, high_text, step_text = match.groups()
        low = int(single if single is not None else low_text)
        high = int(high_text) if high_text is not None else (last if step_text else low)
        for number in (low, high):
            if not first <= number <= last:
                raise ScheduleError(where, f"{number} is outside {first}-{last}")
        if low > high:
            raise ScheduleError(where, f"the range [{low}-{high}] runs backwards")
        step = int(step_text) if step_text is not None else 1
        if step < 1:
            raise ScheduleError(where, "a step must be 1 or more")
        found.update(range(low, high + 1, step))
    return tuple(sorted(found))


@dataclass(frozen=True)
class Schedule:
    """A read schedule: the values each field matches (after the defaults of the module doc)."""

    second: tuple[int, ...]
    minute: tuple[int, ...]
    hour: tuple[int, ...]
    day_of_month: tuple[int, ...]
    month: tuple[int, ...]
    day_of_week: tuple[int, ...]  # 1 is Monday
    given: tuple[tuple[str, str], ...]  # the fields as given, for answering and storing

    def as_json(self) -> dict[str, str]:
        return dict(self.given)

    def fires_at(self, moment: dt.datetime) -> bool:
        at = moment.astimezone(dt.UTC)
        return (
            at.second in self.second
            and at.minute in self.minute
            and at.hour in self.hour
            and self._day_matches(at.date())
        )

    def _day_matches(self, day: dt.date) -> bool:
        return day.month in self.month and day.day in self.day_of_month and day.isoweekday() in self.day_of_week

    def next_after(self, moment: dt.datetime) -> dt.datetime | None:
        """The first time after `moment` (whole seconds, UTC) the schedule fires; None if not within the horizon."""
        start = moment.astimezone(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=1)
        year, month = start.year, start.month
        for _ in range(HORIZON_YEARS * 12):
            if month in self.month:
                found = self._in_month(year, month, start)
                if found is not None:
                    return found
            year, month = (year, month + 1) if month < DECEMBER else (year + 1, 1)
            if year > dt.MAXYEAR:
                return None
        return None

    def _in_month(self, year: int, month: int, start: dt.datetime) -> dt.datetime | None:
        days = calendar.monthrange(year, month)[1]
        first_day = start.day if (year, month) == (start.year, start.month) else 1
        for day in self.day_of_month[bisect.bisect_left(self.day_of_month, first_day) :]:
            if day > days:
                break
            date = dt.date(year, month, day)
            if date.isoweekday() not in self.day_of_week:
                continue
            after = start.time() if date == start.date() else None
            found = self._in_day(after)
            if found is not None:
                return dt.datetime.combine(date, found, dt.UTC)
        return None

    def _in_day(self, after: dt.time | None) -> dt.time | None:
        """The first firing time of a day at or after `after` (None: from midnight)."""
        if after is None:
            return dt.time(self.hour[0], self.minute[0], self.second[0])
        for hour in self.hour[bisect.bisect_left(self.hour, after.hour) :]:
            same_hour = hour == after.hour
            minutes = self.minute[bisect.bisect_left(self.minute, after.minute) :] if same_hour else self.minute
            for minute in minutes:
                if same_hour and minute == after.minute:
                    seconds = self.second[bisect.bisect_left(self.second, after.second) :]
                    if seconds:
                        return dt.time(hour, minute, seconds[0])
                    continue
                return dt.time(hour, minute, self.second[0])
        return None


def parse_schedule(raw: Mapping[str, Any], *, now: dt.datetime | None = None) -> Schedule:
    """A schedule from the binding's `schedule` object; ScheduleError naming the field at fault.

    Given `now`, a schedule that does not fire within the horizon after it (30 February) is refused.
    """
    if not isinstance(raw, Mapping):
        raise ScheduleError("schedule", "must be an object with second, minute, hour, dayOfMonth, month, dayOfWeek")
    unknown = sorted(str(name) for name in raw if name not in FIELDS)
    if unknown:
        raise ScheduleError(f"schedule.{unknown[0]}", f"is not a schedule field (fields: {', '.join(FIELDS)})")
    given = {name: _values(name, raw[name]) for name in FIELDS if raw.get(name) is not None}
    if not given:
        raise ScheduleError("schedule", "give at least one of " + ", ".join(FIELDS))
    finest = min(_LEVEL[name] for name in given)

    def values(name: str) -> tuple[int, ...]:
        if name in given:
            return given[name]
        first, last = FIELDS[name]
        # Finer than every field given: its first value, once (see the module doc).
        fixed = _LEVEL[name] < finest and name != "dayOfWeek"
        return (first,) if fixed else tuple(range(first, last + 1))

    schedule = Schedule(
        second=values("second"),
        minute=values("minute"),
        hour=values("hour"),
        day_of_month=values("dayOfMonth"),
        month=values("month"),
        day_of_week=values("dayOfWeek"),
        given=tuple((name, str(raw[name]).replace(" ", "")) for name in FIELDS if name in given),
    )
    if now is not None and schedule.next_after(now) is None:
        raise ScheduleError("schedule", f"never fires (no time matches it within {HORIZON_YEARS} years)")
    return schedule
