"""The wire codec of `telemetry.points`: encode and decode time of one batch, binary frame vs JSON.

A batch of `--samples` samples of `--variables` variables of one device (1,000 x 52 = 52,000
points, the shape of the live scoring benchmark), built as ingest builds them. Ours: the codec of
`TELEMETRY_POINTS` (`iip.telemetry.wire`, ADR 0017); the decode includes every check it makes.
Baseline, in the same run: pydantic JSON, what the bus sent before (`model_dump_json`,
`model_validate_json`). The fastest of `--runs` runs of each is reported.

    .venv/bin/python bench/telemetry_wire.py [--samples 1000] [--variables 52] [--runs 30] [--no-record]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from bench.common import Result, best_of, report
from iip.telemetry.public import TELEMETRY_POINTS, PointBatch, PointBatchBuilder

START_MS = 1_767_225_600_000
PERIOD_MS = 180_000


def make_batch(samples: int, variables: int) -> PointBatch:
    rng = np.random.default_rng(0)
    values = rng.standard_normal((samples, variables)).tolist()
    builder = PointBatchBuilder("bench", source="bench")
    for s, row in enumerate(values):
        for v, value in enumerate(row):
            builder.add("tep-1", f"XMEAS({v + 1})", START_MS + s * PERIOD_MS, value)
    return builder.build()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--variables", type=int, default=52)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    batch = make_batch(args.samples, args.variables)
    frame = TELEMETRY_POINTS.encode(batch)
    json = batch.model_dump_json().encode()
    if TELEMETRY_POINTS.decode(frame) != batch or PointBatch.model_validate_json(json) != batch:
        raise SystemExit("a round trip changed the batch")
    print(f"load average before: {os.getloadavg()}")
    encode_ours = best_of(args.runs, lambda: TELEMETRY_POINTS.encode(batch))
    encode_base = best_of(args.runs, lambda: batch.model_dump_json().encode())
    decode_ours = best_of(args.runs, lambda: TELEMETRY_POINTS.decode(frame))
    decode_base = best_of(args.runs, lambda: PointBatch.model_validate_json(json))
    print(f"load average after: {os.getloadavg()}")
    print(f"{len(batch):,} points: frame {len(frame):,} bytes, JSON {len(json):,} bytes")
    what = f"telemetry_wire ({args.samples:,} samples x {args.variables} variables = {len(batch):,} points)"
    results = [
        Result(what, "encode ms per batch", encode_ours * 1e3, "pydantic JSON", encode_base * 1e3, "ms", False),
        Result(what, "decode ms per batch", decode_ours * 1e3, "pydantic JSON", decode_base * 1e3, "ms", False),
    ]
    report(results, record=not args.no_record)


if __name__ == "__main__":
    main()
