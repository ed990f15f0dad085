"""The lean resolution path answers exactly as the full Handle router, and never from stale data."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from httpx2 import Response
from sqlalchemy import select, update

from iip.api.app import create_app
from iip.identifiers.answer_cache import AnswerCache, CommitWatch
from iip.identifiers.fast_resolve import HandleReader
from iip.identifiers.models import Handle
from iip.identifiers.service import HandleService
from iip.kernel.auth import Role
from iip.kernel.bus import MemoryBus
from iip.kernel.runtime import Runtime
from iip.kernel.settings import Mode
from tests.identifiers.conftest import HomedPrefix, admin_entry, url_value

H = "/api/handles/88.118.8"
VOLATILE = {"x-request-id", "date", "server"}


def value(index: int, value_type: str, data: Any, fmt: str = "string", **extra: Any) -> dict[str, Any]:
    return {"index": index, "type": value_type, "data": {"format": fmt, "value": data}, **extra}


RECORDS: dict[str, list[dict[str, Any]]] = {
    "Plain": [url_value("https://example.com/a"), admin_entry()],
    "Mixed-Case": [url_value("https://example.com/m"), value(2, "EMAIL", "qc@example.com", ttl=60)],
    "零件-001": [url_value("https://例子.cn/零件"), value(2, "DESC", "轴承 GCr15")],
    "with space/and/slashes": [url_value("https://example.com/s")],
    "Typed": [
        url_value("https://example.com/t"),
        value(2, "10320/loc", "<locations/>"),
        value(3, "10320.sub", "sub"),
        value(4, "BLOB", "aGVsbG8=", "base64"),
        value(5, "HEX", "cafe", "hex"),
        value(6, "COST", "42", permissions="1100"),
        value(7, "OPEN", "anyone writes", permissions="1111"),
        value(200, "HS_VLIST", [{"handle": "0.NA/88.118.8", "index": 300}], "vlist"),
        admin_entry(),
    ],
    "Hidden": [value(1, "SECRET", "x", permissions="1100")],
}

# (path under H, whether the lean path answers it itself)
REQUESTS = [
    ("/Plain", True),
    ("/plain", True),
    ("/mixed-CASE", True),
    ("/零件-001", True),
    ("/%E9%9B%B6%E4%BB%B6-001", True),
    ("/with%20space/and/slashes", True),
    ("/Typed", True),
    ("/Typed?type=URL", True),
    ("/Typed?type=url&type=EMAIL", True),
    ("/Typed?type=10320.", True),
    ("/Typed?index=1&index=4", True),
    ("/Typed?type=HEX&index=200", True),
    ("/Typed?index=6", True),
    ("/Typed?type=NOPE", True),
    ("/Typed?type=", True),
    ("/Typed?publicOnly=true", True),
    ("/Typed?auth=true&publicOnly=yes", True),
    ("/Hidden", True),
    ("/Typed?publicOnly=false", False),
    ("/Typed?publicOnly=maybe", False),
    ("/Typed?index=0", False),
    ("/Typed?index=x", False),
    ("/Typed?index=%C2%B2", False),
    ("/Typed?type=" + "T" * 51, False),
    ("/Typed?other=1", False),
    ("/Typed?type=%00", False),
    ("/unknown-handle", False),
    ("/", False),
    ("/bad%00suffix", False),
]


@dataclasses.dataclass
class Clients:
    lean: TestClient
    full: TestClient
    resolves: list[str]


def without_layers(runtime: Runtime) -> Runtime:
    modules = tuple(dataclasses.replace(m, asgi_layers=()) for m in runtime.modules)
    return beside(dataclasses.replace(runtime, modules=modules))


def beside(runtime: Runtime) -> Runtime:
    """The runtime for a second app running at the same time: background consumers and the services they
    share belong to one app's event loop, so it gets its own bus and services."""
    return dataclasses.replace(runtime, bus=MemoryBus(), services={})


@pytest.fixture
def clients(runtime: Runtime, homed: HomedPrefix, monkeypatch: pytest.MonkeyPatch) -> Iterator[Clients]:
    resolves: list[str] = []
    original = HandleService.resolve

    def counted(self: HandleService, name: Any, *args: Any, **kwargs: Any) -> Any:
        resolves.append(name.handle)
        return original(self, name, *args, **kwargs)

    monkeypatch.setattr(HandleService, "resolve", counted)
    lean_app = create_app(runtime=runtime, configure_logs=False)
    full_app = create_app(runtime=without_layers(runtime), configure_logs=False)
    with TestClient(lean_app) as lean, TestClient(full_app) as full:
        for suffix, values in RECORDS.items():
            response = full.put(f"{H}/{suffix}?overwrite=false", json={"values": values}, headers=homed.auth)
            assert response.status_code == 201, response.text
        resolves.clear()
        yield Clients(lean, full, resolves)


