"""The standard event query at a million events: `query.run_query` over the repository tables.

Generates `--events` events straight into the tables (Core executemany into a migrated SQLite file
under /tmp, or `--database`): 1,000 products (GTINs) of 10 lots each, 50 locations, a year of event
times; 65% ObjectEvents of 1-5 serials (10% of all events with 1-3 sensor reports: temperature in
CEL, humidity in %RH), 20% AggregationEvents (an SSCC and 3-10 serials), 10% TransactionEvents
(a purchase order), 5% TransformationEvents (lot to lot, with quantities). Bodies are internal-form
events as capture stores them; lookup rows hold canonical identifiers and CBV web URIs as
`indexing` makes them. The database is then analysed (`ANALYZE`), as a running one is.

Measures p50 and p95 over `--runs` random parameter choices of one page (perPage 30) of:

- by EPC: `MATCH_epc` of one serial (URN, matched canonical);
- by business step and a one-day window of event time, newest first;
- by business location and event type;
- by sensor value: `EQ_type=Temperature&GE_value_CEL=10`;

against the same filter answered from the event bodies alone (JSON functions over every event of
the tenant until the page is full: `json_each` / `json_extract` on SQLite, `json_array_elements` /
`->>` on PostgreSQL), over `--baseline-runs` choices; the first choice of each query is checked to
give the same events both ways. Target: every p95 <= 50 ms.

    .venv/bin/python bench/traceability_query.py [--events 1000000] [--runs 200] [--baseline-runs 5]
        [--database sqlite:////tmp/query-bench.db] [--keep] [--no-record]
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from biip.checksums import gs1_standard_check_digit
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Result, report
from iip.kernel.auth import AccessService
from iip.kernel.db import Database
from iip.migrations.runner import upgrade
from iip.traceability.models import Event, EventEpc, EventLink, SensorReport
from iip.traceability.query import parse_query, run_query

COMPANY = "4012345"
PRODUCTS = 1000
LOTS_PER_PRODUCT = 10
SERIALS_PER_PRODUCT = 1000
LOCATIONS = 50
CBV = "https://ref.gs1.org/cbv/"
GS1_VOC = "https://gs1.org/voc/"
START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
YEAR_SECONDS = 365 * 86400
STEPS = (
    "commissioning",
    "packing",
    "shipping",
    "receiving",
    "storing",
    "picking",
    "loading",
    "unloading",
    "inspecting",
    "accepting",
    "departing",
    "arriving",
)
DISPOSITIONS = ("active", "in_progress", "in_transit", "sellable_accessible", "container_closed")
BATCH = 10_000
PER_PAGE = 30
TEMPERATURE_THRESHOLD = 10.0
TARGET_P95_MS = 50.0


def _checked(digits: str) -> str:
    return digits + str(gs1_standard_check_digit(digits))


@dataclass(frozen=True)
class Names:
    """A product's, lot's, place's identifiers: as written in bodies (URN) and canonical (Digital Link)."""

    gtins: list[str]
    glns: list[str]

    @classmethod
    def make(cls) -> Names:
        gtins = [_checked(f"0{COMPANY}{p:05d}") for p in range(PRODUCTS)]
        glns = [_checked(f"{COMPANY}{n:05d}") for n in range(LOCATIONS)]
        return cls(gtins, glns)

    def serial(self, product: int, serial: int) -> tuple[str, str]:
        return (
            f"urn:epc:id:sgtin:{COMPANY}.0{product:05d}.{serial}",
            f"https://id.gs1.org/01/{self.gtins[product]}/21/{serial}",
        )

    def lot(self, product: int, lot: int) -> tuple[str, str]:
        return (
            f"urn:epc:class:lgtin:{COMPANY}.0{product:05d}.L{lot}",
            f"https://id.gs1.org/01/{self.gtins[product]}/10/L{lot}",
        )

    def place(self, n: int) -> tuple[str, str]:
        return f"urn:epc:id:sgln:{COMPANY}.{n:05d}.0", f"https://id.gs1.org/414/{self.glns[n]}"

    def reader(self, n: int) -> tuple[str, str]:
        return f"urn:epc:id:sgln:{COMPANY}.{n:05d}.1", f"https://id.gs1.org/414/{self.glns[n]}/254/1"

    @staticmethod
    def sscc(number: int) -> tuple[str, str]:
        reference = f"{number:010d}"
        return f"urn:epc:id:sscc:{COMPANY}.{reference}", f"https://id.gs1.org/00/{_checked('0' + COMPANY + reference)}"


