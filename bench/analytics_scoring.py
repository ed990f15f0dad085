"""Scoring rate of a 52-variable PCA monitor: `PcaMonitor.score()` on blocks of samples, one thread.

The monitor is fitted on the Tennessee Eastman normal run (d00.dat; a synthetic 52-variable process
when the files are absent) with 9 components and scores blocks of consecutive samples of d00_te.dat
(repeated). Baseline, in the same run: scikit-learn's `StandardScaler` + `PCA` fitted on the same data,
`transform` + `inverse_transform` and numpy T² and SPE on the same blocks (what one would write with
scikit-learn alone). Also printed: `score()` called with one sample at a time.

    .venv/bin/python bench/analytics_scoring.py [--samples 200000] [--no-record]

Target: 100,000 samples/s per core.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import numpy.typing as npt
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from bench import tep
from bench.common import Result, report
from iip.analytics.monitoring.pca import PcaMonitor

COMPONENTS = 9
Array = npt.NDArray[np.float64]


def data() -> tuple[Array, Array]:
    if tep.available():
        return tep.training(0), tep.evaluation_run(0)
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(COMPONENTS, len(tep.VARIABLES)))
    train = rng.normal(size=(500, COMPONENTS)) @ mixing + 0.1 * rng.normal(size=(500, len(tep.VARIABLES)))
    test = rng.normal(size=(960, COMPONENTS)) @ mixing + 0.1 * rng.normal(size=(960, len(tep.VARIABLES)))
    return train, test


def rate(score: Callable[[Array], object], stream: Array, block: int) -> float:
    """Samples per second scoring `stream` in blocks of `block` rows (best of 3 passes)."""
    best = 0.0
    for _ in range(3):
        started = time.perf_counter()
        for start in range(0, stream.shape[0], block):
            score(stream[start : start + block])
        best = max(best, stream.shape[0] / (time.perf_counter() - started))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=200_000)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    train, test = data()
    stream = np.resize(test, (args.samples, test.shape[1]))
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    with threadpool_limits(1):
        monitor = PcaMonitor.fit(train, tep.VARIABLES, components=COMPONENTS)
        scaler = StandardScaler().fit(train)
        pca = PCA(n_components=COMPONENTS).fit(scaler.transform(train))
        inverse_variance = 1.0 / pca.explained_variance_

        def baseline(block: Array) -> tuple[Array, Array]:
            scaled = scaler.transform(block)
            scores = pca.transform(scaled)
            t2 = (scores**2 * inverse_variance).sum(axis=1)
            spe = ((scaled - pca.inverse_transform(scores)) ** 2).sum(axis=1)
            return t2, spe

        results = []
        for block in (10_000, 1_000):
            ours = rate(monitor.score, stream, block)
            theirs = rate(baseline, stream, block)
            print(f"blocks of {block:,}: ours {ours:,.0f} samples/s, scikit-learn {theirs:,.0f} samples/s")
            results.append(
                Result(
                    "analytics_scoring",
                    f"samples/s, 52-variable PCA monitor ({COMPONENTS} components), blocks of {block:,}, one thread",
                    ours,
                    "scikit-learn StandardScaler + PCA transform/inverse + numpy T²/SPE",
                    theirs,
                    "/s",
                )
            )
        single = rate(monitor.score, stream[:5_000], 1)
        print(f"one sample per call: {single:,.0f} samples/s")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    report(results, record=not args.no_record)


if __name__ == "__main__":
    main()
