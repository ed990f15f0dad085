"""Live scoring throughput: samples/s of a 52-variable PCA monitor scoring a device's stream, on one core.

The monitor is fitted on the Tennessee Eastman normal run (d00.dat, 52 variables; a synthetic
52-variable process when the files are absent) and scores a test run repeated, as point batches of
`--batch` samples (52 points each, one series per variable) the way they arrive from the bus: an
in-control stream (the training mean plus small noise: no alarm transition, so the scoring alone),
the normal test run d00_te.dat (about 4% of its samples over the limits, so alarms start in every
block; at most one a second is explained by the variables' contributions, which costs as much as
scoring hundreds of samples), and the fault 1 run d01_te.dat. Timed: the
bus's decode of each batch (the wire codec of `TELEMETRY_POINTS`, as every delivery is decoded) and
the live scorer's whole step (`ScoringRunner.take`: points to samples, complete-sample detection,
numpy scoring, alarm transitions, contributions, and the score batch written back); for the
in-control stream also the scorer alone, given a batch whose column arrays are already made.
Baseline, in the same run: the same scorer fed one sample per batch, as a stream scored sample by
sample would be. BLAS is held to one thread; the CPU time of this process is reported beside the
wall time (the machine is shared).

    .venv/bin/python bench/analytics_live_scoring.py [--samples 100000] [--batch 1000] [--no-record]

Target: 100,000 samples/s per core.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from threadpoolctl import threadpool_limits

from bench import tep
from bench.common import Result, report
from iip.analytics.monitoring import monitor_to_bytes
from iip.analytics.monitoring.pca import PcaMonitor
from iip.analytics.scoring import ScoringRunner
from iip.analytics.service import DeployedVersion
from iip.kernel.runtime import Runtime
from iip.telemetry.public import TELEMETRY_POINTS, PointBatch

TARGET = 100_000
DEVICE = "tep-1"
TENANT = "bench"
START_MS = 1_767_225_600_000


def process_data() -> tuple[np.ndarray, dict[str, np.ndarray], tuple[str, ...], str]:
    """Training rows, the test runs by name, the variables, and where they come from."""
    if tep.available():
        normal = tep.training(0)
        runs = {
            "in-control stream": in_control(normal),
            "normal run": tep.read("d00_te.dat"),
            "fault 1 run": tep.evaluation_run(1),
        }
        return normal, runs, tep.VARIABLES, "TEP"
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(10, 52))
    normal = rng.normal(size=(500, 10)) @ mixing + 0.1 * rng.normal(size=(500, 52))
    test = rng.normal(size=(960, 10)) @ mixing + 0.1 * rng.normal(size=(960, 52))
    fault = test.copy()
    fault[160:, 3] += 2.0
    runs = {"in-control stream": in_control(normal), "normal run": test, "fault run": fault}
    return normal, runs, tuple(f"x{i}" for i in range(52)), "synthetic"


def in_control(normal: np.ndarray) -> np.ndarray:
    """Samples at the training mean plus a hundredth of each variable's spread: never over a limit."""
    rng = np.random.default_rng(1)
    return normal.mean(axis=0) + 0.01 * normal.std(axis=0) * rng.normal(size=(960, normal.shape[1]))


def runner_for(monitor: PcaMonitor) -> ScoringRunner:
    runner = ScoringRunner(Runtime.__new__(Runtime))  # the scoring step needs no database or bus
    sources = [{"variable": v, "device": "", "metric": v} for v in monitor.variables]
    deployed = DeployedVersion(uuid.uuid4().hex, TENANT, DEVICE, "pca", 1, sources, monitor_to_bytes(monitor), "b")
    runner._install([deployed])
    return runner


def batch_of(rows: np.ndarray, first: int, variables: tuple[str, ...]) -> PointBatch:
    n, p = rows.shape
    ts = np.repeat(START_MS + (first + np.arange(n, dtype=np.int64)) * 1000, p)
    return PointBatch.model_construct(
        tenant_id=TENANT,
        series=[(DEVICE, v) for v in variables],
        series_index=np.tile(np.arange(p), n).tolist(),
        ts_ms=ts.tolist(),
        value=rows.reshape(-1).tolist(),
        quality=[0] * (n * p),
        attributes={},
        source="bench",
    )


def run(monitor: PcaMonitor, stream: np.ndarray, samples: int, batch: int, *, decode: bool) -> tuple[float, float, int]:
    """Wall and CPU seconds spent in the scoring step (and decode) for `samples` samples, and alarms raised."""
    activations = 0
    runner = runner_for(monitor)
    wall = cpu = 0.0
    done = 0
    variables = monitor.variables
    while done < samples:
        start = done % stream.shape[0]
        rows = stream[start : start + min(batch, samples - done, stream.shape[0] - start)]
        built = batch_of(rows, done, variables)
        data = TELEMETRY_POINTS.encode(built) if decode else b""
        if not decode:
            built.columns()  # the arrays a decoded frame brings along, made outside the timing
        w, c = time.perf_counter(), time.process_time()
        payload = TELEMETRY_POINTS.decode(data) if decode else built
        outcome = runner.take(payload)
        if outcome is not None:
            outcome.batch()
        wall += time.perf_counter() - w
        cpu += time.process_time() - c
        done += rows.shape[0]
        if outcome is not None:
            activations += sum(1 for e in outcome.events if e.active and e.kind == "model.limit_exceeded")
    [scorer] = runner.scorers.values()
    assert scorer.scored == samples, (scorer.scored, samples)
    return wall, cpu, activations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--baseline-samples", type=int, default=5_000)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    normal, runs, variables, label = process_data()
    results: list[Result] = []
    with threadpool_limits(limits=1):
        monitor = PcaMonitor.fit(normal, variables, false_alarm_rate=0.01)
        print(f"{label}: {monitor.params()}; load average before: {os.getloadavg()}")
        cases = [(name, stream, True) for name, stream in runs.items()]
        cases.append(("in-control stream", runs["in-control stream"], False))
        for name, stream, decode in cases:
            what = f"{name}{', incl. bus wire decode' if decode else ', scorer alone'}"
            ours_wall, ours_cpu, raised = run(monitor, stream, args.samples, args.batch, decode=decode)
            base_wall, base_cpu, _ = run(monitor, stream, args.baseline_samples, 1, decode=decode)
            ours_rate, base_rate = args.samples / ours_wall, args.baseline_samples / base_wall
            print(
                f"{what}: ours {ours_rate:,.0f}/s wall, {args.samples / ours_cpu:,.0f}/s CPU "
                f"({raised} alarm activations); one sample per batch {base_rate:,.0f}/s wall, "
                f"{args.baseline_samples / base_cpu:,.0f}/s CPU"
            )
            results.append(
                Result(
                    f"analytics_live_scoring ({label} {what}, 52 variables, batches of {args.batch})",
                    f"samples/s on one core through the live scorer, wall (CPU time: {args.samples / ours_cpu:,.0f}/s)",
                    ours_rate,
                    "the same scorer, one sample per batch",
                    base_rate,
                    "/s",
                )
            )
    print(f"load average after: {os.getloadavg()}; target {TARGET:,}/s")
    report(results, record=not args.no_record)


if __name__ == "__main__":
    main()
