"""The edge agent against a real HTTP server standing in for the platform, and a real MQTT broker.

The stand-in stores points idempotently by (device, metric, timestamp), as the platform does, and
can be told how to answer each request: commit and answer, fail, commit and drop the connection
before answering, refuse the batch, or reject some lines.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import typer
import yaml
from typer.testing import CliRunner

from iip.devices.edge.agent import EdgeAgent, Sink
from iip.devices.edge.cli import edge_app
from iip.devices.edge.config import EdgeConfig, EdgeConfigError, MqttLink, Transport, load_config
from iip.devices.edge.forwarder import Backoff, HttpForwarder, MqttForwarder, SendOutcome
from iip.devices.edge.outbox import Outbox, OutboxBatch, read_counters, read_dead_letters
from tests.cli.conftest import free_port
from tests.services import MQTT_HOST, MQTT_PORT, require_service

WAIT_S = 15.0  # upper bound for anything awaited; normally reached in milliseconds
TOKEN = "gw_test_token"
PROFILE = {
    "name": "press",
    "protocol": "simulated",
    "metrics": [{"name": "temp", "unit": "°C"}, {"name": "speed", "unit": "rpm"}],
}

MODBUS_PROFILE = {
    "name": "meter",
    "protocol": "modbus",
    "metrics": [{"name": "power", "unit": "kW", "modbus": {"address": 0, "data_type": "float32"}}],
}

# --------------------------------------------------------------------------- the stand-in platform


@dataclass
class FakePlatform:
    port: int
    answers: list[str] = field(default_factory=list)  # one per request, then "ok"
    reject_devices: set[str] = field(default_factory=set)
    store: dict[tuple[str, str, int], Any] = field(default_factory=dict)
    writes: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    requests: list[tuple[dict[str, str], list[dict[str, Any]]]] = field(default_factory=list)
    arrival: list[tuple[str, int]] = field(default_factory=list)  # (device, ts) in commit order
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    def _commit(self, lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        errors = []
        for number, line in enumerate(lines, start=1):
            if line["device"] in self.reject_devices:
                errors.append({"line": number, "reason": f"unknown device {line['device']!r}"})
                continue
            self.arrival.append((line["device"], line["ts"]))
            for metric, value in line["values"].items():
                key = (line["device"], metric, line["ts"])
                self.store[key] = value
                self.writes[key] += 1
        return errors

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers["Content-Length"]))
        lines = [json.loads(raw) for raw in body.splitlines() if raw]
        with self.lock:
            self.requests.append((dict(handler.headers.items()), lines))
            mode = self.answers.pop(0) if self.answers else "ok"
            if mode in {"ok", "drop"}:
                errors = self._commit(lines)
        if mode == "drop":  # committed, but the answer never leaves
            handler.close_connection = True
            return
        if mode == "ok":
            points = sum(len(line["values"]) for i, line in enumerate(lines, 1) if i not in {e["line"] for e in errors})
            status, answer = 200, {"accepted": points, "rejected": len(errors), "errors": errors}
        else:
            status = {"fail": 503, "refuse": 422, "too_large": 413, "unauthorized": 401}[mode]
            answer = {"type": "about:blank", "title": mode, "status": status, "detail": f"told to {mode}"}
        data = json.dumps(answer).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json" if status == 200 else "application/problem+json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def start(self) -> FakePlatform:
        platform = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                assert self.path == "/api/telemetry"
                platform.handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def platform() -> Iterator[FakePlatform]:
    fake = FakePlatform(free_port())
    yield fake
    fake.stop()


# --------------------------------------------------------------------------- helpers


def edge_config(tmp_path: Path, url: str, **overrides: Any) -> EdgeConfig:
    values: dict[str, Any] = {
        "platform_url": url,
        "token": TOKEN,
        "outbox": {"path": str(tmp_path / "outbox.db")},
        "batch_size": 50,
        "linger_ms": 5,
        "request_timeout_s": 2,
        "retry_initial_s": 0.02,
        "retry_max_s": 0.1,
        "devices": [{"key": "press-1", "profile": PROFILE}],
    }
    return EdgeConfig.model_validate({**values, **overrides})


def fill(outbox: Outbox, device: str, start_ts: int, n: int) -> None:
    outbox.append(device, [(metric, start_ts + i, float(i), 0) for i in range(n) for metric in ("temp", "speed")])


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {WAIT_S} s for {what}")
        await asyncio.sleep(0.01)


class ScriptedSource:
    """Hands the agent `rounds` readings of two metrics, one round every `interval_s`; records them."""

    def __init__(self, device: str, rounds: int, interval_s: float = 0.002, start_ts: int = 1_700_000_000_000) -> None:
        self.device = device
        self.rounds = rounds
        self.interval_s = interval_s
        self.start_ts = start_ts
        self.produced: list[tuple[str, str, int]] = []
        self.done = False

    async def run(self, sink: Sink) -> None:
        for i in range(self.rounds):
            ts = self.start_ts + i
            batch = [("temp", ts, 20.0 + i, 0), ("speed", ts, float(i), 0)]
            await sink(self.device, batch)
            self.produced += [(self.device, m, ts) for m, *_ in batch]
            await asyncio.sleep(self.interval_s)
        self.done = True


class CountingForwarder:
    def __init__(self, inner: HttpForwarder) -> None:
        self.inner = inner
        self.outcomes: list[SendOutcome] = []

    async def send(self, batch: OutboxBatch) -> SendOutcome:
        outcome = await self.inner.send(batch)
        self.outcomes.append(outcome)
        return outcome

    async def close(self) -> None:
        await self.inner.close()


def write_yaml(path: Path, document: Any) -> Path:
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- configuration


def test_config_takes_profiles_by_name_and_paths_relative_to_itself(tmp_path: Path) -> None:
    folder = tmp_path / "edge"
    folder.mkdir()
    write_yaml(folder / "profiles.yaml", {"profiles": [PROFILE]})
    config_file = write_yaml(
        folder / "edge.yaml",
        {
            "platform_url": "https://iip.example.com/",
            "token": TOKEN,
            "profiles_file": "profiles.yaml",
            "outbox": {"path": "state/outbox.db", "max_points": 1000},
            "devices": [
                {"key": "press-1", "profile": "press", "connection": {"seed": 3}},
                {"key": "press-2", "profile": PROFILE | {"name": "press-inline"}, "token": "dev_token"},
            ],
        },
    )
    config = load_config(config_file)
    assert config.platform_url == "https://iip.example.com"
    assert config.outbox.path == folder / "state" / "outbox.db"
    assert [d.profile.name for d in config.devices] == ["press", "press-inline"]
    assert config.devices[0].connection == {"seed": 3}
    assert config.device_tokens() == {"press-1": TOKEN, "press-2": "dev_token"}
    json_file = folder / "edge.json"
    json_file.write_text(
        json.dumps({"transport": "mqtt", "mqtt": {"url": "mqtt://u:p%40ss@broker:1884", "tenant": "acme"}})
    )
    mqtt = load_config(json_file)
    assert mqtt.transport is Transport.MQTT
    assert mqtt.mqtt is not None
    assert (mqtt.mqtt.host, mqtt.mqtt.port, mqtt.mqtt.username, mqtt.mqtt.password) == ("broker", 1884, "u", "p@ss")
    assert mqtt.mqtt.session_id == "iip-edge-acme"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"token": TOKEN}, "the http transport needs `platform_url`"),
        ({"platform_url": "http://p", "devices": [{"key": "d", "profile": PROFILE}]}, "needs `token` (gateway)"),
        ({"platform_url": "ftp://p", "token": TOKEN}, "platform_url: must be an http:// or https:// URL"),
        ({"transport": "mqtt"}, "needs an `mqtt` section"),
        ({"transport": "mqtt", "mqtt": {"url": "tcp://b", "tenant": "a"}}, "mqtt.url: must be an mqtt://"),
        ({"transport": "mqtt", "mqtt": {"url": "mqtt://b", "tenant": "a/b"}}, "mqtt.tenant: a tenant name cannot"),
        ({"platform_url": "http://p", "token": TOKEN, "devices": [{"key": "d", "profile": "nope"}]}, "unknown profile"),
        ({"platform_url": "http://p", "token": TOKEN, "batchsize": 5}, "batchsize: Extra inputs are not permitted"),
        ({"platform_url": "http://p", "token": TOKEN, "batch_size": 0}, "batch_size: Input should be greater"),
        (
            {"platform_url": "http://p", "token": TOKEN, "devices": [{"key": "d", "profile": PROFILE}] * 2},
            "device keys appear twice: d",
        ),
        (
            {"platform_url": "http://p", "token": TOKEN, "devices": [{"key": "d", "profile": {"name": "x"}}]},
            "devices.0.profile.protocol: Field required",
        ),
        ("- just\n- a list\n", "must be a mapping"),
        ("key: [unclosed\n", "is not valid YAML"),
    ],
)
def test_a_bad_configuration_is_one_readable_line(tmp_path: Path, document: Any, message: str) -> None:
    path = tmp_path / "edge.yaml"
    if isinstance(document, str):
        path.write_text(document)
    else:
        write_yaml(path, document)
    with pytest.raises(EdgeConfigError) as refused:
        load_config(path)
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)


def test_a_bad_profiles_file_names_itself(tmp_path: Path) -> None:
    write_yaml(tmp_path / "profiles.yaml", {"profiles": [PROFILE | {"protocol": "modbus"}]})
    config_file = write_yaml(tmp_path / "edge.yaml", {"platform_url": "http://p", "profiles_file": "profiles.yaml"})
    with pytest.raises(EdgeConfigError, match=r"profiles.yaml: profiles.0: .*needs a `modbus` mapping"):
        load_config(config_file)
    with pytest.raises(EdgeConfigError, match="cannot read the configuration"):
        load_config(tmp_path / "absent.yaml")


# --------------------------------------------------------------------------- back-off


def test_backoff_doubles_up_to_its_cap_with_jitter_in_the_upper_half() -> None:
    low = Backoff(0.5, 4.0, rng=lambda: 0.0)
    high = Backoff(0.5, 4.0, rng=lambda: 1.0)
    assert [low.next_delay() for _ in range(6)] == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    assert [high.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    high.reset()
    assert high.next_delay() == 0.5


# --------------------------------------------------------------------------- HTTP forwarding


async def test_http_sends_one_ndjson_line_per_device_and_timestamp(tmp_path: Path, platform: FakePlatform) -> None:
    platform.start()
    forwarder = HttpForwarder(platform.url, {"press-1": TOKEN, "press-2": TOKEN})
    with Outbox(tmp_path / "o.db") as outbox:
        outbox.append("press-1", [("temp", 1000, 21.5, 0), ("speed", 1000, 1200, 0), ("state", 1000, "RUN", 0)])
        outbox.append("press-2", [("temp", 1000, 30.0, 0), ("running", 1001, True, 0)])
        batch = outbox.read_batch(100)
        assert batch is not None
        outcome = await forwarder.send(batch)
    await forwarder.close()
    assert outcome == SendOutcome(delivered=True)
    [(headers, lines)] = platform.requests
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["Content-Type"] == "application/x-ndjson"
    assert lines == [
        {"device": "press-1", "ts": 1000, "values": {"temp": 21.5, "speed": 1200, "state": "RUN"}},
        {"device": "press-2", "ts": 1000, "values": {"temp": 30.0}},
        {"device": "press-2", "ts": 1001, "values": {"running": True}},
    ]


async def test_http_device_tokens_send_each_device_with_its_own(tmp_path: Path, platform: FakePlatform) -> None:
    platform.start()
    forwarder = HttpForwarder(platform.url, {"a": "tok_a", "b": "tok_b"})
    with Outbox(tmp_path / "o.db") as outbox:
        fill(outbox, "a", 0, 2)
        fill(outbox, "b", 0, 1)
        fill(outbox, "unknown", 0, 1)
        batch = outbox.read_batch(100)
        assert batch is not None
        outcome = await forwarder.send(batch)
    await forwarder.close()
    assert outcome.delivered
    by_token = {headers["Authorization"]: {line["device"] for line in lines} for headers, lines in platform.requests}
    assert by_token == {"Bearer tok_a": {"a"}, "Bearer tok_b": {"b"}}
    # A device with no token at all cannot be sent by anyone: it does not hold up the others.
    [part] = outcome.dead_letters
    assert part.reason == "no token configured for these devices"
    assert len(part.point_ids) == 2
    # With a gateway token, devices without their own (or no longer configured) go with it.
    platform.requests.clear()
    with_gateway = HttpForwarder(platform.url, {"a": "tok_a"}, default_token=TOKEN)
    assert await with_gateway.send(batch) == SendOutcome(delivered=True)
    await with_gateway.close()
    by_token = {headers["Authorization"]: {line["device"] for line in lines} for headers, lines in platform.requests}
    assert by_token == {"Bearer tok_a": {"a"}, f"Bearer {TOKEN}": {"b", "unknown"}}


async def test_http_lines_the_platform_rejects_are_settled_as_rejected(tmp_path: Path, platform: FakePlatform) -> None:
    platform.reject_devices = {"ghost"}
    platform.start()
    forwarder = HttpForwarder(platform.url, {"press-1": TOKEN, "ghost": TOKEN})
    with Outbox(tmp_path / "o.db") as outbox:
        fill(outbox, "press-1", 0, 2)
        fill(outbox, "ghost", 0, 2)
        batch = outbox.read_batch(100)
        assert batch is not None
        outcome = await forwarder.send(batch)
        assert outcome.delivered
        ghost_ids = {p.id for p in batch.points if p.device == "ghost"}
        assert set(outcome.rejected) == ghost_ids
        assert set(outcome.rejected.values()) == {"unknown device 'ghost'"}
        outbox.settle(batch, rejected=outcome.rejected.keys())
        counters = outbox.counters()
    await forwarder.close()
    assert (counters.sent, counters.rejected, counters.pending) == (4, 4, 0)
    assert len(platform.store) == 4


@pytest.mark.parametrize(
    ("answer", "reason"),
    [("fail", "HTTP 503: told to fail"), ("unauthorized", "HTTP 401: told to unauthorized")],
)
async def test_http_failures_keep_the_batch_for_a_retry(
    tmp_path: Path, platform: FakePlatform, answer: str, reason: str
) -> None:
    platform.answers = [answer]
    platform.start()
    forwarder = HttpForwarder(platform.url, {"press-1": TOKEN})
    with Outbox(tmp_path / "o.db") as outbox:
        fill(outbox, "press-1", 0, 3)
        batch = outbox.read_batch(100)
        assert batch is not None
        assert await forwarder.send(batch) == SendOutcome.retry(reason)
        assert (await forwarder.send(batch)).delivered
    await forwarder.close()
    assert len(platform.store) == 6


async def test_http_refused_or_silent_platform_is_a_retry(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as outbox:
        fill(outbox, "press-1", 0, 1)
        batch = outbox.read_batch(100)
    assert batch is not None
    refused = HttpForwarder(f"http://127.0.0.1:{free_port()}", {"press-1": TOKEN}, timeout_s=1)
    assert await refused.send(batch) == SendOutcome.retry("connection refused")
    with socket.socket() as silent:  # accepts, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        hanging = HttpForwarder(f"http://127.0.0.1:{silent.getsockname()[1]}", {"press-1": TOKEN}, timeout_s=0.2)
        assert await hanging.send(batch) == SendOutcome.retry("timed out")
        await hanging.close()


async def test_http_refused_batch_goes_to_dead_letters_and_the_queue_moves_on(
    tmp_path: Path, platform: FakePlatform
) -> None:
    platform.answers = ["refuse"]
    platform.start()
    config = edge_config(tmp_path, platform.url, batch_size=4)
    with Outbox(config.outbox.path) as outbox:
        fill(outbox, "press-1", 0, 4)  # 8 points: the first batch is refused, the second stored
    agent = EdgeAgent(config, sources=[])
    stop = asyncio.Event()
    running = asyncio.create_task(agent.run(stop))
    await until(lambda: len(platform.store) == 4, "the second batch")
    stop.set()
    await running
    counters = read_counters(config.outbox.path)
    assert (counters.dead_lettered, counters.dead_letters, counters.sent, counters.pending) == (4, 1, 4, 0)
    assert sorted(ts for _, _, ts in platform.store) == [2, 2, 3, 3]
    [letter] = read_dead_letters(config.outbox.path)
    assert (letter.reason, letter.points) == ("HTTP 422: told to refuse", 4)
    assert [json.loads(line)["ts"] for line in letter.payload.splitlines()] == [0, 1]


async def test_http_batch_too_large_is_sent_in_halves(tmp_path: Path, platform: FakePlatform) -> None:
    platform.answers = ["too_large"]
    platform.start()
    config = edge_config(tmp_path, platform.url, batch_size=8)
    with Outbox(config.outbox.path) as outbox:
        fill(outbox, "press-1", 0, 4)
    agent = EdgeAgent(config, sources=[])
    stop = asyncio.Event()
    running = asyncio.create_task(agent.run(stop))
    await until(lambda: len(platform.store) == 8, "every point")
    stop.set()
    await running
    sizes = [sum(len(line["values"]) for line in lines) for _, lines in platform.requests]
    assert sizes[:2] == [8, 4]


# --------------------------------------------------------------------------- the agent


async def test_agent_queues_while_the_platform_is_down_then_drains_in_order_once(
    tmp_path: Path, platform: FakePlatform, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="iip.edge")
    config = edge_config(tmp_path, platform.url)
    source = ScriptedSource("press-1", rounds=150)
    forwarder = CountingForwarder(HttpForwarder(platform.url, config.device_tokens(), timeout_s=2))
    agent = EdgeAgent(config, sources=[source], forwarder=forwarder)
    stop = asyncio.Event()
    running = asyncio.create_task(agent.run(stop))
    await until(lambda: source.done and len(forwarder.outcomes) >= 3, "points produced while the platform is down")
    assert agent.outbox.pending == 300
    assert agent.link_up is False
    platform.start()
    await until(lambda: agent.outbox.pending == 0, "the outbox to drain")
    stop.set()
    await running

    assert sorted(platform.store) == sorted(source.produced)
    assert max(platform.writes.values()) == 1
    assert platform.arrival == sorted(platform.arrival)  # oldest first
    assert all(len(lines) <= 25 for _, lines in platform.requests)  # batch_size 50 points = 25 lines
    messages = [r.getMessage() for r in caplog.records]
    retries = sum(not o.delivered for o in forwarder.outcomes)
    assert retries >= 3
    assert sum("link down" in m for m in messages) == 1
    assert sum("link up" in m for m in messages) == 1
    counters = read_counters(config.outbox.path)
    assert (counters.queued, counters.sent, counters.pending) == (300, 300, 0)


async def test_an_answer_lost_after_the_commit_is_resent_without_a_duplicate(
    tmp_path: Path, platform: FakePlatform
) -> None:
    # Committed, then the connection drops, twice in a row (the second on the fresh connection the
    # forwarder opens at once): the batch stays queued and goes again after a back-off.
    platform.answers = ["ok", "drop", "drop"]
    platform.start()
    config = edge_config(tmp_path, platform.url, batch_size=10)
    with Outbox(config.outbox.path) as outbox:
        fill(outbox, "press-1", 0, 10)
    agent = EdgeAgent(config, sources=[])
    stop = asyncio.Event()
    running = asyncio.create_task(agent.run(stop))
    await until(lambda: agent.outbox.pending == 0, "the outbox to drain")
    stop.set()
    await running
    assert len(platform.store) == 20
    # The second batch arrived three times (two lost answers, then one received), stored once.
    assert sorted(Counter(platform.writes.values()).items()) == [(1, 10), (3, 10)]
    assert read_counters(config.outbox.path).sent == 20


async def test_a_stopped_agent_releases_and_checkpoints_its_outbox(tmp_path: Path) -> None:
    config = edge_config(tmp_path, f"http://127.0.0.1:{free_port()}")
    source = ScriptedSource("press-1", rounds=10**6, interval_s=0.001)
    agent = EdgeAgent(config, sources=[source])
    stop = asyncio.Event()
    running = asyncio.create_task(agent.run(stop))
    await until(lambda: len(source.produced) >= 100, "some points")
    stop.set()
    await running
    wal = Path(f"{config.outbox.path}-wal")
    assert not os.path.exists(wal) or os.path.getsize(wal) == 0  # noqa: ASYNC240 - a check after the run
    with Outbox(config.outbox.path) as reopened:  # the lock is free
        # Every reading the source handed over (the sink returned) was committed; a round whose
        # hand-over the stop interrupted may be committed too, never half of it.
        assert reopened.pending - len(source.produced) in {0, 2}


# --------------------------------------------------------------------------- the command line

CLI = typer.Typer()
CLI.add_typer(edge_app, name="edge")


def test_cli_check_status_and_dead_letters(tmp_path: Path) -> None:
    config_file = write_yaml(
        tmp_path / "edge.yaml",
        {"platform_url": "http://127.0.0.1:9", "token": TOKEN, "devices": [{"key": "press-1", "profile": PROFILE}]},
    )
    runner = CliRunner()
    checked = runner.invoke(CLI, ["edge", "check", "--config", str(config_file)])
    assert checked.exit_code == 0, checked.output
    assert "configuration ok: http to http://127.0.0.1:9" in checked.output
    assert "press-1: simulated, profile press, 2 metrics" in checked.output

    missing = runner.invoke(CLI, ["edge", "status", "--config", str(config_file)])
    assert missing.exit_code == 1
    assert "no outbox at" in missing.output

    with Outbox(tmp_path / "edge-outbox.db") as outbox:
        fill(outbox, "press-1", 0, 5)
        batch = outbox.read_batch(4)
        assert batch is not None
        outbox.settle(batch, rejected=[batch.points[0].id])
    shown = runner.invoke(CLI, ["edge", "status", "--config", str(config_file)])
    assert shown.exit_code == 0, shown.output
    assert "pending:        6" in shown.output
    assert "sent:           3" in shown.output
    assert "rejected:       1" in shown.output
    as_json = runner.invoke(CLI, ["edge", "status", "--config", str(config_file), "--json"])
    assert json.loads(as_json.output) | {"oldest_pending_ms": 0} == {
        "outbox": str(tmp_path / "edge-outbox.db"),
        "pending": 6,
        "queued": 10,
        "sent": 3,
        "dropped": 0,
        "rejected": 1,
        "dead_lettered": 0,
        "dead_letters": 0,
        "oldest_pending_ms": 0,
    }
    letters = runner.invoke(CLI, ["edge", "dead-letters", "--config", str(config_file)])
    assert letters.output.strip() == "no dead letters"


@pytest.mark.parametrize(
    ("command", "device", "message"),
    [
        ("run", {"key": "d"}, "devices.0.profile: Field required"),
        (
            "check",
            {"key": "d", "profile": MODBUS_PROFILE, "connection": {"port": 502}},
            "device d: invalid modbus connection: host: Field required",
        ),
        ("run", {"key": "d", "profile": PROFILE | {"protocol": "mqtt"}}, "device d: protocol 'mqtt' has no driver"),
    ],
)
def test_cli_bad_configuration_is_one_line_and_exit_2(
    tmp_path: Path, command: str, device: dict[str, Any], message: str
) -> None:
    config_file = write_yaml(tmp_path / "edge.yaml", {"platform_url": "http://p", "token": TOKEN, "devices": [device]})
    result = CliRunner().invoke(CLI, ["edge", command, "--config", str(config_file)])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ")
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "edge-outbox.db").exists()  # refused before the outbox was created


EDGE_MAIN = "import typer; from iip.devices.edge.cli import edge_app; edge_app()"


def test_cli_run_drains_the_outbox_and_stops_cleanly_on_sigterm(tmp_path: Path, platform: FakePlatform) -> None:
    platform.start()
    config_file = write_yaml(
        tmp_path / "edge.yaml",
        {"platform_url": platform.url, "token": TOKEN, "batch_size": 20, "linger_ms": 0, "devices": []},
    )
    with Outbox(tmp_path / "edge-outbox.db") as outbox:
        fill(outbox, "press-1", 0, 50)
    env = {k: v for k, v in os.environ.items() if not k.startswith("IIP_")}
    agent = subprocess.Popen(
        [sys.executable, "-c", EDGE_MAIN, "run", "--config", str(config_file)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + WAIT_S
        while len(platform.store) < 100 and agent.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        agent.send_signal(signal.SIGTERM)
        _, stderr = agent.communicate(timeout=WAIT_S)
    assert len(platform.store) == 100, stderr
    assert agent.returncode == 0, stderr
    assert "edge agent stopped; 0 points pending" in stderr
    assert "platform link up" in stderr
    counters = read_counters(tmp_path / "edge-outbox.db")
    assert (counters.sent, counters.pending) == (100, 0)


# --------------------------------------------------------------------------- MQTT forwarding


async def test_mqtt_publishes_qos1_per_device_and_timestamp(tmp_path: Path) -> None:
    require_service("Mosquitto", MQTT_HOST, MQTT_PORT)
    tenant = f"edge-{os.getpid()}-{time.monotonic_ns()}"
    link = MqttLink(url=f"mqtt://{MQTT_HOST}:{MQTT_PORT}", tenant=tenant, client_id=f"{tenant}-agent")
    forwarder = MqttForwarder(link, timeout_s=5)
    received: list[tuple[str, dict[str, Any], int]] = []
    async with aiomqtt.Client(MQTT_HOST, MQTT_PORT, identifier=f"{tenant}-watch") as watcher:
        await watcher.subscribe(f"iip/{tenant}/+/telemetry", qos=1)
        with Outbox(tmp_path / "o.db") as outbox:
            fill(outbox, "press-1", 0, 3)
            outbox.append("press-2", [("running", 0, True, 0)])
            batch = outbox.read_batch(100)
            assert batch is not None
            assert await forwarder.send(batch) == SendOutcome(delivered=True)
        await forwarder.close()

        async def collect() -> None:
            async for message in watcher.messages:
                assert isinstance(message.payload, bytes)
                received.append((str(message.topic), json.loads(message.payload), message.qos))
                if len(received) == 4:
                    return

        await asyncio.wait_for(collect(), WAIT_S)
    assert received == [
        (f"iip/{tenant}/press-1/telemetry", {"ts": 0, "values": {"temp": 0.0, "speed": 0.0}}, 1),
        (f"iip/{tenant}/press-1/telemetry", {"ts": 1, "values": {"temp": 1.0, "speed": 1.0}}, 1),
        (f"iip/{tenant}/press-1/telemetry", {"ts": 2, "values": {"temp": 2.0, "speed": 2.0}}, 1),
        (f"iip/{tenant}/press-2/telemetry", {"ts": 0, "values": {"running": True}}, 1),
    ]


async def test_mqtt_unreachable_broker_is_a_retry(tmp_path: Path) -> None:
    link = MqttLink(url=f"mqtt://127.0.0.1:{free_port()}", tenant="acme")
    forwarder = MqttForwarder(link, timeout_s=1)
    with Outbox(tmp_path / "o.db") as outbox:
        fill(outbox, "press-1", 0, 1)
        batch = outbox.read_batch(100)
    assert batch is not None
    outcome = await forwarder.send(batch)
    assert not outcome.delivered
    assert outcome.reason.startswith(f"broker 127.0.0.1:{link.port}: ")
    await forwarder.close()
