"""Capture's per-event work (schema, rules, index rows, hash, rows as stored), in worker processes for large documents.

Checking, indexing and hashing an event costs tens of microseconds of Python: for documents of
thousands of events that is the capture's bottleneck, while the capturing process has the database
to write. A large JSON document's events are cut into chunks, sent to a process pool (one per core,
none on a single core) as JSON and prepared there, while the caller writes the chunks already
prepared. Small documents, XML ones (their XSD findings are the whole document's), and any chunk the
pool cannot take are prepared in the calling process, by the same function.

What comes back per chunk is everything but the database's own work: the problems of the invalid
events, and for each valid one its hash and its rows exactly as they are inserted (the job's tenant,
job id, record time and context included; times in the form the database takes; the body as JSON
text), so the capturing process only drops duplicates, inserts, and gives each lookup row the id its
event was stored under. Rows are plain tuples, cheap to pickle and to hand to the driver.
"""

from __future__ import annotations

import atexit
import datetime as dt
import gc
import json
import logging
import multiprocessing
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson

from iip.traceability.capture_validation import DocumentCheck, event_issues
from iip.traceability.epcis.event_hash import event_hash
from iip.traceability.epcis.validation import ValidationIssue
from iip.traceability.indexing import index_rows

logger = logging.getLogger(__name__)

PARALLEL_MIN_EVENTS = 1_000  # fewer are prepared in the calling process: the pool costs more than it saves
CHUNK_EVENTS = 250  # small enough that writing the last chunk, when the workers have nothing left, is short
MAX_WORKERS = 4

# Column order of the rows `prepare` builds (the names of `models`); a lookup row's event id, known
# once its event is inserted, is appended last.
EVENT_COLUMNS = (
    "tenant_id",
    "event_id",
    "event_hash",
    "event_type",
    "event_time",
    "event_time_zone_offset",
    "action",
    "biz_step",
    "disposition",
    "read_point",
    "biz_location",
    "record_time",
    "capture_job_id",
    "body",
    "context",
)
EPC_COLUMNS = ("tenant_id", "role", "epc", "quantity", "uom", "event_id")
LINK_COLUMNS = ("tenant_id", "kind", "type", "value", "event_id")
SENSOR_COLUMNS = (
    "tenant_id",
    "type",
    "device_id",
    "time",
    "value",
    "min_value",
    "max_value",
    "mean_value",
    "uom",
    "string_value",
    "boolean_value",
    "event_id",
)

Row = tuple[Any, ...]
# A valid event: its hash, its `EVENT_COLUMNS` row, and its EPC, link and sensor rows (event id left off).
Stored = tuple[str, Row, list[Row], list[Row], list[Row]]


@dataclass(frozen=True, slots=True)
class PreparedChunk:
    """Some consecutive events of a document: the problems of the invalid ones (location, message; in
    document order) and the valid ones, in document order."""

    problems: list[tuple[str, str]]
    stored: list[Stored]


@dataclass(frozen=True, slots=True)
class JobRows:
    """What every row of one capture job shares, in the form the database takes."""

    tenant_id: str
    job_id: str | None
    record_time: Any  # as `stored_time` gives it
    context: str  # the document's prefixes, JSON
    text_times: bool  # times as SQLite's text (SQLAlchemy's form for the column type), else datetimes


