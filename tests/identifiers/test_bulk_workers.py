"""Bulk registration signs every row with the node key, writes in chunks all or nothing, and keeps
search current; on SQLite and PostgreSQL. The fast encodings are held to their references."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy import text as sql_text

from iip.identifiers import bulk_workers, catalog
from iip.identifiers.codec import CONTROL_RE, DEFAULT_TTL
from iip.identifiers.models import Handle, HandleHistory
from iip.identifiers.signing import NodeKey, canonical_record
from iip.kernel.db import Database
from iip.kernel.ed25519 import sign_all
from iip.kernel.runtime import Runtime
from tests.cli.conftest import InProcessIip
from tests.identifiers.conftest import HomedPrefix
from tests.identifiers.test_bulk import BATCH, handle_count, rows

# Text that JSON escapes one way or another, in handles, URLs, values and attributes.
AWKWARD = [
    'a"b',
    "back\\slash",
    "tab\there",
    "nl\nx",
    "\x01ctl",
    "精密轴承",
    "emoji \U0001f527",
    "é\u0301",
    "/",
    "\u2028x",
]


def verify(client: TestClient, handle: str) -> dict[str, Any]:
    response = client.get("/api/verify", params={"handle": handle})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def tamper(db: Database, key: str) -> None:
    """Change one stored value of a handle behind the service's back."""
    with db.session() as session:
        row = session.scalar(select(Handle).where(Handle.key == key))
        assert row is not None
        values = [dict(v) for v in row.values]
        values[0] = {**values[0], "data": {"format": "string", "value": "https://evil.example.com"}}
        row.values = values


def unsigned_count(db: Database) -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(Handle).where(Handle.signature == "")) or 0


