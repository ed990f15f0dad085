"""Helpers of the Tennessee Eastman reproduction table (`bench/analytics_tep.py`): the counting rules and
parallel analysis whose results docs/benchmarks.md reports."""

from __future__ import annotations

import numpy as np
from bench.analytics_tep import in_long_run, parallel_analysis

from iip.analytics.monitoring.base import persistent


def test_alarm_after_six_in_a_row_starts_at_the_sixth_violation() -> None:
    flags = np.array([1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 0], dtype=bool)
    assert persistent(flags, 6).nonzero()[0].tolist() == [5, 6]


def test_every_sample_of_a_run_of_six_or_more_counts_and_shorter_runs_do_not() -> None:
    flags = np.array([1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1], dtype=bool)
    expected = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    assert in_long_run(flags, 6).astype(int).tolist() == expected
    assert in_long_run(flags, 1).tolist() == flags.tolist()


def test_parallel_analysis_finds_the_planted_number_of_components() -> None:
    rng = np.random.default_rng(7)
    latent = rng.standard_normal((400, 3))
    data = latent @ rng.standard_normal((3, 20)) * 2.0 + rng.standard_normal((400, 20))
    assert parallel_analysis(data, draws=100) == {"mean": 3, "p95": 3}
    assert parallel_analysis(rng.standard_normal((400, 20)), draws=100)["p95"] == 0
