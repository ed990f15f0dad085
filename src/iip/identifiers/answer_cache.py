"""Rendered resolution answers kept in each worker, valid until anything is committed to the database.

Only on SQLite in WAL mode (how `kernel/db.py` opens it). There the wal-index header at the start of
the `-shm` file is rewritten by every commit, by any process (sqlite.org/walformat.html, "the
WAL-index header"): the writer stores the second of its two copies, then the first. Reading the
first copy and then the second, and trusting them only when they agree, is the check SQLite's own
readers make before each read transaction, here from a shared memory map: a fraction of a
microsecond where SQLite's read transaction takes file locks (system calls) for each key read.

While the header stays as it was when an answer was read, no commit has happened since, so the
answer is what a read of the row would give now. When it changes, the whole cache is dropped
(cheap, and correct for any write: a handle, its prefix, a deleted row). A client that sees a
write acknowledged and then resolves gets the new answer from every worker.
"""

from __future__ import annotations

import logging
import mmap
from pathlib import Path

logger = logging.getLogger(__name__)

WAL_HEADER_BYTES = 48  # one copy of the wal-index header; the second copy follows it
WAL_IS_INIT = 12  # offset of the header's isInit byte


class CommitWatch:
    """Reads the wal-index header of one SQLite database: the same bytes mean no commit in between."""

    def __init__(self, shm: mmap.mmap) -> None:
        self._shm = shm

    @classmethod
    def open(cls, database: str) -> CommitWatch | None:
        """The watch of a WAL database whose `-shm` file exists (some connection has it open), or None."""
        try:
            with Path(f"{database}-shm").open("rb") as file:
                shm = mmap.mmap(file.fileno(), 2 * WAL_HEADER_BYTES, access=mmap.ACCESS_READ)
        except (OSError, ValueError):  # no such file yet, or shorter than two headers
            logger.debug("no wal-index to watch for %s", database, exc_info=True)
            return None
        return cls(shm)

    def token(self) -> bytes | None:
        """The current header, or None while a writer is between its two copies (or before the first)."""
        shm = self._shm
        first = shm[:WAL_HEADER_BYTES]
        if first != shm[WAL_HEADER_BYTES : 2 * WAL_HEADER_BYTES] or not first[WAL_IS_INIT]:
            return None
        return first

    def close(self) -> None:
        self._shm.close()


class AnswerCache:
    """Answer bytes by handle key, up to `max_bytes` of answers, dropped whole at each commit.

    Oldest first out when full: resolution traffic has no order a recency list would pay for.
    """

    def __init__(self, watch: CommitWatch, max_bytes: int) -> None:
        self.watch = watch
        self.max_bytes = max_bytes
        self.answers: dict[str, bytes] = {}
        self.size = 0
        self.seen: bytes | None = None

    def current(self) -> bool:
        """Whether answers may be used and kept now; drops them all if anything was committed."""
        token = self.watch.token()
        if token != self.seen:
            self.answers.clear()
            self.size = 0
            self.seen = token
        return token is not None

    def keep(self, key: str, answer: bytes) -> None:
        if len(answer) > self.max_bytes:
            return
        previous = self.answers.pop(key, None)
        if previous is not None:
            self.size -= len(previous)
        answers = self.answers
        while self.size + len(answer) > self.max_bytes:
            self.size -= len(answers.pop(next(iter(answers))))
        answers[key] = answer
        self.size += len(answer)

    def close(self) -> None:
        self.answers.clear()
        self.size = 0
        self.watch.close()
