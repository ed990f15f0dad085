"""Bulk registration rate: `catalog.register_batch` (all checks, Ed25519 signatures, history, audit,
search index) vs plain multi-row INSERTs of the same handle rows (no checks, no signatures, no history,
no search text).

Registers `--total` identifiers in batches of `--batch`, one transaction per batch, as
`POST /api/identifiers/batch` does, every row signed with the node key; afterwards checks that no
row is unsigned, that a sample of signatures verifies, and that search finds a row. Runs on SQLite,
and on PostgreSQL when IIP_BENCH_POSTGRES_URL is set. The documented run:

    .venv/bin/python bench/bulk_register.py --total 1000000 [--batch 10000] [--no-record]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, insert, select, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Result, benchmark_databases, report
from iip.identifiers import bulk_workers, catalog, signing
from iip.identifiers.bulk_workers import worker_count
from iip.identifiers.models import Handle
from iip.identifiers.service import HandleService
from iip.kernel.auth import AccessService, Principal, Role
from iip.kernel.db import Database, utcnow
from iip.kernel.settings import Settings
from iip.migrations.runner import upgrade

PREFIX = "88.118.8"
SAMPLE = 1000  # signatures verified after the run


def row(n: int, prefix: str = PREFIX) -> dict[str, object]:
    return {
        "handle": f"{prefix}/P{n:08d}",
        "url": f"https://example.com/parts/{n}",
        "values": {"SERIAL": f"SN-{n}"},
        "template": "part",
        "attributes": {"part_number": f"P-{n:08d}", "material": "GCr15", "supplier": "精密轴承厂"},
    }


def worker_cpu_seconds() -> float:
    """CPU time of the bulk worker processes so far (Linux /proc; 0 elsewhere)."""
    pool = bulk_workers._pool
    if pool is None:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    seconds = 0.0
    for pid in pool.pids():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seconds += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return seconds


def ours(db: Database, actor: Principal, total: int, batch: int) -> tuple[float, float, float]:
    """Wall seconds, and CPU seconds of this process and of the workers."""
    cpu, workers = time.process_time(), worker_cpu_seconds()
    started = time.perf_counter()
    for start in range(0, total, batch):
        rows = [catalog.BatchRow(i + 1, row(n)) for i, n in enumerate(range(start, min(start + batch, total)))]
        with db.session() as session:
            catalog.register_batch(session, rows, actor, source="bench")
    wall = time.perf_counter() - started
    return wall, time.process_time() - cpu, worker_cpu_seconds() - workers


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
            for chunk in range(0, len(records), catalog.CHUNK_ROWS):
                session.execute(insert(Handle), records[chunk : chunk + catalog.CHUNK_ROWS])
    return time.perf_counter() - started


def check(db: Database, key: signing.NodeKey, actor: Principal, total: int) -> None:
    """Every row signed, a sample verifying with the node key, and search finding a row."""
    with db.session() as session:
        mine = select(func.count()).select_from(Handle).where(Handle.prefix == PREFIX)
        assert session.scalar(mine) == total
        assert session.scalar(mine.where(Handle.signature == "")) == 0
        picked = [f"{PREFIX}/p{n:08d}" for n in random.sample(range(total), min(SAMPLE, total))]
        for found in session.scalars(select(Handle).where(Handle.key.in_(picked))):
            assert signing.verify_row(key, found).ok, found.handle
        n = total // 2
        query = catalog.SearchQuery(f"P-{n:08d}")
        assert [r.handle for r in catalog.search(session, query, actor).items] == [f"{PREFIX}/P{n:08d}"]


def measure(label: str, url: str, total: int, batch: int, data_dir: Path) -> list[Result]:
    db = Database(url)
    upgrade(db)
    settings = Settings(data_dir=data_dir / label.lower(), database_url=url)
    signing.register(settings, url)
    key = signing.load_node_key(settings, create=True)
    with db.session() as session:
        tenant = AccessService(session).create_tenant("bench")
        HandleService(session).create_prefix(tenant.id, PREFIX, "bench-secret-1", actor="bench")
        tenant_id = tenant.id
    actor = Principal("apikey", "bench", "bench", tenant_id, Role.ENGINEER)
    seconds, cpu, worker_cpu = ours(db, actor, total, batch)
    check(db, key, actor, total)
    base = plain(db, tenant_id, total, batch)
    with db.session() as session:
        count = session.scalar(text("SELECT COUNT(*) FROM identifiers_handle WHERE prefix = '99.1'"))
    assert count == total, count
    db.dispose()
    print(
        f"{label}: {total:,} identifiers in batches of {batch:,}, signed ({worker_count()} workers): "
        f"{seconds:.1f} s ({total / seconds:,.0f}/s); plain INSERT {base:.1f} s ({total / base:,.0f}/s)"
    )
    # CPU time is disturbed less than wall time by other work on the machine.
    print(
        f"{label}: CPU {cpu:.1f} s in this process (admitting, writer thread) + {worker_cpu:.1f} s in "
        f"the workers (checks, encoding, signing) = {(cpu + worker_cpu) / total * 1e6:.0f} µs per identifier; "
        f"load average {os.getloadavg()[0]:.1f} at the end"
    )
    return [
        Result(
            f"bulk_register ({label})",
            f"identifiers/s, {total:,} in batches of {batch:,}, signed",
            total / seconds,
            "plain multi-row INSERT",
            total / base,
            "/s",
        ),
        Result(
            f"bulk_register ({label})",
            f"seconds for {total:,}",
            seconds,
            "plain multi-row INSERT",
            base,
            "s",
            higher_is_better=False,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--total", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as data_dir:
        for label, url in benchmark_databases():
            results += measure(label, url, args.total, args.batch, Path(data_dir))
    report(results, record=not args.no_record)


if __name__ == "__main__":
    main()
