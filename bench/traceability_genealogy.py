"""Genealogy and recall at a million events: `genealogy.walk` and `recall` over the repository tables.

Generates `--events` events straight into the tables (Core executemany into a SQLite file under
/tmp, migrated first): bakery batches of three ingredient lots received, mixed into an intermediate
lot, baked into a product lot, serialised into 12 units, packed 4 to a case and 3 cases to a pallet,
shipped and received; and one flour lot that reaches 10,000 units (50 product lots of 200 units, 20
to a case, 10 cases to a pallet, every pallet shipped and received). Event bodies are a stub: the
walk reads only the indexed columns and lookup rows.

Measures, in one run:

- backward genealogy of a random pallet, 5 hops to the ingredient lots: p50 and p95 over `--runs`
  pallets, against (baseline 1) a recursive CTE written plainly over the same tables and (baseline
  2) a walk asking one query per node;
- recall of the flour lot to its full CSV (forward walk, whereabouts of every unit, the CSV bytes),
  best of 3, against the plain recursive CTE that only lists the same identifiers.

Targets: 5-hop p95 <= 100 ms, recall of 10,000 units <= 2 s.

    .venv/bin/python bench/traceability_genealogy.py [--events 1000000] [--runs 200] [--database sqlite:////tmp/g.db]
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from biip.checksums import gs1_standard_check_digit
from sqlalchemy import func, select, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Result, report
from iip.kernel.auth import AccessService, Principal, Role
from iip.kernel.db import Database
from iip.migrations.runner import upgrade
from iip.traceability.genealogy import _hop_edges, walk
from iip.traceability.models import Event, EventEpc, EventLink
from iip.traceability.recall import csv_bytes, recall

CBV = "https://ref.gs1.org/cbv/"
BASE = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def _checked(digits: str) -> str:
    return digits + str(gs1_standard_check_digit(digits))


def gtin_class(item: int, lot: str) -> str:
    return f"https://id.gs1.org/01/{_checked(f'{item:013d}')}/10/{lot}"


def unit(item: int, number: int) -> str:
    return f"https://id.gs1.org/01/{_checked(f'{item:013d}')}/21/{number}"


def sscc(number: int) -> str:
    return f"https://id.gs1.org/00/{_checked(f'{number:017d}')}"


def place(number: int) -> str:
    return f"https://id.gs1.org/414/{_checked(f'{number:012d}')}"


def party(number: int) -> str:
    return f"https://id.gs1.org/417/{_checked(f'{number:012d}')}"


class Generator:
    """Rows for the three tables, with explicit event ids, flushed in batches."""

    def __init__(self, db: Database, tenant_id: str) -> None:
        self.db = db
        self.tenant = tenant_id
        self.events: list[dict[str, Any]] = []
        self.epcs: list[dict[str, Any]] = []
        self.links: list[dict[str, Any]] = []
        self.next_id = 1
        self.count = 0
        self.clock = 0

    def event(
        self,
        kind: str,
        *,
        action: str | None = None,
        step: str | None = None,
        location: int = 1,
        disposition: str | None = None,
    ) -> int:
        pk = self.next_id
        self.next_id += 1
        self.clock += 1
        time_ = BASE + dt.timedelta(seconds=self.clock)
        self.events.append(
            {
                "id": pk,
                "tenant_id": self.tenant,
                "event_id": f"urn:uuid:bench-{pk}",
                "event_hash": f"ni:///sha-256;{pk:064x}?ver=CBV2.0",
                "event_type": kind,
                "event_time": time_,
                "event_time_zone_offset": "+00:00",
                "record_time": time_,
                "action": action,
                "biz_step": CBV + "BizStep-" + step if step else None,
                "disposition": CBV + "Disp-" + disposition if disposition else None,
                "read_point": place(location),
                "biz_location": place(location),
                "capture_job_id": None,
                "body": {"type": kind},
                "context": {},
            }
        )
        self.count += 1
        return pk

    def epc(self, pk: int, role: str, epc: str, quantity: float | None = None, uom: str | None = None) -> None:
        self.epcs.append(
            {"event_id": pk, "tenant_id": self.tenant, "role": role, "epc": epc, "quantity": quantity, "uom": uom}
        )

    def link(self, pk: int, kind: str, link_type: str, value: str) -> None:
        self.links.append({"event_id": pk, "tenant_id": self.tenant, "kind": kind, "type": link_type, "value": value})

    def flush(self, force: bool = False) -> None:
        if not force and len(self.epcs) < 50_000:
            return
        with self.db.engine.begin() as conn:
            if self.events:
                conn.execute(Event.__table__.insert(), self.events)
            if self.epcs:
                conn.execute(EventEpc.__table__.insert(), self.epcs)
            if self.links:
                conn.execute(EventLink.__table__.insert(), self.links)
        self.events, self.epcs, self.links = [], [], []

    # building blocks

    def transformation(self, inputs: list[tuple[str, str]], outputs: list[tuple[str, str]], location: int) -> None:
        pk = self.event("TransformationEvent", step="commissioning", location=location)
        for role, epc in inputs:
            self.epc(pk, role, epc, 10.0 if role.endswith("quantity") else None, "KGM" if role.endswith("y") else None)
        for role, epc in outputs:
            self.epc(pk, role, epc, 100.0 if role.endswith("quantity") else None)

    def pack(self, parent: str, children: list[str], location: int) -> None:
        pk = self.event("AggregationEvent", action="ADD", step="packing", location=location)
        self.epc(pk, "parent", parent)
        for child in children:
            self.epc(pk, "child", child)

    def ship_and_receive(self, epcs: list[str], source: int, destination: int) -> None:
        shipped = self.event(
            "ObjectEvent", action="OBSERVE", step="shipping", location=source, disposition="in_transit"
        )
        for epc in epcs:
            self.epc(shipped, "epc", epc)
        self.link(shipped, "bizTransaction", CBV + "BTT-desadv", f"urn:example:asn:{shipped}")
        self.link(shipped, "destination", CBV + "SDT-owning_party", party(destination))
        self.link(shipped, "destination", CBV + "SDT-location", place(destination))
        received = self.event(
            "ObjectEvent", action="OBSERVE", step="receiving", location=destination, disposition="in_progress"
        )
        for epc in epcs:
            self.epc(received, "epc", epc)


def bakery_batch(gen: Generator, batch: int) -> str:
    """13 events; returns the pallet."""
    ingredients = [gtin_class(100 + i, f"B{batch}") for i in range(3)]
    for lot in ingredients:
        pk = gen.event("ObjectEvent", action="OBSERVE", step="receiving")
        gen.epc(pk, "quantity", lot, 500.0, "KGM")
    intermediate, product = gtin_class(200, f"B{batch}"), gtin_class(300, f"B{batch}")
    gen.transformation(
        [("input_quantity", ingredients[0]), ("input_quantity", ingredients[1])], [("output_quantity", intermediate)], 1
    )
    gen.transformation(
        [("input_quantity", intermediate), ("input_quantity", ingredients[2])], [("output_quantity", product)], 1
    )
    units = [unit(400, batch * 100 + n) for n in range(12)]
    gen.transformation([("input_quantity", product)], [("output", u) for u in units], 1)
    cases = [sscc(batch * 10 + c) for c in range(3)]
    for index, case in enumerate(cases):
        gen.pack(case, units[index * 4 : index * 4 + 4], 1)
    pallet = sscc(10**15 + batch)
    gen.pack(pallet, cases, 1)
    gen.ship_and_receive([pallet], 1, 2 + batch % 50)
    return pallet


def recall_lot(gen: Generator) -> str:
    """The flour lot that reaches 10,000 units."""
    flour = gtin_class(999, "RECALL")
    for lot_number in range(50):
        product = gtin_class(998, f"R{lot_number}")
        gen.transformation([("input_quantity", flour)], [("output_quantity", product)], 1)
        units = [unit(997, lot_number * 1000 + n) for n in range(200)]
        gen.transformation([("input_quantity", product)], [("output", u) for u in units], 1)
        cases = [sscc(5 * 10**14 + lot_number * 100 + c) for c in range(10)]
        for index, case in enumerate(cases):
            gen.pack(case, units[index * 20 : index * 20 + 20], 1)
        pallet = sscc(6 * 10**14 + lot_number)
        gen.pack(pallet, cases, 1)
        gen.ship_and_receive([pallet], 1, 100 + lot_number % 7)
        gen.flush()
    return flour


def generate(db: Database, tenant_id: str, total: int) -> tuple[list[str], str]:
    gen = Generator(db, tenant_id)
    started = time.perf_counter()
    flour = recall_lot(gen)
    pallets: list[str] = []
    batch = 0
    while gen.count < total:
        pallets.append(bakery_batch(gen, batch))
        batch += 1
        gen.flush()
    gen.flush(force=True)
    print(f"generated {gen.count:,} events in {time.perf_counter() - started:.0f} s", flush=True)
    return pallets, flour


# The recursive step names the working table first (CROSS JOIN keeps SQLite from scanning every
# identifier row of the tenant once per step, its plan for a plain JOIN here).
PLAIN_CTE = text(
    """
    WITH RECURSIVE genealogy(epc, depth) AS (
        SELECT :root, 0
        UNION
        SELECT far.epc, genealogy.depth + 1
        FROM genealogy
        CROSS JOIN traceability_event_epc AS near
        JOIN traceability_event AS e
          ON e.id = near.event_id AND e.event_type IN ('TransformationEvent', 'AggregationEvent')
        JOIN traceability_event_epc AS far ON far.event_id = near.event_id AND far.role IN ({far})
        WHERE near.tenant_id = :tenant AND near.epc = genealogy.epc AND near.role IN ({near})
          AND genealogy.depth < 50
    )
    SELECT DISTINCT epc FROM genealogy
    """
)


def plain_cte(direction: str) -> Any:
    product, content = "'output', 'output_quantity', 'parent'", "'input', 'input_quantity', 'child', 'child_quantity'"
    near, far = (product, content) if direction == "backward" else (content, product)
    return text(PLAIN_CTE.text.format(near=near, far=far))


def per_node_walk(db: Database, tenant_id: str, root: str, direction: str) -> int:
    seen, frontier = {root}, [root]
    with db.session() as session:
        while frontier:
            reached = []
            for node in frontier:
                for _edge, far, *_rest in _hop_edges(session, tenant_id, [node], direction):  # type: ignore[arg-type]
                    if far not in seen:
                        seen.add(far)
                        reached.append(far)
            frontier = reached
    return len(seen)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def latencies(runs: int, pick: Callable[[], str], fn: Callable[[str], object]) -> list[float]:
    out = []
    for _ in range(runs):
        root = pick()
        started = time.perf_counter()
        fn(root)
        out.append((time.perf_counter() - started) * 1000)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--database", default="")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    with _database(args.database) as url:
        db = Database(url)
        upgrade(db)
        with db.session() as session:
            tenant = AccessService(session).create_tenant("bench-genealogy")
            tenant_id = tenant.id
        pallets, flour = generate(db, tenant_id, args.events)
        with db.session() as session:
            stored = session.scalar(select(func.count()).select_from(Event))
            rows = session.scalar(select(func.count()).select_from(EventEpc))
        print(f"{stored:,} events, {rows:,} identifier rows", flush=True)
        rng = random.Random(7)

        def ours(root: str) -> None:
            with db.session() as session:
                result = walk(session, tenant_id, root, "backward")
                assert max(n.depth for n in result.nodes) == 5, [(n.id, n.depth) for n in result.nodes]

        def cte(root: str) -> None:
            with db.session() as session:
                session.execute(plain_cte("backward"), {"root": root, "tenant": tenant_id}).all()

        pick = lambda: rng.choice(pallets)  # noqa: E731
        ours(pallets[0])  # warm the caches the same for every contender
        ours_ms = latencies(args.runs, pick, ours)
        cte_ms = latencies(args.runs, pick, cte)
        naive_ms = latencies(args.runs, pick, lambda root: per_node_walk(db, tenant_id, root, "backward"))

        principal = Principal("system", "bench", "bench", tenant_id, Role.ADMIN)

        def recall_csv() -> int:
            with db.session() as session:
                result = recall(session, principal, lot=flour)
                return len(csv_bytes(result.rows)) and len(result.rows)

        affected = recall_csv()
        recall_s = min(_timed(recall_csv) for _ in range(3))
        cte_recall_s = min(_timed(lambda: _cte_forward(db, tenant_id, flour)) for _ in range(3))
        print(f"recall reached {affected:,} identifiers", flush=True)

    results = [
        Result(
            "genealogy 5-hop backward",
            "p50",
            statistics.median(ours_ms),
            "plain recursive CTE",
            statistics.median(cte_ms),
            "ms",
            higher_is_better=False,
        ),
        Result(
            "genealogy 5-hop backward",
            "p95",
            percentile(ours_ms, 0.95),
            "plain recursive CTE",
            percentile(cte_ms, 0.95),
            "ms",
            higher_is_better=False,
        ),
        Result(
            "genealogy 5-hop backward",
            "p95",
            percentile(ours_ms, 0.95),
            "one query per node",
            percentile(naive_ms, 0.95),
            "ms",
            higher_is_better=False,
        ),
        Result(
            f"recall to CSV ({affected:,} identifiers)",
            "best of 3",
            recall_s * 1000,
            "plain recursive CTE, identifiers only",
            cte_recall_s * 1000,
            "ms",
            higher_is_better=False,
        ),
    ]
    report(results, record=not args.no_record)


def _cte_forward(db: Database, tenant_id: str, root: str) -> int:
    with db.session() as session:
        return len(session.execute(plain_cte("forward"), {"root": root, "tenant": tenant_id}).all())


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


class _database:  # noqa: N801 - used as a context manager
    def __init__(self, url: str) -> None:
        self.url = url
        self.tmp: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> str:
        if self.url:
            return self.url
        self.tmp = tempfile.TemporaryDirectory(prefix="genealogy-bench-", dir="/tmp")
        return f"sqlite:///{self.tmp.name}/genealogy.db"

    def __exit__(self, *exc: object) -> None:
        if self.tmp is not None:
            self.tmp.cleanup()


if __name__ == "__main__":
    main()