def sqlite_time(moment: dt.datetime) -> str:
    """An aware datetime as SQLAlchemy stores `UTCDateTime` on SQLite: UTC, `YYYY-MM-DD HH:MM:SS.ffffff`."""
    return moment.astimezone(dt.UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def stored_time(moment: dt.datetime, text_times: bool) -> Any:
    return sqlite_time(moment) if text_times else moment


def dumps(value: Any) -> str:
    """JSON text as the repository stores it (orjson's compact form)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # integers past 64 bits, which the JSON reader keeps
        return json.dumps(value)


def prepare(
    events: Sequence[dict[str, Any]],
    start: int,
    context: dict[str, str],
    pointer: str,
    job: JobRows,
    found: dict[int, list[ValidationIssue]] | None = None,
    *,
    lazy: bool,
) -> PreparedChunk:
    """Prepare events `start`, `start + 1`, ... of a document whose event list is at `pointer`.

    `found` holds problems found with the whole document; `lazy` validates each JSON event here.
    """
    problems: list[tuple[str, str]] = []
    stored: list[Stored] = []
    tenant, text_times = job.tenant_id, job.text_times
    tail = (job.record_time, job.job_id)
    for offset, event in enumerate(events):
        index = start + offset
        at = f"{pointer}/{index}" if pointer else ""
        issues = list(found.get(index, ())) if found else []
        if lazy:
            issues += event_issues(event, at)
        columns, epcs, links, sensor_reports, index_problems = index_rows(event, context)
        if issues or index_problems:
            problems += [(i.location, i.message) for i in issues]
            problems += [(at + where, message) for where, message in index_problems]
            continue
        hashed = event_hash(event, context)
        given = event.get("eventID")
        event_time = sqlite_time(columns[1]) if text_times else columns[1]
        row = (
            tenant,
            given.strip() if isinstance(given, str) and given.strip() else hashed,
            hashed,
            columns[0],
            event_time,
            *columns[2:],
            *tail,
            dumps(event),
            job.context,
        )
        reports = [
            (tenant, r[0], r[1], r[2] if r[2] is None or not text_times else sqlite_time(r[2]), *r[3:])
            for r in sensor_reports
        ]
        stored.append((hashed, row, [(tenant, *r) for r in epcs], [(tenant, *r) for r in links], reports))
    return PreparedChunk(problems, stored)


_paused = 0  # captures of this process running with the cyclic collector paused
_paused_lock = threading.Lock()
_was_enabled = True


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused in this process while a capture runs.

    A capture allocates millions of acyclic objects (the parsed document, rows, hashes), and every
    automatic collection of the oldest generation walks all that is alive: reading a 10,000-event
    document and checking its envelope cost 12 µs of CPU per event with collections and 4 without.
    Captures running at once keep it paused until the last one ends; it is then left as it was found,
    and reference counting frees everything else as usual meanwhile.
    """
    global _paused, _was_enabled  # noqa: PLW0603 - one collector per process
    with _paused_lock:
        if _paused == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _paused += 1
    try:
        yield
    finally:
        with _paused_lock:
            _paused -= 1
            if _paused == 0 and _was_enabled:
                gc.enable()


def _prepare_chunk(context: dict[str, str], pointer: str, start: int, payload: bytes, job: JobRows) -> PreparedChunk:
    """In a worker: a chunk of a JSON event list, sent as JSON."""
    with collector_paused():
        return prepare(orjson.loads(payload), start, context, pointer, job, lazy=True)


def _worker_started() -> None:
    # A worker builds and drops many small acyclic objects: collect cycles less often than the default.
    gc.set_threshold(50_000, 20, 20)


def worker_count() -> int:
    """Worker processes: one per core the process may use, none on a single core."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return 0 if cores < 2 else min(cores, MAX_WORKERS)


_pool: ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ProcessPoolExecutor | None:
    global _pool  # noqa: PLW0603 - one pool per process, started on first use
    with _pool_lock:
        if _pool is None and worker_count():
            # forkserver: the caller may run threads (a server's), and fork copies none of them.
            _pool = ProcessPoolExecutor(
                worker_count(), mp_context=multiprocessing.get_context("forkserver"), initializer=_worker_started
            )
        return _pool


def _drop(broken: ProcessPoolExecutor, err: BaseException) -> None:
    global _pool  # noqa: PLW0603
    logger.warning("capture work in this process: %s", err)
    with _pool_lock:
        if _pool is broken:
            _pool = None
    broken.shutdown(wait=False, cancel_futures=True)


def shutdown() -> None:
    """Stop the worker processes (at exit; a later capture starts new ones)."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)


atexit.register(shutdown)
if hasattr(os, "register_at_fork"):
    # A forked child has none of the parent's workers: it starts its own pool if it needs one.
    os.register_at_fork(after_in_child=lambda: globals().update(_pool=None, _pool_lock=threading.Lock()))


def prepared_chunks(check: DocumentCheck, job: JobRows) -> Iterator[PreparedChunk]:
    """A document's events prepared, chunk by chunk in document order (in workers when it is large).

    Every chunk is handed to the pool before the first is waited for, so the workers prepare the
    next chunks while the caller writes the ones already prepared.
    """
    events = check.document.events
    context = check.document.context
    pointer = check.event_pointer
    pool = _executor() if check.lazy and len(events) >= PARALLEL_MIN_EVENTS else None
    size = CHUNK_EVENTS
    starts = range(0, len(events), size)
    tasks: list[Future[PreparedChunk] | None] = []
    for start in starts:
        task = None
        if pool is not None:
            try:
                payload = orjson.dumps(events[start : start + size])
                task = pool.submit(_prepare_chunk, context, pointer, start, payload, job)
            except TypeError:  # integers past 64 bits: this chunk is done here
                task = None
            except BrokenProcessPool as err:
                _drop(pool, err)
                pool = None
        tasks.append(task)
    for start, task in zip(starts, tasks, strict=True):
        if task is not None:
            try:
                yield task.result()
                continue
            except BrokenProcessPool as err:
                if pool is not None:
                    _drop(pool, err)
                    pool = None
        yield prepare(events[start : start + size], start, context, pointer, job, check.found, lazy=check.lazy)
