"""The edge outbox: order, acknowledgement, bounds, counters, one owner, and no loss across a crash."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iip.devices.edge.outbox import (
    DeadLetterPart,
    Outbox,
    OutboxCounters,
    OutboxError,
    read_counters,
    read_dead_letters,
)


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def readings(start_ts: int, n: int, metric: str = "temp") -> list[tuple[str, int, float, int]]:
    return [(metric, start_ts + i, float(i), 0) for i in range(n)]


def balanced(c: OutboxCounters) -> bool:
    return c.queued == c.sent + c.dropped + c.rejected + c.dead_lettered + c.pending


def test_points_come_out_oldest_first_and_leave_only_when_settled(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as outbox:
        outbox.append("press-1", readings(1000, 3))
        outbox.append("press-2", readings(2000, 2, "speed"))
        batch = outbox.read_batch(4)
        assert batch is not None
        assert [(p.device, p.metric, p.ts_ms) for p in batch.points] == [
            ("press-1", "temp", 1000),
            ("press-1", "temp", 1001),
            ("press-1", "temp", 1002),
            ("press-2", "speed", 2000),
        ]
        # Reading is not taking: until settled, the same points come out again.
        again = outbox.read_batch(4)
        assert again is not None
        assert [p.id for p in again.points] == [p.id for p in batch.points]
        outbox.settle(batch)
        rest = outbox.read_batch(10)
        assert rest is not None
        assert [(p.device, p.ts_ms) for p in rest.points] == [("press-2", 2001)]
        outbox.settle(rest)
        assert outbox.read_batch(10) is None
        counters = outbox.counters()
    assert (counters.queued, counters.sent, counters.pending, counters.dropped) == (5, 5, 0, 0)


def test_values_keep_their_type_and_readings_without_a_usable_value_are_dropped(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as outbox:
        queued = outbox.append(
            "d",
            [
                ("f", 1, 21.5, 0),
                ("i", 1, 7, 1),
                ("b", 1, True, 0),
                ("s", 1, "v1.2", 2),
                ("n", 1, math.nan, 0),
                ("x", 1, None, 2, "modbus exception 2 (illegal address)"),  # a driver's BAD reading
            ],
        )
        assert queued == 4
        batch = outbox.read_batch(10)
        assert batch is not None
        values = {p.metric: (p.value, p.quality) for p in batch.points}
        counters = outbox.counters()
    assert values == {"f": (21.5, 0), "i": (7, 1), "b": (True, 0), "s": ("v1.2", 2)}
    assert type(values["b"][0]) is bool
    assert type(values["i"][0]) is int
    assert (counters.queued, counters.dropped, counters.pending) == (6, 2, 4)


def test_a_full_outbox_drops_its_oldest_points_and_counts_them(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db", max_points=5) as outbox:
        outbox.append("d", readings(0, 4))
        outbox.append("d", readings(4, 3))
        batch = outbox.read_batch(10)
        assert batch is not None
        assert [p.ts_ms for p in batch.points] == [2, 3, 4, 5, 6]
        counters = outbox.counters()
    assert (counters.queued, counters.dropped, counters.pending) == (7, 2, 5)
    assert balanced(counters)


def test_points_older_than_the_age_limit_are_dropped(tmp_path: Path) -> None:
    clock = Clock()
    with Outbox(tmp_path / "o.db", max_age_s=60, clock=clock) as outbox:
        outbox.append("d", readings(0, 3))
        clock.now += 30
        outbox.append("d", readings(3, 2))
        assert outbox.expire() == 0
        clock.now += 31
        assert outbox.expire() == 3
        batch = outbox.read_batch(10)
        assert batch is not None
        assert [p.ts_ms for p in batch.points] == [3, 4]
        counters = outbox.counters()
    assert (counters.dropped, counters.pending) == (3, 2)
    assert balanced(counters)


def test_settle_counts_rejected_lines_and_keeps_refused_batches(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    with Outbox(path) as outbox:
        outbox.append("d", readings(0, 6))
        batch = outbox.read_batch(6)
        assert batch is not None
        ids = [p.id for p in batch.points]
        refused = DeadLetterPart(frozenset(ids[4:]), "HTTP 422: bad payload", b'{"device":"d"}\n')
        outbox.settle(batch, rejected=ids[:1], dead_letters=[refused])
        assert outbox.read_batch(10) is None
        counters = outbox.counters()
    assert (counters.sent, counters.rejected, counters.dead_lettered, counters.dead_letters) == (3, 1, 2, 1)
    assert balanced(counters)
    [letter] = read_dead_letters(path)
    assert (letter.reason, letter.points, letter.payload) == ("HTTP 422: bad payload", 2, b'{"device":"d"}\n')


def test_points_dropped_while_a_batch_is_in_flight_are_counted_once(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db", max_points=4) as outbox:
        outbox.append("d", readings(0, 4))
        batch = outbox.read_batch(4)
        assert batch is not None
        outbox.append("d", readings(4, 2))  # drops the two oldest, which are in the batch
        outbox.settle(batch, rejected=[batch.points[0].id])
        counters = outbox.counters()
        rest = outbox.read_batch(10)
    assert rest is not None
    assert [p.ts_ms for p in rest.points] == [4, 5]
    assert (counters.dropped, counters.sent, counters.rejected, counters.pending) == (2, 2, 0, 2)
    assert balanced(counters)


def test_one_agent_owns_an_outbox(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    first = Outbox(path)
    with pytest.raises(OutboxError, match="in use by another edge agent"):
        Outbox(path)
    first.append("d", readings(0, 2))
    # Counters are readable meanwhile, without the lock.
    assert read_counters(path).pending == 2
    first.close()
    with Outbox(path) as second:
        assert second.pending == 2


def test_counters_of_a_missing_or_foreign_file_are_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(OutboxError, match="no outbox at"):
        read_counters(tmp_path / "absent.db")
    foreign = tmp_path / "foreign.db"
    foreign.write_bytes(b"not a database at all, just some bytes" * 100)
    with pytest.raises(OutboxError, match="cannot read the outbox"):
        read_counters(foreign)
    with pytest.raises(OutboxError, match="cannot open the outbox"):
        Outbox(foreign)
    # The failed open released its lock.
    foreign.unlink()
    Outbox(foreign).close()


def test_close_checkpoints_the_log_and_the_queue_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    with Outbox(path) as outbox:
        outbox.append("d", readings(0, 50))
        batch = outbox.read_batch(20)
        assert batch is not None
        outbox.settle(batch)
    wal = Path(f"{path}-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    with Outbox(path) as reopened:
        assert reopened.pending == 30
        batch = reopened.read_batch(100)
        counters = reopened.counters()
    assert batch is not None
    assert [p.ts_ms for p in batch.points] == list(range(20, 50))
    assert (counters.queued, counters.sent) == (50, 20)


CRASHING_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from iip.devices.edge.outbox import Outbox

    outbox = Outbox(Path(sys.argv[1]))
    n = 0
    while True:
        outbox.append("d", [("m", n * 10 + i, float(i), 0) for i in range(10)])
        n += 1
        print(n, flush=True)  # this many appends have returned
    """
)