NAMES = Names.make()


class Generator:
    """Events and their lookup rows, written in batches."""

    def __init__(self, db: Database, tenant_id: str, seed: int) -> None:
        self.db = db
        self.tenant_id = tenant_id
        self.names = NAMES
        self.rng = random.Random(seed)
        self.events: list[dict[str, Any]] = []
        self.epcs: list[dict[str, Any]] = []
        self.links: list[dict[str, Any]] = []
        self.reports: list[dict[str, Any]] = []
        self.sampled: list[str] = []  # serials events name, for the EPC queries

    def run(self, total: int) -> None:
        for pk in range(1, total + 1):
            self.event(pk)
            if len(self.events) >= BATCH:
                self.flush()
        self.flush()

    def event(self, pk: int) -> None:
        rng, names = self.rng, self.names
        when = START + dt.timedelta(seconds=rng.randrange(YEAR_SECONDS))
        location = rng.randrange(LOCATIONS)
        place, place_id = names.place(location)
        reader, reader_id = names.reader(location)
        product = rng.randrange(PRODUCTS)
        roll = rng.random()
        step = rng.choice(STEPS)
        body: dict[str, Any] = {
            "eventID": f"urn:uuid:00000000-0000-4000-8000-{pk:012d}",
            "eventTime": when.isoformat().replace("+00:00", "Z"),
            "eventTimeZoneOffset": "+00:00",
        }
        epcs: list[tuple[str, str]] = []
        if roll < 0.65:
            serials = [names.serial(product, rng.randrange(SERIALS_PER_PRODUCT)) for _ in range(rng.randint(1, 5))]
            body.update(type="ObjectEvent", action="OBSERVE", epcList=[urn for urn, _ in serials])
            epcs = [("epc", dl) for _, dl in serials]
            if roll < 0.10:
                step = "sensor_reporting"
                body["sensorElementList"] = [self.sensor_element(pk, when)]
        elif roll < 0.85:
            parent, parent_id = names.sscc(pk)
            serials = [names.serial(product, rng.randrange(SERIALS_PER_PRODUCT)) for _ in range(rng.randint(3, 10))]
            step = "packing"
            body.update(type="AggregationEvent", action="ADD", parentID=parent, childEPCs=[u for u, _ in serials])
            epcs = [("parent", parent_id), *(("child", dl) for _, dl in serials)]
        elif roll < 0.95:
            serials = [names.serial(product, rng.randrange(SERIALS_PER_PRODUCT)) for _ in range(rng.randint(1, 5))]
            order = f"urn:epcglobal:cbv:bt:{names.glns[location]}:{pk}"
            body.update(
                type="TransactionEvent",
                action="ADD",
                epcList=[u for u, _ in serials],
                bizTransactionList=[{"type": "po", "bizTransaction": order}],
            )
            epcs = [("epc", dl) for _, dl in serials]
            self.links.append(self.link(pk, "bizTransaction", CBV + "BTT-po", order))
        else:
            source, source_id = names.lot(product, rng.randrange(LOTS_PER_PRODUCT))
            made, made_id = names.lot(rng.randrange(PRODUCTS), rng.randrange(LOTS_PER_PRODUCT))
            step = "commissioning"
            body.update(
                type="TransformationEvent",
                inputQuantityList=[{"epcClass": source, "quantity": 100, "uom": "KGM"}],
                outputQuantityList=[{"epcClass": made, "quantity": 95, "uom": "KGM"}],
            )
            self.epcs.append(self.epc(pk, "input_quantity", source_id, 100.0, "KGM"))
            self.epcs.append(self.epc(pk, "output_quantity", made_id, 95.0, "KGM"))
        disposition = rng.choice(DISPOSITIONS)
        body.update(bizStep=step, disposition=disposition, readPoint={"id": reader}, bizLocation={"id": place})
        self.epcs.extend(self.epc(pk, role, epc) for role, epc in epcs)
        if pk % 97 == 0 and (body.get("epcList") or body.get("childEPCs")):
            self.sampled.append((body.get("epcList") or body["childEPCs"])[0])
        self.events.append(
            {
                "id": pk,
                "tenant_id": self.tenant_id,
                "event_id": body["eventID"],
                "event_hash": f"ni:///sha-256;{pk:064x}?ver=CBV2.0",
                "event_type": body["type"],
                "event_time": when,
                "event_time_zone_offset": "+00:00",
                "record_time": when + dt.timedelta(minutes=rng.randint(1, 120)),
                "action": body.get("action"),
                "biz_step": CBV + "BizStep-" + step,
                "disposition": CBV + "Disp-" + disposition,
                "read_point": reader_id,
                "biz_location": place_id,
                "capture_job_id": None,
                "body": body,
                "context": {},
            }
        )

    def sensor_element(self, pk: int, when: dt.datetime) -> dict[str, Any]:
        reports: list[dict[str, Any]] = []
        for _ in range(self.rng.randint(1, 3)):
            if self.rng.random() < 0.7:
                value, uom, kind = round(self.rng.gauss(5.0, 2.0), 2), "CEL", "Temperature"
            else:
                value, uom, kind = round(self.rng.uniform(30, 90), 1), "A93", "RelativeHumidity"
            reports.append({"type": kind, "value": value, "uom": uom})
            self.reports.append(
                {
                    "event_id": pk,
                    "tenant_id": self.tenant_id,
                    "type": GS1_VOC + kind,
                    "device_id": None,
                    "time": when,
                    "value": value,
                    "min_value": None,
                    "max_value": None,
                    "mean_value": None,
                    "uom": uom,
                    "string_value": None,
                    "boolean_value": None,
                }
            )
        return {"sensorMetadata": {"time": when.isoformat().replace("+00:00", "Z")}, "sensorReport": reports}

    def epc(
        self, pk: int, role: str, epc: str, quantity: float | None = None, uom: str | None = None
    ) -> dict[str, Any]:
        return {"event_id": pk, "tenant_id": self.tenant_id, "role": role, "epc": epc, "quantity": quantity, "uom": uom}

    def link(self, pk: int, kind: str, link_type: str, value: str) -> dict[str, Any]:
        return {"event_id": pk, "tenant_id": self.tenant_id, "kind": kind, "type": link_type, "value": value}

    def flush(self) -> None:
        with self.db.engine.begin() as conn:
            for table, rows in (
                (Event.__table__, self.events),
                (EventEpc.__table__, self.epcs),
                (EventLink.__table__, self.links),
                (SensorReport.__table__, self.reports),
            ):
                if rows:
                    conn.execute(table.insert(), rows)
                    rows.clear()


