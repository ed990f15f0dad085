"""Live scoring: deployed versions score their devices' streams as the points arrive on the bus.

Samples are aligned by sample-and-hold (`alignment.SampleAligner`): a sample is final once every
variable has reported since the previous one (points stamped together make one sample per
timestamp), or when a variable reports again first, or after `grace_s`; a variable that did not
report takes its last value if that is not older than its staleness (the deployment's
`staleness_s`, else twice its usual period). A variable older than that is missing: the sample is
not scored (nothing is imputed), its missing variables are counted in the `missing` score, and a
`model.variable_missing` event names them. Points of BAD quality count as absent; points older than
the newest final sample are ignored.

Many samples arriving at once (a backlog, an edge agent's outbox) are scored as one numpy block.
A lagged model keeps its last `history` samples, and the persistence filter its last `persistence - 1`,
so a block is scored exactly as the same samples one by one.

Scores go back as telemetry on the deployed device (`analytics.<model>.<statistic>`, `.alarm`,
`.missing`) through `telemetry.points`, so the store, the twin and alarm rules see them. Alarm
transitions are published as `AlarmEvent`s (source `analytics`, kind `model.limit_exceeded`, the
device as subject) with the variables contributing most (explained at most once a second per
deployment: it costs as much as scoring hundreds of samples) and, when the deployment names a
fault classifier, the most likely fault class; an `event` rule in alarms turns them into alarms.
Several models on one device share that condition: it clears when none of them is in alarm.

A deployed RUL model (`RulScorer`) collects the device's points into cycles of the deployment's
interval counted from `since_ms` (a cycle is the mean of each variable's points in it, held as
above when a variable did not report), follows the unit's complete cycles with a `RulTracker` (a
bounded summary of what the features need of them, rebuilt from the store when the scorer starts,
so a restart keeps the unit's age), and writes the estimate and its interval per cycle (`.rul`,
`.rul_low`, `.rul_high`); `model.rul_low` is raised while the lower end is below the deployment's
threshold.

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
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from iip.alarms.public import ALARM_EVENTS, AlarmEvent
from iip.analytics.alignment import HeldValues, SampleAligner, unique_sorted
from iip.analytics.fitting import RUL, load_model
from iip.analytics.monitoring import Monitor
from iip.analytics.monitoring.classify import FaultClassifier
from iip.analytics.public import LIMIT_EXCEEDED, RUL_LOW, SOURCE, VARIABLE_MISSING, score_metric
from iip.analytics.rul import RulCurve, RulModel, RulTracker
from iip.analytics.service import (
    DeployedVersion,
    RulHistory,
    deployed_versions,
    deployments_fingerprint,
    rul_history,
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
PROBABLE_CLASSES = 3  # fault classes named in an alarm, most probable first
MAX_SEVERITY = 1000.0
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
    kind: str = LIMIT_EXCEEDED  # the event kind of `limit_changes`


def _series_columns(deployed: DeployedVersion, variables: Sequence[str]) -> dict[tuple[str, str], int]:
    """(device, metric) of each variable's live series -> its column."""
    return {
        (source["device"] or deployed.device, source["metric"]): j
        for j, source in enumerate(deployed.sources)
        if source["variable"] in variables
    }


def _staleness_ms(deployed: DeployedVersion) -> int | None:
    value = deployed.settings.get("staleness_s")
    return round(float(value) * 1000) if isinstance(value, (int, float)) else None


def _missing_changes(out: ScoredBlock, absent: BoolArray, variables: Sequence[str], active: bool | None) -> bool | None:
    """The missing-variable transitions of a block; the state after it."""
    if not absent.shape[0]:
        return active
    lacking: BoolArray = np.asarray(absent.any(axis=1), dtype=bool)
    previous = np.concatenate([[not lacking[0] if active is None else active], lacking[:-1]])
    for row in np.flatnonzero(lacking != previous):
        names = [variables[int(j)] for j in np.flatnonzero(absent[row])]
        out.missing_changes.append((int(row), bool(lacking[row]), names))
    return bool(lacking[-1])