def assert_same(lean: Response, full: Response) -> None:
    assert lean.status_code == full.status_code
    if lean.headers["content-type"] == "application/problem+json":
        # Problem bodies name their request id.
        assert lean.json() | {"request_id": ""} == full.json() | {"request_id": ""}
    else:
        assert lean.content == full.content
    assert [(k, v) for k, v in lean.headers.items() if k not in VOLATILE] == [
        (k, v) for k, v in full.headers.items() if k not in VOLATILE
    ]
    assert len(lean.headers["x-request-id"]) == 32


@pytest.mark.parametrize(("path", "lean"), REQUESTS)
def test_same_answer_as_the_full_router(clients: Clients, path: str, lean: bool) -> None:
    full = clients.full.get(H + path)
    clients.resolves.clear()
    answer = clients.lean.get(H + path)
    assert_same(answer, full)
    answered_by_router = bool(clients.resolves) or full.status_code != 200
    assert answered_by_router is not lean


def test_values_are_those_the_router_shows(clients: Clients) -> None:
    body = clients.lean.get(f"{H}/Typed").json()
    assert body["responseCode"] == 1
    assert body["handle"] == "88.118.8/Typed"
    shown = {v["index"]: v for v in body["values"]}
    assert 6 not in shown  # admin read only
    assert shown[7]["permissions"] == "1111"
    assert "permissions" not in shown[1]
    assert list(shown[1]) == ["index", "type", "data", "ttl", "timestamp"]
    hidden = clients.lean.get(f"{H}/Hidden").json()
    assert (hidden["responseCode"], hidden["values"]) == (200, [])


def test_credentials_and_cookies_take_the_full_path(clients: Clients, homed: HomedPrefix) -> None:
    anonymous = clients.full.get(f"{H}/Typed")
    clients.resolves.clear()
    as_admin = clients.lean.get(f"{H}/Typed", headers=homed.auth)
    assert 6 in [v["index"] for v in as_admin.json()["values"]]
    as_viewer = clients.lean.get(f"{H}/Typed", headers=homed.tenant.headers(Role.VIEWER))
    assert 6 in [v["index"] for v in as_viewer.json()["values"]]
    with_cookie = clients.lean.get(f"{H}/Typed", headers={"Cookie": "iip_session=stale"})
    assert_same(with_cookie, anonymous)
    assert len(clients.resolves) == 3


def test_writes_show_at_once(clients: Clients, homed: HomedPrefix) -> None:
    assert clients.lean.get(f"{H}/Plain").json()["values"][0]["data"]["value"] == "https://example.com/a"
    replaced = clients.lean.put(f"{H}/Plain?index=1", json={"values": [url_value("https://b")]}, headers=homed.auth)
    assert replaced.status_code == 200
    assert clients.lean.get(f"{H}/Plain").json()["values"][0]["data"]["value"] == "https://b"
    hidden = clients.lean.put(
        f"{H}/Plain?index=1", json={"values": [url_value("https://c") | {"permissions": "1100"}]}, headers=homed.auth
    )
    assert hidden.status_code == 200
    assert [v["index"] for v in clients.lean.get(f"{H}/Plain").json()["values"]] == [100]
    assert clients.lean.delete(f"{H}/Plain", headers=homed.auth).status_code == 200
    gone = clients.lean.get(f"{H}/Plain")
    assert (gone.status_code, gone.json()["responseCode"]) == (404, 100)
    created = clients.lean.put(f"{H}/Plain", json={"values": [url_value("https://d")]}, headers=homed.auth)
    assert created.status_code == 200
    assert clients.lean.get(f"{H}/plain").json()["values"][0]["data"]["value"] == "https://d"


def test_request_id_and_metrics(clients: Clients) -> None:
    given = clients.lean.get(f"{H}/Plain", headers={"X-Request-ID": "trace-1.a_b"})
    assert given.headers["x-request-id"] == "trace-1.a_b"
    ids = {clients.lean.get(f"{H}/Plain").headers["x-request-id"] for _ in range(3)}
    assert len(ids) == 3
    assert not clients.resolves
    metrics = clients.lean.get("/metrics").text
    route = 'method="GET",route="/api/handles/{prefix}/{suffix:path}"'
    assert f'iip_http_requests_total{{{route},status="200"}} 4.0' in metrics
    assert f"iip_http_request_duration_seconds_count{{{route}}} 4.0" in metrics


