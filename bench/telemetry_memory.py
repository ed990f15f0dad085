"""Memory per connected device: the platform process's RSS growth with `--devices` simulated MQTT devices.

`--devices` lightweight devices (2 metrics each, the simulator's load profile) are registered on
SQLite in a temporary directory, then `iip run` starts as a subprocess with
`IIP_DEVICES__MQTT_URL` pointing at a private Mosquitto on a free port, so only the platform's
process is measured. Its RSS (`VmRSS` in /proc/<pid>/status; PSS from smaps_rollup beside it) is
read after start-up, idle with every device registered; then `iip sim run --mqtt-devices N
--connections 0` (one MQTT connection per device, another process) connects the devices, each
publishing at `--rate` messages/s. Once every device has a twin (its connection row is in the
database) and `--messages` messages of each are stored, and `--settle` seconds later, RSS is read
again: (after - before) / devices, against the 10 KB target.

Baseline, measured in the same run: Mosquitto's own RSS growth per connection for the same devices
(the broker holds the sockets and sessions; the platform holds a twin, series and caches).

    .venv/bin/python bench/telemetry_memory.py [--devices 10000] [--rate 0.25] [--messages 3] [--no-record]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text

from bench.common import Result, report
from bench.telemetry_e2e import PrivateMosquitto
from iip.devices.ingest.mqtt import free_port
from iip.devices.service import DeviceRegistry
from iip.kernel.auth import AccessService, Principal, Role
from iip.kernel.db import Database
from iip.migrations.runner import upgrade

TARGET_KB = 10.0
TENANT = "bench"
IIP = str(Path(sys.executable).with_name("iip"))
WAIT_S = 600.0
SIM_SHAPE = ["--pumps", "0", "--meters", "0", "--sensors", "0", "--no-reactor", "--no-line"]
SIM_PORTS = ["--modbus-port", "0", "--opcua-port", "0"]


def status_kb(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for process {pid}")


def pss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise RuntimeError(f"no Pss for process {pid}")


def register(url: str, devices: int) -> None:
    """The simulator's own registry document for its load devices, imported in one transaction."""
    command = [IIP, "sim", "catalog", "--tenant", TENANT, "--mqtt-devices", str(devices), "--format", "json"]
    document = json.loads(subprocess.run([*command, *SIM_SHAPE], capture_output=True, check=True).stdout)
    db = Database(url)
    upgrade(db)
    with db.session() as session:
        tenant = AccessService(session).create_tenant(TENANT)
        actor = Principal("system", "bench", "bench", tenant.id, Role.ADMIN)
        DeviceRegistry(session, actor).import_document(document, tenant_id=tenant.id)
    db.dispose()


def progress(db: Database) -> tuple[int, int]:
    """Devices with a twin online, and points stored."""
    with db.session() as session:
        twins = session.scalar(text("SELECT COUNT(*) FROM telemetry_twin_connection WHERE online"))
        points = session.scalar(text("SELECT COUNT(*) FROM telemetry_point_recent"))
    return int(twins or 0), int(points or 0)


