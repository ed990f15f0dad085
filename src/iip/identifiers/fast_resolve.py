"""The hot path of identifier resolution: anonymous `GET /api/handles/{prefix}/{suffix}` in pure ASGI.

Routing, dependency injection and the ORM cost several times what a resolution is worth, so the
common request (no credentials, no cookie, at most `type`, `index`, `publicOnly=true` and `auth`)
is answered here from one primary-key read of `identifiers_handle.key`, with the body, status and
headers the Handle router and the platform middleware give it, and counted in the same metrics.
Anything else (credentials, other parameters, an unknown handle, a value stored in an unusual shape,
any error) passes untouched to the full application, which stays the one place for those answers.
Every answer reflects the last commit, whichever worker made it. An unfiltered request is
answered with the bytes every write stores beside the values (`Handle.answer`, rendered by
`answers.stored_answer`), on SQLite from a per-worker cache of those bytes that any commit empties
(`answer_cache`); filters are applied to the values here.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from typing import Any
from urllib.parse import parse_qsl

import anyio.to_thread
import orjson
from sqlalchemy.exc import DBAPIError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from iip.api.middleware import REQUEST_ID_RE, SECURITY_HEADERS, RouteTally
from iip.identifiers.answer_cache import AnswerCache, CommitWatch
from iip.identifiers.answers import Fallthrough, answer_body, public_values
from iip.identifiers.codec import (
    CONTROL_RE,
    MAX_INDEX,
    MAX_KEY_LENGTH,
    PREFIX_RE,
)
from iip.identifiers.router import HANDLE_PATH
from iip.kernel.logs import request_id_var
from iip.kernel.runtime import Runtime
from iip.kernel.settings import Mode

logger = logging.getLogger("iip.http")

PATH_START = "/api/handles/"
MMAP_BYTES = 2**31 - 2**16  # SQLite's largest by default (SQLITE_MAX_MMAP_SIZE)
# Unfiltered: the answer stored at write time, or the values to render it from when none was stored.
ANSWER_QUERY = (
    'SELECT answer, handle, CASE WHEN answer IS NULL THEN "values" END FROM identifiers_handle WHERE key = {}'
)
VALUES_QUERY = 'SELECT NULL, handle, "values" FROM identifiers_handle WHERE key = {}'
# Query parameters the router parses as booleans (pydantic's lax spelling).
TRUE_WORDS = frozenset({"1", "on", "t", "true", "y", "yes"})
BOOL_WORDS = TRUE_WORDS | {"0", "off", "f", "false", "n", "no"}
# publicOnly=false asks for more than an anonymous caller may read (401): the full path answers.
BOOLEAN_PARAMS = {"publicOnly": TRUE_WORDS, "auth": BOOL_WORDS}

Row = tuple[bytes | None, str, Any]  # (stored answer, handle, parsed values or None)


def _query(raw: bytes) -> tuple[list[str], list[int]]:
    """`type` and `index` filters, or Fallthrough for anything the router would treat otherwise."""
    types: list[str] = []
    indexes: list[int] = []
    if not raw:
        return types, indexes
    seen: set[str] = set()
    for name, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
        if "\x00" in name or "\x00" in value:
            raise Fallthrough
        if name == "type" and len(value) <= 50:
            types.append(value)
        elif name == "index" and value.isascii() and value.isdigit() and 0 < int(value) <= MAX_INDEX:
            indexes.append(int(value))
        elif value.lower() in BOOLEAN_PARAMS.get(name, ()) and name not in seen:
            seen.add(name)
        else:
            raise Fallthrough
    return types, indexes


def _loads(text: str | bytes) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        raise Fallthrough from None  # e.g. NaN or a huge integer: the full path reads it its own way


def _row(found: tuple[Any, ...]) -> Row:
    answer, handle, values = found
    if answer is not None:
        return bytes(answer), handle, None
    # SQLite and PostgreSQL's json type give text; jsonb would give the parsed value.
    return None, handle, _loads(values) if isinstance(values, str | bytes) else values


class HandleReader:
    """One primary-key read through a pooled DBAPI connection of the runtime's engine.

    SQLite: in the event loop (a key read is a few microseconds) on a connection kept for the
    process; outside a transaction each SELECT sees the last commit, and takes no write lock (the
    ORM's sessions begin IMMEDIATE). PostgreSQL: in a worker thread, autocommit for the read.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.engine = runtime.db.engine
        self.sqlite = self.engine.dialect.name == "sqlite"
        mark = "?" if self.sqlite else "%s"
        self.answer_sql = ANSWER_QUERY.format(mark)
        self.values_sql = VALUES_QUERY.format(mark)
        self.cache_bytes = runtime.settings.identifiers.resolution_cache_mib * 2**20
        self._kept: Any = None
        self._cache: AnswerCache | None = None

    def answer_cache(self) -> AnswerCache | None:
        """The cache of stored answers if it may be used now (SQLite in WAL mode, enabled), else None."""
        if not self.sqlite or not self.cache_bytes:
            return None
        if self._kept is None:
            self._connection()
        cache = self._cache
        return cache if cache is not None and cache.current() else None

    async def row(self, key: str, *, filtered: bool) -> Row | None:
        sql = self.values_sql if filtered else self.answer_sql
        if self.sqlite:
            return self._kept_row(sql, key)
        return await anyio.to_thread.run_sync(self._pooled_row, sql, key)

    def _connection(self) -> Any:
        if self._kept is None:
            self._kept = self.engine.raw_connection()
            driver = self._kept.driver_connection
            # Pages read through a memory map rather than a system call each: about a quarter off a key read.
            driver.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
            database = self.engine.url.database
            wal = driver.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            if self.cache_bytes and wal and database and database != ":memory:":
                watch = CommitWatch.open(database)
                self._cache = None if watch is None else AnswerCache(watch, self.cache_bytes)
        return self._kept.driver_connection

    def _kept_row(self, sql: str, key: str) -> Row | None:
        try:
            found = self._connection().execute(sql, (key,)).fetchone()
        except Exception:
            self.close()
            raise
        return None if found is None else _row(found)

    def _pooled_row(self, sql: str, key: str) -> Row | None:
        connection = self.engine.raw_connection()
        try:
            driver: Any = connection.driver_connection
            driver.autocommit = True
            try:
                found = driver.execute(sql, (key,)).fetchone()
            finally:
                driver.autocommit = False
        except Exception:
            connection.invalidate()
            raise
        finally:
            connection.close()
        return None if found is None else _row(found)

    def close(self) -> None:
        kept, self._kept = self._kept, None
        cache, self._cache = self._cache, None
        if cache is not None:
            cache.close()
        if kept is not None:
            try:
                kept.invalidate()
                kept.close()
            except DBAPIError:
                logger.debug("could not close the resolution connection", exc_info=True)


class FastResolve:
    """ASGI layer in front of the platform's middleware; see the module docstring."""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.reader = HandleReader(runtime)
        settings = runtime.settings
        self.cors = bool(settings.api.cors_origins)
        headers = [(name.lower().encode(), value.encode()) for name, value in SECURITY_HEADERS.items()]
        if settings.mode is Mode.PRODUCTION:
            headers.append((b"strict-transport-security", b"max-age=31536000; includeSubDomains"))
        self.security_headers = headers
        self._tally: RouteTally | None = None
        self.id_prefix = uuid.uuid4().hex[:16]
        self.id_counter = itertools.count()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or not scope["path"].startswith(PATH_START):
            if scope["type"] == "lifespan":
                await self.app(scope, receive, self._closing(send))
            else:
                await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            request_id = self._request_id(scope)
            body = await self._answer(scope)
        except Fallthrough:
            await self.app(scope, receive, send)
            return
        except Exception:  # the full path answers, and reports the error if it recurs there
            logger.debug("resolution fell back to the full path", exc_info=True)
            await self.app(scope, receive, send)
            return
        headers = [
            (b"content-length", str(len(body)).encode()),
            (b"content-type", b"application/json"),
            (b"x-request-id", request_id.encode()),
            *self.security_headers,
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        self._observe(scope, time.perf_counter() - started, request_id)

    def _closing(self, send: Send) -> Send:
        async def sending(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                self.reader.close()
            await send(message)

        return sending

    def _request_id(self, scope: Scope) -> str:
        incoming = ""
        for name, value in scope["headers"]:
            if name in (b"authorization", b"cookie") or (self.cors and name == b"origin"):
                raise Fallthrough
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
        if incoming and REQUEST_ID_RE.match(incoming):
            return incoming
        # 32 hex digits as the full path's uuid4().hex, without a system call per request.
        return f"{self.id_prefix}{next(self.id_counter):016x}"

    async def _answer(self, scope: Scope) -> bytes:
        path: str = scope["path"]
        if scope.get("root_path") or "\x00" in path:
            raise Fallthrough
        handle = path[len(PATH_START) :]
        prefix, _, suffix = handle.partition("/")
        key = handle.lower()
        # The checks of codec.parse_handle, inline: a handle it would refuse goes the full path (102).
        if not suffix or not PREFIX_RE.match(prefix) or CONTROL_RE.search(suffix) or len(key) > MAX_KEY_LENGTH:
            raise Fallthrough
        types, indexes = _query(scope["query_string"])
        filtered = bool(types or indexes)
        cache = None if filtered else self.reader.answer_cache()
        if cache is not None:
            kept = cache.answers.get(key)
            if kept is not None:
                return kept
        row = await self.reader.row(key, filtered=filtered)
        if row is None:
            raise Fallthrough  # not found here: the full path answers 100, or refers
        answer, registered, stored = row
        if answer is not None:
            if cache is not None:
                cache.keep(key, answer)
            return answer
        return answer_body(registered, public_values(stored, types, indexes))

    def _observe(self, scope: Scope, elapsed: float, request_id: str) -> None:
        tally = self._tally
        if tally is None:
            tally = self._tally = scope["app"].state.metrics.tally("GET", HANDLE_PATH, 200)
        tally.record(elapsed)
        # At DEBUG, not INFO as other requests: a log line per resolution would cost more than the
        # resolution (the static-file baseline logs none either); the metrics count every one.
        if logger.isEnabledFor(logging.DEBUG):
            path = scope["path"]
            token = request_id_var.set(request_id)
            try:
                logger.debug(
                    "%s %s %d",
                    "GET",
                    path,
                    200,
                    extra={
                        "method": "GET",
                        "path": path,
                        "status": 200,
                        "duration_ms": round(elapsed * 1000, 2),
                        "route": HANDLE_PATH,
                    },
                )
            finally:
                request_id_var.reset(token)


def resolution_layer(app: ASGIApp, runtime: Runtime) -> ASGIApp:
    return FastResolve(app, runtime)
