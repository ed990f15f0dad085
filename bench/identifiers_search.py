"""Product information search at a million identifiers: `catalog.search` as the API and console call it.

Registers `--total` identifiers of the `part` template (bench/identifiers_resolve.py's rows with a
parent product shared by 1,000 parts and a name shared by 5%) unless the database already holds them,
then times each kind of search: selective free text (one part number), free text every row matches,
a prefix, a template, one attribute value, and values shared by 1,000 rows (a product's parts) and by
50,000 (a name), as free text and as attribute. Each is a median over `--runs` searches with random values, one
session each. After registering, the full-text index is optimised, as `iip id import` does after a
bulk load.

Baseline, in the same run: the same question asked as a plain scan, `search_text LIKE '%term%'` (or
the JSON attribute compared row by row), with the same tenant filter, count and first page: what
the search costs without the full-text index.

    .venv/bin/python bench/identifiers_search.py [--total 1000000] [--database sqlite:////tmp/rb/resolve.db]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Result, report
from bench.identifiers_resolve import PREFIX, register, row
from iip.identifiers import catalog
from iip.kernel.auth import Principal, Role
from iip.kernel.db import Database
from iip.migrations.runner import upgrade

TARGET_MS = 10.0  # "answering in milliseconds"
PAGE = 50


LOT_ROWS = 1_000
GRADES = 20  # each grade on 1 row in 20


def search_row(n: int) -> dict[str, object]:
    """bench/identifiers_resolve.py's row, in a product of 1,000 parts and a grade (name) of 5% of all rows."""
    made = row(n)
    attributes = dict(made["attributes"])  # type: ignore[call-overload]
    attributes.update(parent_product=f"{PREFIX}/L{n // LOT_ROWS:05d}", name=f"G{n % GRADES:02d}")
    return {**made, "attributes": attributes}


def median_ms(runs: int, search: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        search()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:  # noqa: PLR0915 - the cases are one list
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--database", default="")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    url = args.database or f"sqlite:///{Path(tempfile.mkdtemp()) / 'search.db'}"
    db = Database(url)
    upgrade(db)
    with db.session() as session:
        tenant_id = session.execute(text("SELECT id FROM kernel_tenant WHERE name = 'bench'")).scalar()
    if tenant_id is None:
        print(f"registering {args.total:,} identifiers", flush=True)
        register(db, args.total, search_row)
        with db.session() as session:
            tenant_id = session.execute(text("SELECT id FROM kernel_tenant WHERE name = 'bench'")).scalar()
            started = time.perf_counter()
            catalog.optimize_search_index(session)
        print(f"  full-text index optimised in {time.perf_counter() - started:.1f} s", flush=True)
    with db.session() as session:
        total = session.execute(text("SELECT count(*) FROM identifiers_handle WHERE prefix = :p"), {"p": PREFIX})
        count = int(total.scalar() or 0)
    actor = Principal("apikey", "bench", "bench", str(tenant_id), Role.ENGINEER)

    def ours(query: Callable[[], catalog.SearchQuery]) -> Callable[[], object]:
        def run() -> object:
            with db.session() as session:
                return catalog.search(session, query(), actor)

        return run

    def scan(where: str, value: Callable[[], str]) -> Callable[[], object]:
        # `where` is one of the fixed conditions below; the values are bound parameters.
        count_sql = text(f"SELECT count(*) FROM identifiers_handle WHERE tenant_id = :t AND {where}")  # noqa: S608
        page_sql = text(
            f"SELECT * FROM identifiers_handle WHERE tenant_id = :t AND {where} ORDER BY key LIMIT {PAGE}"  # noqa: S608
        )

        def run() -> object:
            params = {"t": str(tenant_id), "v": value()}
            with db.session() as session:
                found = session.execute(count_sql, params).scalar()
                session.execute(page_sql, params).all()
                return found

        return run

    def part() -> str:
        return f"P{random.randrange(count):08d}"

    def part_number() -> str:
        return f"P-{random.randrange(count):08d}"

    like = "search_text LIKE '%' || :v || '%'"
    attribute = "json_extract(attributes, '$.part_number') = :v"
    grade_attribute = "json_extract(attributes, '$.name') = :v"

    def lot() -> str:
        return f"L{random.randrange(count // LOT_ROWS):05d}"

    def grade() -> str:
        return f"G{random.randrange(GRADES):02d}"

    kinds: list[tuple[str, Callable[[], object], Callable[[], object]]] = [
        ("free text, one match (a part number)", ours(lambda: catalog.SearchQuery(text=part())), scan(like, part)),
        (
            f"free text every row matches ({count:,})",
            ours(lambda: catalog.SearchQuery(text="GCr15")),
            scan(like, lambda: "GCr15"),
        ),
        (
            f"prefix, every row ({count:,})",
            ours(lambda: catalog.SearchQuery(prefix=PREFIX)),
            scan("prefix = :v", lambda: PREFIX),
        ),
        (
            f"template, every row ({count:,})",
            ours(lambda: catalog.SearchQuery(template="part")),
            scan("template = :v", lambda: "part"),
        ),
        (
            "attribute value, one match",
            ours(lambda: catalog.SearchQuery(attributes={"part_number": part_number()})),
            scan(attribute, part_number),
        ),
        (
            f"free text, one product's parts ({LOT_ROWS:,})",
            ours(lambda: catalog.SearchQuery(text=lot())),
            scan(like, lot),
        ),
        (
            f"free text, one name ({count // GRADES:,} rows)",
            ours(lambda: catalog.SearchQuery(text=grade())),
            scan(like, grade),
        ),
        (
            f"attribute value, one name ({count // GRADES:,})",
            ours(lambda: catalog.SearchQuery(attributes={"name": grade()})),
            scan(grade_attribute, grade),
        ),
    ]
    results: list[Result] = []
    print(f"{count:,} identifiers; median of {args.runs} searches each (count and first page of {PAGE})")
    for label, search, baseline in kinds:
        search()  # warm the page cache for both
        baseline()
        ours_ms = median_ms(args.runs, search)
        base_ms = median_ms(max(3, args.runs // 3), baseline)
        verdict = "met" if ours_ms <= TARGET_MS else "NOT met"
        print(f"  {label:<42} {ours_ms:9.1f} ms   scan {base_ms:9.1f} ms   (target {TARGET_MS:.0f} ms: {verdict})")
        results.append(
            Result(
                "identifiers_search (SQLite)",
                f"median ms, {label}, {count:,} identifiers",
                ours_ms,
                "plain scan (LIKE / JSON compare), same count and page",
                base_ms,
                "ms",
                higher_is_better=False,
            )
        )
    report(results, record=not args.no_record)


if __name__ == "__main__":
    main()