# --- the queries -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    params: Callable[[random.Random, Sequence[str]], dict[str, str]]  # (random, serials events name)
    baseline: Callable[[str, dict[str, str]], tuple[str, dict[str, Any]]]  # (SQL, bind values) per dialect


def _epc_params(rng: random.Random, serials: Sequence[str]) -> dict[str, str]:
    return {"MATCH_epc": rng.choice(serials)}


def _step_window_params(rng: random.Random, serials: Sequence[str]) -> dict[str, str]:
    day = START + dt.timedelta(days=rng.randrange(364))
    return {
        "EQ_bizStep": rng.choice(STEPS),
        "GE_eventTime": day.isoformat(),
        "LT_eventTime": (day + dt.timedelta(days=1)).isoformat(),
        "orderBy": "eventTime",
    }


def _location_type_params(rng: random.Random, serials: Sequence[str]) -> dict[str, str]:
    return {"EQ_bizLocation": NAMES.place(rng.randrange(LOCATIONS))[0], "eventType": "ObjectEvent"}


def _sensor_params(rng: random.Random, serials: Sequence[str]) -> dict[str, str]:
    return {"EQ_type": "Temperature", "GE_value_CEL": str(TEMPERATURE_THRESHOLD + rng.random())}


# The same filters answered from the bodies: the page's event ids in the query's order.
def _epc_baseline(dialect: str, p: dict[str, str]) -> tuple[str, dict[str, Any]]:
    if dialect == "sqlite":
        contains = (
            "EXISTS (SELECT 1 FROM json_each(e.body, '$.epcList') WHERE value = :epc) OR "
            "EXISTS (SELECT 1 FROM json_each(e.body, '$.childEPCs') WHERE value = :epc)"
        )
    else:
        contains = (
            "EXISTS (SELECT 1 FROM json_array_elements_text(CASE WHEN json_typeof(e.body->'epcList') = 'array' "
            "THEN e.body->'epcList' ELSE '[]' END) v WHERE v = :epc) OR "
            "EXISTS (SELECT 1 FROM json_array_elements_text(CASE WHEN json_typeof(e.body->'childEPCs') = 'array' "
            "THEN e.body->'childEPCs' ELSE '[]' END) v WHERE v = :epc)"
        )
    where = f"e.tenant_id = :tenant AND ({contains})"
    sql = f"SELECT e.id FROM traceability_event e WHERE {where} ORDER BY e.id LIMIT :n"  # noqa: S608 - values bound
    return sql, {"epc": p["MATCH_epc"]}


