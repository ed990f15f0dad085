"""CPU per alarm transition, in one process: rule evaluation, lifecycle, alarm store, publication, notifications.

The platform's own path with no broker, ingest or telemetry writer in front of it: point batches
go straight to the running rule engine (`AlarmEngineRunner`), whose changes are applied to the
alarm store (one transaction per batch), published on `alarms.changes` and consumed by the
notification dispatcher, routed by one route to one e-mail channel with a rate limit (so a flood
is held for a digest, as it would be in a plant).

`--devices` devices with `--rules` threshold rules each over a stream in which metric `a` climbs
by one per step (one batch per step of every device's three points): the rules' limits are 10,
20 ... so every rule is crossed once, every crossing a batch of `--devices` activations. The same
batches run again with the limits out of reach; the difference in CPU seconds (every thread of
the process) divided by the transitions is the cost of one transition, evaluation of the stream
itself left out. Best of `--repeat` runs each, on a fresh SQLite database each.

    .venv/bin/python bench/alarms_transitions.py [--devices 1000] [--rules 10] [--repeat 3] [--profile]

`--profile` prints the functions taking the most time of one more flood run, profiled by cProfile
with the work the platform hands to worker threads run in the event loop's thread instead (cProfile
sees one thread); that run is not counted in the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import dataclasses
import pstats
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, select

from bench.alarms_e2e import install_rules, threshold_rules
from bench.telemetry_e2e import METRICS, device_key, register
from iip.alarms.lifespan import ENGINE_SERVICE, AlarmEngineRunner, alarms_lifespan
from iip.alarms.models import AlarmHistory
from iip.alarms.notify.dispatcher import SERVICE_KEY, NotificationDispatcher, notifications_lifespan
from iip.alarms.notify.schemas import EmailChannelCreate, RouteSpec
from iip.alarms.notify.service import NotificationAdmin, channel_sealer
from iip.alarms.public import AlarmChange
from iip.kernel.auth import Principal, Role
from iip.kernel.bus import Delivery
from iip.kernel.runtime import Runtime
from iip.kernel.settings import Settings
from iip.migrations.runner import upgrade
from iip.telemetry.public import PointBatch

WAIT_S = 600.0


@dataclasses.dataclass(frozen=True)
class Run:
    cpu: float
    seconds: float
    transitions: int
    notified: int


def batches(devices: int, steps: int) -> list[PointBatch]:
    """One batch per step: every device's a = step, b, c."""
    start = time.time_ns() // 1_000_000 - (steps + 2) * 1000
    series = [(device_key(d), metric) for d in range(devices) for metric in METRICS]
    out = []
    for step in range(steps):
        values = [v for d in range(devices) for v in (float(step), float(d), float(step & 1))]
        out.append(
            PointBatch(
                tenant_id="",
                series=series,
                series_index=list(range(len(series))),
                ts_ms=[start + step * 1000] * len(series),
                value=values,
                quality=[0] * len(series),
            )
        )
    return out


def fresh_runtime(data_dir: Path, name: str, devices: int, per_device: int, limit: Callable[[int], float]) -> Runtime:
    settings = Settings(data_dir=data_dir / name, database_url=f"sqlite:///{data_dir / f'{name}.db'}")
    runtime = Runtime.build(settings)
    upgrade(runtime.db)
    tenant = register(runtime, devices)
    install_rules(runtime, tenant, threshold_rules(devices, per_device, limit))
    actor = Principal("system", "bench", "bench", tenant, Role.ADMIN)
    with runtime.db.session() as session:
        admin = NotificationAdmin(session, actor)
        admin.create_channel(
            EmailChannelCreate(name="control-room", addresses=["ops@example.com"], rate_limit=30),
            channel_sealer(settings),
            tenant_id=tenant,
        )
        admin.create_route(RouteSpec(name="high", channels=["control-room"]), tenant_id=tenant)
    runtime.services["bench.tenant"] = tenant
    return runtime


