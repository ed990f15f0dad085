"""Rules on the live stream: the bus feeds the rule engine, its condition changes become alarm transitions.

The engine (`evaluation.RuleEngine`) sees every point batch, device status and alarm event as it is
published, in the event loop; what it decides is applied to the stored alarms in a worker thread,
in order, one transaction per delivery, and each committed transition is published on
`ALARM_CHANGES` for notifications and the console. A tick each second runs the engine's timers
(delays, no-data timeouts, event holds) and expires shelving. Rules and device placements are
reloaded when they change (a cheap fingerprint read every few seconds), keeping the running state
of every rule instance whose version did not change.

Changes the database refused (it is away) are kept and applied again on the next tick before new
ones: applying is idempotent on (alarm, time), and the engine has already moved on, so dropping them
would lose a transition. After a restart the engine is primed with the alarms stored as active, so a
condition still present is not raised twice and one that cleared meanwhile is cleared.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy import func, select

from iip.alarms.evaluation import RuleEngine
from iip.alarms.models import Alarm, Rule
from iip.alarms.public import ALARM_CHANGES, ALARM_EVENTS, AlarmChange, AlarmEvent, AlarmState
from iip.alarms.rules import ConditionChange, RuleSpec, VersionedRule
from iip.alarms.service import AlarmService, enabled_rules
from iip.devices.public import DevicePlacement, device_placements, placements_fingerprint
from iip.kernel.bus import Delivery, Subscription
from iip.kernel.errors import Invalid
from iip.kernel.runtime import Runtime
from iip.telemetry.public import DEVICE_STATUS, TELEMETRY_POINTS, DeviceStatus, PointBatch

logger = logging.getLogger(__name__)

ENGINE_SERVICE = "alarms.engine"  # the running `AlarmEngineRunner` in `Runtime.services`
RULES_DURABLE = "alarms-rules"
TICK_S = 1.0
RELOAD_EVERY_TICKS = 3
MAX_PENDING = 100_000  # changes kept while the database is away; past that the oldest are dropped, logged
ACTIVE_STATES = (AlarmState.UNACK_ACTIVE.value, AlarmState.ACK_ACTIVE.value)


@dataclass(frozen=True, slots=True)
class _Loaded:
    fingerprint: tuple[object, ...]
    rules: dict[str, list[VersionedRule]]
    placements: dict[str, list[DevicePlacement]]
    active: dict[str, list[tuple[str, str]]]


class AlarmEngineRunner:
    """Owns the rule engine of this process and the way its decisions reach the database and the bus."""

    def __init__(self, runtime: Runtime, *, tick_s: float = TICK_S) -> None:
        self.runtime = runtime
        self.engine = RuleEngine()
        self.tick_s = tick_s
        self.applied = 0  # transitions committed, for tests and benchmarks
        self._sites: dict[tuple[str, str], str] = {}
        self._specs: dict[tuple[str, str, int], RuleSpec] = {}  # the loaded rules, for applying their changes
        self._fingerprint: tuple[object, ...] | None = None
        self._pending: list[ConditionChange] = []
        self._apply_lock = asyncio.Lock()
        self._subscriptions: list[Subscription] = []
        self._ticker: asyncio.Task[None] | None = None
        self._tenants: set[str] = set()
        self._primed = False

    async def start(self) -> None:
        try:
            loaded = await asyncio.to_thread(self._read_all, None)
        except Exception:  # the platform starts without its database (readiness says so); the tick retries
            logger.exception("alarm rules not loaded at start; retrying on the next tick")
        else:
            if loaded is not None:
                self._install(loaded)
        bus = self.runtime.bus
        self._subscriptions = [
            await bus.subscribe(TELEMETRY_POINTS, self.on_points, durable=RULES_DURABLE),
            await bus.subscribe(DEVICE_STATUS, self.on_status, durable=RULES_DURABLE),
            await bus.subscribe(ALARM_EVENTS, self.on_event, durable=RULES_DURABLE),
        ]
        self._ticker = asyncio.create_task(self._tick_forever(), name="alarms-tick")

    async def stop(self) -> None:
        for subscription in self._subscriptions:
            await subscription.stop()
        self._subscriptions = []
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        with contextlib.suppress(Exception):  # a last try for what the database refused
            await self.apply([])

    # --- the stream

    async def on_points(self, delivery: Delivery[PointBatch]) -> None:
        await self.apply(self.engine.on_points(delivery.payload))

    async def on_status(self, delivery: Delivery[DeviceStatus]) -> None:
        await self.apply(self.engine.on_status(delivery.payload))

    async def on_event(self, delivery: Delivery[AlarmEvent]) -> None:
        await self.apply(self.engine.on_event(delivery.payload))

    async def apply(self, changes: Sequence[ConditionChange]) -> None:
        """Apply changes (after any kept from before) and publish the transitions; keep them if refused."""
        if not changes and not self._pending:
            return
        async with self._apply_lock:
            batch = [*self._pending, *changes]
            self._pending = []
            try:
                published = await asyncio.to_thread(self._apply_in_thread, batch)
            except Exception:
                logger.exception("could not apply %d alarm condition changes; kept for the next tick", len(batch))
                if len(batch) > MAX_PENDING:
                    logger.error("dropped the %d oldest alarm condition changes", len(batch) - MAX_PENDING)
                    batch = batch[-MAX_PENDING:]
                self._pending = batch
                return
            self.applied += len(published)
            await self._publish(published)

    def _apply_in_thread(self, changes: Sequence[ConditionChange]) -> list[AlarmChange]:
        with self.runtime.db.session() as session:
            service = AlarmService(session, settings=self.runtime.settings.alarms)
            return service.apply(changes, sites=self._site_of, known=self._specs)  # committed as the block ends

    def _site_of(self, tenant_id: str, device: str) -> str:
        return self._sites.get((tenant_id, device), "")

    async def _publish(self, changes: Sequence[AlarmChange]) -> None:
        for change in changes:
            try:
                await self.runtime.bus.publish(ALARM_CHANGES, change)
            except Exception:  # committed already: a lost announcement must not undo or repeat the transition
                logger.exception("could not publish alarm change %s/%d", change.alarm_id, change.sequence)

    # --- timers and reloads

    async def _tick_forever(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(self.tick_s)
            ticks += 1
            try:
                await self.tick(reload=ticks % RELOAD_EVERY_TICKS == 0)
            except Exception:
                logger.exception("alarm tick failed")

    async def tick(self, *, reload: bool = True) -> None:
        """One round of timers, shelving expiry and (if asked) a reload of changed rules."""
        if reload:
            loaded = await asyncio.to_thread(self._read_all, self._fingerprint)
            if loaded is not None:
                self._install(loaded)
        await self.apply(self.engine.tick(time.time_ns() // 1_000_000))
        expired = await asyncio.to_thread(self._expire_shelves)
        await self._publish(expired)

    def _expire_shelves(self) -> list[AlarmChange]:
        with self.runtime.db.session() as session:
            return AlarmService(session, settings=self.runtime.settings.alarms).expire_shelves()

    def _read_all(self, known: tuple[object, ...] | None) -> _Loaded | None:
        """Rules, placements and active alarms of every tenant; None when the fingerprint is `known`."""
        devices_state = placements_fingerprint(self.runtime)
        with self.runtime.db.session() as session:
            rules_state = session.execute(
                select(func.count(Rule.id), func.max(Rule.updated_at), func.sum(Rule.version))
            ).one()
            fingerprint = (*rules_state, *devices_state)
            if fingerprint == known:
                return None
            rules: dict[str, list[VersionedRule]] = {}
            for rule in enabled_rules(session):
                rules.setdefault(rule.tenant_id, []).append(rule)
            active: dict[str, list[tuple[str, str]]] = {}
            query = select(Alarm.tenant_id, Alarm.rule_key, Alarm.device).where(Alarm.state.in_(ACTIVE_STATES))
            for tenant_id, rule_key, device in session.execute(query):
                active.setdefault(tenant_id, []).append((rule_key, device))
        placements = {tenant_id: device_placements(self.runtime, tenant_id) for tenant_id in rules}
        return _Loaded(fingerprint, rules, placements, active)

    def _install(self, loaded: _Loaded) -> None:
        # The stored active alarms prime the engine on the first load only: later loads keep its own state.
        prime, self._primed = not self._primed, True
        for tenant_id in self._tenants - set(loaded.rules):
            self.engine.load(tenant_id, [], [])
        for tenant_id, rules in loaded.rules.items():
            try:
                self.engine.load(tenant_id, rules, loaded.placements.get(tenant_id, []))
            except Invalid as err:  # a stored rule that no longer compiles: keep the tenant's last good set
                logger.error("alarm rules of tenant %s not reloaded: %s", tenant_id, err.message)
                continue
            if prime:
                self.engine.prime(tenant_id, loaded.active.get(tenant_id, []))
        self._tenants = set(loaded.rules)
        self._specs = {
            (rule.tenant_id, rule.spec.key, rule.version): rule.spec
            for rules in loaded.rules.values()
            for rule in rules
        }
        self._sites = {
            (tenant_id, placement.key): placement.site
            for tenant_id, placements in loaded.placements.items()
            for placement in placements
        }
        self._fingerprint = loaded.fingerprint
        logger.info(
            "alarm rules loaded: %d rules, %d rule instances", self.engine.rule_count(), self.engine.instance_count()
        )


@asynccontextmanager
async def alarms_lifespan(runtime: Runtime) -> AsyncIterator[None]:
    """Evaluate the rules on the live stream while the platform runs (`runtime.services["alarms.engine"]`)."""
    runner = AlarmEngineRunner(runtime)
    await runner.start()
    runtime.services[ENGINE_SERVICE] = runner
    try:
        yield
    finally:
        runtime.services.pop(ENGINE_SERVICE, None)
        await runner.stop()
