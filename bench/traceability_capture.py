"""EPCIS capture rate: `CaptureService.capture` (GS1's JSON Schema, the rules, the CBV 2.0 event hash,
the event row and its lookup rows, the capture job) vs GS1's JSON Schema through `jsonschema` alone.

`--total` events (50,000 by default) are made from the events of GS1's JSON examples in turn (all
five event types, Digital Link and URN identifiers, sensor data, error declarations, persistent
dispositions, extensions), each with its own serials on its SGTINs and SSCCs and its own event time,
and sent as EPCIS documents of `--per-document` events, one capture job and one transaction each,
as `POST /epcis/capture` does. `--mix realistic` (the default) leaves out the five
WithFullCombinationOfFields events, which put every optional field of the standard into one event to
cover the schema; `--mix all` takes them too. Afterwards the repository must hold every event with
its lookup rows. Large documents are prepared in worker processes (`capture_workers`): their CPU
time is printed beside the capturing process's, and on PostgreSQL the CPU time of the server
backend that did the writing (when the server runs on this machine), with the load average before
and after: the 2 cores are shared with the rest of the machine.

Baseline, in the same run: the same documents read and checked with the official JSON Schema by
`jsonschema` (its validator for the schema's draft, as `epcis.validation` uses it), on the first
`--baseline-events` events (it is slow; the rate is what matters).

    .venv/bin/python bench/traceability_capture.py [--total 50000] [--per-document 5000] [--no-record]

PostgreSQL too when IIP_BENCH_POSTGRES_URL names a server (e.g. postgresql+psycopg://postgres@127.0.0.1/postgres).
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import re
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import orjson
from sqlalchemy import func, select
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Result, benchmark_databases, report
from iip.kernel.auth import AccessService, Principal, Role
from iip.kernel.db import Database
from iip.migrations.runner import upgrade
from iip.traceability import capture_workers
from iip.traceability.capture import CaptureService
from iip.traceability.epcis.documents import read_document
from iip.traceability.models import CaptureJob, Event, EventEpc

EXAMPLES = Path(__file__).resolve().parents[2] / "shared/datasets/epcis/gs1/JSON"
SCHEMA = Path(__file__).resolve().parent.parent / "src/iip/traceability/epcis/schemas/EPCIS-JSON-Schema.json"
GS1_CONTEXT = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
START = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)

SGTIN_URN = re.compile(r"(urn:epc:id:sgtin:\d+\.\d+\.)[^.]+")
SGTIN_LINK = re.compile(r"(https?://[^?#]*/01/\d{14}/21/)[^/?#]+")
SSCC_URN = re.compile(r"(urn:epc:id:sscc:\d+\.)(\d+)")
INSTANCE_FIELDS = ("epcList", "childEPCs", "inputEPCList", "outputEPCList")


def templates(mix: str = "realistic") -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The events of GS1's JSON examples, and the extension prefixes they use (one namespace each)."""
    events: list[dict[str, Any]] = []
    prefixes: dict[str, str] = {}
    for path in sorted(EXAMPLES.rglob("*.jsonld")):
        if mix == "realistic" and "WithFullCombinationOfFields" in path.parts:
            continue
        document = read_document(path.read_bytes())
        if any(prefixes.get(p, ns) != ns for p, ns in document.context.items()):
            continue  # a prefix bound to another namespace elsewhere: not mixable in one document
        prefixes.update(document.context)
        for event in document.events:
            events.append({k: v for k, v in event.items() if k != "@context"})
    return events, prefixes


def serial(value: str, n: int) -> str:
    """The identifier with serial n (SGTIN serials; SSCC serial references keep their length)."""
    if SGTIN_URN.fullmatch(value):
        return SGTIN_URN.sub(lambda m: f"{m.group(1)}{n}", value)
    if SGTIN_LINK.match(value):
        return SGTIN_LINK.sub(lambda m: f"{m.group(1)}{n}", value, count=1)
    match = SSCC_URN.fullmatch(value)
    if match and len(match.group(2)) > 6:
        reference = match.group(2)
        return f"{match.group(1)}{reference[:-6]}{n % 1_000_000:06d}"
    return value


def event(template: dict[str, Any], n: int) -> dict[str, Any]:
    made = copy.deepcopy(template)
    made["eventTime"] = (START + dt.timedelta(seconds=n)).isoformat(timespec="milliseconds")
    if "eventID" in made:
        made["eventID"] = f"urn:uuid:{uuid.UUID(int=n)}"
    for name in INSTANCE_FIELDS:
        if isinstance(made.get(name), list):
            made[name] = [serial(v, n * 100 + i) if isinstance(v, str) else v for i, v in enumerate(made[name])]
    if isinstance(made.get("parentID"), str):
        made["parentID"] = serial(made["parentID"], n)
    return made