@pytest.mark.parametrize("count", [5, 700])  # signed here; then the later chunks by the worker processes
def test_bulk_rows_are_signed_by_the_node(client: TestClient, runtime: Runtime, homed: HomedPrefix, count: int) -> None:
    response = client.post(BATCH, json=rows(count), headers=homed.tenant.headers())
    assert response.json() == {"registered": count}, response.text
    assert unsigned_count(runtime.db) == 0
    for n in (0, count // 2, count - 1):
        result = verify(client, f"88.118.8/PART-{n:05d}")
        assert (result["ok"], result["reason"]) == (True, "signed by this node")
    tamper(runtime.db, f"88.118.8/part-{count - 1:05d}")
    tampered = verify(client, f"88.118.8/PART-{count - 1:05d}")
    assert tampered["ok"] is False
    assert "does not match" in tampered["reason"]
    assert verify(client, "88.118.8/PART-00000")["ok"] is True


def test_awkward_text_is_stored_and_signed_as_single_registrations_are(
    client: TestClient, runtime: Runtime, homed: HomedPrefix
) -> None:
    batch: list[dict[str, Any]] = [
        {
            "handle": f"88.118.8/W-{i}-{text}",
            "url": f"https://example.com/{text}",
            "values": {"NOTE": text, "COUNT": i, "RATIO": 0.5},
            "attributes": {"name": text, "n": i, "flag": True, "nested": {"k": [text, 1]}},
        }
        for i, text in enumerate(AWKWARD)
        if not CONTROL_RE.search(text)  # handle suffixes refuse control characters
    ]
    batch.append({"handle": "88.118.8/W-url", "url": "https://example.com/" + "".join(AWKWARD), "values": {"N": "x"}})
    response = client.post(BATCH, json=batch, headers=homed.tenant.headers())
    assert response.status_code == 200, response.text
    with runtime.db.session() as session:
        stored = {r.handle: r for r in session.scalars(select(Handle).where(Handle.key.like("88.118.8/w-%")))}
    assert len(stored) == len(batch)
    for item in batch:
        row = stored[item["handle"]]
        assert row.attributes == item.get("attributes", {})
        by_type = {v["type"]: v for v in row.values}
        assert by_type["URL"]["data"]["value"] == item["url"]
        assert by_type["URL"]["ttl"] == DEFAULT_TTL
        assert [v["index"] for v in row.values] == sorted(v["index"] for v in row.values)
        assert verify(client, row.handle)["ok"], row.handle


def test_a_bad_row_in_a_later_chunk_writes_nothing(client: TestClient, runtime: Runtime, homed: HomedPrefix) -> None:
    size = catalog.CHUNK_ROWS * 2 + 10
    batch = rows(size)
    batch[size - 5]["url"] = ""
    history = select(func.count()).select_from(HandleHistory)
    with runtime.db.session() as session:
        before = session.scalar(history)
    response = client.post(BATCH, json=batch, headers=homed.tenant.headers())
    assert response.status_code == 422, response.text
    assert [e["line"] for e in response.json()["errors"]] == [size - 4]
    assert handle_count(runtime.db) == 0
    with runtime.db.session() as session:
        assert session.scalar(history) == before


def test_a_taken_handle_in_a_later_chunk_writes_nothing(
    client: TestClient, runtime: Runtime, homed: HomedPrefix
) -> None:
    size = catalog.CHUNK_ROWS * 2 + 10
    assert client.post(BATCH, json=rows(1, start=size - 3), headers=homed.tenant.headers()).status_code == 200
    batch = rows(size)
    batch[3]["template"] = "vehicle"  # and a bad row before it: both are reported
    response = client.post(BATCH, json=batch, headers=homed.tenant.headers())
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert [e["line"] for e in errors] == [4, size - 2]
    assert "already exists" in errors[1]["message"]
    assert handle_count(runtime.db) == 1


def test_search_finds_bulk_rows_in_every_chunk(client: TestClient, homed: HomedPrefix) -> None:
    size = catalog.CHUNK_ROWS * 2 + 10
    batch = rows(size)
    batch[size - 1]["attributes"]["name"] = "Spindle 主轴承"
    assert client.post(BATCH, json=batch, headers=homed.tenant.headers()).json() == {"registered": size}
    headers = homed.tenant.headers()
    for n in (0, catalog.CHUNK_ROWS + 1, size - 1):
        found = client.get("/api/identifiers/search", params={"q": f"P-{n:05d}"}, headers=headers).json()
        assert [i["handle"] for i in found["items"]] == [f"88.118.8/PART-{n:05d}"]
    for query in ("spindle", "主轴"):
        found = client.get("/api/identifiers/search", params={"q": query, "page_size": 1}, headers=headers).json()
        assert (found["total"], found["total_exact"]) == (1, True), query
    for query in ("example.com", "GCr15"):
        # Every row matches: the first page counts to its limit, the last page counts them all.
        first = client.get("/api/identifiers/search", params={"q": query, "page_size": 1}, headers=headers).json()
        assert (first["total"], first["total_exact"]) == (catalog.COUNT_LIMIT, False), query
        last = client.get(
            "/api/identifiers/search", params={"q": query, "page_size": 500, "page": 5}, headers=headers
        ).json()
        assert (last["total"], last["total_exact"], len(last["items"])) == (size, True, size - 2000), query


def test_text_that_is_not_unicode_is_a_row_error(client: TestClient, runtime: Runtime, homed: HomedPrefix) -> None:
    body = '[{"handle": "88.118.8/OK", "url": "https://x"}, {"handle": "88.118.8/S", "url": "https://x/\\ud800"}]'
    response = client.post(BATCH, content=body.encode(), headers=homed.tenant.headers())
    assert response.status_code == 422, response.text
    assert [e["line"] for e in response.json()["errors"]] == [2]
    assert handle_count(runtime.db) == 0


def test_import_signs_every_row(iip_in_process: InProcessIip, cli_db: Database, tmp_path: Path) -> None:
    iip = iip_in_process
    assert iip("db", "upgrade").exit_code == 0
    assert iip("tenant", "create", "acme").exit_code == 0
    assert iip("id", "prefix", "create", "88.118.8", "--tenant", "acme", stdin="prefix-secret-1\n").exit_code == 0
    source = tmp_path / "parts.jsonl"
    source.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows(600)) + "\n", encoding="utf-8")
    imported = iip("id", "import", str(source), "--tenant", "acme")
    assert imported.exit_code == 0, imported.output
    assert handle_count(cli_db) == 600
    assert unsigned_count(cli_db) == 0
    checked = iip("id", "verify", "88.118.8/PART-00599")
    assert checked.exit_code == 0, checked.output


