"""Live scoring: deployed versions score their devices' streams as the points arrive on the bus.

Samples are aligned by timestamp: a sample is the values of every variable at one time, and it is
scored as soon as it is complete. Drivers that poll stamp every value of a scan with one time, and
JSON and Sparkplug payloads carry one time per message, so a device's variables arrive aligned.
A sample still incomplete when a later one completes, or after `grace_s`, is final: it is not
scored (nothing is imputed), its missing variables are counted in the `missing` score, and a
`model.variable_missing` event names them. Points of BAD quality count as absent; points older than
the newest sample already scored are ignored.

Many samples arriving at once (a backlog, an edge agent's outbox) are scored as one numpy block.
A lagged model keeps its last `history` samples, and the persistence filter its last `persistence - 1`,
so a block is scored exactly as the same samples one by one.

Scores go back as telemetry on the deployed device (`analytics.<model>.<statistic>`, `.alarm`,
`.missing`) through `telemetry.points`, so the store, the twin and alarm rules see them. Alarm
transitions are published as `AlarmEvent`s (source `analytics`, kind `model.limit_exceeded`, the
device as subject) with the variables contributing most (explained at most once a second per
deployment: it costs as much as scoring hundreds of samples); an `event` rule in alarms turns them
into alarms. Several models on one device share that condition: it clears when none of them is in
alarm.

The runner reloads the deployments when they change (a cheap fingerprint read every few seconds,
and at once after a deploy or retire through this process), keeping the state of the scorers whose
deployment did not change. Batches published by this runner itself (source `analytics`) are skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from iip.alarms.public import ALARM_EVENTS, AlarmEvent
from iip.analytics.fitting import load_model
from iip.analytics.monitoring import Monitor
from iip.analytics.public import LIMIT_EXCEEDED, SOURCE, VARIABLE_MISSING, score_metric
from iip.analytics.service import (
    DeployedVersion,
    deployed_versions,
    deployments_fingerprint,
    top_variables,
    utc_from_ms,
)
from iip.kernel.bus import Delivery, Subscription
from iip.kernel.runtime import Runtime
from iip.telemetry.public import TELEMETRY_POINTS, PointBatch

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

SCORING_SERVICE = "analytics.scoring"  # the running `ScoringRunner` in `Runtime.services`
SCORING_DURABLE = "analytics-scoring"
TICK_S = 1.0
RELOAD_EVERY_TICKS = 3
GRACE_S = 5.0
MAX_PENDING = 1000  # incomplete samples kept per scorer; past that the oldest are final
BAD_QUALITY = 2
TOP_COUNT = 3
EXPLAIN_EVERY_S = 1.0


@dataclass
class ScoredBlock:
    """What one scorer decided for a block of final samples."""

    times_ms: IntArray
    statistics: dict[str, FloatArray]
    alarm: BoolArray
    valid: BoolArray
    missing: IntArray  # per row, how many variables it lacked
    # (row, active, severity, details) of the alarm and missing-variable transitions, in time order.
    limit_changes: list[tuple[int, bool, float, dict[str, Any]]] = field(default_factory=list)
    missing_changes: list[tuple[int, bool, list[str]]] = field(default_factory=list)


class LiveScorer:
    """One deployed version on one device: incomplete samples, the recent history, the alarm state."""

    def __init__(self, deployed: DeployedVersion, monitor: Monitor, *, grace_s: float = GRACE_S) -> None:
        self.deployed = deployed
        self.monitor = monitor
        self.grace_s = grace_s
        self.variables = monitor.variables
        width = len(self.variables)
        self.columns: dict[tuple[str, str], int] = {
            (source["device"] or deployed.device, source["metric"]): j
            for j, source in enumerate(deployed.sources)
            if source["variable"] in self.variables
        }
        # Enough rows for the lag window of the oldest row the persistence filter looks back to.
        self.keep = monitor.history + monitor.persistence - 1
        self.pending_ts: IntArray = np.empty(0, dtype=np.int64)
        self.pending: FloatArray = np.empty((0, width))
        self.pending_since: FloatArray = np.empty(0)
        self.context: FloatArray = np.empty((0, width))
        self.last_ts: int | None = None
        self.alarm_active: bool | None = None  # unknown until the first scored sample
        self.missing_active: bool | None = None
        self.scored = 0  # samples scored, for tests and benchmarks
        self.explained_at = -math.inf  # monotonic time of the last alarm explained

    @property
    def key(self) -> str:
        return self.deployed.deployment_id

    def take(self, ts: IntArray, columns: IntArray, values: FloatArray, now: float) -> ScoredBlock | None:
        """Points of this scorer's series; the samples they complete (and those they make final) scored."""
        if self.last_ts is not None:
            fresh = ts > self.last_ts
            ts, columns, values = ts[fresh], columns[fresh], values[fresh]
        if ts.size == 0:
            return None
        keys = np.concatenate([self.pending_ts, ts])
        times, inverse = _unique_sorted(keys)
        held = self.pending.shape[0]
        block = np.full((times.size, len(self.variables)), np.nan)
        since = np.full(times.size, now)
        if held:
            block[inverse[:held]] = self.pending
            since[inverse[:held]] = self.pending_since
        block[inverse[held:], columns] = values
        complete = np.isfinite(block).all(axis=1)
        final = int(np.flatnonzero(complete)[-1]) + 1 if complete.any() else 0
        final = max(final, times.size - MAX_PENDING)
        self.pending_ts, self.pending, self.pending_since = times[final:], block[final:], since[final:]
        return self._score(times[:final], block[:final], now) if final else None

    def expire(self, now: float) -> ScoredBlock | None:
        """Samples incomplete for longer than the grace period are final."""
        if not self.pending_ts.size:
            return None
        stale = self.pending_since <= now - self.grace_s
        if not stale.any():
            return None
        final = int(np.flatnonzero(stale)[-1]) + 1
        times, block = self.pending_ts[:final], self.pending[:final]
        self.pending_ts, self.pending, self.pending_since = (
            self.pending_ts[final:],
            self.pending[final:],
            self.pending_since[final:],
        )
        return self._score(times, block, now)

    def _score(self, times: IntArray, block: FloatArray, now: float) -> ScoredBlock:
        kept = self.context.shape[0]
        rows = np.vstack([self.context, block]) if kept else block
        scores = self.monitor.score(rows)
        n = block.shape[0]
        self.context = rows[-self.keep :] if self.keep else rows[:0]
        self.last_ts = int(times[-1])
        self.scored += n
        statistics = {name: values[kept:] for name, values in scores.statistics.items()}
        alarm, valid = scores.alarm[kept:], scores.valid[kept:]
        absent = ~np.isfinite(block)
        out = ScoredBlock(times, statistics, alarm, valid, absent.sum(axis=1))
        self._limit_changes(out, rows, kept, scores.limits, now)
        self._missing_changes(out, absent)
        return out

    def _limit_changes(
        self, out: ScoredBlock, rows: FloatArray, kept: int, limits: dict[str, float], now: float
    ) -> None:
        flags = out.alarm[out.valid]
        if not flags.size:
            return
        positions = np.flatnonzero(out.valid)
        previous = np.concatenate([[not flags[0] if self.alarm_active is None else self.alarm_active], flags[:-1]])
        for k in np.flatnonzero(flags != previous):
            row = int(positions[k])
            active = bool(flags[k])
            ratios = {
                name: float(values[row]) / limits[name]
                for name, values in out.statistics.items()
                if limits.get(name, 0.0) > 0.0 and math.isfinite(values[row])
            }
            severity = max(ratios.values(), default=0.0)
            details: dict[str, Any] = {
                "model": self.deployed.name,
                "version": self.deployed.version,
                "deployment_id": self.deployed.deployment_id,
                "statistics": {name: float(values[row]) for name, values in out.statistics.items()},
                "limits": dict(limits),
            }
            if active and ratios:
                worst = max(ratios, key=lambda name: ratios[name])
                details["statistic"] = worst
                # Explaining costs as much as scoring hundreds of samples: at most once a second per
                # deployment, so a backlog or an alarm flood cannot make it the bulk of the work.
                if now - self.explained_at >= EXPLAIN_EVERY_S:
                    details["top_variables"] = self._top(rows, kept + row, worst)
                    self.explained_at = now
            out.limit_changes.append((row, active, severity, details))
        self.alarm_active = bool(flags[-1])

    def _top(self, rows: FloatArray, at: int, statistic: str) -> list[dict[str, float | str]]:
        window = rows[at - self.monitor.history : at + 1]
        try:
            shares = self.monitor.contributions(window).get(statistic, {})
        except ValueError:  # an incomplete window (cannot happen for a scored row, kept safe)
            return []
        total = sum(shares.values()) or 1.0
        return [
            {"variable": name, "share": round(shares[name] / total, 4)} for name in top_variables(shares, TOP_COUNT)
        ]

    def _missing_changes(self, out: ScoredBlock, absent: BoolArray) -> None:
        lacking: BoolArray = np.asarray(absent.any(axis=1), dtype=bool)
        previous = np.concatenate(
            [[not lacking[0] if self.missing_active is None else self.missing_active], lacking[:-1]]
        )
        for row in np.flatnonzero(lacking != previous):
            names = [self.variables[j] for j in np.flatnonzero(absent[row])]
            out.missing_changes.append((int(row), bool(lacking[row]), names))
        self.missing_active = bool(lacking[-1])