def test_a_point_appended_survives_the_agent_being_killed(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    writer = subprocess.Popen([sys.executable, "-c", CRASHING_WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None
    acknowledged = 0
    for line in writer.stdout:
        acknowledged = int(line)
        if acknowledged >= 30:
            break
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    with Outbox(path) as outbox:  # the dead writer's lock went with it
        batch = outbox.read_batch(1_000_000)
        counters = outbox.counters()
    assert batch is not None
    ts = [p.ts_ms for p in batch.points]
    # Every append that returned is there, whole, in order, once; a killed append is all or nothing.
    assert len(ts) % 10 == 0
    assert len(ts) >= acknowledged * 10
    assert ts == list(range(len(ts)))
    assert counters.queued == counters.pending == len(ts)


Op = tuple[str, int]
operations = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(1, 7)),
        st.tuples(st.just("settle"), st.integers(1, 9)),
        st.tuples(st.just("reject"), st.integers(1, 9)),
        st.tuples(st.just("dead"), st.integers(1, 9)),
    ),
    max_size=30,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
def test_any_sequence_keeps_order_and_balances_the_counters(
    tmp_path_factory: pytest.TempPathFactory, ops: list[Op]
) -> None:
    path = tmp_path_factory.mktemp("prop") / "o.db"
    expected: list[int] = []  # timestamps still pending, in order
    next_ts = 0
    with Outbox(path, max_points=12) as outbox:
        for op, n in ops:
            if op == "append":
                outbox.append("d", [("m", next_ts + i, 1.0, 0) for i in range(n)])
                expected += range(next_ts, next_ts + n)
                next_ts += n
                expected = expected[-12:]
                continue
            batch = outbox.read_batch(n)
            if batch is None:
                assert not expected
                continue
            assert [p.ts_ms for p in batch.points] == expected[: len(batch)]
            ids = [p.id for p in batch.points]
            if op == "reject":
                outbox.settle(batch, rejected=ids[:1])
            elif op == "dead":
                outbox.settle(batch, dead_letters=[DeadLetterPart(frozenset(ids), "HTTP 400", b"")])
            else:
                outbox.settle(batch)
            expected = expected[len(batch) :]
            counters = outbox.counters()
            assert balanced(counters)
            assert counters.pending == outbox.pending == len(expected)
