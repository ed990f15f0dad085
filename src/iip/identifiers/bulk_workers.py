"""Per-row work of bulk registration (encoding, Ed25519 signatures) in worker processes beside the writer.

Checking, encoding and signing a handle costs tens of microseconds of Python and libsodium: for a
million handles registered in bulk that is more than a CPU core, while the registering process
has the database to write. Large lists are split among a process pool, one task per part, while the
caller admits and writes the rows before and after them; small lists are done in the calling
process. Signatures are the node key's own (Ed25519 is deterministic), so `signing.verify_row`
accepts them like any other. A worker imports what its function needs the first time it runs one.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Generic, TypeVar

from cryptography.hazmat.primitives import serialization

from iip.identifiers.signing import NodeKey

A = TypeVar("A")
T = TypeVar("T")
R = TypeVar("R")

logger = logging.getLogger(__name__)

PARALLEL_MIN_ITEMS = 64  # fewer items are done in the calling process: a task costs more than it saves
MAX_WORKERS = 4


def seed_of(key: NodeKey) -> bytes:
    return key.private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def worker_count() -> int:
    """Worker processes: one per core the process may use, none on a single core."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return 0 if cores < 2 else min(cores, MAX_WORKERS)


class WorkerPool:
    """A process pool; a broken pool (a worker killed) is replaced, and its task done in this process."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._lock = threading.Lock()
        self._executor: ProcessPoolExecutor | None = None

    def executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._executor is None:
                # forkserver: the writer thread runs beside us, and fork copies no threads.
                context = multiprocessing.get_context("forkserver")
                self._executor = ProcessPoolExecutor(self.workers, mp_context=context)
            return self._executor

    def submit(self, work: Callable[[A, Sequence[T]], list[R]], common: A, items: Sequence[T]) -> Future[list[R]]:
        """`work(common, items)` in a worker; in this process when the pool breaks under it."""
        items = list(items)
        done: Future[list[R]] = Future()
        executor = self.executor()
        try:
            task = executor.submit(work, common, items)
        except BrokenProcessPool as err:
            self._replace(executor, err)
            done.set_result(work(common, items))
            return done

        def finish(task: Future[list[R]]) -> None:
            try:
                done.set_result(task.result())
            except BrokenProcessPool as err:
                self._replace(executor, err)
                try:
                    done.set_result(work(common, items))
                except BaseException as again:  # noqa: BLE001 - handed to whoever waits
                    done.set_exception(again)
            except BaseException as err:  # noqa: BLE001 - handed to whoever waits
                done.set_exception(err)

        task.add_done_callback(finish)
        return done

    def pids(self) -> list[int]:
        executor = self._executor
        return list(executor._processes) if executor is not None and executor._processes else []

    def _replace(self, broken: ProcessPoolExecutor, err: BaseException) -> None:
        logger.warning("bulk work in this process: %s", err)
        with self._lock:
            if self._executor is broken:
                self._executor = None
        broken.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)


_pool: WorkerPool | None = None
_pool_lock = threading.Lock()


def _shared_pool() -> WorkerPool | None:
    global _pool  # noqa: PLW0603 - one pool per process, started on first use
    with _pool_lock:
        if _pool is None and worker_count():
            _pool = WorkerPool(worker_count())
        return _pool


def shutdown() -> None:
    """Stop the worker processes (at exit; a later request starts new ones)."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.close()


class Results(Generic[R]):
    """Results being made, in parts: `result()` waits for them all, in order."""

    def __init__(self, parts: list[Future[list[R]]]) -> None:
        self.parts = parts

    def result(self) -> list[R]:
        return [item for part in self.parts for item in part.result()]


def _forget_in_child() -> None:
    # A forked child has none of the parent's threads or workers: it starts its own pool if it needs one.
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


atexit.register(shutdown)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


def in_workers(work: Callable[[A, Sequence[T]], list[R]], common: A, items: Sequence[T]) -> Results[R]:
    """`work(common, items)`, in order: in worker processes when there are many items, split among
    them so the last of a batch is not left waiting on one. `work` must be a module-level function."""
    pool = _shared_pool() if len(items) >= PARALLEL_MIN_ITEMS else None
    if pool is None:
        done: Future[list[R]] = Future()
        done.set_result(work(common, items))
        return Results([done])
    parts = max(1, min(pool.workers, len(items) // PARALLEL_MIN_ITEMS))
    size = -(-len(items) // parts)
    return Results([pool.submit(work, common, items[at : at + size]) for at in range(0, len(items), size)])