def _small_ints(values: list[int]) -> npt.NDArray[np.int64]:
    """A list of ints as an array; through `bytes` (three times faster) when they all fit in a byte."""
    try:
        return np.frombuffer(bytes(values), dtype=np.uint8).astype(np.int64)
    except ValueError:  # a value past 255 (or below 0)
        return np.asarray(values, dtype=np.int64)


def _unique_sorted(keys: IntArray) -> tuple[IntArray, npt.NDArray[np.intp]]:
    """Distinct values and each key's position among them; a sorted input (the usual) skips the sort."""
    if keys.size and (keys[1:] >= keys[:-1]).all():
        starts = np.empty(keys.size, dtype=bool)
        starts[0] = True
        np.not_equal(keys[1:], keys[:-1], out=starts[1:])
        return keys[starts], np.cumsum(starts) - 1
    values, inverse = np.unique(keys, return_inverse=True)
    return values, inverse.reshape(-1)


@dataclass(frozen=True)
class _Change:
    """A condition one scorer raised or cleared."""

    at_ms: int
    scorer: LiveScorer
    kind: str
    active: bool
    severity: float
    details: dict[str, Any]


def _message(change: _Change) -> str:
    deployed = change.scorer.deployed
    label = f"{deployed.name} v{deployed.version}"
    details = change.details
    if change.kind == VARIABLE_MISSING:
        return f"{label}: no value of {', '.join(details['variables'][:10])}" if change.active else f"{label}: complete"
    if not change.active:
        return f"{label}: within limits"
    top = ", ".join(str(item["variable"]) for item in details.get("top_variables", []))
    return f"{label}: {details.get('statistic', '')} over its limit" + (f" (most: {top})" if top else "")


