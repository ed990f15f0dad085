"""End to end: the platform is SIGKILLed while the edge agent forwards to it, and restarted; every
point the agent produced is in the telemetry store exactly once.

The platform is the real `iip run` on a SQLite file; the agent polls two simulated devices through
the real drivers and posts to `/api/telemetry` with a gateway token issued through the API.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from iip.cli.app import app as iip_app
from iip.devices.edge.agent import DriverSource, EdgeAgent, Sink
from iip.devices.edge.config import load_config
from iip.devices.edge.outbox import read_counters
from tests.cli.conftest import IIP, free_port, outer_environment

STARTUP_LIMIT_S = 120.0
WAIT_S = 60.0
TENANT = "edge-plant"
DEVICES: list[dict[str, Any]] = [
    {"key": "press-1", "profile": "press", "gateway": "gw-line-1", "connection": {"seed": 1}},
    {"key": "press-2", "profile": "press", "gateway": "gw-line-1", "connection": {"seed": 2}},
]
REGISTRY: dict[str, Any] = {
    "profiles": [
        {
            "name": "press",
            "protocol": "simulated",
            "poll_interval_s": 0.02,
            "metrics": [
                {"name": "temp", "unit": "°C"},
                {"name": "pressure", "unit": "bar"},
                {"name": "speed", "unit": "rpm"},
            ],
        }
    ],
    "gateways": [{"key": "gw-line-1", "name": "line 1"}],
    "devices": DEVICES,
}

pytestmark = pytest.mark.slow


class RecordingSource:
    """A device's driver runner that records what it handed to the outbox, and can stop producing.

    After `stop_producing` is set its readings are discarded before the outbox, so the record is
    exactly what was committed: a hand-over is never cut short by a cancellation.
    """

    def __init__(self, inner: DriverSource, stop_producing: asyncio.Event) -> None:
        self.inner = inner
        self.stop_producing = stop_producing
        self.produced: list[tuple[str, str, int, float]] = []

    async def run(self, sink: Sink) -> None:
        async def recording(device: str, readings: Any) -> None:
            if self.stop_producing.is_set():
                return
            await sink(device, readings)
            self.produced += [(device, r.metric, r.ts_ms, r.value) for r in readings]

        await self.inner.run(recording)


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def start_platform(workdir: Path, env: dict[str, str], port: int, name: str) -> subprocess.Popen[bytes]:
    """`iip run` on `port`, returned once /healthz answers (blocking: run it in a thread)."""
    log = workdir / f"{name}.err"
    with log.open("wb") as err:
        process = subprocess.Popen(
            [str(IIP), "run", "--port", str(port)], cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=err
        )
    deadline = time.monotonic() + STARTUP_LIMIT_S
    while not healthy(port):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_platform(process)
            pytest.fail(f"iip run did not come up ({process.poll()}): {log.read_text()[-2000:]}")
        time.sleep(0.1)
    return process


def stop_platform(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def api(port: int, method: str, path: str, key: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", method=method, headers={"Authorization": f"Bearer {key}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - an http:// URL we built
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def stored_points(db_url: str) -> list[tuple[str, str, int, float]]:
    """Every stored point of the tenant, from both tables of the store (a point in both would show twice)."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT s.device, s.metric, p.ts, p.value FROM telemetry_series s JOIN ("
                    " SELECT series_id, ts, value FROM telemetry_point"
                    " UNION ALL SELECT series_id, ts, value FROM telemetry_point_recent"
                    ") p ON p.series_id = s.id"
                )
            ).all()
    finally:
        engine.dispose()
    return [(device, metric, ts, value) for device, metric, ts, value in rows]


async def until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {WAIT_S} s for {what}")
        await asyncio.sleep(0.02)