class LiveScorer:
    """One deployed monitor on one device: the open sample, the recent history, the alarm state."""

    alarm_kind = LIMIT_EXCEEDED

    def __init__(
        self,
        deployed: DeployedVersion,
        monitor: Monitor,
        *,
        grace_s: float = GRACE_S,
        classifier: FaultClassifier | None = None,
    ) -> None:
        self.deployed = deployed
        self.monitor = monitor
        self.grace_s = grace_s
        self.variables = monitor.variables
        width = len(self.variables)
        self.columns = _series_columns(deployed, self.variables)
        self.classifier = classifier
        # The classifier's variables as columns of the monitor's samples (checked at deployment).
        self.classifier_columns = (
            np.array([self.variables.index(v) for v in classifier.variables], dtype=np.intp)
            if classifier is not None
            else np.empty(0, dtype=np.intp)
        )
        # Enough rows for the lag window of the oldest row the persistence filter looks back to,
        # and for the classifier's lags.
        self.keep = max(monitor.history + monitor.persistence - 1, classifier.lags if classifier else 0)
        self.aligner = SampleAligner(width, staleness_ms=_staleness_ms(deployed))
        self.context: FloatArray = np.empty((0, width))
        self.alarm_active: bool | None = None  # unknown until the first scored sample
        self.missing_active: bool | None = None
        self.scored = 0  # samples scored, for tests and benchmarks
        self.explained_at = -math.inf  # monotonic time of the last alarm explained

    @property
    def key(self) -> str:
        return self.deployed.deployment_id

    @property
    def last_ts(self) -> int | None:
        return self.aligner.last_ts

    def take(self, ts: IntArray, columns: IntArray, values: FloatArray, now: float) -> ScoredBlock | None:
        """Points of this scorer's series; the samples they make final, scored."""
        times, block = self.aligner.take(ts, columns, values, now)
        return self._score(times, block, now) if times.size else None

    def expire(self, now: float) -> ScoredBlock | None:
        """The open sample, final once it has waited the grace period for its missing variables."""
        times, block = self.aligner.expire(now, self.grace_s)
        return self._score(times, block, now) if times.size else None

    def _score(self, times: IntArray, block: FloatArray, now: float) -> ScoredBlock:
        kept = self.context.shape[0]
        rows = np.vstack([self.context, block]) if kept else block
        scores = self.monitor.score(rows)
        n = block.shape[0]
        self.context = rows[-self.keep :] if self.keep else rows[:0]
        self.scored += n
        statistics = {name: values[kept:] for name, values in scores.statistics.items()}
        alarm, valid = scores.alarm[kept:], scores.valid[kept:]
        absent = ~np.isfinite(block)
        out = ScoredBlock(times, statistics, alarm, valid, absent.sum(axis=1))
        self._limit_changes(out, rows, kept, scores.limits, now)
        self.missing_active = _missing_changes(out, absent, self.variables, self.missing_active)
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
            if active and self.classifier is not None:
                details.update(self._fault_class(self.classifier, rows, kept + row))
            out.limit_changes.append((row, active, severity, details))
        self.alarm_active = bool(flags[-1])

    def _fault_class(self, classifier: FaultClassifier, rows: FloatArray, at: int) -> dict[str, Any]:
        """The classifier's most probable fault classes at a row (nothing when its lags are not complete)."""
        first = at - classifier.lags
        if first < 0:
            return {}
        window = rows[first : at + 1][:, self.classifier_columns]
        probabilities = classifier.probabilities(window)[-1]
        if not np.isfinite(probabilities).all():
            return {}
        order = np.argsort(-probabilities, kind="stable")[:PROBABLE_CLASSES]
        return {
            "fault_class": classifier.classes[int(order[0])],
            "fault_probabilities": {classifier.classes[int(k)]: round(float(probabilities[k]), 4) for k in order},
            "classifier": str(self.deployed.settings.get("classifier", "")),
        }

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