def wait_http(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"iip run ended: {log.read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("iip run did not answer /healthz within 120 s")


def wait_for_twins(
    db: Database, devices: int, wanted: int, processes: dict[str, tuple[subprocess.Popen[bytes], Path]]
) -> None:
    """Until every device has a twin online and `wanted` points are stored; ends if a process does."""
    began = time.perf_counter()
    twins, points = 0, 0
    while twins < devices or points < wanted:
        if time.perf_counter() - began > WAIT_S:
            raise SystemExit(f"after {WAIT_S:.0f} s: {twins:,} twins, {points:,} of {wanted:,} points")
        for name, (process, log) in processes.items():
            if process.poll() is not None:
                raise SystemExit(f"{name} ended: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(1.0)
        twins, points = progress(db)
    print(f"{twins:,} twins and {points:,} points after {time.perf_counter() - began:.1f} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def measure(tmp: Path, devices: int, rate: float, messages: int, settle: float) -> Result:
    url = f"sqlite:///{tmp}/iip.db"
    started = time.perf_counter()
    register(url, devices)
    print(f"registered {devices:,} devices in {time.perf_counter() - started:.1f} s")
    broker_dir = tmp / "broker"
    broker_dir.mkdir()
    broker = PrivateMosquitto(broker_dir, inflight=20)
    port = free_port()
    env = {
        **os.environ,
        "IIP_DATA_DIR": str(tmp / "data"),
        "IIP_DATABASE_URL": url,
        "IIP_DEVICES__MQTT_URL": broker.url,
        "IIP_DEVICES__MQTT_CLIENT_ID": "iip-bench-memory",
        "IIP_LOG_LEVEL": "WARNING",
    }
    platform_log, sim_log = tmp / "platform.log", tmp / "sim.log"
    db = Database(url)
    platform: subprocess.Popen[bytes] | None = None
    sim: subprocess.Popen[bytes] | None = None
    try:
        with platform_log.open("wb") as out:
            platform = subprocess.Popen(
                [IIP, "run", "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT
            )
        wait_http(port, platform, platform_log)
        time.sleep(settle)
        before, before_pss = status_kb(platform.pid), pss_kb(platform.pid)
        broker_before = status_kb(broker.process.pid)
        print(f"idle, {devices:,} registered: RSS {before / 1024:.1f} MB (PSS {before_pss / 1024:.1f} MB)")

        sim_command = [IIP, "sim", "run", "--tenant", TENANT, "--broker", broker.url]
        sim_command += ["--mqtt-devices", str(devices), "--connections", "0", "--rate", str(rate)]
        with sim_log.open("wb") as out:
            sim = subprocess.Popen(
                [*sim_command, *SIM_SHAPE, *SIM_PORTS], env=env, stdout=out, stderr=subprocess.STDOUT
            )
        wait_for_twins(
            db, devices, devices * 2 * messages, {"iip run": (platform, platform_log), "iip sim run": (sim, sim_log)}
        )
        print(f"RSS then {status_kb(platform.pid) / 1024:.1f} MB")
        time.sleep(settle)
        after, after_pss = status_kb(platform.pid), pss_kb(platform.pid)
        broker_after = status_kb(broker.process.pid)
        peak = status_kb(platform.pid, "VmHWM")
    finally:
        for process in (sim, platform):
            if process is not None:
                stop(process)
        broker.stop()
        db.dispose()
    per_device = (after - before) / devices
    per_connection = (broker_after - broker_before) / devices
    print(
        f"connected, {settle:g} s later: RSS {after / 1024:.1f} MB "
        f"(PSS {after_pss / 1024:.1f} MB, peak {peak / 1024:.1f} MB)"
    )
    print(
        f"platform: {per_device:.2f} KB RSS per connected device ({(after_pss - before_pss) / devices:.2f} KB PSS); "
        f"mosquitto: {per_connection:.2f} KB RSS per connection"
    )
    verdict = "met" if per_device <= TARGET_KB else "NOT met"
    print(f"target <= {TARGET_KB:g} KB per device with {devices:,} devices: {verdict}")
    return Result(
        "telemetry_memory",
        f"KB RSS per connected device, {devices:,} MQTT devices",
        per_device,
        "Mosquitto RSS per connection",
        per_connection,
        "KB",
        higher_is_better=False,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=0.25, help="messages/s of each device")
    parser.add_argument("--messages", type=int, default=3, help="messages of each device stored before measuring")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds waited before each reading")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    if args.devices < 1 or args.rate <= 0 or args.messages < 1 or args.settle < 0:
        parser.error("--devices, --rate and --messages must be positive, --settle not negative")
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(Path(tmp), args.devices, args.rate, args.messages, args.settle)
    report([result], record=not args.no_record)


if __name__ == "__main__":
    main()
