"""What other contexts may use of `telemetry`: the point batch, the bus subjects, the quality codes.

Points travel on the bus in columnar batches (one per tenant): a per-message model costs more to
encode and validate than the store costs to write, and ingest reaches tens of thousands of points a
second only in batches. The batches travel as binary frames (`iip.telemetry.wire`, ADR 0017).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from enum import IntEnum
from typing import TYPE_CHECKING, Any, NamedTuple

from pydantic import BaseModel, Field, PrivateAttr, model_validator

from iip.kernel.bus import Subject
from iip.telemetry.wire import PointBatchCodec

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


class Quality(IntEnum):
    """Quality of a point, coarse like OPC UA's status severity."""

    GOOD = 0
    UNCERTAIN = 1
    BAD = 2


class Point(NamedTuple):
    device: str
    metric: str
    ts_ms: int  # Unix epoch, milliseconds, UTC
    value: float
    quality: int = Quality.GOOD


class PointColumns(NamedTuple):
    """A batch's columns as numpy arrays (integer dtypes may be narrower than int64)."""

    series_index: npt.NDArray[np.integer[Any]]
    ts_ms: npt.NDArray[np.int64]
    value: npt.NDArray[np.float64]
    quality: npt.NDArray[np.integer[Any]]


class PointBatch(BaseModel):
    """Points of one tenant, columnar: point i is `series[series_index[i]]` at `ts_ms[i]`.

    `series` holds distinct `(device key, metric name)` pairs. `attributes` carries non-numeric
    values reported by devices (firmware, text states) for the twin only: device key -> name -> value.
    """

    tenant_id: str
    series: list[tuple[str, str]] = Field(default_factory=list)
    series_index: list[int] = Field(default_factory=list)
    ts_ms: list[int] = Field(default_factory=list)
    value: list[float] = Field(default_factory=list)
    quality: list[int] = Field(default_factory=list)
    attributes: dict[str, dict[str, Any]] = Field(default_factory=dict)
    source: str = Field(
        default="", description="how the points arrived: mqtt, sparkplug, modbus, opcua, http, edge, sim"
    )

    @model_validator(mode="after")
    def _columns_align(self) -> PointBatch:
        n = len(self.series_index)
        if not (len(self.ts_ms) == len(self.value) == len(self.quality) == n):
            raise ValueError("series_index, ts_ms, value and quality must have the same length")
        if n and (min(self.series_index) < 0 or max(self.series_index) >= len(self.series)):
            raise ValueError("series_index out of range")
        return self

    # The columns as arrays, once asked for; a decoded frame brings them along (`iip.telemetry.wire`).
    _columns: PointColumns | None = PrivateAttr(default=None)

    def __len__(self) -> int:
        return len(self.series_index)

    def __eq__(self, other: object) -> bool:
        # The fields only: the cached columns derive from them (and arrays do not compare to a bool).
        if not isinstance(other, PointBatch):
            return NotImplemented
        return type(self) is type(other) and self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]  # mutable, like every pydantic model

    def columns(self) -> PointColumns:
        """The columns as numpy arrays, built once per batch: a batch is not changed once built."""
        if self._columns is None:
            import numpy as np  # here: importers of this module need not load numpy

            n = len(self.series_index)
            self._columns = PointColumns(
                _small_ints(self.series_index),
                np.fromiter(self.ts_ms, dtype=np.int64, count=n),
                np.fromiter(self.value, dtype=np.float64, count=n),
                _small_ints(self.quality),
            )
        return self._columns

    def points(self) -> Iterator[Point]:
        series = self.series
        for i, ts, value, quality in zip(self.series_index, self.ts_ms, self.value, self.quality, strict=True):
            device, metric = series[i]
            yield Point(device, metric, ts, value, quality)


def _small_ints(values: list[int]) -> npt.NDArray[np.integer[Any]]:
    """Non-negative ints as an array; through `bytes` (three times faster) when they all fit in a byte."""
    import numpy as np

    try:
        return np.frombuffer(bytes(values), dtype=np.uint8)
    except ValueError:  # a value past 255 (or below 0)
        return np.asarray(values, dtype=np.int64)


