"""End-to-end MQTT ingest: messages/s from a Mosquitto queue into the store and the twins, vs `mosquitto_sub`.

A private Mosquitto (a free port, no persistence, no queue limit) holds `--messages` QoS 1 messages
`{"ts": ms, "values": {"a", "b", "c"}}` on `iip/{tenant}/{device}/telemetry` for `--devices`
registered devices (a 3-metric profile), queued for a persistent session made beforehand (clean
session off, subscribed, disconnected), so publishing speed does not limit what is measured.

Ours: the platform's client id is preloaded so; then the devices lifespan (DB-backed directory,
MQTT ingest) and the telemetry writer (bus -> store + twins) start in this process on a memory bus,
as `iip run` runs them, and the clock runs until every twin shows its device's last values and the
store holds every point (checked by counting rows). CPU seconds of this process and of the broker
are printed beside it.

Baseline, measured in the same run on the same broker, preloaded the same way: `mosquitto_sub -c -q 1
-C <messages>` (C, output to /dev/null) draining its session: what the broker itself delivers to one
subscriber. The target: 20,000 msg/s (60,000 points/s).

    .venv/bin/python bench/telemetry_e2e.py [--messages 200000] [--devices 1000] [--inflight 20] [--no-record]

Runs on SQLite, and on PostgreSQL when IIP_BENCH_POSTGRES_URL is set.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson
from sqlalchemy import text

from bench.common import Result, benchmark_databases, report
from iip.devices.ingest.mqtt import SERVICE_KEY as INGEST_SERVICE
from iip.devices.ingest.mqtt import MqttIngest, free_port
from iip.devices.lifespan import devices_lifespan
from iip.devices.service import DeviceRegistry
from iip.devices.sim.mqtt_devices import connect_packet, publish_packet
from iip.kernel.auth import AccessService, Principal, Role
from iip.kernel.runtime import Runtime
from iip.kernel.settings import DevicesSettings, Settings
from iip.migrations.runner import upgrade
from iip.telemetry.twin import TWINS_SERVICE, TwinRegistry
from iip.telemetry.writer import writer_lifespan

TARGET_MSG_S = 20_000
METRICS = ("a", "b", "c")
TENANT = "bench"
TOPIC_FILTER = "iip/+/+/telemetry"
WAIT_S = 900.0  # give up on a run after this long
POLL_S = 0.05


class PrivateMosquitto:
    """A mosquitto of our own on a free port, its queues in memory and unbounded."""

    def __init__(self, directory: Path, inflight: int) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise SystemExit("the mosquitto binary is required")
        self.port = free_port()
        self.directory = directory
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence false",
            "max_queued_messages 0",  # 0: no limit (the default, 1000, would drop the preload)
            f"max_inflight_messages {inflight}",
            f"log_dest file {directory}/mosquitto.log",
        ]
        if os.geteuid() == 0:
            lines.append("user root")
        config = directory / "mosquitto.conf"
        config.write_text("\n".join(lines) + "\n")
        self.process = subprocess.Popen([binary, "-c", str(config)], stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not _port_open(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"mosquitto did not start: {(directory / 'mosquitto.log').read_text()[-2000:]}")
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@dataclass(frozen=True)
class Stream:
    """The messages to preload, and each device's last (ts, values) the twins must end with."""

    packets: list[bytes]
    last: dict[str, tuple[int, tuple[float, float, float]]]


def device_key(n: int) -> str:
    return f"dev-{n:05d}"


def make_stream(messages: int, devices: int) -> Stream:
    """Message i goes to device i % devices, its k-th, one second after its previous one."""
    start = time.time_ns() // 1_000_000 - (messages // devices + 2) * 1000
    payloads: list[tuple[bytes, bytes]] = []
    last: dict[str, tuple[int, tuple[float, float, float]]] = {}
    for i in range(messages):
        k, d = divmod(i, devices)
        device = device_key(d)
        ts = start + k * 1000
        values = (round(20 + i % 97 * 0.1, 1), float(i % 1000), float(i & 1))
        last[device] = (ts, values)
        body = orjson.dumps({"ts": ts, "values": dict(zip(METRICS, values, strict=True))})
        payloads.append((f"iip/{TENANT}/{device}/telemetry".encode(), body))
    packets = [publish_packet(topic, i % 65535 + 1, body) for i, (topic, body) in enumerate(payloads)]
    return Stream(packets, last)


