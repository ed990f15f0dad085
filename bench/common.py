"""Shared benchmark reporting: a table of ours vs the baseline, and a dated row in docs/benchmarks.md."""

from __future__ import annotations

import datetime as dt
import os
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = (
    "| date | benchmark | metric | ours | baseline | baseline value | ratio | machine |\n"
    "|---|---|---|---|---|---|---|---|\n"
)


@dataclass(frozen=True)
class Result:
    """One comparison. `higher_is_better` decides which way the ratio reads."""

    benchmark: str
    metric: str
    ours: float
    baseline_name: str
    baseline: float
    unit: str
    higher_is_better: bool = True

    @property
    def ratio(self) -> float:
        if self.higher_is_better:
            return self.ours / self.baseline if self.baseline else float("inf")
        return self.baseline / self.ours if self.ours else float("inf")


def machine() -> str:
    return f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}"


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def best_of(runs: int, fn: Callable[[], object]) -> float:
    """The fastest of several runs: the least disturbed by the rest of the machine."""
    return min(timed(fn) for _ in range(runs))


def report(results: list[Result], *, record: bool = True) -> None:
    table = Table(title="ratio > 1 means ours is better")
    for column in ("benchmark", "metric", "ours", "baseline", "baseline value", "ratio"):
        table.add_column(column)
    for r in results:
        table.add_row(
            r.benchmark,
            r.metric,
            f"{r.ours:,.1f} {r.unit}",
            r.baseline_name,
            f"{r.baseline:,.1f} {r.unit}",
            f"{r.ratio:.2f}",
        )
    Console(width=160).print(table)
    if not record:
        return
    BENCHMARKS_MD.parent.mkdir(parents=True, exist_ok=True)
    if not BENCHMARKS_MD.exists():
        BENCHMARKS_MD.write_text("# Benchmarks\n\nRows appended by the scripts in `bench/`.\n\n" + HEADER)
    today = dt.date.today().isoformat()
    with BENCHMARKS_MD.open("a") as out:
        for r in results:
            out.write(
                f"| {today} | {r.benchmark} | {r.metric} | {r.ours:,.1f} {r.unit} | {r.baseline_name} | "
                f"{r.baseline:,.1f} {r.unit} | {r.ratio:.2f} | {machine()} |\n"
            )


def benchmark_databases() -> Iterator[tuple[str, str]]:
    """(label, URL) of each database to measure on: a temporary SQLite file, and a temporary
    PostgreSQL database when IIP_BENCH_POSTGRES_URL names a server. Both are removed afterwards."""
    import tempfile
    import uuid

    from sqlalchemy import create_engine, text

    with tempfile.TemporaryDirectory() as tmp:
        yield "SQLite", f"sqlite:///{tmp}/bench.db"
    server = os.environ.get("IIP_BENCH_POSTGRES_URL")
    if not server:
        return
    name = f"iip_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield "PostgreSQL", server.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
