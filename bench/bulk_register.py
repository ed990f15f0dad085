"""Bulk registration rate: `catalog.register_batch` (all checks, history, audit, search index) vs
plain multi-row INSERTs of the same handle rows (no checks, no history, no search index).

Registers `--total` identifiers in batches of `--batch`, one transaction per batch, as
`POST /api/identifiers/batch` does. Runs on SQLite, and on PostgreSQL when IIP_BENCH_POSTGRES_URL is set.

    .venv/bin/python bench/bulk_register.py [--total 100000] [--batch 10000] [--no-record]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from sqlalchemy import insert, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Result, benchmark_databases, report
from iip.identifiers import catalog
from iip.identifiers.models import Handle
from iip.identifiers.service import HandleService
from iip.kernel.auth import AccessService, Principal, Role
from iip.kernel.db import Database, utcnow
from iip.migrations.runner import upgrade

PREFIX = "88.118.8"


def row(n: int, prefix: str = PREFIX) -> dict[str, object]:
    return {
        "handle": f"{prefix}/P{n:08d}",
        "url": f"https://example.com/parts/{n}",
        "values": {"SERIAL": f"SN-{n}"},
        "template": "part",
        "attributes": {"part_number": f"P-{n:08d}", "material": "GCr15", "supplier": "精密轴承厂"},
    }


def ours(db: Database, actor: Principal, total: int, batch: int) -> float:
    started = time.perf_counter()
    for start in range(0, total, batch):
        rows = [catalog.BatchRow(i + 1, row(n)) for i, n in enumerate(range(start, min(start + batch, total)))]
        with db.session() as session:
            catalog.register_batch(session, rows, actor, source="bench")
    return time.perf_counter() - started


def plain(db: Database, tenant_id: str, total: int, batch: int) -> float:
    now = utcnow()
    started = time.perf_counter()
    for start in range(0, total, batch):
        records = [
            {
                "tenant_id": tenant_id,
                "key": f"99.1/p{n:08d}",
                "handle": f"99.1/P{n:08d}",
                "prefix": "99.1",
                "values": [{"index": 1, "type": "URL", "data": {"format": "string", "value": f"https://e/{n}"}}],
                "template": "part",
                "attributes": row(n)["attributes"],
                "search_text": "",
                "signature": "",
                "version": 1,
                "created_at": now,
                "updated_at": now,
            }
            for n in range(start, min(start + batch, total))
        ]
        with db.session() as session:
            for chunk in range(0, len(records), catalog.INSERT_CHUNK):
                session.execute(insert(Handle), records[chunk : chunk + catalog.INSERT_CHUNK])
    return time.perf_counter() - started


def measure(label: str, url: str, total: int, batch: int) -> list[Result]:
    db = Database(url)
    upgrade(db)
    with db.session() as session:
        tenant = AccessService(session).create_tenant("bench")
        HandleService(session).create_prefix(tenant.id, PREFIX, "bench-secret-1", actor="bench")
        tenant_id = tenant.id
    actor = Principal("apikey", "bench", "bench", tenant_id, Role.ENGINEER)
    seconds = ours(db, actor, total, batch)
    base = plain(db, tenant_id, total, batch)
    with db.session() as session:
        count = session.scalar(text("SELECT COUNT(*) FROM identifiers_handle WHERE prefix = :p"), {"p": PREFIX})
    assert count == total, count
    db.dispose()
    print(f"{label}: {total:,} identifiers in batches of {batch:,}: {seconds:.1f} s ({total / seconds:,.0f}/s)")
    return [
        Result(
            f"bulk_register ({label})",
            f"identifiers/s, {total:,} in batches of {batch:,}",
            total / seconds,
            "plain multi-row INSERT",
            total / base,
            "/s",
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--total", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    results: list[Result] = []
    for label, url in benchmark_databases():
        results += measure(label, url, args.total, args.batch)
    report(results, record=not args.no_record)


if __name__ == "__main__":
    main()