def _field(dialect: str, *path: str) -> str:
    if dialect == "sqlite":
        return "json_extract(e.body, '$." + ".".join(path) + "')"
    return "e.body" + "".join(f"->'{key}'" for key in path[:-1]) + f"->>'{path[-1]}'"


def _step_window_baseline(dialect: str, p: dict[str, str]) -> tuple[str, dict[str, Any]]:
    time_field = _field(dialect, "eventTime")
    where = f"{_field(dialect, 'bizStep')} = :step AND {time_field} >= :start AND {time_field} < :end"
    order = f"{time_field} DESC, e.id DESC"
    sql = f"SELECT e.id FROM traceability_event e WHERE e.tenant_id = :tenant AND {where} ORDER BY {order} LIMIT :n"  # noqa: S608
    start = dt.datetime.fromisoformat(p["GE_eventTime"]).isoformat().replace("+00:00", "Z")
    end = dt.datetime.fromisoformat(p["LT_eventTime"]).isoformat().replace("+00:00", "Z")
    return sql, {"step": p["EQ_bizStep"], "start": start, "end": end}


def _location_type_baseline(dialect: str, p: dict[str, str]) -> tuple[str, dict[str, Any]]:
    where = f"{_field(dialect, 'bizLocation', 'id')} = :place AND {_field(dialect, 'type')} = :type"
    sql = f"SELECT e.id FROM traceability_event e WHERE e.tenant_id = :tenant AND {where} ORDER BY e.id LIMIT :n"  # noqa: S608
    return sql, {"place": p["EQ_bizLocation"], "type": p["eventType"]}


def _sensor_baseline(dialect: str, p: dict[str, str]) -> tuple[str, dict[str, Any]]:
    if dialect == "sqlite":
        reports = (
            "SELECT 1 FROM json_each(e.body, '$.sensorElementList') el, json_each(el.value, '$.sensorReport') r "
            "WHERE json_extract(r.value, '$.type') = 'Temperature' AND json_extract(r.value, '$.uom') = 'CEL' "
            "AND json_extract(r.value, '$.value') >= :threshold"
        )
    else:
        reports = (
            "SELECT 1 FROM json_array_elements(CASE WHEN json_typeof(e.body->'sensorElementList') = 'array' "
            "THEN e.body->'sensorElementList' ELSE '[]' END) el, json_array_elements(el->'sensorReport') r "
            "WHERE r->>'type' = 'Temperature' AND r->>'uom' = 'CEL' AND (r->>'value')::float >= :threshold"
        )
    where = f"e.tenant_id = :tenant AND EXISTS ({reports})"
    sql = f"SELECT e.id FROM traceability_event e WHERE {where} ORDER BY e.id LIMIT :n"  # noqa: S608 - values bound
    return sql, {"threshold": float(p["GE_value_CEL"])}


