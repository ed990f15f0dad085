"""Checking an uploaded capture end to end, against the pure decode-and-detect it is built on.

Ours: `ingest.upload(..., check=True)` on a migrated database: the capture decoded once, its summary
and hosts stored (inventory merge), every packet checked against the site's active baseline, the
alerts stored (merged into open ones) with their alarm events, and the audit entries; one commit.
Baseline, measured in the same run: the same capture through `CaptureReader` and `Detector.check`
in memory, nothing stored - the floor the storage is added to. The ratio says what share of the
pure rate survives storage.

    .venv/bin/python bench/security_ingest.py [--repeat 3] [--no-record]
"""

from __future__ import annotations

import argparse
import functools
import io
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Result, benchmark_databases, best_of, report
from iip.kernel.auth import AccessService, Principal, Role
from iip.kernel.db import Database
from iip.migrations.runner import upgrade
from iip.security import ingest
from iip.security.baseline import Baseline, BaselineLearner
from iip.security.capture import CaptureReader
from iip.security.detection import Detector
from iip.security.service import SecurityService

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "ics" / "modbus-attacks"
TRAINING = DATA / "moving_two_files_modbus_6RTU.pcap"
CHECKED = DATA / "send_a_fake_command_modbus_6RTU_with_operate.pcap"


def pure(content: bytes, baseline: Baseline) -> int:
    detector = Detector(baseline)
    reader = CaptureReader(io.BytesIO(content))
    packets = 0
    for packet, messages in reader:
        detector.check(packet, messages)
        packets += 1
    detector.finish()
    return packets


def stored(db: Database, tenant_id: str, content: bytes) -> int:
    actor = Principal("user", "bench", "bench", tenant_id, Role.ENGINEER)
    with db.session() as session:
        result = ingest.upload(SecurityService(session, actor), content, CHECKED.name, site="bench", check=True)
        return result.capture.packets


def prepare(url: str) -> tuple[Database, str]:
    db = Database(url)
    upgrade(db)
    with db.session() as session:
        tenant = AccessService(session).create_tenant("bench")
        actor = Principal("user", "bench", "bench", tenant.id, Role.ENGINEER)
        ingest.upload(SecurityService(session, actor), TRAINING.read_bytes(), TRAINING.name, site="bench", learn=True)
        return db, tenant.id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    if not CHECKED.exists():
        raise SystemExit(f"the data set is not at {DATA}")
    content = CHECKED.read_bytes()
    learner = BaselineLearner()
    for packet, messages in CaptureReader(TRAINING):
        learner.observe(packet, messages)
    baseline = learner.baseline()
    packets = pure(content, baseline)
    floor = packets / best_of(args.repeat, lambda: pure(content, baseline))
    results = []
    for label, url in benchmark_databases():
        db, tenant_id = prepare(url)
        try:
            rate = packets / best_of(args.repeat, functools.partial(stored, db, tenant_id, content))
        finally:
            db.dispose()
        results.append(
            Result(
                f"security ingest check ({label})",
                f"packets/s, {CHECKED.name} ({packets} packets)",
                rate,
                "decode + detect in memory",
                floor,
                "packets/s",
            )
        )
    report(results, record=not args.no_record)


if __name__ == "__main__":
    main()
