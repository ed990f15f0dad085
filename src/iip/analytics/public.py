"""What other contexts may use of `analytics`: how its scores and events are named.

Live scores are telemetry of the deployed device, `analytics.<model>.<statistic>` (`t2`, `spe`, ...),
`analytics.<model>.alarm` (1 in alarm, 0 not) and `analytics.<model>.missing` (variables absent from
the sample). Alarm transitions are `AlarmEvent`s of source `analytics` with the device as subject:
kind `model.limit_exceeded` (details: model, version, statistics, limits, top_variables) and
`model.variable_missing` (details: variables). A deployed RUL model writes `analytics.<model>.rul`,
`.rul_low` and `.rul_high` once per cycle and raises `model.rul_low` (details: rul, rul_low,
rul_high, threshold, cycles) while the lower end of its estimate is below the deployment's threshold.
A monitor deployed with a fault classifier names the likely class in `model.limit_exceeded`
(details: fault_class, fault_probabilities).
"""

from __future__ import annotations

SOURCE = "analytics"
LIMIT_EXCEEDED = "model.limit_exceeded"
VARIABLE_MISSING = "model.variable_missing"
RUL_LOW = "model.rul_low"


def score_metric(model: str, statistic: str) -> str:
    """The telemetry metric a deployed model writes a statistic (or `alarm`, `missing`) to."""
    return f"analytics.{model}.{statistic}"
