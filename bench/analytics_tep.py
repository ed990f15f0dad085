"""Process monitoring on the Tennessee Eastman process, next to the published detection rates.

Training: d00.dat (500 normal samples, stored transposed). Limits: on held-out normal rows (blocked
cross-validation over d00.dat) for the stated false-alarm rate, except the PCA reproductions, which
use textbook limits from d00.dat alone: T² from the F distribution and SPE from Jackson–Mudholkar,
at 99 %. The "textbook" configuration keeps 9 components (autoscaling on d00.dat, detection counted
on samples 160..959); "F/JM" keeps 11. A sensitivity table shows how many of the 21 published
figures each choice of components (9, 11) and level (99, 99.5, 99.9 %) reproduces within ±3 points:
the published 99 % is the level stated for the table; the others are printed to show where the gap
comes from, not chosen on the test data. A last table tries the candidate setups the literature
states, each with 99 % limits from d00.dat: the number of components by parallel analysis (Horn
1965, against the mean random eigenvalue; Glorfeld 1995, against its 95th percentile), the
chi-square instead of the F limit for T², training on the 480 rows of a dNN.dat training file, and
the rule of an alarm after 6 consecutive violations (read as alarming from the 6th violation on,
and as counting every sample of such a run). None reproduces both columns. What does ("T2/SPE d00te",
the correctness check of tests/analytics/test_tep.py): the same PCA, 11 components, with its limits at
the 99th percentile of the normal test run d00_te, i.e. at the operating point of the published
columns, 1 % false alarms on normal test data, where limits from d00.dat alone sit lower (the normal
test run's SPE is about 25 % above the training run's). See docs/benchmarks.md.
Testing: dNN_te.dat, 960 samples, the fault from sample 160 on. Detection rate: share of samples 160..959 in alarm.
False-alarm rate: share of alarms on d00_te.dat, and on the first 160 samples of all 21 test files.
Detection delay: samples from 160 to the first alarm, times 3 minutes.

Published figures. Chiang, Russell and Braatz (2001) PCA T² and SPE per fault: transcribed as
missed-detection rates (1 - detection); the reference search did not locate the table, so they are
checked only through their means over the 17 faults, which equal the 61.8 % and 74.7 % the issue
quotes. DPCA T² (Chiang et al. 2001), ICA and CNN (Agarwal et al. 2022, Processes 10:2557,
Table 3): the per-fault columns were not found; only the issue's 17-fault averages are printed.

    .venv/bin/python bench/analytics_tep.py [--skip-ica] [--skip-classifier] [--reproduction-only]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from scipy import stats
from threadpoolctl import threadpool_limits

from bench import tep
from iip.analytics.monitoring.base import Monitor, MonitorScores, persistent
from iip.analytics.monitoring.classify import FaultClassifier
from iip.analytics.monitoring.dpca import DpcaMonitor
from iip.analytics.monitoring.dynamic import DynamicMahalanobisMonitor
from iip.analytics.monitoring.ica import IcaMonitor
from iip.analytics.monitoring.pca import PcaBasis, PcaMonitor

# Chiang, Russell and Braatz (2001), missed-detection rates on the test sets, 99 % limits.
CHIANG_PCA_T2_MISSED = {
    1: 0.008, 2: 0.020, 3: 0.998, 4: 0.956, 5: 0.775, 6: 0.011, 7: 0.085, 8: 0.034, 9: 0.994, 10: 0.666,
    11: 0.794, 12: 0.029, 13: 0.060, 14: 0.158, 15: 0.988, 16: 0.834, 17: 0.259, 18: 0.113, 19: 0.996,
    20: 0.701, 21: 0.736,
}  # fmt: skip
CHIANG_PCA_SPE_MISSED = {
    1: 0.003, 2: 0.014, 3: 0.991, 4: 0.038, 5: 0.746, 6: 0.000, 7: 0.000, 8: 0.024, 9: 0.981, 10: 0.659,
    11: 0.356, 12: 0.025, 13: 0.045, 14: 0.000, 15: 0.973, 16: 0.755, 17: 0.108, 18: 0.101, 19: 0.873,
    20: 0.550, 21: 0.570,
}  # fmt: skip
# Averages over the 17 faults (1, 2, 4-8, 10-14, 16-20) as the issue quotes them, in %.
PUBLISHED_AVERAGES = {"PCA T2": 61.8, "PCA SPE": 74.7, "DPCA T2": 72.4, "ICA": 87.3, "CNN": 85.5}
TARGET = 90.0
OURS = "dyn-Mahal"
LEGEND = """
Columns: T2/SPE textbook = PCA, 9 components, F and Jackson-Mudholkar 99 % limits from d00.dat;
T2/SPE F/JM = the same with 11 components;
T2/SPE d00te = the same PCA, limits at the 99th percentile of d00_te (1 % false alarms there);
T2/SPE cv = the same PCA, limits at 1 % on held-out rows of d00.dat (blocked cross-validation);
DPCA T2 = dynamic PCA, 1 lag, 90 % variance, held-out limits; ICA = I2, Ie2 or SPE over its limit, held-out limits;
dyn-Mahal = dynamic Mahalanobis distance, 2 lags, held-out limits (10 folds), 1 %."""
MINUTES_PER_SAMPLE = 3
# Plain PCA as the textbook states it: autoscaled on d00.dat, 9 components, F (T²) and
# Jackson-Mudholkar (SPE) limits at 99 %.
TEXTBOOK = {"components": 9, "limit_method": "theoretical", "false_alarm_rate": 0.01}


@dataclass
class Outcome:
    name: str
    detection: dict[int, float]  # % per fault
    false_alarms_d00: float  # %
    false_alarms_first160: float  # %
    delay: dict[int, int | None]  # samples from onset to first alarm
    fit_seconds: float

    @property
    def average(self) -> float:
        return float(np.mean([self.detection[f] for f in tep.AVERAGED]))

    @property
    def mean_delay_minutes(self) -> float:
        found = [d for f, d in self.delay.items() if f in tep.AVERAGED and d is not None]
        return MINUTES_PER_SAMPLE * float(np.mean(found)) if found else float("nan")


def evaluate(
    name: str,
    monitor: Monitor,
    runs: dict[int, np.ndarray],
    fit_seconds: float,
    flags: Callable[[MonitorScores], np.ndarray] = lambda s: s.alarm,
) -> Outcome:
    scores = {f: monitor.score(rows) for f, rows in runs.items()}
    skip = monitor.history  # rows without enough history are not scored (no alarm)
    normal0 = flags(scores[0])[skip:]
    first160 = np.concatenate([flags(scores[f])[skip : tep.FAULT_START] for f in tep.FAULTS])
    detection, delay = {}, {}
    for fault in tep.FAULTS:
        after = flags(scores[fault])[tep.FAULT_START :]
        detection[fault] = 100.0 * float(after.mean())
        hits = np.flatnonzero(after)
        delay[fault] = int(hits[0]) if hits.size else None
    return Outcome(name, detection, 100.0 * normal0.mean(), 100.0 * first160.mean(), delay, fit_seconds)


def add_pca(
    outcomes: dict[str, Outcome], limits: str, monitor: Monitor, runs: dict[int, np.ndarray], seconds: float
) -> None:
    for statistic, label in (("t2", "T2"), ("spe", "SPE")):
        name = f"{label} {limits}"
        outcomes[name] = evaluate(name, monitor, runs, seconds, lambda s, st=statistic: s.exceeded(st))


def timed_fit(fit: Callable[[], Monitor]) -> tuple[Monitor, float]:
    started = time.perf_counter()
    monitor = fit()
    return monitor, time.perf_counter() - started


def print_table(outcomes: list[Outcome]) -> None:
    names = [o.name for o in outcomes]
    width = max(9, *(len(n) for n in names))
    published = ["Chiang T2", "Chiang SPE"]
    print("\nDetection rate per fault, % (published columns: Chiang et al. 2001, PCA, 99 % limits)")
    header = f"{'fault':>5} " + " ".join(f"{n:>{width}}" for n in names) + " " + " ".join(f"{p:>10}" for p in published)
    print(header)
    for fault in tep.FAULTS:
        ours = " ".join(f"{o.detection[fault]:>{width}.1f}" for o in outcomes)
        t2 = 100.0 * (1.0 - CHIANG_PCA_T2_MISSED[fault])
        spe = 100.0 * (1.0 - CHIANG_PCA_SPE_MISSED[fault])
        mark = "" if fault in tep.AVERAGED else "  (not in the average)"
        print(f"{fault:>5} {ours} {t2:>10.1f} {spe:>10.1f}{mark}")
    t2_avg = np.mean([100.0 * (1 - CHIANG_PCA_T2_MISSED[f]) for f in tep.AVERAGED])
    spe_avg = np.mean([100.0 * (1 - CHIANG_PCA_SPE_MISSED[f]) for f in tep.AVERAGED])
    print(
        f"{'avg17':>5} " + " ".join(f"{o.average:>{width}.1f}" for o in outcomes) + f" {t2_avg:>10.1f} {spe_avg:>10.1f}"
    )
    for label, values in (
        ("FAR d00_te, %", [o.false_alarms_d00 for o in outcomes]),
        ("FAR first 160 of each test file, %", [o.false_alarms_first160 for o in outcomes]),
        ("mean detection delay over the 17 faults, min", [o.mean_delay_minutes for o in outcomes]),
        ("fit time, s", [o.fit_seconds for o in outcomes]),
    ):
        print(" ".join([f"{'':>5}", *(f"{v:>{width}.1f}" for v in values)]) + f"  {label}")
    print("\nFaults reported apart (3, 9, 15 are not observable in these data; 21 is a slow drift):")
    for fault in tep.SEPARATE:
        print(f"  fault {fault:>2}: " + ", ".join(f"{o.name} {o.detection[fault]:.1f}" for o in outcomes))
    print("\nPublished 17-fault averages (issue): " + ", ".join(f"{k} {v}" for k, v in PUBLISHED_AVERAGES.items()))


def reproduction(outcomes: dict[str, Outcome]) -> None:
    for name, missed in (
        ("T2 textbook", CHIANG_PCA_T2_MISSED),
        ("SPE textbook", CHIANG_PCA_SPE_MISSED),
        ("T2 F/JM", CHIANG_PCA_T2_MISSED),
        ("SPE F/JM", CHIANG_PCA_SPE_MISSED),
        ("T2 d00te", CHIANG_PCA_T2_MISSED),
        ("SPE d00te", CHIANG_PCA_SPE_MISSED),
    ):
        ours = outcomes[name]
        deviations = {f: ours.detection[f] - 100.0 * (1.0 - missed[f]) for f in tep.FAULTS}
        worst = max(deviations, key=lambda f: abs(deviations[f]))
        within = [f for f, d in deviations.items() if abs(d) <= 3.0]
        mean_abs = float(np.mean(np.abs(list(deviations.values()))))
        print(
            f"{name}: within ±3 points on {len(within)}/21 faults; mean absolute deviation {mean_abs:.1f}; "
            f"largest deviation fault {worst} ({deviations[worst]:+.1f}); "
            f"outside: {sorted(set(tep.FAULTS) - set(within))}"
        )
        if name.endswith("textbook"):
            print("  ours - published, per fault: " + " ".join(f"{f}:{deviations[f]:+.1f}" for f in tep.FAULTS))


def sensitivity(train: np.ndarray, runs: dict[int, np.ndarray]) -> None:
    """Faults within ±3 points of the published columns for each number of components and limit level."""
    print("\nSensitivity (F / Jackson-Mudholkar limits from d00.dat): faults within ±3 points, T2 / SPE;")
    print("mean deviation from the published rate; false alarms on d00_te")
    for components in (9, 11):
        for level in (0.99, 0.995, 0.999):
            monitor = PcaMonitor.fit(
                train, tep.VARIABLES, components=components, limit_method="theoretical", false_alarm_rate=1 - level
            )
            scores = {f: monitor.score(rows) for f, rows in runs.items()}
            cells = []
            for statistic, missed in (("t2", CHIANG_PCA_T2_MISSED), ("spe", CHIANG_PCA_SPE_MISSED)):
                deviations = [
                    100.0 * scores[f].exceeded(statistic)[tep.FAULT_START :].mean() - 100.0 * (1.0 - missed[f])
                    for f in tep.FAULTS
                ]
                within = sum(abs(d) <= 3.0 for d in deviations)
                far = 100.0 * scores[0].exceeded(statistic).mean()
                cells.append(f"{statistic} {within:>2}/21 mean {np.mean(deviations):+5.1f} FAR {far:4.1f} %")
            print(f"  a={components:>2} level {100 * level:5.1f} %: " + "; ".join(cells))


def parallel_analysis(train: np.ndarray, *, draws: int = 500, seed: int = 0) -> dict[str, int]:
    """Components whose eigenvalue (correlation matrix of `train`) beats that of random normal data of the
    same size: against the mean random eigenvalue (Horn 1965) and against its 95th percentile (Glorfeld 1995)."""
    n, p = train.shape
    observed = np.sort(np.linalg.eigvalsh(np.corrcoef(train.T)))[::-1]
    rng = np.random.default_rng(seed)
    random = np.array(
        [np.sort(np.linalg.eigvalsh(np.corrcoef(rng.standard_normal((n, p)).T)))[::-1] for _ in range(draws)]
    )

    def kept(reference: np.ndarray) -> int:
        below = np.flatnonzero(observed <= reference)
        return int(below[0]) if below.size else p

    return {"mean": kept(random.mean(axis=0)), "p95": kept(np.percentile(random, 95, axis=0))}


def in_long_run(flags: np.ndarray, run: int) -> np.ndarray:
    """True where a sample belongs to `run` or more consecutive violations (the run's first samples too)."""
    if run <= 1:
        return flags.copy()
    ends = persistent(flags, run).astype(int)
    # A sample is in such a run if one ends within the next `run` samples.
    return np.convolve(ends, np.ones(run, dtype=int))[run - 1 : run - 1 + flags.shape[0]] > 0


@dataclass
class Variant:
    """One setup a source states for the published PCA columns; none is tuned on test data."""

    name: str
    components: int
    rows: int = 500  # leading rows of d00.dat used for training
    t2_limit: str = "F"  # "F": a(n-1)(n+1)/(n(n-a)) F(a, n-a); "chi2": chi-square with a degrees of freedom
    counting: Callable[[np.ndarray], np.ndarray] = lambda flags: flags


def documented_variants(train: np.ndarray, runs: dict[int, np.ndarray]) -> None:
    """Faults within ±3 points of each published column for each candidate setup, 99 % limits from d00.dat."""
    pa = parallel_analysis(train)
    a = pa["p95"]
    variants = [
        Variant("9 PCs, F / JM (textbook)", 9),
        Variant(f"{pa['mean']} PCs, parallel analysis vs mean", pa["mean"]),
        Variant(f"{a} PCs, parallel analysis vs 95th pct", a),
        Variant(f"{a} PCs, chi-square T2 limit", a, t2_limit="chi2"),
        Variant(f"{a} PCs, d00.dat rows 1-480", a, rows=480),
        Variant(f"{a} PCs, alarm after 6 in a row", a, counting=lambda flags: persistent(flags, 6)),
        Variant(f"{a} PCs, samples in runs of 6+", a, counting=lambda flags: in_long_run(flags, 6)),
    ]
    print("\nCandidate setups stated in the literature (99 % limits from d00.dat; detection on samples 160..959):")
    print("faults within ±3 points of the published column, largest deviation (fault: ours - published), FAR d00_te")
    for variant in variants:
        basis = PcaBasis.fit(train[: variant.rows], components=variant.components, variance=1.0)
        limits = basis.theoretical_limits(0.01)
        if variant.t2_limit == "chi2":
            limits["t2"] = float(stats.chi2.ppf(0.99, variant.components))
        statistics = {
            f: dict(zip(("t2", "spe"), basis.t2_spe(basis.scaled(rows)), strict=True)) for f, rows in runs.items()
        }
        cells = []
        for statistic, missed in (("t2", CHIANG_PCA_T2_MISSED), ("spe", CHIANG_PCA_SPE_MISSED)):
            flags = {f: variant.counting(values[statistic] > limits[statistic]) for f, values in statistics.items()}
            deviations = {f: 100.0 * flags[f][tep.FAULT_START :].mean() - 100.0 * (1.0 - missed[f]) for f in tep.FAULTS}
            worst = max(deviations, key=lambda f: abs(deviations[f]))
            within = sum(abs(d) <= 3.0 for d in deviations.values())
            cells.append(
                f"{statistic} {within:>2}/21 (limit {limits[statistic]:5.1f}, "
                f"worst {worst:>2}: {deviations[worst]:+5.1f}, FAR {100.0 * flags[0].mean():4.1f} %)"
            )
        print(f"  {variant.name:<42} " + "; ".join(cells))


def classification() -> None:
    runs = [("normal", tep.training(0))] + [(f"fault {f}", tep.training(f)) for f in tep.FAULTS]
    started = time.perf_counter()
    classifier = FaultClassifier.fit(runs, tep.VARIABLES, lags=2)
    fitted = time.perf_counter() - started
    per_row, per_run = {}, {}
    for fault in tep.FAULTS:
        rows = tep.evaluation_run(fault)
        label = f"fault {fault}"
        predicted = classifier.predict(rows)[tep.FAULT_START :]
        per_row[fault] = 100.0 * float(np.mean([p == label for p in predicted]))
        per_run[fault] = next(iter(classifier.summary(rows[tep.FAULT_START - classifier.lags :]))) == label
    normal = classifier.predict(tep.evaluation_run(0))[classifier.lags :]
    observable = [f for f in tep.FAULTS if f not in (3, 9, 15)]
    print(
        f"\nFault classification (logistic regression, lags 2, trained on d00.dat and d01..d21.dat, fit {fitted:.1f} s)"
    )
    print("  per-sample accuracy on samples 160..959, %: " + " ".join(f"{f}:{per_row[f]:.0f}" for f in tep.FAULTS))
    print(f"  mean over the 18 observable faults: {np.mean([per_row[f] for f in observable]):.1f} %")
    print(f"  d00_te classified normal: {100.0 * np.mean([p == 'normal' for p in normal]):.1f} %")
    print(
        f"  whole run (mean probability over the faulty samples) named correctly: "
        f"{sum(per_run[f] for f in observable)}/18 observable faults; wrong: "
        f"{[f for f in observable if not per_run[f]]}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-ica", action="store_true", help="leave out ICA (the slowest fit)")
    parser.add_argument("--skip-classifier", action="store_true")
    parser.add_argument(
        "--reproduction-only", action="store_true", help="only the PCA reproduction of the published columns"
    )
    args = parser.parse_args()
    if not tep.available():
        raise SystemExit(f"Tennessee Eastman data not found at {tep.TEP_DIR}")
    train = tep.training(0)
    runs = {f: tep.evaluation_run(f) for f in (0, *tep.FAULTS)}
    variables = tep.VARIABLES
    outcomes: dict[str, Outcome] = {}
    with threadpool_limits(limits=1):
        pca, seconds = timed_fit(lambda: PcaMonitor.fit(train, variables, **TEXTBOOK))
        add_pca(outcomes, "textbook", pca, runs, seconds)
        pca, seconds = timed_fit(
            lambda: PcaMonitor.fit(train, variables, components=11, limit_method="theoretical", false_alarm_rate=0.01)
        )
        add_pca(outcomes, "F/JM", pca, runs, seconds)
        # Limits at 1 % false alarms on d00_te: what the published columns imply (their d00_te figure is
        # then not an independent measurement; the first-160 one is).
        pca, seconds = timed_fit(
            lambda: PcaMonitor.fit(train, variables, components=11, validation=runs[0], false_alarm_rate=0.01)
        )
        add_pca(outcomes, "d00te", pca, runs, seconds)
        if args.reproduction_only:
            reproduction(outcomes)
            sensitivity(train, runs)
            documented_variants(train, runs)
            return
        pca, seconds = timed_fit(lambda: PcaMonitor.fit(train, variables, components=11, false_alarm_rate=0.01))
        add_pca(outcomes, "cv", pca, runs, seconds)
        dpca, seconds = timed_fit(lambda: DpcaMonitor.fit(train, variables, lags=1, false_alarm_rate=0.01))
        outcomes["DPCA T2"] = evaluate("DPCA T2", dpca, runs, seconds, lambda s: s.exceeded("t2"))
        if not args.skip_ica:
            ica, seconds = timed_fit(lambda: IcaMonitor.fit(train, variables, false_alarm_rate=0.01))
            outcomes["ICA"] = evaluate("ICA", ica, runs, seconds)
        ours, seconds = timed_fit(
            lambda: DynamicMahalanobisMonitor.fit(train, variables, lags=2, folds=10, false_alarm_rate=0.01)
        )
        outcomes[OURS] = evaluate(OURS, ours, runs, seconds)
        print(LEGEND)
        print_table(list(outcomes.values()))
        print()
        reproduction(outcomes)
        sensitivity(train, runs)
        documented_variants(train, runs)
        best = outcomes[OURS]
        worst_far = max(best.false_alarms_d00, best.false_alarms_first160)
        verdict = "met" if best.average >= TARGET and worst_far <= 5.0 else "NOT met"
        print(
            f"\nTarget (≥ {TARGET:.0f} % average detection at ≤ 5 % measured false alarms): {verdict} "
            f"({best.average:.1f} % at {best.false_alarms_d00:.1f} % / {best.false_alarms_first160:.1f} %)"
        )
        if not args.skip_classifier:
            classification()
    print(f"\nload average: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
