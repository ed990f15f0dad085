"""The time-series store of the `telemetry` context (see `timeseries` and docs/adr/0006)."""

from iip.telemetry.store.aggregates import DAY, HOUR, MINUTE, Aggregate, Partial
from iip.telemetry.store.timeseries import (
    Bucket,
    LatestValue,
    RetentionReport,
    RollUpReport,
    SeriesRef,
    StoredPoint,
    TimeSeriesStore,
    store_of,
)

__all__ = [
    "DAY",
    "HOUR",
    "MINUTE",
    "Aggregate",
    "Bucket",
    "LatestValue",
    "Partial",
    "RetentionReport",
    "RollUpReport",
    "SeriesRef",
    "StoredPoint",
    "TimeSeriesStore",
    "store_of",
]