def search_index_segments(db: Database) -> int:
    # FTS5's structure record (id 10) begins with varints: cookie (4 bytes), levels, segments.
    with db.session() as session:
        structure = session.execute(
            sql_text("SELECT block FROM identifiers_handle_fts_data WHERE id = 10")
        ).scalar_one()
    return int(structure[5])


def test_the_search_index_is_merged_on_demand(
    iip_in_process: InProcessIip, cli_db: Database, tmp_path: Path, backend: str
) -> None:
    iip = iip_in_process
    assert iip("db", "upgrade").exit_code == 0
    assert iip("tenant", "create", "acme").exit_code == 0
    assert iip("id", "prefix", "create", "88.118.8", "--tenant", "acme", stdin="prefix-secret-1\n").exit_code == 0
    for part in range(3):
        source = tmp_path / f"parts-{part}.jsonl"
        batch = [{**r, "handle": f"{r['handle']}-{part}"} for r in rows(300)]
        source.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in batch) + "\n", encoding="utf-8")
        imported = iip("id", "import", str(source), "--tenant", "acme")
        assert imported.exit_code == 0, imported.output
        assert "search index optimised" not in imported.output  # fewer than OPTIMIZE_AFTER
    if backend == "sqlite":
        assert search_index_segments(cli_db) > 1  # one or more per import
    merged = iip("id", "optimize-search")
    assert merged.exit_code == 0, merged.output
    if backend == "sqlite":
        assert merged.output.strip() == "search index optimised"
        assert search_index_segments(cli_db) == 1
    else:
        assert "nothing to do" in merged.output
    found = iip("id", "search", "PART-00007-2", "--tenant", "acme", "--json")
    assert [item["handle"] for item in json.loads(found.output)["items"]] == ["88.118.8/PART-00007-2"]


# --- the encodings and the signer, without a database


def test_templates_give_the_reference_texts() -> None:
    stamp = "2026-11-30T08:00:00Z"
    for text in AWKWARD:
        for value_type in ("URL", "SERIAL", "x.y:z-1"):
            stored = catalog._stored_string(7, value_type, text, stamp)
            assert stored == json.dumps(catalog._string_value(7, value_type, text, stamp))
        handle = f"88.118.8/{text}"
        stored_values = [catalog._string_value(1, "URL", text, stamp), catalog._string_value(2, "NOTE", text, stamp)]
        signed = [catalog._signed_string(v["index"], v["type"], v["data"]["value"], stamp) for v in stored_values]
        assert catalog._signed_record(handle, signed) == canonical_record(handle, stored_values)


@pytest.mark.parametrize(
    ("parts", "words"),
    [
        (
            ["88.118.8/AB-1", "https://a.example/p?id=1", "精密轴承", "3"],
            "88 118 8 AB 1 https a example p id 1 精密轴承 3",
        ),
        (["88.1/X", "", "--", "a_b"], "88 1 X a_b"),
    ],
)
def test_search_text_joins_parts_then_words(parts: list[str], words: str) -> None:
    reference = " ".join(p for p in (*parts, *(" ".join(catalog.WORD_RE.findall(p)) for p in parts)) if p)
    assert catalog._joined_search_text(parts) == reference
    assert reference.endswith(words)


@pytest.mark.parametrize(
    ("name", "attributes"),
    [
        ("part", {"part_number": "P-1", "material": "GCr15"}),
        ("part", {"part_number": ""}),
        ("part", {"material": "steel"}),
        ("part", {"part_number": "P", "colour": "red"}),
        ("part", {"part_number": "P", "parent_product": "no-slash"}),
        ("part", {"part_number": "P", "parent_product": "88.1/P"}),
        ("part", {"part_number": 5}),
        ("product", {"name": "Bearing", "model": "6204", "manufacturer": "Acme", "gtin": "123"}),
        ("batch", {"product": "88.1/P", "lot": "L", "production_date": "2026-02-30"}),
        ("batch", {"product": "88.1/P", "lot": "L", "production_date": "2026-02-03", "quantity": -1}),
        ("batch", {"product": "88.1/P", "lot": "L", "production_date": "2026-02-03", "quantity": True}),
        ("equipment", {"model": "M", "serial_number": "S", "manufacturer": "X", "rated_power_kw": 7.5}),
        ("equipment", {"model": "M", "serial_number": "S", "manufacturer": "X", "rated_power_kw": "7.5"}),
    ],
)
def test_compiled_quick_check_agrees_with_the_quick_check(name: str, attributes: dict[str, Any]) -> None:
    schema = catalog.template(name).schema
    assert catalog._quick_check(name)(attributes) == catalog._quick_valid(schema, attributes)


