"""Sample-and-hold alignment of a device's live points into samples, one value per variable.

Variables of one device often arrive at different moments (a driver per register block, a gateway
that stamps each value when it reads it). A sample is a *round*: it is made final when every
variable has reported since the previous sample, at the time of the newest value in it, or when a
variable reports a second time before the round is complete (its first value would otherwise be
lost). Then a variable that did not report in the round takes its last value, held for at most its
staleness: the deployment's `staleness_s`, else twice the variable's usual period (the median of its
last intervals). A value older than that is not held: the variable is missing in that sample,
flagged, never imputed. Before a variable's period is known (two values), nothing of it is held.

Points stamped together (a polling scan, one JSON or Sparkplug message) make each timestamp one
complete round, so aligned streams are scored exactly as before, one sample per timestamp, on a
vectorised path.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

RECENT = 8  # arrival times kept per variable to estimate its usual period
NEVER = np.iinfo(np.int64).min // 2  # "no value yet" (half the minimum: differences cannot overflow)
HOLD_PERIODS = 2.0  # default staleness, in usual periods of the variable


def unique_sorted(keys: IntArray) -> tuple[IntArray, npt.NDArray[np.intp]]:
    """Distinct values and each key's position among them; a sorted input (the usual) skips the sort."""
    if keys.size and (keys[1:] >= keys[:-1]).all():
        starts = np.empty(keys.size, dtype=bool)
        starts[0] = True
        np.not_equal(keys[1:], keys[:-1], out=starts[1:])
        return keys[starts], np.cumsum(starts) - 1
    values, inverse = np.unique(keys, return_inverse=True)
    return values, inverse.reshape(-1)


class HeldValues:
    """Each variable's last value, when it came, and how long it may be held."""

    def __init__(self, width: int, staleness_ms: int | None = None) -> None:
        self.value: FloatArray = np.full(width, np.nan)
        self.at: IntArray = np.full(width, NEVER, dtype=np.int64)
        self.recent: IntArray = np.full((RECENT, width), NEVER, dtype=np.int64)
        self.staleness_ms = staleness_ms

    def update(self, present: BoolArray, values: FloatArray, at: int | IntArray) -> None:
        """The variables of `present` reported `values` at `at` (one time, or one per variable)."""
        self.recent[:-1, present] = self.recent[1:, present]
        when = at[present] if isinstance(at, np.ndarray) else at
        self.recent[-1, present] = when
        self.value[present] = values[present]
        self.at[present] = when

    def update_rows(self, times: IntArray, rows: FloatArray) -> None:
        """Complete rows, every variable reporting at each of `times` (the aligned path)."""
        count = min(RECENT, times.size)
        self.recent = np.vstack([self.recent[count:], np.repeat(times[-count:, None], self.value.size, axis=1)])
        self.value = rows[-1].copy()
        self.at[:] = times[-1]

    def limits_ms(self) -> FloatArray:
        """How long each variable's last value may be held: the setting, else twice its usual period (0: unknown)."""
        if self.staleness_ms is not None:
            return np.full(self.value.size, float(self.staleness_ms))
        known = self.recent > NEVER
        gaps = np.where(known[1:] & known[:-1], np.diff(self.recent, axis=0).astype(np.float64), np.nan)
        out = np.zeros(self.value.size)
        usable = np.isfinite(gaps).any(axis=0)
        if usable.any():
            out[usable] = HOLD_PERIODS * np.nanmedian(gaps[:, usable], axis=0)
        return out

    def row_at(self, at: int, fresh: BoolArray) -> FloatArray:
        """The sample at `at`: the `fresh` variables' values, the others' held values if not too old, else NaN."""
        if fresh.all():  # the usual round: no value to hold
            return self.value.copy()
        age = (at - self.at).astype(np.float64)
        keep = fresh | ((self.at > NEVER) & (age <= self.limits_ms()))
        return np.where(keep, self.value, np.nan)