CASES = (
    Case("by EPC", _epc_params, _epc_baseline),
    Case("by bizStep + day", _step_window_params, _step_window_baseline),
    Case("by bizLocation + type", _location_type_params, _location_type_baseline),
    Case("by sensor value", _sensor_params, _sensor_baseline),
)


def percentiles(samples: Sequence[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered), p95


def measure(
    db: Database, tenant_id: str, serials: Sequence[str], case: Case, runs: int, baseline_runs: int, seed: int
) -> list[Result]:
    rng = random.Random(seed)
    choices = [case.params(rng, serials) for _ in range(runs)]
    ours: list[float] = []
    first_page: list[int] = []
    for index, params in enumerate(choices):
        with db.sessions() as session:
            started = time.perf_counter()
            page = run_query(session, tenant_id, parse_query(params), None, PER_PAGE)
            ours.append((time.perf_counter() - started) * 1000)
            if index == 0:
                first_page = [event.id for event in page.events]
    dialect = db.backend
    theirs: list[float] = []
    for index, params in enumerate(choices[:baseline_runs]):
        sql, values = case.baseline(dialect, params)
        with db.engine.connect() as conn:
            started = time.perf_counter()
            ids = list(conn.execute(text(sql), {**values, "tenant": tenant_id, "n": PER_PAGE}).scalars())
            theirs.append((time.perf_counter() - started) * 1000)
        if index == 0 and ids != first_page:
            raise SystemExit(f"{case.name}: the baseline found {ids[:5]}..., the query {first_page[:5]}...")
    our_p50, our_p95 = percentiles(ours)
    their_p50, their_p95 = percentiles(theirs)
    verdict = "met" if our_p95 <= TARGET_P95_MS else "MISSED"
    print(
        f"{case.name}: first page {len(first_page)} events; p95 {our_p95:.1f} ms, target {TARGET_P95_MS} ms {verdict}"
    )
    name = f"traceability_query ({dialect}, {db_events(db):,} events)"
    return [
        Result(name, f"{case.name} p50", our_p50, "JSON body scan", their_p50, "ms", higher_is_better=False),
        Result(name, f"{case.name} p95", our_p95, "JSON body scan", their_p95, "ms", higher_is_better=False),
    ]


def db_events(db: Database) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM traceability_event")).scalar_one())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--baseline-runs", type=int, default=5)
    parser.add_argument("--database", default=None, help="a database URL (default: a SQLite file under /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the generated SQLite file")
    parser.add_argument("--seed", type=int, default=20_241_201)
    parser.add_argument("--no-record", action="store_true", help="do not append to docs/benchmarks.md")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="query-bench-", dir="/tmp"))
    url = args.database or f"sqlite:///{folder / 'bench.db'}"
    db = Database(url)
    upgrade(db)
    with db.session() as session:
        tenant_id = AccessService(session).create_tenant(f"bench-{folder.name[-8:]}").id
    started = time.perf_counter()
    generator = Generator(db, tenant_id, args.seed)
    generator.run(args.events)
    with db.engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    print(f"generated and analysed {args.events:,} events in {time.perf_counter() - started:.0f} s ({url})")
    results = [
        r
        for i, case in enumerate(CASES)
        for r in measure(db, tenant_id, generator.sampled, case, args.runs, args.baseline_runs, args.seed + i)
    ]
    report(results, record=not args.no_record)
    db.dispose()
    if not args.keep and args.database is None:
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()


if __name__ == "__main__":
    main()