class PointBatchBuilder:
    """Collects points of one tenant into a `PointBatch`."""

    def __init__(self, tenant_id: str, source: str = "") -> None:
        self.tenant_id = tenant_id
        self.source = source
        self._series: dict[tuple[str, str], int] = {}
        self._index: list[int] = []
        self._ts: list[int] = []
        self._value: list[float] = []
        self._quality: list[int] = []
        self._attributes: dict[str, dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self._index)

    def add(self, device: str, metric: str, ts_ms: int, value: float, quality: int = Quality.GOOD) -> None:
        key = (device, metric)
        index = self._series.get(key)
        if index is None:
            index = self._series[key] = len(self._series)
        self._index.append(index)
        self._ts.append(ts_ms)
        self._value.append(value)
        self._quality.append(int(quality))

    def attribute(self, device: str, name: str, value: Any) -> None:
        self._attributes.setdefault(device, {})[name] = value

    def build(self) -> PointBatch:
        return PointBatch.model_construct(
            tenant_id=self.tenant_id,
            series=list(self._series),
            series_index=self._index,
            ts_ms=self._ts,
            value=self._value,
            quality=self._quality,
            attributes=self._attributes,
            source=self.source,
        )


class DeviceStatus(BaseModel):
    """A device came online or went offline (published by `devices`, kept on the twin)."""

    tenant_id: str
    device: str
    online: bool
    at: dt.datetime
    reason: str = ""


class DesiredChange(BaseModel):
    """A desired attribute set on a twin; `devices` turns it into a command to the device."""

    tenant_id: str
    device: str
    name: str  # metric or attribute name
    value: Any
    requested_by: str  # principal id
    request_id: str


# The plant's whole stream, decoded by every subscriber: a binary frame rather than JSON (ADR 0017).
TELEMETRY_POINTS: Subject[PointBatch] = Subject("telemetry.points", PointBatch, PointBatchCodec(PointBatch, Quality))
DEVICE_STATUS: Subject[DeviceStatus] = Subject("devices.status", DeviceStatus)
TWIN_DESIRED: Subject[DesiredChange] = Subject("telemetry.desired", DesiredChange)


# --- the time-series store -------------------------------------------------------------------

from iip.kernel.runtime import Runtime  # noqa: E402 - the store's entry points follow the shared contract


def store_points(runtime: Runtime, batch: PointBatch) -> int:
    """Write a batch to the store (synchronously; from asyncio use `asyncio.to_thread`).

    Idempotent on (series, timestamp): a point written again keeps its first value. Returns how many
    points were new. Raises `iip.kernel.errors.Invalid` for a batch the store refuses (non-finite
    values, timestamps outside 1970-9999, over-long names), writing none of it.
    """
    from iip.telemetry.store import store_of

    return store_of(runtime).write(batch)


def latest_points(runtime: Runtime, tenant_id: str, device: str) -> dict[str, tuple[int, float, int]]:
    """The newest stored point of each metric of a device: metric -> (ts_ms, value, quality)."""
    from iip.telemetry.store import store_of

    rows = store_of(runtime).latest_of(tenant_id, [device])
    return {metric: (ts, value, quality) for _, _, metric, ts, value, quality in rows}


def latest_points_of(
    runtime: Runtime, tenant_id: str, devices: Sequence[str]
) -> dict[str, dict[str, tuple[int, float, int]]]:
    """The newest stored point of each metric of several devices, in one read: device -> metric -> point."""
    from iip.telemetry.store import store_of

    found: dict[str, dict[str, tuple[int, float, int]]] = {}
    for _, device, metric, ts, value, quality in store_of(runtime).latest_of(tenant_id, list(devices)):
        found.setdefault(device, {})[metric] = (ts, value, quality)
    return found


def points_between(
    runtime: Runtime,
    tenant_id: str,
    device: str,
    metric: str | None,
    start_ms: int,
    end_ms: int,
    *,
    limit: int = 1_000_000,
) -> list[Point]:
    """Stored raw points of a device's metric (every metric when None) in [start_ms, end_ms), oldest
    first per metric, at most `limit` in all."""
    from iip.telemetry.store import store_of

    store = store_of(runtime)
    found: list[Point] = []
    for ref in store.series(tenant_id, device, metric):
        if len(found) >= limit:
            break
        for point in store.points(ref.id, start_ms, end_ms, limit - len(found)):
            found.append(Point(ref.device, ref.metric, point.ts, point.value, point.quality))
    return found
