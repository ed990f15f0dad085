"""Resolution over HTTP: `GET /api/handles/{prefix}/{suffix}` served by IIP vs the same JSON bodies
served by nginx as static files, both with the same number of worker processes on loopback.

Registers `--total` identifiers (bulk path, signed as any write), starts `iip run --workers N`, fetches
the bodies of `--sample` random handles from IIP itself and writes them under nginx's root at the
same paths, so both servers answer byte-identical bodies. `wrk` (keep-alive, a Lua script picking a
random path of the sample per request) then measures:

- peak throughput of each server: the best of several connection counts;
- latency at half of IIP's peak rate, for both servers: wrk has no rate control, so each of `C`
  connections waits a random think time before each request (`delay()` in the script), exponentially
  distributed with a mean of `--think` ms, `C` chosen so the offered rate is half of IIP's peak; the
  achieved rate is printed beside the percentiles. Random think times spread the requests as
  independent clients would: with a fixed one the connections stay in step and their requests
  arrive in bursts of `C` at once, a momentary overload rather than half the peak rate (with
  `--fixed-think`, the p99 measured is mostly the time to work through such a burst). This is a
  paced closed loop, not an open loop: a slow answer delays that connection's next request, which
  understates tail latency only when answers take a noticeable part of the think time. Each
  server gets `--repeats` paced runs (alternating), and the run with the median p99 is reported.

Needs `wrk` and `nginx` (Debian packages). Runs on SQLite, and on PostgreSQL when
IIP_BENCH_POSTGRES_URL is set.

    .venv/bin/python bench/identifiers_resolve.py [--total 1000000] [--sample 100000] [--workers 2]
        [--server granian|uvicorn]
        [--database sqlite:///var/resolve-bench.db] [--no-record]
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Result, benchmark_databases, report
from iip.identifiers import catalog
from iip.identifiers.service import HandleService
from iip.kernel.auth import AccessService, Principal, Role
from iip.kernel.db import Database
from iip.migrations.runner import upgrade

PREFIX = "88.118.8"
BATCH = 10_000
IIP = Path(sys.executable).with_name("iip")
WRK = shutil.which("wrk") or "/usr/bin/wrk"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
TARGET_RATIO = 0.40
TARGET_P99_MS = 5.0

NGINX_CONF = """worker_processes {workers};
error_log {root}/error.log warn;
pid {root}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    default_type application/json;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    open_file_cache max=4096 inactive=60s;  # below the open-files limit of a worker
    client_body_temp_path {root}/tmp;
    proxy_temp_path {root}/tmp;
    fastcgi_temp_path {root}/tmp;
    uwsgi_temp_path {root}/tmp;
    scgi_temp_path {root}/tmp;
    server {{
        listen 127.0.0.1:{port};
        root {root}/html;
    }}
}}
"""

WRK_SCRIPT = """
local paths = {}
for line in io.lines("%(paths)s") do paths[#paths + 1] = line end
math.randomseed(os.time())
request = function()
    return wrk.format("GET", paths[math.random(#paths)])
end
%(delay)s
"""


def row(n: int) -> dict[str, object]:
    return {
        "handle": f"{PREFIX}/P{n:08d}",
        "url": f"https://example.com/parts/{n}",
        "values": {"SERIAL": f"SN-{n}"},
        "template": "part",
        "attributes": {"part_number": f"P-{n:08d}", "material": "GCr15", "supplier": "精密轴承厂"},
    }


def register(db: Database, total: int, make_row: Callable[[int], dict[str, object]] = row) -> None:
    with db.session() as session:
        tenant = AccessService(session).create_tenant("bench")
        HandleService(session).create_prefix(tenant.id, PREFIX, "bench-secret-1", actor="bench")
        tenant_id = tenant.id
    actor = Principal("apikey", "bench", "bench", tenant_id, Role.ENGINEER)
    started = time.perf_counter()
    for start in range(0, total, BATCH):
        rows = [catalog.BatchRow(i + 1, make_row(n)) for i, n in enumerate(range(start, min(start + BATCH, total)))]
        with db.session() as session:
            catalog.register_batch(session, rows, actor, source="bench")
        if (start // BATCH) % 20 == 19:
            print(f"  {start + BATCH:,} registered", flush=True)
    print(f"  {total:,} identifiers registered in {time.perf_counter() - started:.0f} s", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(port: int, path: str, process: subprocess.Popen[bytes], seconds: float = 600) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status < 500:
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"no answer on port {port}")


@contextmanager
def running(command: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield process
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def fetch_bodies(port: int, paths: list[str], html: Path, connections: int = 8) -> None:
    """Each sampled body as IIP answers it, stored where nginx serves the same path."""
    with ThreadPoolExecutor(connections) as pool:
        list(pool.map(lambda part: _fetch(port, part, html), [paths[i::connections] for i in range(connections)]))


def _fetch(port: int, paths: list[str], html: Path) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    for path in paths:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"{path}: {response.status} {body[:200]!r}")
        target = html / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)


@dataclass(frozen=True)
class Run:
    connections: int
    rate: float  # requests/s
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us: float  # server CPU time per request, all its processes: robust to other load on the machine


TICK = os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(group: int) -> float:
    """User + system CPU time of every process in a process group (the server and its workers)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group:  # pgrp
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICK


UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip()).groups()  # type: ignore[union-attr]
    return float(number) * UNITS[unit]


def wrk(server: Server, script: Path, connections: int, seconds: int, threads: int) -> Run:
    command = [WRK, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script)]
    cpu = group_cpu_seconds(server.group)
    url = f"http://127.0.0.1:{server.port}"
    out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    cpu = group_cpu_seconds(server.group) - cpu
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors += int(non_2xx.group(1)) if non_2xx else 0
    return Run(connections, rate, p50, p99, errors, cpu / max(requests, 1) * 1e6)


def write_script(tmp: Path, paths_file: Path, name: str, think_ms: int = 0, *, fixed: bool = False) -> Path:
    if not think_ms:
        delay = ""
    elif fixed:
        delay = f"delay = function() return {think_ms} end"
    else:  # exponential, mean think_ms; wrk takes whole milliseconds
        delay = f"delay = function() return math.floor(-{think_ms} * math.log(1 - math.random()) + 0.5) end"
    script = tmp / name
    script.write_text(WRK_SCRIPT % {"paths": paths_file, "delay": delay})
    return script


@dataclass(frozen=True)
class Server:
    label: str
    port: int
    group: int  # process group: the server and its workers


def show(server: Server, what: str, run: Run) -> None:
    print(
        f"  {server.label:5} {what:<22} {run.rate:>9,.0f}/s  p50 {run.p50_ms:6.2f} ms  p99 {run.p99_ms:6.2f} ms  "
        f"server CPU {run.cpu_us:6.1f} us/request  errors {run.errors}",
        flush=True,
    )


def peak(server: Server, script: Path, args: argparse.Namespace) -> Run:
    wrk(server, script, 16, 3, args.threads)  # warm-up: connections, caches, pages of the database
    runs = [wrk(server, script, c, args.duration, args.threads) for c in args.connections]
    for run in runs:
        show(server, f"c={run.connections}", run)
    return max(runs, key=lambda r: r.rate)


def paced(server: Server, script: Path, connections: int, args: argparse.Namespace) -> Run:
    run = wrk(server, script, connections, args.duration, args.threads)
    show(server, f"c={connections} {'fixed' if args.fixed_think else 'random'} think {args.think} ms", run)
    return run


def at_half_rate(ours: Server, base: Server, script: Path, half: float, args: argparse.Namespace) -> tuple[Run, Run]:
    """Both servers under C connections, each waiting `think` ms on average before each request.

    A connection's cycle is the think time plus the answer's, so C is raised once when the rate IIP
    achieves falls short of `half` by more than 3%; nginx then gets the same C. Each server is then
    run `--repeats` times, alternately, and the run with the median p99 stands for it: a single
    10 s run's p99 moves by a few milliseconds with whatever else the machine does.
    """
    connections = max(1, round(half * args.think / 1000))
    trial = paced(ours, script, connections, args)
    ours_runs, base_runs = [trial], []
    if trial.rate < 0.97 * half:
        connections = round(connections * half / trial.rate)
        ours_runs = []
    for _ in range(args.repeats):
        if len(ours_runs) < args.repeats:
            ours_runs.append(paced(ours, script, connections, args))
        base_runs.append(paced(base, script, connections, args))
    return median_run(ours, ours_runs), median_run(base, base_runs)


def median_run(server: Server, runs: list[Run]) -> Run:
    """The run with the median p99 (the errors of all of them)."""
    middle = sorted(runs, key=lambda r: r.p99_ms)[(len(runs) - 1) // 2]
    if len(runs) > 1:
        spread = ", ".join(f"{r.p99_ms:.2f}" for r in runs)
        print(f"  {server.label:5} p99 of the {len(runs)} paced runs: {spread} ms; median {middle.p99_ms:.2f} ms")
    return replace(middle, errors=sum(r.errors for r in runs))


def prepare(url: str, total: int) -> None:
    """Migrate, and register the identifiers unless an earlier run left them (`--database`)."""
    db = Database(url)
    upgrade(db)
    with db.session() as session:
        count = session.scalar(text("SELECT COUNT(*) FROM identifiers_handle WHERE prefix = :p"), {"p": PREFIX})
    if count == 0:
        print(f"registering {total:,} identifiers", flush=True)
        register(db, total)
    elif count != total:
        raise SystemExit(f"the database holds {count:,} identifiers under {PREFIX}, not {total:,}")
    db.dispose()


def measure(label: str, url: str, args: argparse.Namespace) -> list[Result]:
    print(f"{label}:", flush=True)
    prepare(url, args.total)
    with tempfile.TemporaryDirectory(prefix="iip-resolve-") as tmp_text:
        tmp = Path(tmp_text)
        tmp.chmod(0o755)  # nginx's workers run as an unprivileged user and must read the files
        (tmp / "tmp").mkdir()
        html = tmp / "html"
        iip_port, nginx_port = free_port(), free_port()
        env = {
            **os.environ,
            "IIP_DATABASE_URL": url,
            "IIP_DATA_DIR": str(tmp / "var"),
            "IIP_LOG_LEVEL": args.log_level,
        }
        command = [str(IIP), "run", "--server", args.server, "--workers", str(args.workers), "--port", str(iip_port)]
        with running(command, env, tmp / "iip.log") as iip:
            try:
                wait_for(iip_port, "/healthz", iip)
            except RuntimeError:
                print((tmp / "iip.log").read_text(errors="replace")[-3000:])
                raise
            picked = random.Random(1).sample(range(args.total), min(args.sample, args.total))
            paths = [f"/api/handles/{PREFIX}/{quote(f'P{n:08d}')}" for n in picked]
            fetch_bodies(iip_port, paths, html)
            paths_file = tmp / "paths.txt"
            paths_file.write_text("\n".join(paths) + "\n")
            (tmp / "nginx.conf").write_text(NGINX_CONF.format(workers=args.workers, root=tmp, port=nginx_port))
            nginx_command = [NGINX, "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-g", "daemon off;"]
            with running(nginx_command, env, tmp / "nginx.log") as nginx:
                wait_for(nginx_port, paths[0], nginx)
                iip_server, nginx_server = Server("iip", iip_port, iip.pid), Server("nginx", nginx_port, nginx.pid)
                print(f"  load average before measuring: {os.getloadavg()[0]:.1f}", flush=True)
                script = write_script(tmp, paths_file, "random.lua")
                ours = peak(iip_server, script, args)
                base = peak(nginx_server, script, args)
                slow = write_script(tmp, paths_file, "paced.lua", args.think, fixed=args.fixed_think)
                ours_half, base_half = at_half_rate(iip_server, nginx_server, slow, ours.rate / 2, args)
                if nginx.poll() is not None or any(r.errors for r in (base, base_half)):
                    print(f"nginx exit code {nginx.poll()}; its error log:")
                    print((tmp / "error.log").read_text(errors="replace")[-3000:], flush=True)
        log = (tmp / "iip.log").read_text(errors="replace")
        if "Traceback" in log:
            print(log[-3000:])
    failed = [r for r in (ours, base, ours_half, base_half) if r.errors]
    if failed:
        raise SystemExit(f"{label}: some requests failed ({failed}); nothing recorded")
    ratio = ours.rate / base.rate
    print(
        f"{label}: server CPU per request at peak: IIP {ours.cpu_us:.1f} us, nginx {base.cpu_us:.1f} us "
        f"({base.cpu_us / ours.cpu_us:.0%} of IIP's)",
        flush=True,
    )
    print(
        f"{label}: IIP {ours.rate:,.0f}/s vs nginx {base.rate:,.0f}/s = {ratio:.0%} (target {TARGET_RATIO:.0%}: "
        f"{'met' if ratio >= TARGET_RATIO else 'MISSED'}); p99 at {ours_half.rate:,.0f}/s: {ours_half.p99_ms:.2f} ms "
        f"(target {TARGET_P99_MS} ms: {'met' if ours_half.p99_ms <= TARGET_P99_MS else 'MISSED'})",
        flush=True,
    )
    workers = f"{args.workers} workers each ({args.server}), {args.total:,} identifiers"
    return [
        Result(
            f"identifiers_resolve ({label})",
            f"resolutions/s, peak (best of c={','.join(map(str, args.connections))}), {workers}",
            ours.rate,
            "nginx, same bodies as static files",
            base.rate,
            "/s",
        ),
        Result(
            f"identifiers_resolve ({label})",
            f"p99 latency (median of {args.repeats} runs) at half of IIP's peak ({ours_half.rate:,.0f}/s vs "
            f"{base_half.rate:,.0f}/s, "
            f"{'fixed' if args.fixed_think else 'random'} think times), {workers}",
            ours_half.p99_ms,
            "nginx, same rate",
            base_half.p99_ms,
            "ms",
            higher_is_better=False,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--total", type=int, default=1_000_000, help="identifiers registered")
    parser.add_argument("--sample", type=int, default=100_000, help="handles resolved at random (nginx files)")
    parser.add_argument("--workers", type=int, default=2, help="processes of IIP and of nginx")
    parser.add_argument("--server", choices=("granian", "uvicorn"), default="granian", help="`iip run --server`")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--connections", type=lambda s: [int(c) for c in s.split(",")], default=[8, 32, 128])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--think", type=int, default=10, help="mean ms each paced connection waits")
    parser.add_argument("--repeats", type=int, default=3, help="paced runs of each server (the median p99 stands)")
    parser.add_argument("--fixed-think", action="store_true", help="the same think time every time (bursts)")
    parser.add_argument("--log-level", default="INFO", help="IIP_LOG_LEVEL of the server (INFO logs every request)")
    parser.add_argument("--database", help="database URL to use and keep (registering once) instead of temporary ones")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    results: list[Result] = []
    if args.database:
        label = "PostgreSQL" if args.database.startswith("postgresql") else "SQLite"
        results += measure(label, args.database, args)
    else:
        for label, url in benchmark_databases():
            results += measure(label, url, args)
    report(results, record=not args.no_record)


if __name__ == "__main__":
    main()
