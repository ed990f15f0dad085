"""The decoy PLC of a tenant, recording what visitors do as the tenant's honeypot indicators.

The decoy (`honeypot.server`) hands every sighting to a sink that only queues it, so a visitor
never waits on the database; the queue is written every `flush_s` seconds, and once more when the
decoy stops, in a transaction of its own (`ingest.record_sightings`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from iip.kernel.auth import Principal, Role
from iip.kernel.db import Database
from iip.security import ingest
from iip.security.honeypot.server import HoneypotConfig, RunningHoneypot, run_honeypot
from iip.security.honeypot.sightings import HoneypotSighting
from iip.security.service import SecurityService

logger = logging.getLogger(__name__)


class SightingRecorder:
    """Queues sightings and writes them as indicators of one tenant."""

    def __init__(self, db: Database, tenant_id: str) -> None:
        self.db = db
        self.tenant_id = tenant_id
        self.pending: list[HoneypotSighting] = []
        self.recorded = 0  # sightings written so far

    def __call__(self, sighting: HoneypotSighting) -> None:
        self.pending.append(sighting)

    def flush(self) -> int:
        """Write what is queued; how many sightings that was."""
        taken, self.pending = self.pending, []
        if not taken:
            return 0
        actor = Principal("system", "honeypot", "honeypot", self.tenant_id, Role.ENGINEER)
        with self.db.session() as session:
            ingest.record_sightings(SecurityService(session, actor), self.tenant_id, taken)
        self.recorded += len(taken)
        return len(taken)


async def run_recording_decoy(
    db: Database,
    tenant_id: str,
    config: HoneypotConfig,
    stop: asyncio.Event,
    *,
    flush_s: float = 5.0,
    started: Callable[[RunningHoneypot], None] | None = None,
) -> SightingRecorder:
    """Run the decoy until `stop` is set, writing its sightings every `flush_s` seconds."""
    recorder = SightingRecorder(db, tenant_id)
    decoy = await run_honeypot(config, recorder)
    if started is not None:
        started(decoy)
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=flush_s)
            await _flush(recorder)
    finally:
        await decoy.stop()
        await _flush(recorder)
    return recorder


async def _flush(recorder: SightingRecorder) -> None:
    try:
        await asyncio.to_thread(recorder.flush)
    except Exception:  # the database may be down for a while: the decoy keeps listening
        logger.exception("honeypot sightings not recorded")
