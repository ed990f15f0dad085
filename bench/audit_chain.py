"""Audit log append rate: the hash-chained log vs plain inserts of the same rows (no chain).

The baseline is what an unchained audit table costs on the same database, so the ratio is the price
of tamper evidence. Runs on SQLite always, and on PostgreSQL when IIP_BENCH_POSTGRES_URL is set.

    .venv/bin/python bench/audit_chain.py [--entries 2000] [--no-record]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sqlalchemy import insert, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Result, benchmark_databases, best_of, report
from iip.kernel import audit
from iip.kernel.db import Database, utcnow
from iip.migrations.runner import upgrade


def chained(db: Database, entries: int) -> None:
    # One transaction per entry, as the API does: each state-changing call appends and commits.
    for i in range(entries):
        with db.session() as session:
            audit.append(
                session, "bench:user", audit.AuditRecord(action="POST /api/things", object_id=str(i)), tenant_id="t"
            )


def plain(db: Database, entries: int) -> None:
    table = audit.AuditEntry.__table__
    with db.session() as session:
        start = session.scalar(text("SELECT COALESCE(MAX(seq), 0) FROM kernel_audit_entry")) or 0
    for i in range(entries):
        with db.session() as session:
            session.execute(
                insert(table).values(
                    seq=start + i + 1,
                    at=utcnow(),
                    principal="bench:user",
                    tenant_id="t",
                    action="POST /api/things",
                    object_type="",
                    object_id=str(i),
                    outcome="success",
                    source="",
                    detail="",
                    prev_hash="",
                    hash="",
                )
            )


def measure(label: str, url: str, entries: int) -> list[Result]:
    db = Database(url)
    upgrade(db)
    ours = best_of(3, lambda: chained(db, entries))
    with db.session() as session:
        result = audit.verify(session)
    assert result.ok, result.problem
    with db.session() as session:
        session.execute(text("DELETE FROM kernel_audit_entry"))
    base = best_of(3, lambda: plain(db, entries))
    db.dispose()
    return [
        Result(
            f"audit_chain ({label})",
            "appends/s, one commit each",
            entries / ours,
            "plain INSERT, no chain",
            entries / base,
            "/s",
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=2000)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    results: list[Result] = []
    for label, url in benchmark_databases():
        results += measure(label, url, args.entries)
    report(results, record=not args.no_record)


if __name__ == "__main__":
    main()