def documents(total: int, per_document: int, mix: str = "realistic") -> list[bytes]:
    events, prefixes = templates(mix)
    out = []
    for start in range(0, total, per_document):
        body = [event(events[n % len(events)], n) for n in range(start, min(start + per_document, total))]
        document = {
            "@context": [GS1_CONTEXT, prefixes],
            "type": "EPCISDocument",
            "schemaVersion": "2.0",
            "creationDate": "2025-01-01T00:00:00Z",
            "epcisBody": {"eventList": body},
        }
        out.append(orjson.dumps(document))
    return out


def baseline(docs: list[bytes], limit: int) -> tuple[int, float]:
    """Events checked and seconds taken by `jsonschema` with the official schema, whole documents."""
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.validators.validator_for(schema)(schema)
    checked = 0
    started = time.perf_counter()
    for raw in docs:
        document = json.loads(raw)
        events = document["epcisBody"]["eventList"]
        if checked + len(events) > limit:
            document["epcisBody"]["eventList"] = events = events[: max(limit - checked, 1)]
        assert validator.is_valid(document)
        checked += len(events)
        if checked >= limit:
            break
    return checked, time.perf_counter() - started


def cpu_seconds(pids: list[int]) -> float:
    """CPU time of processes so far (Linux /proc; a process gone or elsewhere counts 0)."""
    ticks = os.sysconf("SC_CLK_TCK")
    seconds = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seconds += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return seconds


def worker_cpu_seconds() -> float:
    """CPU time of the capture worker processes so far."""
    pool = capture_workers._pool
    return cpu_seconds(list(pool._processes)) if pool is not None and pool._processes else 0.0


def server_pid(session: Session) -> int | None:
    """The PostgreSQL backend serving the session (its CPU is counted when the server is on this machine)."""
    if session.get_bind().dialect.name != "postgresql":
        return None
    return int(session.connection().exec_driver_sql("SELECT pg_backend_pid()").scalar_one())


def measure(label: str, url: str, docs: list[bytes], total: int) -> float:
    db = Database(url)
    upgrade(db)
    with db.session() as session:
        tenant_id = AccessService(session).create_tenant("bench").id
    actor = Principal("apikey", "bench", "bench", tenant_id, Role.ENGINEER)
    with db.session() as session:  # start the workers outside the measurement, as a running server has them
        CaptureService(session).capture(actor, docs[0])
        session.rollback()
    load_before = os.getloadavg()[0]
    servers: dict[int, float] = {}  # backend pid -> its CPU seconds when first seen
    cpu, workers = time.process_time(), worker_cpu_seconds()
    started = time.perf_counter()
    for raw in docs:
        with db.session() as session:
            pid = server_pid(session)
            if pid is not None and pid not in servers:
                servers[pid] = cpu_seconds([pid])
            job = CaptureService(session).capture(actor, raw)
            assert job.success, job.errors[:3]
    seconds = time.perf_counter() - started
    cpu, workers = time.process_time() - cpu, worker_cpu_seconds() - workers
    server = sum(cpu_seconds([pid]) - before for pid, before in servers.items())
    with db.session() as session:
        stored = session.scalar(select(func.count()).select_from(Event).where(Event.tenant_id == tenant_id))
        epcs = session.scalar(select(func.count()).select_from(EventEpc).where(EventEpc.tenant_id == tenant_id))
        jobs = session.scalar(select(func.count()).select_from(CaptureJob).where(CaptureJob.success.is_(True)))
    assert stored == total, (stored, total)
    assert jobs == len(docs), (jobs, len(docs))
    db.dispose()
    print(
        f"{label}: {total:,} events in {len(docs)} documents: {seconds:.1f} s ({total / seconds:,.0f} events/s), "
        f"CPU {cpu / total * 1e6:.0f} µs per event here + {workers / total * 1e6:.0f} µs in "
        f"{capture_workers.worker_count()} workers"
        + (f" + {server / total * 1e6:.0f} µs in the PostgreSQL server" if servers else "")
        + f", {epcs:,} identifier rows; "
        f"load average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    )
    return total / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total", type=int, default=50_000)
    parser.add_argument("--per-document", type=int, default=5_000)
    parser.add_argument("--baseline-events", type=int, default=3_000)
    parser.add_argument("--mix", choices=("realistic", "all"), default="realistic")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    docs = documents(args.total, args.per_document, args.mix)
    size = sum(len(d) for d in docs)
    print(f"{args.total:,} events in {len(docs)} documents, {size / args.total:,.0f} bytes per event")
    checked, base_seconds = baseline(docs, args.baseline_events)
    base_rate = checked / base_seconds
    print(f"jsonschema: {checked:,} events in {base_seconds:.1f} s ({base_rate:,.0f} events/s)")
    results = []
    for label, url in benchmark_databases():
        rate = measure(label, url, docs, args.total)
        results.append(
            Result(
                f"traceability_capture ({label})",
                f"events/s captured (schema, rules, hash, stored), {args.total:,} in documents of "
                f"{args.per_document:,}, {args.mix} mix",
                rate,
                "official JSON Schema via jsonschema alone",
                base_rate,
                "/s",
            )
        )
    report(results, record=not args.no_record)


if __name__ == "__main__":
    main()