async def run(runtime: Runtime, stream: list[PointBatch], expected: int, profile: cProfile.Profile | None) -> Run:
    tenant: str = runtime.services["bench.tenant"]
    stream = [batch.model_copy(update={"tenant_id": tenant}) for batch in stream]
    notified = 0
    async with contextlib.AsyncExitStack() as running:
        await running.enter_async_context(notifications_lifespan(runtime))
        dispatcher: NotificationDispatcher = runtime.services[SERVICE_KEY]
        handle = dispatcher.on_change

        async def counted(delivery: Delivery[AlarmChange]) -> None:
            nonlocal notified
            await handle(delivery)
            notified += 1

        # The dispatcher's consumer, counted: the bus takes the handler when it subscribes.
        await dispatcher.stop()
        dispatcher.on_change = counted  # type: ignore[method-assign]
        await dispatcher.start()
        await running.enter_async_context(alarms_lifespan(runtime))
        runner: AlarmEngineRunner = runtime.services[ENGINE_SERVICE]
        before = await asyncio.to_thread(_history_count, runtime)
        cpu = time.process_time()
        started = time.perf_counter()
        if profile is not None:
            profile.enable()
        for batch in stream:
            await runner.apply(runner.engine.on_points(batch))
        deadline = started + WAIT_S
        while notified < runner.applied or runner.applied < expected:
            if time.perf_counter() > deadline:
                raise SystemExit(f"not done: {runner.applied} of {expected} transitions, {notified} notified")
            await asyncio.sleep(0.005)
        if profile is not None:
            profile.disable()
        seconds = time.perf_counter() - started
        spent = time.process_time() - cpu
    after = await asyncio.to_thread(_history_count, runtime)
    return Run(spent, seconds, after - before, notified)


def _history_count(runtime: Runtime) -> int:
    with runtime.db.session() as session:
        return int(session.scalar(select(func.count(AlarmHistory.id))) or 0)


def measure(args: argparse.Namespace) -> None:
    limits = [10.0 * (k + 1) for k in range(args.rules)]
    steps = int(limits[-1]) + 2
    stream = batches(args.devices, steps)
    expected = args.devices * args.rules
    quiet_runs: list[Run] = []
    flood_runs: list[Run] = []
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        for attempt in range(args.repeat):
            quiet_rt = fresh_runtime(data_dir, f"quiet-{attempt}", args.devices, args.rules, lambda k: 1e9 + k)
            quiet_runs.append(asyncio.run(run(quiet_rt, stream, 0, None)))
            quiet_rt.db.dispose()
            flood_rt = fresh_runtime(data_dir, f"flood-{attempt}", args.devices, args.rules, lambda k: limits[k])
            flood = asyncio.run(run(flood_rt, stream, expected, None))
            flood_rt.db.dispose()
            if flood.transitions != expected:
                raise SystemExit(f"{flood.transitions} transitions stored, expected {expected}")
            flood_runs.append(flood)
    quiet = min(quiet_runs, key=lambda r: r.cpu)
    flood = min(flood_runs, key=lambda r: r.cpu)
    per = (flood.cpu - quiet.cpu) / expected * 1e6
    points = steps * args.devices * len(METRICS)
    print(f"{args.devices:,} devices x {args.rules} rules, {steps} steps ({points:,} points), best of {args.repeat}")
    print(f"  no alarm: CPU {quiet.cpu:.2f} s, {quiet.seconds:.2f} s")
    print(
        f"  {flood.transitions:,} activations ({flood.notified:,} changes routed): CPU {flood.cpu:.2f} s, "
        f"{flood.seconds:.2f} s"
    )
    print(f"  CPU per transition: {per:.0f} µs (all runs: {_spread(flood_runs, quiet_runs, expected)})")
    if args.profile:
        profile = cProfile.Profile()
        with tempfile.TemporaryDirectory() as tmp, in_one_thread():
            flood_rt = fresh_runtime(Path(tmp), "profiled", args.devices, args.rules, lambda k: limits[k])
            asyncio.run(run(flood_rt, stream, expected, profile))
            flood_rt.db.dispose()
        stats = pstats.Stats(profile)
        stats.sort_stats("tottime").print_stats(args.top)
        stats.sort_stats("cumulative").print_stats(args.top)


@contextlib.contextmanager
def in_one_thread() -> Iterator[None]:
    """`asyncio.to_thread` runs its function in the calling thread, for a profiler that sees one thread."""
    original = asyncio.to_thread

    async def inline(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    asyncio.to_thread = inline  # type: ignore[assignment]
    try:
        yield
    finally:
        asyncio.to_thread = original


def _spread(flood: list[Run], quiet: list[Run], expected: int) -> str:
    base = min(r.cpu for r in quiet)
    return ", ".join(f"{(r.cpu - base) / expected * 1e6:.0f}" for r in flood) + " µs"


def main(argv: Any = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=1_000)
    parser.add_argument("--rules", type=int, default=10, help="threshold rules per device")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--top", type=int, default=30, help="functions the profile lists")
    args = parser.parse_args(argv)
    if args.devices < 1 or not 1 <= args.rules <= 50 or args.repeat < 1:
        parser.error("--devices and --repeat must be positive, --rules between 1 and 50")
    measure(args)


if __name__ == "__main__":
    main()
