"""Capture pauses Python's cyclic garbage collector while it runs (it walks the whole parsed document
at every collection of the oldest generation), and only while any capture runs."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from iip.traceability.capture_workers import collector_paused


@pytest.fixture
def collector_enabled() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_the_collector_is_paused_while_any_capture_runs_and_restored_after(collector_enabled: None) -> None:
    first_inside = threading.Event()
    release = threading.Event()
    seen: list[bool] = []

    def other_capture() -> None:
        with collector_paused():
            first_inside.set()
            release.wait(5)
            seen.append(gc.isenabled())

    with collector_paused():
        assert not gc.isenabled()
        thread = threading.Thread(target=other_capture)
        thread.start()
        assert first_inside.wait(5)
    assert not gc.isenabled()  # the other capture still runs
    release.set()
    thread.join(5)
    assert seen == [False]
    assert gc.isenabled()


def test_a_collector_disabled_before_stays_disabled(collector_enabled: None) -> None:
    gc.disable()
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("a failed capture")
    assert not gc.isenabled()
    gc.enable()
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("a failed capture")
    assert gc.isenabled()
