"""Capture's per-event work (schema, rules, index rows, event hash), in worker processes for large documents.

Checking, indexing and hashing an event costs a hundred microseconds and more of Python: for
documents of thousands of events that is the capture's bottleneck, while the capturing process has
the database to write. A large JSON document's events are cut into chunks, sent to a process pool
(one per core, none on a single core) as JSON and prepared there, while the caller writes the
chunks already prepared. Small documents, XML ones (their XSD findings are the whole document's),
and any chunk the pool cannot take are prepared in the calling process, by the same function.

What comes back per event is a `Prepared` of plain tuples (cheap to pickle): the event's problems,
or its hash, id, indexed columns and lookup rows in the column order of `models`.
"""

from __future__ import annotations

import atexit
import gc
import logging
import multiprocessing
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, NamedTuple

import orjson

from iip.traceability.capture_validation import DocumentCheck, event_issues
from iip.traceability.epcis.event_hash import event_hash
from iip.traceability.epcis.validation import ValidationIssue
from iip.traceability.indexing import index_event

logger = logging.getLogger(__name__)

PARALLEL_MIN_EVENTS = 1_000  # fewer are prepared in the calling process: the pool costs more than it saves
CHUNK_EVENTS = 500
MAX_WORKERS = 4


class Prepared(NamedTuple):
    """One event, prepared: `problems` (location, message) if it is invalid, else what is stored."""

    position: int  # in the document's event list
    problems: tuple[tuple[str, str], ...]
    event_hash: str
    event_id: str
    columns: tuple[Any, ...]  # indexing.EventColumns, as a tuple
    epcs: tuple[tuple[Any, ...], ...]  # indexing.EpcRow
    links: tuple[tuple[Any, ...], ...]  # indexing.LinkRow
    sensor_reports: tuple[tuple[Any, ...], ...]  # indexing.SensorRow


def prepare(
    events: Sequence[dict[str, Any]],
    start: int,
    context: dict[str, str],
    pointer: str,
    found: dict[int, list[ValidationIssue]] | None = None,
    *,
    lazy: bool,
) -> list[Prepared]:
    """Prepare events `start`, `start + 1`, ... of a document whose event list is at `pointer`.

    `found` holds problems found with the whole document; `lazy` validates each JSON event here.
    """
    out: list[Prepared] = []
    for offset, event in enumerate(events):
        index = start + offset
        at = f"{pointer}/{index}" if pointer else ""
        issues = list(found.get(index, ())) if found else []
        if lazy:
            issues += event_issues(event, at)
        indexed = index_event(event, context)
        problems = [(i.location, i.message) for i in issues] + [(at + w, m) for w, m in indexed.problems]
        if problems:
            out.append(Prepared(index, tuple(problems), "", "", (), (), (), ()))
            continue
        hashed = event_hash(event, context)
        given = event.get("eventID")
        out.append(
            Prepared(
                index,
                (),
                hashed,
                given.strip() if isinstance(given, str) and given.strip() else hashed,
                tuple(indexed.columns),
                tuple(tuple(row) for row in indexed.epcs),
                tuple(tuple(row) for row in indexed.links),
                tuple(tuple(row) for row in indexed.sensor_reports),
            )
        )
    return out


def _prepare_chunk(context: dict[str, str], pointer: str, start: int, payload: bytes) -> list[tuple[Any, ...]]:
    """In a worker: a chunk of a JSON event list, sent as JSON; plain tuples back."""
    return [tuple(p) for p in prepare(orjson.loads(payload), start, context, pointer, lazy=True)]


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


def prepared_chunks(check: DocumentCheck) -> Iterator[list[Prepared]]:
    """A document's events prepared, chunk by chunk in document order (in workers when it is large)."""
    events = check.document.events
    context = check.document.context
    pointer = check.event_pointer
    pool = _executor() if check.lazy and len(events) >= PARALLEL_MIN_EVENTS else None
    starts = range(0, len(events), CHUNK_EVENTS)
    tasks: list[Future[list[tuple[Any, ...]]] | None] = []
    for start in starts:
        task = None
        if pool is not None:
            try:
                payload = orjson.dumps(events[start : start + CHUNK_EVENTS])
                task = pool.submit(_prepare_chunk, context, pointer, start, payload)
            except TypeError:  # integers past 64 bits: this chunk is done here
                task = None
            except BrokenProcessPool as err:
                _drop(pool, err)
                pool = None
        tasks.append(task)
    for start, task in zip(starts, tasks, strict=True):
        chunk = events[start : start + CHUNK_EVENTS]
        if task is not None:
            try:
                yield [Prepared._make(t) for t in task.result()]
                continue
            except BrokenProcessPool as err:
                if pool is not None:
                    _drop(pool, err)
                    pool = None
        yield prepare(chunk, start, context, pointer, check.found, lazy=check.lazy)