class SampleAligner:
    """A device's points, in any grouping, as final samples (rounds), with held values where allowed."""

    def __init__(self, width: int, *, staleness_ms: int | None = None) -> None:
        self.width = width
        self.held = HeldValues(width, staleness_ms)
        self.seen: BoolArray = np.zeros(width, dtype=bool)  # reported in the open round
        self.round_ts: int | None = None
        self.round_since = 0.0  # monotonic time the open round began
        self.last_ts: int | None = None  # time of the newest final sample

    @property
    def open(self) -> bool:
        return self.round_ts is not None

    def take(self, ts: IntArray, columns: IntArray, values: FloatArray, now: float) -> tuple[IntArray, FloatArray]:
        """The samples these points make final (times, rows); points not newer than the last sample are ignored."""
        if self.last_ts is not None:
            fresh = ts > self.last_ts
            ts, columns, values = ts[fresh], columns[fresh], values[fresh]
        if ts.size == 0:
            return _none(self.width)
        times, inverse = unique_sorted(ts)
        block = np.full((times.size, self.width), np.nan)
        block[inverse, columns] = values
        present = np.isfinite(block)
        if not self.open and present.all():
            # Aligned points: every timestamp is a complete round.
            self.held.update_rows(times, block)
            self.last_ts = int(times[-1])
            return times, block
        out_times: list[int] = []
        out_rows: list[FloatArray] = []
        first = 0
        while first < times.size:
            first += self._round(times[first:], block[first:], present[first:], now, out_times, out_rows)
        if not out_times:
            return _none(self.width)
        return np.array(out_times, dtype=np.int64), np.vstack(out_rows)

    def _round(
        self,
        times: IntArray,
        block: FloatArray,
        present: BoolArray,
        now: float,
        out_times: list[int],
        out_rows: list[FloatArray],
    ) -> int:
        """Add the leading rows that belong to the open round, closing it if they end it; rows used.

        Within a round each variable reports at most once, so a round spans at most `width` rows: the
        round ends before the first row repeating a variable, or at the first row completing it.
        """
        window = present[: self.width + 1]
        counts = np.cumsum(window, axis=0, dtype=np.int64) + self.seen
        repeats = np.flatnonzero((counts >= 2).any(axis=1))
        completes = np.flatnonzero((counts >= 1).all(axis=1))
        if repeats.size and (not completes.size or repeats[0] <= completes[0]):
            used, closing = int(repeats[0]), True
        elif completes.size:
            used, closing = int(completes[0]) + 1, True
        else:
            used, closing = window.shape[0], False
        if used:
            if self.round_ts is None:
                self.round_since = now
            rows = present[:used]
            reported: BoolArray = np.asarray(rows.any(axis=0), dtype=bool)
            last = rows.shape[0] - 1 - np.argmax(rows[::-1], axis=0)  # each variable's row (at most one)
            columns = np.arange(self.width)
            self.held.update(reported, block[last, columns], times[last])
            self.seen |= reported
            self.round_ts = int(times[used - 1])
        if closing and self.round_ts is not None:
            self._close(self.round_ts, out_times, out_rows)
        return used

    def expire(self, now: float, grace_s: float) -> tuple[IntArray, FloatArray]:
        """The open round, final once it has waited `grace_s` for its missing variables."""
        if self.round_ts is None or self.round_since > now - grace_s:
            return _none(self.width)
        out_times: list[int] = []
        out_rows: list[FloatArray] = []
        self._close(self.round_ts, out_times, out_rows)
        return np.array(out_times, dtype=np.int64), np.vstack(out_rows)

    def _close(self, at: int, out_times: list[int], out_rows: list[FloatArray]) -> None:
        out_times.append(at)
        out_rows.append(self.held.row_at(at, self.seen))
        self.last_ts = at
        self.seen[:] = False
        self.round_ts = None


def _none(width: int) -> tuple[IntArray, FloatArray]:
    return np.empty(0, dtype=np.int64), np.empty((0, width))