def test_production_adds_hsts(clients: Clients, runtime: Runtime) -> None:
    settings = runtime.settings.model_copy(update={"mode": Mode.PRODUCTION})
    production = beside(dataclasses.replace(runtime, settings=settings))
    with (
        TestClient(create_app(runtime=production, configure_logs=False)) as lean,
        TestClient(create_app(runtime=without_layers(production), configure_logs=False)) as full,
    ):
        answer, expected = lean.get(f"{H}/Plain"), full.get(f"{H}/Plain")
    assert "strict-transport-security" in answer.headers
    assert_same(answer, expected)
    assert len(clients.resolves) == 1


@pytest.mark.parametrize(
    "stored",
    [
        [{"index": 1, "type": "NUM", "data": {"format": "string", "value": 1e16}, "ttl": 86400}],
        [{"index": 1, "type": "URL", "data": {"format": "string", "value": "https://x"}, "extra": 1}],
        [{"index": 1, "type": "URL", "data": {"format": "string", "value": "https://x"}}],
    ],
)
def test_unusual_stored_values_take_the_full_path(clients: Clients, runtime: Runtime, stored: Any) -> None:
    # Written around the ORM, as rows from before the stored answer were: no answer, values of any shape.
    with runtime.db.session() as session:
        session.execute(update(Handle).where(Handle.key == "88.118.8/plain").values(values=stored, answer=None))
    answer, expected = clients.lean.get(f"{H}/Plain"), clients.full.get(f"{H}/Plain")
    assert_same(answer, expected)
    # A value missing its defaults is still the router's shape; a float or an unknown key is not.
    plain = isinstance(stored[0]["data"]["value"], str) and "extra" not in stored[0]
    assert len(clients.resolves) == (1 if plain else 2)


def stored_answer_of(runtime: Runtime, key: str) -> bytes | None:
    with runtime.db.session() as session:
        return session.scalar(select(Handle.answer).where(Handle.key == key))


def test_every_write_stores_the_answer_the_router_gives(clients: Clients, runtime: Runtime, homed: HomedPrefix) -> None:
    for suffix in RECORDS:
        assert (
            stored_answer_of(runtime, f"88.118.8/{suffix}".lower()) == clients.full.get(f"{H}/{quote(suffix)}").content
        )
    changed = clients.lean.put(
        f"{H}/Typed?index=2", json={"values": [value(2, "10320/loc", "<x/>")]}, headers=homed.auth
    )
    assert changed.status_code == 200
    removed = clients.lean.delete(f"{H}/Typed?index=4", headers=homed.auth)
    assert removed.status_code == 200
    assert stored_answer_of(runtime, "88.118.8/typed") == clients.full.get(f"{H}/Typed").content
    assert b"<x/>" in clients.lean.get(f"{H}/Typed").content


def test_bulk_registration_stores_the_answer_the_router_gives(
    clients: Clients, runtime: Runtime, homed: HomedPrefix
) -> None:
    rows = [
        {"handle": f"88.118.8/BULK-{n}", "url": f"https://example.com/零件/{n}", "values": {"SERIAL": f"SN-{n}"}}
        for n in range(3)
    ]
    created = clients.lean.post("/api/identifiers/batch", json=rows, headers=homed.tenant.headers(Role.ENGINEER))
    assert created.status_code in (200, 201), created.text
    fulls = [clients.full.get(f"{H}/BULK-{n}") for n in range(3)]
    clients.resolves.clear()
    for n, full in enumerate(fulls):
        assert full.json()["values"][1]["data"]["value"] == f"SN-{n}"
        assert stored_answer_of(runtime, f"88.118.8/bulk-{n}") == full.content
        assert_same(clients.lean.get(f"{H}/BULK-{n}"), full)
    assert not clients.resolves  # answered from the stored bytes, not by the router


def sqlite_file(runtime: Runtime) -> str:
    if runtime.db.engine.dialect.name != "sqlite":
        pytest.skip("the answer cache is SQLite's")
    database = runtime.db.engine.url.database
    assert database
    return database


