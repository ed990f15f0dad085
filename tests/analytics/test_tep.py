"""Plain PCA on the Tennessee Eastman data against the published detection rates (Chiang et al. 2001).

The data set lives outside the repository (`../shared/datasets/tep/`); the test is skipped without it.
The full comparison, every fault and model, is `bench/analytics_tep.py`.
"""

from __future__ import annotations

import pytest
from bench import tep

from iip.analytics.monitoring.pca import PcaMonitor

# Published PCA detection rates in %, 11 components, 99 % limits (faults 1 and 2).
PUBLISHED = {1: {"t2": 99.2, "spe": 99.8}, 2: {"t2": 98.0, "spe": 98.6}}


@pytest.mark.skipif(not tep.available(), reason=f"Tennessee Eastman data not found at {tep.TEP_DIR}")
@pytest.mark.parametrize("fault", sorted(PUBLISHED))
def test_plain_pca_detects_faults_1_and_2_as_published(fault: int) -> None:
    monitor = PcaMonitor.fit(
        tep.training(0), tep.VARIABLES, components=11, limit_method="theoretical", false_alarm_rate=0.01
    )
    scores = monitor.score(tep.evaluation_run(fault))
    for statistic, published in PUBLISHED[fault].items():
        detected = 100.0 * scores.exceeded(statistic)[tep.FAULT_START :].mean()
        assert abs(detected - published) <= 3.0, (statistic, detected, published)