class RulScorer:
    """One deployed RUL model on one device (a unit): open cycles, the unit's complete cycles, the alarm state."""

    alarm_kind = RUL_LOW

    def __init__(
        self,
        deployed: DeployedVersion,
        model: RulModel,
        *,
        history: RulHistory | None = None,
        grace_s: float = GRACE_S,
    ) -> None:
        self.deployed = deployed
        self.model = model
        self.grace_s = grace_s
        self.variables = model.variables
        self.columns = _series_columns(deployed, self.variables)
        self.interval_ms = int(deployed.settings["interval_ms"])
        self.since_ms = int(deployed.settings["since_ms"])
        threshold = deployed.settings.get("rul_threshold")
        self.threshold = float(threshold) if isinstance(threshold, (int, float)) else None
        # The unit's cycles so far, as the bounded state its features need (not the cycles themselves).
        self.tracker = history.tracker if history is not None else RulTracker(model)
        resume_ms = history.resume_ms if history is not None else self.since_ms
        # Stored cycles not estimated yet (the process stopped first): published by `catch_up`.
        self.backlog: tuple[IntArray, RulCurve | None] = (np.empty(0, dtype=np.int64), None)
        if history is not None:
            self.backlog = (history.backlog_ms, history.backlog)
        # Cycles before this one are final (stored ones were read back at the start).
        self.next_cycle = max(0, -(-(resume_ms - self.since_ms) // self.interval_ms))
        # cycle -> (sums, counts, monotonic time of its first point)
        self.open: dict[int, tuple[FloatArray, FloatArray, float]] = {}
        self.held = HeldValues(len(self.variables), _staleness_ms(deployed))
        self.alarm_active: bool | None = None
        self.missing_active: bool | None = None
        self.scored = 0

    @property
    def key(self) -> str:
        return self.deployed.deployment_id

    def take(self, ts: IntArray, columns: IntArray, values: FloatArray, now: float) -> ScoredBlock | None:
        """Points of the unit; the cycles the stream has moved past are final and estimated."""
        cycles = (ts - self.since_ms) // self.interval_ms
        mine = cycles >= self.next_cycle
        cycles, columns, values = cycles[mine], columns[mine], values[mine]
        if not cycles.size:
            return None
        width = len(self.variables)
        keys, inverse = unique_sorted(cycles)
        for k, cycle in enumerate(keys.tolist()):
            chosen = inverse == k
            sums, counts, first = self.open.get(cycle, (np.zeros(width), np.zeros(width), now))
            sums = sums + np.bincount(columns[chosen], weights=values[chosen], minlength=width)
            counts = counts + np.bincount(columns[chosen], minlength=width)
            self.open[cycle] = (sums, counts, first)
        newest = max(self.open)
        return self._close([c for c in sorted(self.open) if c < newest], now)

    def expire(self, now: float) -> ScoredBlock | None:
        """Cycles open for longer than their interval and the grace period are final."""
        wait = self.interval_ms / 1000 + self.grace_s
        stale = [c for c, (_, _, first) in self.open.items() if first <= now - wait]
        return self._close([c for c in sorted(self.open) if c <= max(stale)], now) if stale else None

    def _close(self, cycles: list[int], now: float) -> ScoredBlock | None:
        if not cycles:
            return None
        rows = []
        times = []
        for cycle in cycles:
            sums, counts, _ = self.open.pop(cycle)
            at = self.since_ms + cycle * self.interval_ms
            present = counts > 0
            self.held.update(present, sums / np.maximum(counts, 1), at)
            rows.append(self.held.row_at(at, present))
            times.append(at)
        self.next_cycle = cycles[-1] + 1
        block = np.vstack(rows)
        complete: BoolArray = np.asarray(np.isfinite(block).all(axis=1), dtype=bool)
        # A cycle lacking a variable is left out of the unit's history (never imputed).
        curve = self.tracker.advance(block[complete])
        return self._estimate(np.array(times, dtype=np.int64), block, complete, curve)

    def catch_up(self) -> ScoredBlock | None:
        """Estimates of the stored cycles read back at the start that were never estimated."""
        times, curve = self.backlog
        self.backlog = (np.empty(0, dtype=np.int64), None)
        if curve is None or not times.size:
            return None
        count = times.shape[0]
        return self._estimate(times, np.zeros((count, len(self.variables))), np.ones(count, dtype=bool), curve)

    def _estimate(self, times: IntArray, block: FloatArray, complete: BoolArray, curve: RulCurve | None) -> ScoredBlock:
        """Scores of final cycles; `curve` holds the estimates of the complete ones, in order."""
        n = block.shape[0]
        point, lower, upper = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
        if curve is not None and complete.any():
            point[complete] = curve.point
            lower[complete] = curve.lower
            upper[complete] = curve.upper
        self.scored += int(complete.sum())
        valid = complete & np.isfinite(point)
        alarm = valid & (lower < self.threshold) if self.threshold is not None else np.zeros(n, dtype=bool)
        statistics = {"rul": point, "rul_low": lower, "rul_high": upper}
        absent = ~np.isfinite(block)
        out = ScoredBlock(times, statistics, alarm, valid, absent.sum(axis=1), kind=RUL_LOW)
        if self.threshold is not None:
            self._limit_changes(out, self.threshold)
        self.missing_active = _missing_changes(out, absent, self.variables, self.missing_active)
        return out

    def _limit_changes(self, out: ScoredBlock, threshold: float) -> None:
        flags = out.alarm[out.valid]
        if not flags.size:
            return
        positions = np.flatnonzero(out.valid)
        previous = np.concatenate([[not flags[0] if self.alarm_active is None else self.alarm_active], flags[:-1]])
        cycles_seen = self.tracker.cycles - int(out.valid.sum())
        for k in np.flatnonzero(flags != previous):
            row = int(positions[k])
            low = float(out.statistics["rul_low"][row])
            details: dict[str, Any] = {
                "model": self.deployed.name,
                "version": self.deployed.version,
                "deployment_id": self.deployed.deployment_id,
                "rul": float(out.statistics["rul"][row]),
                "rul_low": low,
                "rul_high": float(out.statistics["rul_high"][row]),
                "threshold": threshold,
                "cycles": cycles_seen + int(k) + 1,
            }
            severity = min(threshold / low, MAX_SEVERITY) if low > 0 else MAX_SEVERITY
            out.limit_changes.append((row, bool(flags[k]), severity if flags[k] else 0.0, details))
        self.alarm_active = bool(flags[-1])


Scorer = LiveScorer | RulScorer


@dataclass(frozen=True)
class _Change:
    """A condition one scorer raised or cleared."""

    at_ms: int
    scorer: Scorer
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
    if change.kind == RUL_LOW:
        if not change.active:
            return f"{label}: remaining life above {details.get('threshold', 0):g} cycles"
        return (
            f"{label}: remaining life {details['rul_low']:.0f} to {details['rul_high']:.0f} cycles "
            f"(estimate {details['rul']:.0f}), below {details['threshold']:g}"
        )
    if not change.active:
        return f"{label}: within limits"
    top = ", ".join(str(item["variable"]) for item in details.get("top_variables", []))
    text = f"{label}: {details.get('statistic', '')} over its limit" + (f" (most: {top})" if top else "")
    if "fault_class" in details:
        probability = details["fault_probabilities"][details["fault_class"]]
        text += f"; likely {details['fault_class']} ({100 * probability:.0f}%)"
    return text


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
        self.scorers: dict[str, Scorer] = {}
        self._by_series: dict[str, dict[tuple[str, str], list[tuple[Scorer, int]]]] = {}
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
        fingerprint, deployed, histories = loaded
        async with self._lock:
            cleared = self._install(deployed, histories)
            self._fingerprint = fingerprint
        for outcome in cleared:
            await self._publish(outcome)

    def _read(
        self, known: tuple[object, ...] | None
    ) -> tuple[tuple[object, ...], list[DeployedVersion], dict[str, RulHistory]] | None:
        with self.runtime.db.session() as session:
            fingerprint = deployments_fingerprint(session)
            if fingerprint == known:
                return None
            deployed = deployed_versions(session)
        # A RUL model starting on a device reads the unit's stored cycles back: its age survives a restart.
        histories: dict[str, RulHistory] = {}
        now_ms = int(time.time() * 1000)
        for item in deployed:
            if item.kind == RUL and item.deployment_id not in self.scorers:
                try:
                    histories[item.deployment_id] = rul_history(self.runtime, item, now_ms)
                except Exception:  # the scorer starts from the live stream alone
                    logger.exception("stored history of deployment %s not read", item.deployment_id)
        return fingerprint, deployed, histories

    def _install(
        self, deployed: Sequence[DeployedVersion], histories: Mapping[str, RulHistory] | None = None
    ) -> list[_Outcome]:
        scorers: dict[str, Scorer] = {}
        for item in deployed:
            old = self.scorers.get(item.deployment_id)
            if old is not None and old.deployed.state_sha256 == item.state_sha256:
                scorers[item.deployment_id] = old
                continue
            try:
                scorer = self._scorer(item, (histories or {}).get(item.deployment_id))
            except ValueError as err:  # a stored state that no longer loads: the others still run
                logger.error("deployment %s of %s not started: %s", item.deployment_id, item.name, err)
                continue
            if scorer is not None:
                scorers[item.deployment_id] = scorer
        # A deployment that ended while in alarm (or lacking a variable) must not leave its condition raised.
        cleared: dict[str, _Outcome] = {}
        now_ms = int(time.time() * 1000)
        for key, scorer in self.scorers.items():
            if key in scorers:
                continue
            deployed_item = scorer.deployed
            outcome = cleared.setdefault(deployed_item.tenant_id, _Outcome(deployed_item.tenant_id))
            details = {"model": deployed_item.name, "version": deployed_item.version, "retired": True}
            for kind, raised in ((scorer.alarm_kind, scorer.alarm_active), (VARIABLE_MISSING, scorer.missing_active)):
                if raised:
                    outcome.changes.append(_Change(now_ms, scorer, kind, False, 0.0, details))
        self.scorers = scorers
        for scorer in scorers.values():
            block = scorer.catch_up() if isinstance(scorer, RulScorer) else None
            if block is not None:
                tenant_id = scorer.deployed.tenant_id
                self._collect(cleared.setdefault(tenant_id, _Outcome(tenant_id)), scorer, block)
        by_series: dict[str, dict[tuple[str, str], list[tuple[Scorer, int]]]] = {}
        for scorer in scorers.values():
            tenant = by_series.setdefault(scorer.deployed.tenant_id, {})
            for series, column in scorer.columns.items():
                tenant.setdefault(series, []).append((scorer, column))
        self._by_series = by_series
        logger.info("live scoring: %d deployed model version(s)", len(scorers))
        # Clears of ended deployments, and estimates of stored cycles a RUL scorer read back.
        return [self._finish(outcome) for outcome in cleared.values()]

    def _scorer(self, item: DeployedVersion, history: RulHistory | None) -> Scorer | None:
        model = load_model(item.state)
        if isinstance(model, Monitor):
            classifier = None
            if item.classifier_state is not None:
                found = load_model(item.classifier_state)
                classifier = found if isinstance(found, FaultClassifier) else None
                if classifier is not None and not set(classifier.variables) <= set(model.variables):
                    classifier = None  # checked at deployment; a mismatch leaves the alarm without a class
            return LiveScorer(item, model, grace_s=self.grace_s, classifier=classifier)
        if isinstance(model, RulModel):
            return RulScorer(item, model, history=history, grace_s=self.grace_s)
        return None  # a classifier is not deployed on its own (the service refuses it)

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
        tenant: dict[tuple[str, str], list[tuple[Scorer, int]]] | None = None,
        now: float | None = None,
    ) -> _Outcome | None:
        """Score what a batch completes (synchronously); the scores and events to publish."""
        tenant = self._by_series.get(batch.tenant_id, {}) if tenant is None else tenant
        wanted: dict[str, tuple[Scorer, npt.NDArray[np.int64]]] = {}
        for j, series in enumerate(batch.series):
            for scorer, column in tenant.get(series, ()):
                entry = wanted.get(scorer.key)
                if entry is None:
                    entry = wanted[scorer.key] = (scorer, np.full(len(batch.series), -1, dtype=np.int64))
                entry[1][j] = column
        if not wanted:
            return None
        index, ts, values, quality = batch.columns()
        good = quality < BAD_QUALITY
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

    def _collect(self, outcome: _Outcome, scorer: Scorer, block: ScoredBlock) -> None:
        device = scorer.deployed.device
        name = scorer.deployed.name
        for statistic, values in block.statistics.items():
            finite = np.isfinite(values)
            outcome.add_series(device, score_metric(name, statistic), block.times_ms[finite], values[finite])
        alarm = block.alarm[block.valid].astype(np.float64)
        outcome.add_series(device, score_metric(name, "alarm"), block.times_ms[block.valid], alarm)
        outcome.add_series(device, score_metric(name, "missing"), block.times_ms, block.missing.astype(np.float64))
        for row, active, severity, details in block.limit_changes:
            outcome.changes.append(_Change(int(block.times_ms[row]), scorer, block.kind, active, severity, details))
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