async def test_platform_killed_mid_stream_and_restarted_stores_every_point_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db_url = f"sqlite:///{tmp_path / 'iip.db'}"
    settings_env = {
        "IIP_DATA_DIR": str(tmp_path / "var"),
        "IIP_DATABASE_URL": db_url,
        "IIP_LOG_FORMAT": "text",
        "IIP_DEVICES__EMBEDDED_BROKER_PORT": str(free_port()),
    }
    env = {**outer_environment(), **settings_env}
    for name, value in settings_env.items():
        monkeypatch.setenv(name, value)

    # The registry, through the CLI: schema, tenant, an API key, profiles, the gateway and its devices.
    registry_file = tmp_path / "registry.yaml"
    registry_file.write_text(yaml.safe_dump(REGISTRY, allow_unicode=True), encoding="utf-8")
    cli = CliRunner()
    for args in (["db", "upgrade"], ["tenant", "create", TENANT]):
        result = cli.invoke(iip_app, args)
        assert result.exit_code == 0, result.output
    created = cli.invoke(iip_app, ["apikey", "create", "--tenant", TENANT, "--role", "admin"])
    assert created.exit_code == 0, created.output
    api_key = created.stdout.strip().splitlines()[-1]
    imported = cli.invoke(iip_app, ["devices", "import", str(registry_file), "--tenant", TENANT])
    assert imported.exit_code == 0, imported.output

    port = free_port()
    first = await asyncio.to_thread(start_platform, tmp_path, env, port, "first")
    second: subprocess.Popen[bytes] | None = None
    stop = asyncio.Event()
    try:
        gateway_token = (await asyncio.to_thread(api, port, "POST", "/api/gateways/gw-line-1/token", api_key))["token"]
        config_file = tmp_path / "edge.yaml"
        config_file.write_text(
            yaml.safe_dump(
                {
                    "platform_url": f"http://127.0.0.1:{port}",
                    "token": gateway_token,
                    "profiles_file": "registry.yaml",  # the registry document holds the profiles too
                    "batch_size": 100,
                    "linger_ms": 20,
                    "request_timeout_s": 2,
                    "retry_initial_s": 0.05,
                    "retry_max_s": 0.5,
                    "devices": [
                        {"key": d["key"], "profile": d["profile"], "connection": d["connection"]} for d in DEVICES
                    ],
                }
            )
        )
        config = load_config(config_file)
        stop_producing = asyncio.Event()
        sources = [RecordingSource(DriverSource(device), stop_producing) for device in config.devices]
        agent = EdgeAgent(config, sources=sources)
        running = asyncio.create_task(agent.run(stop))

        def sent() -> int:
            return read_counters(config.outbox.path).sent

        await until(lambda: sent() >= 300, "points forwarded to the first platform")
        first.send_signal(signal.SIGKILL)  # mid-stream: the agent posts a batch every ~20 ms
        await asyncio.to_thread(first.wait)
        pending_at_kill = agent.outbox.pending
        await until(lambda: agent.link_up is False and agent.outbox.pending >= pending_at_kill + 200, "points queued")

        # The agent keeps polling and queueing while the platform starts again.
        second = await asyncio.to_thread(start_platform, tmp_path, env, port, "second")
        await until(lambda: agent.link_up is True, "the link to come back")
        sent_after_restart = sent()
        await until(lambda: sent() >= sent_after_restart + 300, "more points forwarded after the restart")
        stop_producing.set()
        await until(lambda: agent.outbox.pending == 0, "the outbox to drain")
        stop.set()
        await running
    finally:
        stop.set()
        await asyncio.to_thread(stop_platform, first)
        if second is not None:
            await asyncio.to_thread(stop_platform, second)

    produced = [point for source in sources for point in source.produced]
    stored = stored_points(db_url)
    counts = Counter((device, metric, ts) for device, metric, ts, _ in stored)
    assert max(counts.values()) == 1, "a point is stored twice"
    # A series holds one value per millisecond: two polls within one (a loaded machine) share a key,
    # and the store keeps one of their values. Every key produced is stored, with a value produced for it.
    produced_values: dict[tuple[str, str, int], set[float]] = {}
    for device, metric, ts, value in produced:
        produced_values.setdefault((device, metric, ts), set()).add(value)
    assert sorted(counts) == sorted(produced_values)
    assert all(value in produced_values[(device, metric, ts)] for device, metric, ts, value in stored)
    counters = read_counters(config.outbox.path)
    assert counters.queued == counters.sent == len(produced)
    assert (counters.dropped, counters.rejected, counters.dead_lettered) == (0, 0, 0)
