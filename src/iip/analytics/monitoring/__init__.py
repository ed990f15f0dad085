"""Process monitoring models (PCA, dynamic PCA, ICA, CVA) and fault classification: numpy, no I/O."""

from iip.analytics.monitoring.base import (
    MONITOR_KINDS,
    ModelStateError,
    Monitor,
    MonitorScores,
    ScoringDataError,
    TrainingDataError,
    load_monitor,
    monitor_from_bytes,
    monitor_to_bytes,
    state_from_bytes,
    state_to_bytes,
)

__all__ = [
    "MONITOR_KINDS",
    "ModelStateError",
    "Monitor",
    "MonitorScores",
    "ScoringDataError",
    "TrainingDataError",
    "load_monitor",
    "monitor_from_bytes",
    "monitor_to_bytes",
    "state_from_bytes",
    "state_to_bytes",
]