@dataclass
class _Outcome:
    """Scores and events of one delivery (or tick) for one tenant, to publish together."""

    tenant_id: str
    series: list[tuple[str, str]] = field(default_factory=list)
    index: list[IntArray] = field(default_factory=list)
    ts: list[IntArray] = field(default_factory=list)
    values: list[FloatArray] = field(default_factory=list)
    events: list[AlarmEvent] = field(default_factory=list)
    changes: list[_Change] = field(default_factory=list)

    def add_series(self, device: str, metric: str, ts: IntArray, values: FloatArray) -> None:
        if ts.size:
            self.index.append(np.full(ts.size, len(self.series), dtype=np.int64))
            self.series.append((device, metric))
            self.ts.append(ts)
            self.values.append(values)

    def batch(self) -> PointBatch | None:
        if not self.series:
            return None
        count = sum(part.size for part in self.ts)
        return PointBatch.model_construct(
            tenant_id=self.tenant_id,
            series=self.series,
            series_index=np.concatenate(self.index).tolist(),
            ts_ms=np.concatenate(self.ts).tolist(),
            value=np.concatenate(self.values).tolist(),
            quality=[0] * count,
            attributes={},
            source=SOURCE,
        )


class ScoringRunner:
    """Owns the live scorers of this process and what they publish."""

    def __init__(self, runtime: Runtime, *, tick_s: float = TICK_S, grace_s: float = GRACE_S) -> None:
        self.runtime = runtime
        self.tick_s = tick_s
        self.grace_s = grace_s
        self.scorers: dict[str, LiveScorer] = {}
        self._by_series: dict[str, dict[tuple[str, str], list[tuple[LiveScorer, int]]]] = {}
        # (kind, tenant, device) -> the deployments holding that condition raised
        self._raised: dict[tuple[str, str, str], set[str]] = {}
        self._fingerprint: tuple[object, ...] | None = None
        self._lock = asyncio.Lock()
        self._subscription: Subscription | None = None
        self._ticker: asyncio.Task[None] | None = None
        self.published_points = 0  # for tests and benchmarks
        self.published_events = 0

    async def start(self) -> None:
        try:
            await self.reload()
        except Exception:  # the platform starts without its database (readiness says so); the tick retries
            logger.exception("deployed models not loaded at start; retrying on the next tick")
        self._subscription = await self.runtime.bus.subscribe(TELEMETRY_POINTS, self.on_points, durable=SCORING_DURABLE)
        self._ticker = asyncio.create_task(self._tick_forever(), name="analytics-scoring-tick")

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.stop()
            self._subscription = None
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None

    # --- deployments

    async def reload(self, *, force: bool = True) -> None:
        """Read the deployments (when they changed, or `force`) and install them."""
        loaded = await asyncio.to_thread(self._read, None if force else self._fingerprint)
        if loaded is None:
            return
        fingerprint, deployed = loaded
        async with self._lock:
            cleared = self._install(deployed)
            self._fingerprint = fingerprint
        for outcome in cleared:
            await self._publish(outcome)

    def _read(self, known: tuple[object, ...] | None) -> tuple[tuple[object, ...], list[DeployedVersion]] | None:
        with self.runtime.db.session() as session:
            fingerprint = deployments_fingerprint(session)
            if fingerprint == known:
                return None
            return fingerprint, deployed_versions(session)

    def _install(self, deployed: Sequence[DeployedVersion]) -> list[_Outcome]:
        scorers: dict[str, LiveScorer] = {}
        for item in deployed:
            old = self.scorers.get(item.deployment_id)
            if old is not None and old.deployed.state_sha256 == item.state_sha256:
                scorers[item.deployment_id] = old
                continue
            try:
                model = load_model(item.state)
            except ValueError as err:  # a stored state that no longer loads: the others still run
                logger.error("deployment %s of %s not started: %s", item.deployment_id, item.name, err)
                continue
            if isinstance(model, Monitor):  # only monitors are deployed (the service refuses the others)
                scorers[item.deployment_id] = LiveScorer(item, model, grace_s=self.grace_s)
        # A deployment that ended while in alarm (or lacking a variable) must not leave its condition raised.
        cleared: dict[str, _Outcome] = {}
        now_ms = int(time.time() * 1000)
        for key, scorer in self.scorers.items():
            if key in scorers:
                continue
            deployed_item = scorer.deployed
            outcome = cleared.setdefault(deployed_item.tenant_id, _Outcome(deployed_item.tenant_id))
            details = {"model": deployed_item.name, "version": deployed_item.version, "retired": True}
            for kind, raised in ((LIMIT_EXCEEDED, scorer.alarm_active), (VARIABLE_MISSING, scorer.missing_active)):
                if raised:
                    outcome.changes.append(_Change(now_ms, scorer, kind, False, 0.0, details))
        self.scorers = scorers
        by_series: dict[str, dict[tuple[str, str], list[tuple[LiveScorer, int]]]] = {}
        for scorer in scorers.values():
            tenant = by_series.setdefault(scorer.deployed.tenant_id, {})
            for series, column in scorer.columns.items():
                tenant.setdefault(series, []).append((scorer, column))
        self._by_series = by_series
        logger.info("live scoring: %d deployed model version(s)", len(scorers))
        return [self._finish(outcome) for outcome in cleared.values()]

    # --- the stream

    async def on_points(self, delivery: Delivery[PointBatch]) -> None:
        batch = delivery.payload
        if batch.source == SOURCE or not len(batch):
            return
        tenant = self._by_series.get(batch.tenant_id)
        if not tenant:
            return
        async with self._lock:
            outcome = self.take(batch, tenant, time.monotonic())
        if outcome is not None:
            await self._publish(outcome)

    def take(
        self,
        batch: PointBatch,
        tenant: dict[tuple[str, str], list[tuple[LiveScorer, int]]] | None = None,
        now: float | None = None,
    ) -> _Outcome | None:
        """Score what a batch completes (synchronously); the scores and events to publish."""
        tenant = self._by_series.get(batch.tenant_id, {}) if tenant is None else tenant
        wanted: dict[str, tuple[LiveScorer, npt.NDArray[np.int64]]] = {}
        for j, series in enumerate(batch.series):
            for scorer, column in tenant.get(series, ()):
                entry = wanted.get(scorer.key)
                if entry is None:
                    entry = wanted[scorer.key] = (scorer, np.full(len(batch.series), -1, dtype=np.int64))
                entry[1][j] = column
        if not wanted:
            return None
        index = _small_ints(batch.series_index)
        ts = np.fromiter(batch.ts_ms, dtype=np.int64, count=len(batch.ts_ms))
        values = np.fromiter(batch.value, dtype=np.float64, count=len(batch.value))
        good = _small_ints(batch.quality) < BAD_QUALITY
        outcome = _Outcome(batch.tenant_id)
        moment = time.monotonic() if now is None else now
        for scorer, lookup in wanted.values():
            columns = lookup[index]
            mine = (columns >= 0) & good
            if len(wanted) == 1 and mine.all():
                block = scorer.take(ts, columns, values, moment)
            else:
                block = scorer.take(ts[mine], columns[mine], values[mine], moment)
            if block is not None:
                self._collect(outcome, scorer, block)
        return self._finish(outcome)

    def _collect(self, outcome: _Outcome, scorer: LiveScorer, block: ScoredBlock) -> None:
        device = scorer.deployed.device
        name = scorer.deployed.name
        for statistic, values in block.statistics.items():
            finite = np.isfinite(values)
            outcome.add_series(device, score_metric(name, statistic), block.times_ms[finite], values[finite])
        alarm = block.alarm[block.valid].astype(np.float64)
        outcome.add_series(device, score_metric(name, "alarm"), block.times_ms[block.valid], alarm)
        outcome.add_series(device, score_metric(name, "missing"), block.times_ms, block.missing.astype(np.float64))
        for row, active, severity, details in block.limit_changes:
            outcome.changes.append(_Change(int(block.times_ms[row]), scorer, LIMIT_EXCEEDED, active, severity, details))
        for row, active, names in block.missing_changes:
            details = {"model": name, "version": scorer.deployed.version, "variables": names}
            outcome.changes.append(
                _Change(int(block.times_ms[row]), scorer, VARIABLE_MISSING, active, float(len(names)), details)
            )

    def _finish(self, outcome: _Outcome) -> _Outcome:
        """The condition changes of every scorer, in time order, as events.

        The models on one device share each condition (kind, device): it is raised by any of them
        and cleared when the last one clears it.
        """
        outcome.changes.sort(key=lambda change: change.at_ms)
        for change in outcome.changes:
            deployed = change.scorer.deployed
            holders = self._raised.setdefault((change.kind, deployed.tenant_id, deployed.device), set())
            if change.active:
                holders.add(deployed.deployment_id)
            else:
                holders.discard(deployed.deployment_id)
                if holders:
                    continue
            outcome.events.append(
                AlarmEvent(
                    tenant_id=deployed.tenant_id,
                    source=SOURCE,
                    kind=change.kind,
                    subject=deployed.device,
                    active=change.active,
                    severity=change.severity,
                    message=_message(change),
                    at=utc_from_ms(change.at_ms),
                    details=change.details,
                )
            )
        outcome.changes = []
        return outcome

    async def _publish(self, outcome: _Outcome) -> None:
        batch = outcome.batch()
        try:
            if batch is not None:
                await self.runtime.bus.publish(TELEMETRY_POINTS, batch)
                self.published_points += len(batch)
            for event in outcome.events:
                await self.runtime.bus.publish(ALARM_EVENTS, event)
                self.published_events += 1
        except Exception:  # scored already: a lost publication must not score the samples twice
            logger.exception("could not publish the scores of tenant %s", outcome.tenant_id)

    # --- timers

    async def _tick_forever(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(self.tick_s)
            ticks += 1
            try:
                await self.tick(reload=ticks % RELOAD_EVERY_TICKS == 0)
            except Exception:
                logger.exception("analytics scoring tick failed")

    async def tick(self, *, reload: bool = True) -> None:
        """Make stale incomplete samples final, and reload the deployments if they changed."""
        if reload:
            await self.reload(force=False)
        now = time.monotonic()
        outcomes: dict[str, _Outcome] = {}
        async with self._lock:
            for scorer in self.scorers.values():
                block = scorer.expire(now)
                if block is not None:
                    tenant_id = scorer.deployed.tenant_id
                    self._collect(outcomes.setdefault(tenant_id, _Outcome(tenant_id)), scorer, block)
        for outcome in outcomes.values():
            await self._publish(self._finish(outcome))


@asynccontextmanager
async def scoring_lifespan(runtime: Runtime) -> AsyncIterator[None]:
    """Score the deployed versions' live streams while the platform runs (`runtime.services["analytics.scoring"]`)."""
    runner = ScoringRunner(runtime)
    await runner.start()
    runtime.services[SCORING_SERVICE] = runner
    try:
        yield
    finally:
        runtime.services.pop(SCORING_SERVICE, None)
        await runner.stop()
