"""Delivery of query subscriptions: signed POSTs of EPCISQueryDocuments, at least once, in event order.

A loop started by the context's lifespan runs rounds. A round takes the subscriptions that are due:

- a stream subscription whenever events were stored after its cursor (`after_event`); a capture in
  this process wakes the loop at once (`subscription_signal`), captures elsewhere are seen by the
  poll every `poll_s` seconds;
- a scheduled one (a cron-like `schedule`, `subscription_schedule`, or every `schedule_seconds`)
  when its `next_attempt_at` comes, with an empty report too when it asks for one
  (`report_if_empty`); after each it is due at the schedule's next time after then (times missed
  while the platform was down, or while a delivery ran, make one delivery, not one each);
- any subscription whose last try failed, when its backoff has run out.

For each, in a worker thread (the event loop never waits on the database), the named query runs
over the events after the cursor (`query.select_events`, at most `batch` of them, in id order) and
the subscription is claimed for the length of one try (an UPDATE on the unchanged cursor that one
worker wins; `next_attempt_at` is the lease). The events go out as one EPCISQueryDocument
(`json_document` with the query's name and the subscription id). Only a 2xx answer moves the cursor,
past the last event sent, in an UPDATE that checks the cursor did not move meanwhile. Any other
answer, a timeout or a network error leaves the cursor where it was and records the error; the same
events go again after `retry_base_s`, doubling on each failure up to `retry_max_s`. A 413 also
halves the batch for that subscription. Nothing is skipped: a receiver sees each event at least
once, and twice only when its 2xx was lost (drop repeats by `eventID`).

When a query matches nothing up to the newest settled event, the cursor moves there without a
delivery, so the next round does not read the same events again.

Settled events. On SQLite one writer at a time commits, so every event id below the newest one
read is committed or never will be. On PostgreSQL ids come from a sequence and transactions commit
in any order: an event with a lower id may become visible after a higher one was delivered. Rounds
therefore deliver only up to a settled id: the highest id read at some moment after which no
transaction that began before that moment still holds a write lock on the event table
(`pg_locks` and `pg_stat_activity`). A capture running for a long time delays deliveries; it never
makes them skip an event.

Each request carries:

- `GS1-Signature: t=<unix time>,sha256=<hex>`: HMAC-SHA256, keyed with the subscription's
  `signatureToken`, of the time, a full stop and the raw body (`f"{t}.".encode() + body`), the header
  the EPCIS REST binding names for signed deliveries; a receiver recomputes it over the body as
  received, compares in constant time and refuses a time far from its own clock;
- `X-IIP-Delivery: <subscription id>:<cursor>`: the same on every try from the same cursor;
- `GS1-EPCIS-Version` and `GS1-CBV-Version`, `Content-Type: application/json`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import CursorResult, and_, func, or_, select, text, update
from sqlalchemy.orm import Session

from iip.kernel.db import Database, utcnow
from iip.kernel.errors import Invalid
from iip.kernel.runtime import Runtime
from iip.kernel.sealing import Sealer, SealError
from iip.traceability import subscription_signal
from iip.traceability.epcis.writer import json_document
from iip.traceability.models import Event, NamedQuery, Subscription
from iip.traceability.query import EventQuery, parse_stored_query, select_events
from iip.traceability.subscriptions import next_run, subscription_sealer

logger = logging.getLogger(__name__)

SERVICE_KEY = "traceability.subscriptions"  # the running `SubscriptionDelivery` in `Runtime.services`
POLL_S = 5.0  # how often every subscription is looked at, for events captured by other processes
BATCH = 500  # events per delivery
TIMEOUT_S = 10.0  # connect, write and read, each; a whole try gets twice this
RETRY_BASE_S = 5.0
RETRY_MAX_S = 900.0
CONCURRENCY = 8  # deliveries in flight at once
LEASE_MARGIN_S = 60.0
MAX_DUE = 1000  # subscriptions one round takes on
ERROR_CHARS = 1000  # of an error kept on the subscription
ANSWER_BYTES = 300  # of a receiver's refusal kept in the error

SIGNATURE_HEADER = "GS1-Signature"
DELIVERY_HEADER = "X-IIP-Delivery"
USER_AGENT = "IIP-EPCIS-Subscriptions/1"
VERSIONS = {"GS1-EPCIS-Version": "2.0.0", "GS1-CBV-Version": "2.0.0"}
DEFAULT_TOLERANCE_S = 300

Clock = Callable[[], dt.datetime]


# --- signatures --------------------------------------------------------------------------------


def signature(key: str, timestamp: int, body: bytes) -> str:
    """The `GS1-Signature` value of `body` signed at `timestamp` (Unix seconds)."""
    digest = hmac.new(key.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},sha256={digest}"


def verify_signature(
    key: str, body: bytes, header: str | None, *, now: float, tolerance_s: float = DEFAULT_TOLERANCE_S
) -> bool:
    """Whether a delivery's `GS1-Signature` is `key`'s over `body` and was made within `tolerance_s` of `now`."""
    parts = dict(part.strip().partition("=")[::2] for part in (header or "").split(","))
    stamp = parts.get("t", "")
    if not stamp.isdigit() or "sha256" not in parts or abs(now - int(stamp)) > tolerance_s:
        return False
    return hmac.compare_digest(signature(key, int(stamp), body), f"t={stamp},sha256={parts['sha256']}")


# --- settled events -----------------------------------------------------------------------------

_HIGH_WATER = text("SELECT coalesce(max(id), 0), clock_timestamp() FROM traceability_event")
# Transactions holding a write lock on the event table that began at or before :since (an unknown
# start counts as early). Only they can still commit an event whose id is below what was read then.
# Relation ids repeat across databases made from one template, hence the database too.
_EARLIER_WRITERS = text(
    "SELECT count(*) FROM pg_locks AS l LEFT JOIN pg_stat_activity AS a ON a.pid = l.pid "
    "WHERE l.locktype = 'relation' AND l.relation = to_regclass('traceability_event') "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND l.mode = 'RowExclusiveLock' AND l.granted AND l.pid IS DISTINCT FROM pg_backend_pid() "
    "AND (a.xact_start IS NULL OR a.xact_start <= :since)"
)


class EventHorizon:
    """The highest event id at or below which no event can still appear (PostgreSQL; see the module doc).

    An id read at a moment settles once no transaction that began by that moment holds a write
    lock on the event table. A read that does not settle at once is kept and looked at again on the
    next round, so a steady stream of overlapping captures delays the horizon but does not stop it.
    """

    def __init__(self) -> None:
        self.settled = 0
        self._candidate: tuple[int, dt.datetime] | None = None

    def advance(self, session: Session) -> int:
        top, at = session.execute(_HIGH_WATER).one()
        if self._candidate is not None and not self._writers_since(session, self._candidate[1]):
            self.settled = max(self.settled, self._candidate[0])
            self._candidate = None
        if not self._writers_since(session, at):
            self.settled = max(self.settled, int(top))
            self._candidate = None
        elif self._candidate is None:
            self._candidate = (int(top), at)
        return self.settled

    @staticmethod
    def _writers_since(session: Session, since: dt.datetime) -> bool:
        return bool(session.scalar(_EARLIER_WRITERS, {"since": since}))


# --- one delivery -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Job:
    """A claimed delivery with everything sending it needs, read once so no session is held while sending."""

    subscription_id: str
    tenant_id: str
    destination: str
    secret: str  # sealed
    body: bytes
    after_event: int  # the cursor it was claimed at
    cursor: int  # the cursor after a 2xx
    count: int  # events in the body
    more: bool  # a full batch: more may be waiting
    attempts: int  # failed tries before this one
    schedule: dict[str, str] | None
    schedule_seconds: int | None


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    error: str = ""
    too_large: bool = False


@dataclass
class DeliveryRound:
    """What one round did."""

    delivered: dict[str, int] = field(default_factory=dict)  # subscription id -> events delivered (0: an empty report)
    failed: dict[str, str] = field(default_factory=dict)  # subscription id -> why its last try failed
    next_due: dt.datetime | None = None  # the earliest time a subscription is due again


def next_batch(
    session: Session, tenant_id: str, query: EventQuery, after: int, limit: int, mark: int
) -> tuple[list[Event], int, bool]:
    """The next matching events after `after` up to the settled `mark`, at most `limit`, in id order.

    Answers them, the cursor after them, and whether they are every match up to the mark (so the
    cursor may move to the mark even past events that did not match).
    """
    found = select_events(session, tenant_id, query, after_id=after, limit=limit)
    events = [event for event in found if event.id <= mark]
    # Fewer than asked, or some past the mark: every match up to the mark is in `events`.
    complete = len(found) < limit or len(events) < len(found)
    return events, (max(after, mark) if complete else events[-1].id), complete


def settled_mark(session: Session, horizon: EventHorizon, *, advance: bool = True) -> int:
    """The newest event id delivery may go up to (see "Settled events" in the module doc)."""
    if session.get_bind().dialect.name == "postgresql":
        return horizon.advance(session) if advance else horizon.settled
    return int(session.scalar(select(func.max(Event.id))) or 0)


def item(event: Event) -> tuple[dict[str, Any], dict[str, str]]:
    """An event as delivered: as captured, with the id it is stored under and the time it was recorded."""
    body = {**event.body, "eventID": event.body.get("eventID") or event.event_id}
    body["recordTime"] = event.record_time.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return body, event.context


def encode(document: dict[str, Any]) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def _updated(result: Any) -> bool:
    return isinstance(result, CursorResult) and result.rowcount == 1


class SubscriptionDelivery:
    """Runs the delivery rounds of this process (see the module doc)."""

    def __init__(
        self,
        db: Database,
        sealer: Sealer,
        *,
        clock: Clock = utcnow,
        poll_s: float = POLL_S,
        batch: int = BATCH,
        timeout_s: float = TIMEOUT_S,
        retry_base_s: float = RETRY_BASE_S,
        retry_max_s: float = RETRY_MAX_S,
        concurrency: int = CONCURRENCY,
    ) -> None:
        self.db = db
        self.sealer = sealer
        self.clock = clock
        self.poll_s = poll_s
        self.batch = batch
        self.timeout_s = timeout_s
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.horizon = EventHorizon()
        self._batches: dict[str, int] = {}  # subscription id -> batch after a 413
        self._client = httpx.AsyncClient(timeout=timeout_s, follow_redirects=False, trust_env=False)
        self._limit = asyncio.Semaphore(concurrency)
        self._round_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._woken: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    # --- running

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        subscription_signal.listen(self.on_capture)
        self._task = asyncio.create_task(self._run_forever(), name="traceability:subscriptions")

    async def stop(self) -> None:
        subscription_signal.unlisten(self.on_capture)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.close()

    async def close(self) -> None:
        await self._client.aclose()

    def on_capture(self, tenants: frozenset[str]) -> None:
        """Called in the capturing thread once events of `tenants` are committed: wake the loop."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._woken_by, tenants)

    def _woken_by(self, tenants: frozenset[str]) -> None:
        self._woken |= tenants
        self._wake.set()

    async def _run_forever(self) -> None:
        tenants: frozenset[str] | None = None  # None: every tenant (the first round and each poll)
        while True:
            next_due: dt.datetime | None = None
            try:
                next_due = (await self.run_round(tenants)).next_due
            except Exception:
                logger.exception("a subscription delivery round failed; trying again in %s s", self.poll_s)
            timeout = self.poll_s
            if next_due is not None:
                timeout = min(timeout, max((next_due - self.clock()).total_seconds(), 0.0))
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
                tenants = frozenset(self._woken)
            except TimeoutError:
                tenants = None
            self._wake.clear()
            self._woken.clear()

    # --- a round

    async def run_round(self, tenants: frozenset[str] | None = None) -> DeliveryRound:
        """Deliver what is due: each subscription until it is caught up or a try fails.

        `tenants` narrows the stream subscriptions looked at to those tenants (a capture's wake-up);
        None looks at all of them. Scheduled and retried ones are taken by time either way.
        """
        async with self._round_lock:
            report = DeliveryRound()
            due, report.next_due = await asyncio.to_thread(self._due, tenants)
            drained = await asyncio.gather(*(self._drain(i, report) for i in due), return_exceptions=True)
            for subscription_id, result in zip(due, drained, strict=True):
                if isinstance(result, Exception):  # the database failed it; the lease runs out, then it is tried again
                    logger.error("subscription %s: delivery failed", subscription_id, exc_info=result)
                    report.failed[subscription_id] = f"{type(result).__name__}: {result}"
            if report.delivered or report.failed:
                # What was delivered or failed may be due again before the time read above.
                report.next_due = await asyncio.to_thread(self._next_due)
            return report

    def _due(self, tenants: frozenset[str] | None) -> tuple[list[str], dt.datetime | None]:
        now = self.clock()
        with self.db.session() as session:
            mark = self._mark(session, advance=True)
            waiting = and_(Subscription.stream, Subscription.next_attempt_at.is_(None), Subscription.after_event < mark)
            if tenants is not None:
                waiting = and_(waiting, Subscription.tenant_id.in_(sorted(tenants)))
            statement = (
                select(Subscription.id)
                .where(Subscription.active, or_(Subscription.next_attempt_at <= now, waiting))
                .order_by(Subscription.next_attempt_at, Subscription.id)
                .limit(MAX_DUE)
            )
            due = list(session.scalars(statement))
        return due, self._next_due()

    def _next_due(self) -> dt.datetime | None:
        now = self.clock()
        with self.db.session() as session:
            return session.scalar(
                select(func.min(Subscription.next_attempt_at)).where(
                    Subscription.active, Subscription.next_attempt_at > now
                )
            )

    def _mark(self, session: Session, *, advance: bool = False) -> int:
        return settled_mark(session, self.horizon, advance=advance)

    async def _drain(self, subscription_id: str, report: DeliveryRound) -> None:
        async with self._limit:
            while True:
                job = await asyncio.to_thread(self._prepare, subscription_id)
                if job is None:
                    return
                outcome = await self._send(job)
                more = await asyncio.to_thread(self._finish, job, outcome)
                if outcome.ok:
                    report.delivered[subscription_id] = report.delivered.get(subscription_id, 0) + job.count
                    report.failed.pop(subscription_id, None)
                else:
                    report.failed[subscription_id] = outcome.error
                if not more:
                    return

    # --- preparing, sending, finishing

    def _prepare(self, subscription_id: str) -> Job | None:
        """Claim the subscription and build its next delivery; None when there is nothing to send now."""
        now = self.clock()
        with self.db.session() as session:
            row = session.get(Subscription, subscription_id)
            if row is None or not row.active or (row.next_attempt_at is not None and row.next_attempt_at > now):
                return None
            named = session.get(NamedQuery, row.query_id)
            if named is None:
                return None
            try:
                query = parse_stored_query(named.parameters)
            except Invalid as err:
                self._failed(session, row.id, row.after_event, row.attempts, f"the query no longer runs: {err}", now)
                return None
            limit = self._batches.get(row.id, self.batch)
            events, cursor, complete = next_batch(
                session, row.tenant_id, query, row.after_event, limit, self._mark(session)
            )
            scheduled = row.schedule is not None or row.schedule_seconds is not None
            if not events and not (scheduled and row.report_if_empty):
                self._idle(session, row, cursor, now)
                return None
            claimed = session.execute(
                update(Subscription)
                .where(
                    Subscription.id == row.id,
                    Subscription.after_event == row.after_event,
                    or_(Subscription.next_attempt_at.is_(None), Subscription.next_attempt_at <= now),
                )
                .values(next_attempt_at=now + dt.timedelta(seconds=2 * self.timeout_s + LEASE_MARGIN_S))
                .execution_options(synchronize_session=False)
            )
            if not _updated(claimed):
                return None  # another process took it
            document = json_document([item(e) for e in events], query_name=named.name, subscription_id=row.id)
            return Job(
                subscription_id=row.id,
                tenant_id=row.tenant_id,
                destination=row.destination,
                secret=row.secret,
                body=encode(document),
                after_event=row.after_event,
                cursor=cursor,
                count=len(events),
                more=not complete,
                attempts=row.attempts,
                schedule=row.schedule,
                schedule_seconds=row.schedule_seconds,
            )

    def _idle(self, session: Session, row: Subscription, cursor: int, now: dt.datetime) -> None:
        """Nothing to send: move the cursor past what matched nothing and, if scheduled, to the next time."""
        values: dict[str, Any] = {}
        scheduled = row.schedule is not None or row.schedule_seconds is not None
        if cursor > row.after_event:
            values["after_event"] = cursor
        if row.attempts:
            values.update(attempts=0, last_error="")
            if not scheduled:
                values["next_attempt_at"] = None
        if scheduled:
            values["next_attempt_at"] = next_run(row.schedule, row.schedule_seconds, now)
        if values:
            session.execute(
                update(Subscription)
                .where(
                    Subscription.id == row.id,
                    Subscription.after_event == row.after_event,
                    or_(Subscription.next_attempt_at.is_(None), Subscription.next_attempt_at <= now),
                )
                .values(**values)
                .execution_options(synchronize_session=False)
            )

    def _failed(
        self, session: Session, subscription_id: str, after_event: int, attempts: int, error: str, now: dt.datetime
    ) -> bool:
        """Record a failed try and when to try again; False when the subscription changed meanwhile."""
        tries = attempts + 1
        wait = self.backoff(tries)
        result = session.execute(
            update(Subscription)
            .where(Subscription.id == subscription_id, Subscription.after_event == after_event)
            .values(attempts=tries, last_error=error[:ERROR_CHARS], next_attempt_at=now + dt.timedelta(seconds=wait))
            .execution_options(synchronize_session=False)
        )
        logger.warning("subscription %s: try %d failed, next in %g s: %s", subscription_id, tries, wait, error)
        return _updated(result)

    def backoff(self, attempts: int) -> float:
        """Seconds to wait after the `attempts`-th failure in a row: doubling from `retry_base_s`, capped."""
        return float(min(self.retry_base_s * 2 ** min(max(attempts - 1, 0), 40), self.retry_max_s))

    async def _send(self, job: Job) -> Outcome:
        try:
            key = self.sealer.open(job.secret, bound_to=job.subscription_id)
        except SealError as err:
            return Outcome(ok=False, error=f"the signing key cannot be used: {err}")
        timestamp = int(self.clock().timestamp())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            SIGNATURE_HEADER: signature(key, timestamp, job.body),
            DELIVERY_HEADER: f"{job.subscription_id}:{job.after_event}",
            **VERSIONS,
        }
        return await self._attempt(job, headers)

    async def _attempt(self, job: Job, headers: dict[str, str]) -> Outcome:
        try:
            async with asyncio.timeout(2 * self.timeout_s):
                return await self._post(job, headers)
        except TimeoutError:
            error = f"no answer within {2 * self.timeout_s:g} s"
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as err:
            error = f"dest cannot be used: {err}"
        except httpx.TimeoutException as err:
            error = f"no answer within {self.timeout_s:g} s ({type(err).__name__})"
        except httpx.HTTPError as err:
            error = f"could not reach the receiver: {type(err).__name__}: {err}"
        except Exception as err:  # a fault of ours is logged and retried like any failure
            logger.exception("subscription %s: sending failed unexpectedly", job.subscription_id)
            error = f"{type(err).__name__}: {err}"
        return Outcome(ok=False, error=error)

    async def _post(self, job: Job, headers: dict[str, str]) -> Outcome:
        async with self._client.stream("POST", job.destination, content=job.body, headers=headers) as response:
            if response.is_success:
                return Outcome(ok=True)
            answer = b""
            async for chunk in response.aiter_bytes():  # a refusal's first bytes only, however long it is
                answer += chunk
                if len(answer) >= ANSWER_BYTES:
                    break
        said = answer[:ANSWER_BYTES].decode(errors="replace").strip()
        status = response.status_code
        error = f"the receiver answered {status} {response.reason_phrase}" + (f": {said}" if said else "")
        return Outcome(ok=False, error=error, too_large=status == 413)

    def _finish(self, job: Job, outcome: Outcome) -> bool:
        """Record a try; True when it delivered a full batch and more may be waiting."""
        now = self.clock()
        with self.db.session() as session:
            if not outcome.ok:
                if outcome.too_large:
                    self._batches[job.subscription_id] = max(1, self._batches.get(job.subscription_id, self.batch) // 2)
                self._failed(session, job.subscription_id, job.after_event, job.attempts, outcome.error, now)
                return False
            next_attempt = now if job.more else next_run(job.schedule, job.schedule_seconds, now)
            if job.schedule is None and job.schedule_seconds is None:
                next_attempt = None  # a stream is due whenever events wait
            result = session.execute(
                update(Subscription)
                .where(Subscription.id == job.subscription_id, Subscription.after_event == job.after_event)
                .values(
                    after_event=job.cursor,
                    attempts=0,
                    last_error="",
                    next_attempt_at=next_attempt,
                    last_notified_at=now,
                )
                .execution_options(synchronize_session=False)
            )
            logger.info("subscription %s: delivered %d events", job.subscription_id, job.count)
            return job.more and _updated(result)


def delivery_of(runtime: Runtime) -> SubscriptionDelivery | None:
    found = runtime.services.get(SERVICE_KEY)
    return found if isinstance(found, SubscriptionDelivery) else None


@asynccontextmanager
async def subscriptions_lifespan(runtime: Runtime) -> AsyncIterator[None]:
    """Deliver query subscriptions while the platform runs (`runtime.services["traceability.subscriptions"]`)."""
    delivery = SubscriptionDelivery(runtime.db, subscription_sealer(runtime.settings))
    runtime.services[SERVICE_KEY] = delivery
    await delivery.start()
    try:
        yield
    finally:
        runtime.services.pop(SERVICE_KEY, None)
        await delivery.stop()
