"""Live monitoring: an interface's ICS traffic through the same per-packet path as an uploaded capture.

`live.LiveCapture` reads the interface in a thread and hands each packet to `LiveMonitor.on_packet`,
which runs it through `captures.PacketPass` (counts, hosts for the inventory) and a `Detector`
checking it against the site's active baseline, with the tenant's honeypot indicators as known
attackers (as `ingest.upload` does with `check`). Every `flush_s` seconds the hosts seen and the new
findings are stored in one transaction of their own (`record_observed`, `record_alerts`: a finding
grows the open alert of its kind and peers, anything else is a new alert) and the new alerts'
alarm events are handed to `publish` after the commit.

The active baseline and the indicators are read again every `refresh_s` seconds: learning a new
version or rolling back takes effect without a restart, and without an active baseline the monitor
keeps the inventory and detects nothing until one is learned. What the database refuses is kept
(bounded) and written with the next flush.

Per-flow state is bounded for a monitor that runs for months (`monitor_limits`: the settings'
`monitor_flow_idle_s`, `monitor_max_flows` and `monitor_fragment_*`): the decoder's TCP reassembly
and IP fragments, and the detector's conversations, rates and scan windows; `evictions` counts
what was forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

from iip.alarms.public import AlarmEvent
from iip.kernel.auth import Principal, Role
from iip.kernel.db import Database
from iip.kernel.errors import NotFound
from iip.kernel.settings import SecuritySettings, Settings
from iip.security import ingest
from iip.security.baseline import Baseline as LearnedModel
from iip.security.capture import DecoderLimits
from iip.security.captures import CaptureSummary, PacketPass, count, count_fragments
from iip.security.detection import Alert as Finding
from iip.security.detection import DetectionSettings, Detector
from iip.security.fragments import FragmentLimits
from iip.security.live import LiveCapture, capture_options
from iip.security.protocols.base import IcsMessage, PacketInfo
from iip.security.records import ObservedAsset
from iip.security.service import SecurityService

logger = logging.getLogger(__name__)

EventSink = Callable[[Sequence[AlarmEvent]], Awaitable[object]]
MAX_UNSAVED = 10_000  # hosts and findings kept while the database is away; beyond, the oldest are dropped


@dataclass(slots=True)
class MonitorState:
    """What the monitor has done so far (cumulative)."""

    baseline_version: int | None = None  # the version checked against; None: no active baseline
    flushes: int = 0
    hosts_written: int = 0
    findings_written: int = 0
    new_alerts: int = 0
    error: str = ""  # why the monitor stopped early; "" otherwise


def monitor_limits(settings: SecuritySettings) -> tuple[DecoderLimits, DetectionSettings]:
    """The decoder's and the detector's bounds the settings give."""
    fragments = FragmentLimits(
        timeout_s=settings.monitor_fragment_timeout_s,
        max_datagrams=settings.monitor_fragment_max_datagrams,
        max_bytes=settings.monitor_fragment_max_bytes,
    )
    decoder = DecoderLimits(
        flow_idle_s=settings.monitor_flow_idle_s, max_flows=settings.monitor_max_flows, fragments=fragments
    )
    detection = DetectionSettings(
        flow_idle_s=settings.monitor_flow_idle_s,
        max_flows=settings.monitor_max_flows,
        max_sources=settings.detection_max_sources,
    )
    return decoder, detection


@dataclass(frozen=True, slots=True)
class _Loaded:
    baseline_id: str | None
    version: int | None
    model: LearnedModel | None
    attackers: dict[str, str]


class LiveMonitor:
    """One tenant's site watched live: packets in from a capture thread, hosts and alerts out to storage."""

    def __init__(
        self,
        db: Database,
        tenant_id: str,
        site: str = "",
        *,
        publish: EventSink | None = None,
        flush_s: float = 1.0,
        refresh_s: float = 30.0,
        detection: DetectionSettings | None = None,
        limits: DecoderLimits | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.db = db
        self.settings = settings  # the platform's, for what the service reads (shared intelligence)
        self.tenant_id = tenant_id
        self.site = site
        self.publish = publish
        self.flush_s = flush_s
        self.refresh_s = refresh_s
        self.detection = detection
        self.limits = limits
        self.state = MonitorState()
        self.actor = Principal("system", "ics-monitor", "ics-monitor", tenant_id, Role.ENGINEER)
        self._lock = threading.Lock()  # the capture thread and the flushes share the pass and the detector
        self._pass = PacketPass([self._detect])
        self._detector: Detector | None = None
        self._baseline_id: str | None = None
        self._unsaved_hosts: list[ObservedAsset] = []
        self._unsaved_findings: list[Finding] = []
        self._capture: LiveCapture | None = None
        self._retired_evictions: Counter[str] = Counter()  # of detectors replaced by a new baseline

    @property
    def summary(self) -> CaptureSummary:
        """Packets, messages per protocol and malformed frames seen so far."""
        return self._pass.summary

    @property
    def evictions(self) -> Counter[str]:
        """Per-flow state forgotten so far (idle, or over the limit), per table and reason."""
        with self._lock:
            found = Counter(self._retired_evictions)
            if self._detector is not None:
                found.update(self._detector.evictions)
        if self._capture is not None:
            found.update({f"decoder flows {reason}": n for reason, n in self._capture.decoder.stats.evicted.items()})
        return found

    # --- the capture thread

    def on_packet(self, packet: PacketInfo, messages: list[IcsMessage]) -> None:
        with self._lock:
            self._pass.observe(packet, messages)

    def _detect(self, packet: PacketInfo, messages: list[IcsMessage]) -> None:
        if self._detector is not None:
            self._detector.check(packet, messages)

    def finish(self, leftovers: list[IcsMessage]) -> None:
        """Count what the codecs still held when the capture stopped (and the IP fragments)."""
        with self._lock:
            count(self._pass.summary, leftovers)
            if self._capture is not None:
                count_fragments(self._pass.summary, self._capture.decoder.stats.fragments)

    # --- the database (worker threads)

    def refresh(self) -> None:
        """Read the active baseline and the indicators; a changed baseline gets a new detector."""
        loaded = self._load()
        with self._lock:
            if loaded.baseline_id != self._baseline_id:
                if self._detector is not None:  # what the old detector found is still to be stored
                    self._unsaved_findings.extend(self._detector.take())
                    self._retired_evictions.update(self._detector.evictions)
                self._detector = (
                    None
                    if loaded.model is None
                    else Detector(loaded.model, self._detection_settings(), known_attackers=loaded.attackers)
                )
                self._baseline_id = loaded.baseline_id
                self.state.baseline_version = loaded.version
            elif self._detector is not None:
                self._detector.known_attackers = loaded.attackers

    def _detection_settings(self) -> DetectionSettings | None:
        if self.detection is not None or self.limits is None:
            return self.detection
        return replace(DetectionSettings(), flow_idle_s=self.limits.flow_idle_s, max_flows=self.limits.max_flows)

    def _load(self) -> _Loaded:
        with self.db.session() as session:
            service = SecurityService(session, self.actor, settings=self.settings)
            attackers = ingest.known_attackers(service, self.tenant_id)
            try:
                row = service.active_baseline(self.tenant_id, self.site)
            except NotFound:
                return _Loaded(None, None, None, attackers)
            if row.id == self._baseline_id:
                return _Loaded(row.id, row.version, None, attackers)
            return _Loaded(row.id, row.version, LearnedModel.from_json(row.content), attackers)

    def flush(self) -> list[AlarmEvent]:
        """Store the hosts and findings since the last flush; the alarm events of the new alerts."""
        with self._lock:
            hosts = [*self._unsaved_hosts, *self._pass.take_hosts()]
            findings = [*self._unsaved_findings, *(self._detector.take() if self._detector else [])]
            self._unsaved_hosts, self._unsaved_findings = [], []
        if not hosts and not findings:
            return []
        try:
            with self.db.session() as session:
                service = SecurityService(session, self.actor, settings=self.settings)
                service.record_observed(self.tenant_id, self.site, hosts)
                service.record_alerts(self.tenant_id, self.site, [f.to_record() for f in findings])
                events = list(service.events)
        except Exception:
            with self._lock:
                self._unsaved_hosts = [*hosts, *self._unsaved_hosts][-MAX_UNSAVED:]
                self._unsaved_findings = [*findings, *self._unsaved_findings][-MAX_UNSAVED:]
            raise
        self.state.flushes += 1
        self.state.hosts_written += len(hosts)
        self.state.findings_written += len(findings)
        self.state.new_alerts += len(events)
        return events

    # --- running

    async def run(
        self,
        interface: str,
        stop: asyncio.Event,
        *,
        poll_interval: float = 0.2,
        started: Callable[[LiveMonitor], None] | None = None,
    ) -> MonitorState:
        """Monitor `interface` until `stop` is set (or the capture fails); raises OSError when the
        interface cannot be opened (no such interface, no right to capture)."""
        await asyncio.to_thread(self.refresh)
        options = capture_options(self.settings.security) if self.settings is not None else None
        capture = LiveCapture(
            interface, self.on_packet, poll_interval=poll_interval, limits=self.limits, options=options
        )
        capture.start()
        self._capture = capture
        if started is not None:
            started(self)
        loop = asyncio.get_running_loop()
        refreshed = loop.time()
        try:
            while not stop.is_set() and not capture.error:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.flush_s)
                if loop.time() - refreshed >= self.refresh_s:
                    await self._guarded(self.refresh, "baseline not read again")
                    refreshed = loop.time()
                await self._flush()
        finally:
            self.finish(await asyncio.to_thread(capture.stop))
            self.state.error = capture.error
            await self._flush()
        return self.state

    async def _flush(self) -> None:
        events = await self._guarded(self.flush, "live hosts and alerts not stored (kept for the next flush)")
        if events and self.publish is not None:
            await self.publish(events)

    async def _guarded(self, work: Callable[[], list[AlarmEvent] | None], what: str) -> list[AlarmEvent]:
        try:
            return await asyncio.to_thread(work) or []
        except Exception:  # the database may be away for a while: the monitor keeps capturing
            logger.exception(what)
            return []