def test_workers_sign_as_the_key_does() -> None:
    key = NodeKey(Ed25519PrivateKey.generate())
    payloads = [f'{{"handle":"88.1/{n}","values":[]}}'.encode() for n in range(bulk_workers.PARALLEL_MIN_ITEMS + 5)]
    expected = [key.sign(p) for p in payloads]
    assert sign_all(bulk_workers.seed_of(key), payloads) == expected
    pool = bulk_workers.WorkerPool(1)
    seed = bulk_workers.seed_of(key)
    try:
        assert pool.submit(sign_all, seed, payloads).result() == expected
        other = NodeKey(Ed25519PrivateKey.generate())  # one worker serves any key
        signed = pool.submit(sign_all, bulk_workers.seed_of(other), payloads[:3]).result()
        assert signed == [other.sign(p) for p in payloads[:3]]
        [first] = pool.pids()
        os.kill(first, signal.SIGKILL)
        assert pool.submit(sign_all, seed, payloads).result() == expected  # signed here when a worker has died
        assert pool.submit(sign_all, seed, payloads).result() == expected  # and by a new worker after
        [second] = pool.pids()
        assert second != first
    finally:
        pool.close()
    assert pool.pids() == []
    with pytest.raises(ProcessLookupError):  # closing stopped and reaped the worker
        os.kill(second, 0)


def test_attributes_json_leaves_to_json_what_orjson_would_change() -> None:
    assert json.loads(catalog._attributes_json({"a": "精密轴承", "b": "x"})) == {"a": "精密轴承", "b": "x"}
    assert catalog._attributes_json({"q": float("nan")}) == '{"q":NaN}'  # orjson would write null
    assert catalog._attributes_json({"n": 1, "s": "x"}) == '{"n":1,"s":"x"}'


def test_search_text_is_split_into_words_only_where_the_tokenizer_does_not() -> None:
    assert catalog.splits_words("postgresql")
    assert not catalog.splits_words("sqlite")
    text = catalog.search_text("88.118.8/AB-1", [], {"name": "x_y"}, split_words=False)
    assert text == "88.118.8/AB-1 x_y"


def test_rows_encoded_in_the_workers_as_in_this_process() -> None:
    key = NodeKey(Ed25519PrivateKey.generate())
    encoding = catalog.RowEncoding(bulk_workers.seed_of(key), "2026-11-30T00:00:00Z", split_words=False)
    admin = ('{"index": 100}', '{"index":100}')
    items: list[catalog.RowItem] = [
        (
            f"88.1/P{n}",
            {"url": f"https://e.example/{n}", "template": "part", "attributes": {"part_number": f"P{n}"}},
            admin,
        )
        for n in range(bulk_workers.PARALLEL_MIN_ITEMS * 2)
    ]
    items[3] = ("88.1/P3", {"url": ""}, admin)
    items[5] = ("88.1/P5", {"url": "https://e.example/5", "template": "part", "attributes": {"part_number": 5}}, admin)
    items[7] = ("88.1/P7", {"url": "https://e.example/\ud800"}, admin)
    here = catalog.encode_rows(encoding, items)
    assert here[3] == "url is missing"
    assert here[7] == catalog.NOT_UNICODE
    assert isinstance(here[5], str)
    assert "part_number" in here[5]
    first = here[0]
    assert isinstance(first, tuple)
    assert first[4] == key.sign(
        catalog._signed_record(
            "88.1/P0", [catalog._signed_string(1, "URL", "https://e.example/0", encoding.stamp), admin[1]]
        )
    )
    parts = bulk_workers.in_workers(catalog.encode_rows, encoding, items)
    assert len(parts.parts) == max(1, min(bulk_workers.worker_count(), 2))  # split among the workers
    assert parts.result() == here