@pytest.fixture
def key_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Keys the lean path read from the database."""
    reads: list[str] = []
    original = HandleReader._kept_row

    def counted(self: HandleReader, sql: str, key: str) -> Any:
        reads.append(key)
        return original(self, sql, key)

    monkeypatch.setattr(HandleReader, "_kept_row", counted)
    return reads


def test_answers_come_from_the_cache_until_a_commit(clients: Clients, runtime: Runtime, key_reads: list[str]) -> None:
    database = sqlite_file(runtime)
    first = clients.lean.get(f"{H}/Plain")
    assert [clients.lean.get(f"{H}/plain").content for _ in range(3)] == [first.content] * 3
    assert key_reads == ["88.118.8/plain"]
    filtered = clients.lean.get(f"{H}/Plain?type=URL")
    assert filtered.status_code == 200
    assert len(key_reads) == 2  # filtered answers are rendered from the values, never cached
    # Another process's commit, outside this app's engine, as another server worker's would be.
    other = sqlite3.connect(database)
    try:
        new_answer = first.content.replace(b"https://example.com/a", b"https://example.com/moved")
        other.execute("UPDATE identifiers_handle SET answer = ? WHERE key = ?", (new_answer, "88.118.8/plain"))
        other.commit()
        assert clients.lean.get(f"{H}/Plain").content == new_answer
        other.execute("DELETE FROM identifiers_handle WHERE key = ?", ("88.118.8/plain",))
        other.commit()
    finally:
        other.close()
    gone = clients.lean.get(f"{H}/Plain")
    assert (gone.status_code, gone.json()["responseCode"]) == (404, 100)


def test_a_cache_of_zero_reads_every_time(runtime: Runtime, homed: HomedPrefix, key_reads: list[str]) -> None:
    sqlite_file(runtime)
    identifiers = runtime.settings.identifiers.model_copy(update={"resolution_cache_mib": 0})
    settings = runtime.settings.model_copy(update={"identifiers": identifiers})
    with TestClient(create_app(runtime=beside(dataclasses.replace(runtime, settings=settings)))) as client:
        created = client.put(f"{H}/Once?overwrite=false", json={"values": [url_value("https://x")]}, headers=homed.auth)
        assert created.status_code == 201
        for _ in range(3):
            assert client.get(f"{H}/Once").status_code == 200
    assert key_reads == ["88.118.8/once"] * 3


def test_the_commit_watch_sees_every_commit_and_nothing_else(tmp_path: Path) -> None:
    database = str(tmp_path / "watched.db")
    reader = sqlite3.connect(database, isolation_level=None)
    reader.execute("PRAGMA journal_mode=WAL")
    reader.execute("CREATE TABLE t (n INTEGER)")
    watch = CommitWatch.open(database)
    assert watch is not None
    writer = sqlite3.connect(database)
    try:
        seen = {watch.token()}
        for n in range(5):
            reader.execute("SELECT COUNT(*) FROM t").fetchone()
            assert watch.token() in seen  # reading commits nothing
            writer.execute("INSERT INTO t VALUES (?)", (n,))
            assert watch.token() in seen  # not yet committed
            writer.commit()
            token = watch.token()
            assert token is not None
            assert token not in seen
            seen.add(token)
        writer.execute("INSERT INTO t VALUES (99)")
        writer.rollback()
        assert watch.token() == token
        writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        writer.execute("INSERT INTO t VALUES (100)")
        writer.commit()
        assert watch.token() not in seen  # a new WAL generation is a new header too
    finally:
        writer.close()
        watch.close()
        reader.close()
    assert CommitWatch.open(str(tmp_path / "never-opened.db")) is None


def test_the_cache_keeps_at_most_its_size_oldest_out(tmp_path: Path) -> None:
    database = str(tmp_path / "sized.db")
    connection = sqlite3.connect(database, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("CREATE TABLE t (n INTEGER)")
    watch = CommitWatch.open(database)
    assert watch is not None
    cache = AnswerCache(watch, max_bytes=250)
    try:
        assert cache.current()
        for n in range(4):
            cache.keep(f"k{n}", bytes(100))
        assert list(cache.answers) == ["k2", "k3"]
        assert cache.size == 200
        cache.keep("k3", bytes(50))
        assert (list(cache.answers), cache.size) == (["k2", "k3"], 150)
        cache.keep("huge", bytes(251))
        assert "huge" not in cache.answers
        connection.execute("INSERT INTO t VALUES (1)")
        assert cache.current()
        assert (cache.answers, cache.size) == ({}, 0)
    finally:
        cache.close()
        connection.close()
