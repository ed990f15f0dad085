"""Remaining useful life on NASA C-MAPSS FD001, next to published results and a measured baseline.

Training: train_FD001.txt (100 units run to failure), the 14 sensors that vary (`cmapss.FD001_SENSORS`).
Evaluation: the official test set, test_FD001.txt (100 units stopped before failure) with the true RUL
from RUL_FD001.txt, one estimate per unit at its last cycle. Figures against the true RUL capped at
125 (the target the models learn, as the published results do), and, printed apart, against the
raw true RUL.

Published (RMSE, NASA score): CNN 18.45, 1,286.7 (Babu, Zhao and Li 2016); LSTM 16.14, 338
(Zheng et al. 2017); DCNN 12.61, 273.7 (Li, Ding and Sun 2018). Baseline measured here: ordinary
least squares on the last cycle's 14 sensor values, trained on every training cycle with the same
capped target. Interval: the share of test units whose true (capped) RUL lies within the stated
interval, and its mean width. The interval is calibrated on the training units' held-out cycles
(never on the test set): see `rul.calibration_rows`.

    .venv/bin/python bench/analytics_cmapss.py [--threads 1] [--coverage 0.9] [--no-record]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from sklearn.linear_model import LinearRegression
from threadpoolctl import threadpool_limits

from bench import cmapss
from bench.common import Result, report
from iip.analytics.rul import RulModel, capped_rul

CAP = 125.0
PUBLISHED = {"CNN (Babu et al. 2016)": (18.45, 1286.7), "LSTM (Zheng et al. 2017)": (16.14, 338.0)}
PUBLISHED["DCNN (Li et al. 2018)"] = (12.61, 273.7)
TARGET = 12.6
STRETCH = 11.0


def linear_baseline(train: list[np.ndarray], test: list[np.ndarray]) -> np.ndarray:
    x = np.vstack(train)
    y = np.concatenate([capped_rul(u.shape[0], CAP) for u in train])
    model = LinearRegression().fit(x, y)
    predicted: np.ndarray = np.clip(model.predict(np.vstack([u[-1:] for u in test])), 0.0, CAP)
    return predicted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=cmapss.CMAPSS_DIR)
    parser.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads for training")
    parser.add_argument("--coverage", type=float, default=0.9)
    parser.add_argument("--no-record", dest="record", action="store_false")
    args = parser.parse_args()
    if not cmapss.available(directory=args.data):
        sys.exit(f"C-MAPSS FD001 not found in {args.data}")

    train = cmapss.training(directory=args.data)
    test, truth = cmapss.evaluation_units(directory=args.data)
    capped = np.minimum(truth, CAP)
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    with threadpool_limits(limits=args.threads):
        started = time.perf_counter()
        model = RulModel.fit(train, cmapss.FD001_SENSORS, cap=CAP, coverage=args.coverage)
        fit_seconds = time.perf_counter() - started
        started = time.perf_counter()
        estimates = model.predict_many(test)
        predict_seconds = time.perf_counter() - started
        started = time.perf_counter()
        baseline = linear_baseline(train, test)
        baseline_seconds = time.perf_counter() - started

    point = np.array([e.point for e in estimates])
    lower = np.array([e.lower for e in estimates])
    upper = np.array([e.upper for e in estimates])
    ours_rmse = cmapss.rmse(point, capped)
    ours_score = cmapss.nasa_score(point, capped)
    base_rmse = cmapss.rmse(baseline, capped)
    base_score = cmapss.nasa_score(baseline, capped)
    covered = float(np.mean((capped >= lower) & (capped <= upper)))
    covered_raw = float(np.mean((truth >= lower) & (truth <= upper)))

    print(f"\ntraining: {len(train)} units, {sum(u.shape[0] for u in train):,} cycles, {args.threads} thread(s)")
    print(f"  fit {fit_seconds:.1f} s ({model.trees.feature.shape[0]} trees), 100 estimates {predict_seconds:.3f} s")
    print(f"  baseline fit+predict {baseline_seconds:.3f} s")
    print(
        f"  held out during fitting: RMSE {model.report['held_out_rmse']:.2f} (all cycles of the left-out units), "
        f"interval coverage {model.report['held_out_coverage']:.3f} (their cycles from the window on, each unit "
        "weighing the same)"
    )
    print("\nFD001 test set, true RUL capped at 125:")
    print(f"  {'model':<34} {'RMSE':>7} {'NASA score':>11}")
    print(f"  {'ours (boosted trees, ensemble)':<34} {ours_rmse:>7.2f} {ours_score:>11.1f}")
    print(f"  {'linear regression, last cycle':<34} {base_rmse:>7.2f} {base_score:>11.1f}  (measured here)")
    for name, (published_rmse, published_score) in PUBLISHED.items():
        print(f"  {name:<34} {published_rmse:>7.2f} {published_score:>11.1f}  (published)")
    print(
        f"  against the raw true RUL: ours RMSE {cmapss.rmse(point, truth):.2f}, "
        f"score {cmapss.nasa_score(point, truth):.1f}; "
        f"baseline RMSE {cmapss.rmse(baseline, truth):.2f}"
    )
    print(
        f"\ninterval at {args.coverage:.0%} nominal coverage: {covered:.0%} of test units inside (capped truth), "
        f"{covered_raw:.0%} (raw truth); mean width {np.mean(upper - lower):.1f} cycles"
    )
    verdict = "met" if ours_rmse <= TARGET else "NOT met"
    stretch = "met" if ours_rmse <= STRETCH else "not met"
    print(f"target RMSE <= {TARGET}: {verdict}; stretch <= {STRETCH}: {stretch}")
    report(
        [
            Result(
                "analytics_cmapss",
                "RMSE, FD001 test, RUL capped at 125",
                ours_rmse,
                "linear regression on last-cycle sensors",
                base_rmse,
                "cycles",
                higher_is_better=False,
            ),
            Result(
                "analytics_cmapss",
                "NASA score, FD001 test, RUL capped at 125",
                ours_score,
                "linear regression on last-cycle sensors",
                base_score,
                "",
                higher_is_better=False,
            ),
        ],
        record=args.record,
    )
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