def make_session(port: int, client_id: str) -> None:
    """A persistent session subscribed at QoS 1, then disconnected: the broker queues for it."""
    subprocess.run(
        ["mosquitto_sub", "-p", str(port), "-i", client_id, "-c", "-q", "1", "-t", TOPIC_FILTER, "-E"],
        check=True,
        timeout=30,
    )


def preload(port: int, stream: Stream, window: int = 20_000) -> None:
    """Publish every packet at QoS 1 over one raw connection, at most `window` unacknowledged."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(connect_packet(f"bench-publisher-{os.getpid()}", 60, None, None))
        if sock.recv(4)[:1] != b"\x20":
            raise SystemExit("the broker refused the publisher")
        acked = 0
        done = threading.Event()

        def count_acks() -> None:
            nonlocal acked
            pending = 0
            while acked < len(stream.packets):
                data = sock.recv(65536)
                if not data:
                    break
                pending += len(data)
                acked += pending // 4  # a PUBACK is 4 bytes; nothing else comes on this connection
                pending %= 4
            done.set()

        reader = threading.Thread(target=count_acks, daemon=True)
        reader.start()
        chunk = 2_000
        for start in range(0, len(stream.packets), chunk):
            while start - acked > window:
                time.sleep(0.001)
            sock.sendall(b"".join(stream.packets[start : start + chunk]))
        if not done.wait(120):
            raise SystemExit(f"only {acked} of {len(stream.packets)} messages acknowledged")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class Drain:
    seconds: float
    cpu: float  # of the consumer
    broker_cpu: float


def drain_with_mosquitto_sub(broker: PrivateMosquitto, stream: Stream) -> Drain:
    client_id = "bench-mosquitto-sub"
    make_session(broker.port, client_id)
    preload(broker.port, stream)
    count = len(stream.packets)
    command = ["mosquitto_sub", "-p", str(broker.port), "-i", client_id, "-c", "-q", "1", "-t", TOPIC_FILTER]
    cpu, broker_cpu = children_cpu(), broker.cpu_seconds()
    started = time.perf_counter()
    subprocess.run([*command, "-C", str(count)], stdout=subprocess.DEVNULL, check=True, timeout=WAIT_S)
    seconds = time.perf_counter() - started
    return Drain(seconds, children_cpu() - cpu, broker.cpu_seconds() - broker_cpu)


def register(runtime: Runtime, devices: int) -> str:
    document = {
        "profiles": [{"name": "bench-3", "protocol": "mqtt", "metrics": [{"name": m} for m in METRICS]}],
        "devices": [{"key": device_key(n), "profile": "bench-3"} for n in range(devices)],
    }
    with runtime.db.session() as session:
        tenant = AccessService(session).create_tenant(TENANT)
        actor = Principal("system", "bench", "bench", tenant.id, Role.ADMIN)
        DeviceRegistry(session, actor).import_document(document, tenant_id=tenant.id)
        return tenant.id


def stored_points(runtime: Runtime) -> int:
    """Points in the store: the recent table and the closed minutes `roll_up` moved out of it."""
    with runtime.db.session() as session:
        return int(
            session.scalar(
                text("SELECT (SELECT COUNT(*) FROM telemetry_point_recent) + (SELECT COUNT(*) FROM telemetry_point)")
            )
            or 0
        )


def twins_caught_up(twins: TwinRegistry, tenant_id: str, stream: Stream) -> bool:
    for device, (ts, values) in stream.last.items():
        twin = twins.cached(tenant_id, device)
        if twin is None:
            return False
        for metric, value in zip(METRICS, values, strict=True):
            state = twin.metrics.get(metric)
            if state is None or state[0] != ts or state[1] != value:
                return False
    return True


async def drain_with_platform(runtime: Runtime, broker: PrivateMosquitto, stream: Stream, tenant_id: str) -> Drain:
    make_session(broker.port, runtime.settings.devices.mqtt_client_id)
    preload(broker.port, stream)
    points = len(stream.packets) * len(METRICS)
    cpu, broker_cpu = time.process_time(), broker.cpu_seconds()
    started = time.perf_counter()
    async with writer_lifespan(runtime), devices_lifespan(runtime, mqtt=True, polling=False):
        twins: TwinRegistry = runtime.services[TWINS_SERVICE]
        ingest: MqttIngest = runtime.services[INGEST_SERVICE]
        deadline = started + WAIT_S
        while not (
            twins_caught_up(twins, tenant_id, stream) and await asyncio.to_thread(stored_points, runtime) == points
        ):
            if time.perf_counter() > deadline:
                stats = ingest.stats
                raise SystemExit(
                    f"not done after {WAIT_S:.0f} s: {stats.messages} messages, {stats.rejected} rejected, "
                    f"{await asyncio.to_thread(stored_points, runtime)} of {points} points stored"
                )
            await asyncio.sleep(POLL_S)
        seconds = time.perf_counter() - started
        spent, broker_spent = time.process_time() - cpu, broker.cpu_seconds() - broker_cpu
        if ingest.stats.rejected:
            raise SystemExit(f"{ingest.stats.rejected} messages rejected")
    return Drain(seconds, spent, broker_spent)


def measure(label: str, url: str, data_dir: Path, stream: Stream, devices: int, inflight: int) -> list[Result]:
    broker_dir = data_dir / f"broker-{label.lower()}"
    broker_dir.mkdir()
    broker = PrivateMosquitto(broker_dir, inflight)
    try:
        base = drain_with_mosquitto_sub(broker, stream)
        settings = Settings(
            data_dir=data_dir / label.lower(),
            database_url=url,
            devices=DevicesSettings(mqtt_url=broker.url, mqtt_client_id="iip-bench-platform"),
        )
        runtime = Runtime.build(settings)
        upgrade(runtime.db)
        tenant_id = register(runtime, devices)
        try:
            ours = asyncio.run(drain_with_platform(runtime, broker, stream, tenant_id))
        finally:
            runtime.db.dispose()
    finally:
        broker.stop()
    messages = len(stream.packets)
    rate, base_rate = messages / ours.seconds, messages / base.seconds
    print(
        f"{label}: {messages:,} messages ({messages * len(METRICS):,} points) from {devices:,} devices, "
        f"broker in-flight window {inflight}"
    )
    print(
        f"  ours: {ours.seconds:.2f} s, {rate:,.0f} msg/s = {rate * len(METRICS):,.0f} points/s into store and twins; "
        f"CPU {ours.cpu:.1f} s in the platform ({ours.cpu / messages * 1e6:.0f} µs/msg), "
        f"{ours.broker_cpu:.1f} s in mosquitto"
    )
    print(
        f"  mosquitto_sub -q 1 > /dev/null: {base.seconds:.2f} s, {base_rate:,.0f} msg/s; "
        f"CPU {base.cpu:.1f} s in mosquitto_sub, {base.broker_cpu:.1f} s in mosquitto"
    )
    verdict = "met" if rate >= TARGET_MSG_S else "NOT met"
    print(
        f"  target {TARGET_MSG_S:,} msg/s ({TARGET_MSG_S * len(METRICS):,} points/s): {verdict}; "
        f"ours / broker alone = {rate / base_rate:.2f}; load average {os.getloadavg()[0]:.1f}"
    )
    return [
        Result(
            f"telemetry_e2e ({label})",
            f"MQTT msg/s into store + twins, 3 points/msg, {devices:,} devices",
            rate,
            "mosquitto_sub -q 1 to /dev/null",
            base_rate,
            "msg/s",
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--devices", type=int, default=1_000)
    parser.add_argument("--inflight", type=int, default=20, help="the broker's max_inflight_messages (its default)")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    if args.messages < 1 or not 1 <= args.devices <= args.messages:
        parser.error("--messages and --devices must be positive, with no more devices than messages")
    stream = make_stream(args.messages, args.devices)
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, url in benchmark_databases():
            results += measure(label, url, Path(tmp), stream, args.devices, args.inflight)
    report(results, record=not args.no_record)


if __name__ == "__main__":
    main()
