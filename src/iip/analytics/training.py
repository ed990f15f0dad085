"""Reading the data models are trained and evaluated on: stored telemetry on a time grid, or a CSV/Parquet file.

Both give a `DataTable`: one column per variable, one row per sample, NaN where a value is absent.
For training, an absent value is an error that names the variable and the row or time; for scoring
it stays NaN, and the monitor flags the variable as missing. Nothing is ever filled in.

Telemetry is aligned on a grid of `interval_ms` from `start_ms`: a sample is the mean of the good
points of a series in [t, t + interval). Points of BAD quality count as absent. Files are read with
pyarrow (CSV or Parquet, told apart by the Parquet magic bytes): the header names the columns, an
optional time column (ISO 8601 times) and an optional label column (evaluation) are set apart, every
other column named as a variable must be numeric.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from iip.analytics.monitoring import ScoringDataError, TrainingDataError
from iip.kernel.errors import Invalid

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Purpose = Literal["training", "scoring"]

MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_ROWS = 1_000_000  # samples of one table (file rows or grid steps)
MAX_POINTS = 5_000_000  # stored points read for one table
MAX_VARIABLES = 1000
TIME_COLUMNS = ("time", "timestamp", "ts", "datetime")  # a time column found by name, when not named
# Label values that mark a normal row; any other value marks a fault (evaluation).
NORMAL_LABELS = frozenset({"", "0", "0.0", "normal", "false", "no", "ok"})
BAD_QUALITY = 2  # telemetry.public.Quality.BAD
PARQUET_MAGIC = b"PAR1"


@dataclass(frozen=True)
class Source:
    """Where a variable's values come from live: a metric of a device ("" = the device deployed to)."""

    variable: str
    device: str
    metric: str

    def as_dict(self) -> dict[str, str]:
        return {"variable": self.variable, "device": self.device, "metric": self.metric}


@dataclass(frozen=True)
class DataTable:
    """Samples as rows, variables as columns (NaN: absent), with their times and labels when known."""

    variables: tuple[str, ...]
    data: FloatArray
    times_ms: IntArray | None = None
    labels: list[str] | None = None
    source: dict[str, Any] = field(default_factory=dict)
    absent: tuple[str, ...] = ()  # variables with no column at all (scoring)
    units: list[str] | None = None  # the unit each row belongs to (remaining useful life)

    @property
    def rows(self) -> int:
        return int(self.data.shape[0])

    def fault_mask(self) -> npt.NDArray[np.bool_] | None:
        """True where the label marks a fault; None without labels."""
        if self.labels is None:
            return None
        return np.array([label.strip().lower() not in NORMAL_LABELS for label in self.labels], dtype=bool)


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _error(purpose: Purpose, message: str, **details: Any) -> Invalid:
    cls = TrainingDataError if purpose == "training" else ScoringDataError
    return cls(message, **details)


# --- stored telemetry ---------------------------------------------------------------------------

ReadPoints = Callable[[str, str, int, int, int], Iterable[tuple[int, float, int]]]
"""(device, metric, start_ms, end_ms, limit) -> (ts_ms, value, quality) of the stored points."""


def telemetry_sources(devices: Sequence[str], metrics: Sequence[str]) -> list[Source]:
    """One variable per device and metric: the metric's name for one device, `device/metric` for several.

    A one-device model reads the device it is deployed to; a several-device model reads the devices
    it was trained on.
    """
    devices = [d.strip() for d in devices]
    metrics = [m.strip() for m in metrics]
    if not devices or not metrics:
        raise TrainingDataError("name at least one device and one metric")
    for what, names in (("device", devices), ("metric", metrics)):
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise TrainingDataError(f"{what} named twice: {', '.join(duplicates)}")
        if any(not n for n in names):
            raise TrainingDataError(f"a {what} name is empty")
    if len(devices) * len(metrics) > MAX_VARIABLES:
        raise TrainingDataError(f"at most {MAX_VARIABLES} variables (devices x metrics)")
    if len(devices) == 1:
        return [Source(metric, "", metric) for metric in metrics]
    return [Source(f"{device}/{metric}", device, metric) for device in devices for metric in metrics]


def grid_size(start_ms: int, end_ms: int, interval_ms: int) -> int:
    if interval_ms <= 0:
        raise Invalid("the sample interval must be positive", code="interval_invalid")
    if end_ms <= start_ms:
        raise Invalid("the end of the range must be after its start", code="range_invalid")
    steps = -(-(end_ms - start_ms) // interval_ms)
    if steps > MAX_ROWS:
        raise Invalid(
            f"{steps} samples in the range at this interval; at most {MAX_ROWS} (choose a longer interval)",
            code="range_too_long",
        )
    return int(steps)


def read_telemetry(
    read_points: ReadPoints,
    sources: Sequence[Source],
    *,
    device: str,
    start_ms: int,
    end_ms: int,
    interval_ms: int,
    purpose: Purpose,
) -> DataTable:
    """Stored points of each source on the grid [start_ms, end_ms) step `interval_ms`.

    `device` stands for the sources whose device is "" (the device deployed to, or trained on).
    For training a grid step without a point is an error naming the variable and the time.
    """
    steps = grid_size(start_ms, end_ms, interval_ms)
    data = np.full((steps, len(sources)), np.nan)
    budget = MAX_POINTS
    for j, source in enumerate(sources):
        series_device = source.device or device
        found = list(read_points(series_device, source.metric, start_ms, end_ms, budget + 1))
        budget -= len(found)
        if budget < 0:
            raise Invalid(
                f"more than {MAX_POINTS} stored points in the range; choose a shorter one", code="range_too_long"
            )
        if not found:
            if purpose == "training":
                raise TrainingDataError(
                    f"no stored points of '{source.variable}' ({series_device} {source.metric}) "
                    f"between {iso(start_ms)} and {iso(end_ms)}",
                    variable=source.variable,
                )
            continue
        points = np.array(found, dtype=np.float64).reshape(-1, 3)
        good = points[:, 2] < BAD_QUALITY
        cells = ((points[good, 0].astype(np.int64) - start_ms) // interval_ms).astype(np.intp)
        counts = np.bincount(cells, minlength=steps)[:steps]
        totals = np.bincount(cells, weights=points[good, 1], minlength=steps)[:steps]
        with np.errstate(invalid="ignore", divide="ignore"):
            data[:, j] = np.where(counts > 0, totals / np.maximum(counts, 1), np.nan)
        if purpose == "training" and not counts.all():
            empty = np.flatnonzero(counts == 0)
            first = start_ms + int(empty[0]) * interval_ms
            raise TrainingDataError(
                f"gap in '{source.variable}': no good point between {iso(first)} and {iso(first + interval_ms)} "
                f"({empty.size} of {steps} samples at {interval_ms / 1000:g} s have none); choose a longer "
                "sample interval or a range without gaps",
                variable=source.variable,
                at=iso(first),
                gaps=int(empty.size),
            )
    times = start_ms + np.arange(steps, dtype=np.int64) * interval_ms
    devices = sorted({s.device or device for s in sources})
    described = {
        "type": "telemetry",
        "devices": devices,
        "metrics": sorted({s.metric for s in sources}),
        "start": iso(start_ms),
        "end": iso(end_ms),
        "interval_ms": interval_ms,
        "rows": steps,
    }
    return DataTable(tuple(s.variable for s in sources), data, times, None, described)


def read_unit_runs(
    read_points: ReadPoints,
    metrics: Sequence[str],
    devices: Sequence[str],
    *,
    start_ms: int,
    end_ms: int,
    interval_ms: int,
) -> DataTable:
    """Run-to-failure histories from stored telemetry: each device is one unit, one cycle per grid step.

    A unit's run is its grid steps from the first to the last with a point of any metric in
    [start_ms, end_ms): its last step is its failure. Inside a run every metric must have a good
    point in every step; a gap is an error naming the unit, the variable and the time.
    """
    sources = telemetry_sources(devices[:1], metrics)
    twice = sorted({d for d in devices if list(devices).count(d) > 1})
    if twice:
        raise TrainingDataError(f"device named twice: {', '.join(twice)}")
    parts: list[FloatArray] = []
    units: list[str] = []
    runs: dict[str, dict[str, Any]] = {}
    for device in devices:
        table = read_telemetry(
            read_points, sources, device=device, start_ms=start_ms, end_ms=end_ms, interval_ms=interval_ms,
            purpose="scoring",
        )  # fmt: skip
        present = np.isfinite(table.data).any(axis=1)
        if not present.any():
            raise TrainingDataError(
                f"no stored points of unit '{device}' ({_list(metrics)}) between {iso(start_ms)} and {iso(end_ms)}",
                device=device,
            )
        first, last = (int(i) for i in np.flatnonzero(present)[[0, -1]])
        run = table.data[first : last + 1]
        gaps = ~np.isfinite(run)
        if gaps.any():
            column = int(np.flatnonzero(gaps.any(axis=0))[0])
            at = start_ms + (first + int(np.flatnonzero(gaps[:, column])[0])) * interval_ms
            variable = sources[column].variable
            raise TrainingDataError(
                f"gap in '{variable}' of unit '{device}': no good point between {iso(at)} and {iso(at + interval_ms)} "
                f"({int(gaps[:, column].sum())} of its {run.shape[0]} cycles at {interval_ms / 1000:g} s have none); "
                "choose a longer sample interval or a range without gaps",
                device=device,
                variable=variable,
                at=iso(at),
            )
        parts.append(run)
        units.extend([device] * run.shape[0])
        run_start = start_ms + first * interval_ms
        runs[device] = {"start": iso(run_start), "end": iso(start_ms + (last + 1) * interval_ms), "cycles": len(run)}
    data = np.vstack(parts)
    described = {
        "type": "telemetry",
        "devices": list(devices),
        "metrics": [s.metric for s in sources],
        "start": iso(start_ms),
        "end": iso(end_ms),
        "interval_ms": interval_ms,
        "rows": int(data.shape[0]),
        "units": len(devices),
        "runs": runs,
    }
    return DataTable(tuple(s.variable for s in sources), data, None, None, described, (), units)


# --- files --------------------------------------------------------------------------------------


def file_format(content: bytes, filename: str) -> Literal["csv", "parquet"]:
    if content[:4] == PARQUET_MAGIC and content[-4:] == PARQUET_MAGIC:
        return "parquet"
    if filename.lower().endswith((".parquet", ".pq")):
        raise Invalid(f"'{filename}' is not a Parquet file (its magic bytes are missing)", code="file_unreadable")
    return "csv"


def read_file(
    content: bytes,
    filename: str,
    *,
    purpose: Purpose,
    variables: Sequence[str] | None = None,
    time_column: str | None = None,
    label_column: str | None = None,
    unit_column: str | None = None,
) -> DataTable:
    """A CSV or Parquet file as a table of `variables` (every other column when not given).

    Training refuses a missing variable column, an empty or non-numeric cell, naming row and column;
    scoring refuses non-numeric cells but keeps empty cells and absent columns as NaN (flagged later).
    """
    if len(content) > MAX_FILE_BYTES:
        raise Invalid(f"the file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB", code="file_too_large")
    if not content.strip():
        raise _error(purpose, f"'{filename}' is empty")
    kind = file_format(content, filename)
    table = _read_parquet(content, filename) if kind == "parquet" else _read_csv(content, filename, purpose)
    names = [str(n) for n in table.column_names]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise _error(purpose, f"column named twice in '{filename}': {', '.join(duplicates)}")
    if table.num_rows > MAX_ROWS:
        raise _error(purpose, f"'{filename}' has {table.num_rows} rows; at most {MAX_ROWS}")
    line_offset = 2 if kind == "csv" else None  # header on line 1

    if unit_column is not None and unit_column not in names:
        raise _error(purpose, f"the unit column '{unit_column}' is not in '{filename}' (columns: {_list(names)})")
    time_column = _time_column(table, names, filename, purpose, time_column, label_column)
    reserved = {time_column, label_column, unit_column} - {None}
    if len(reserved) < len([c for c in (time_column, label_column, unit_column) if c is not None]):
        raise _error(purpose, "the time, label and unit columns must differ")
    chosen, absent = _variable_columns(names, filename, purpose, variables, reserved)

    data = np.full((table.num_rows, len(chosen)), np.nan)
    for j, name in enumerate(chosen):
        if name in names:
            data[:, j] = _numeric(table.column(name), name, purpose, line_offset)
    times = _times(table.column(time_column), time_column, line_offset) if time_column is not None else None
    labels = None if label_column is None else _text(table.column(label_column))
    units = None if unit_column is None else _text(table.column(unit_column))
    described: dict[str, Any] = {
        "type": "file",
        "name": filename[:200],
        "format": kind,
        "sha256": hashlib.sha256(content).hexdigest(),
        "rows": int(table.num_rows),
    }
    if times is not None and times.size:
        described.update(start=iso(int(times.min())), end=iso(int(times.max())), time_column=time_column)
    if units is not None:
        described.update(unit_column=unit_column, units=len(set(units)))
    return DataTable(tuple(chosen), data, times, labels, described, tuple(absent), units)


def _text(column: Any) -> list[str]:
    return ["" if v is None else str(v) for v in column.to_pylist()]


def _time_column(
    table: Any, names: list[str], filename: str, purpose: Purpose, given: str | None, label_column: str | None
) -> str | None:
    """The time column named, or the one timestamp column, or the one text column named like a time."""
    import pyarrow as pa  # type: ignore[import-untyped]

    for column, what in ((given, "time"), (label_column, "label")):
        if column is not None and column not in names:
            raise _error(purpose, f"the {what} column '{column}' is not in '{filename}' (columns: {_list(names)})")
    if given is None:
        types = {n: table.schema.field(n).type for n in names}
        stamped = [n for n in names if pa.types.is_timestamp(types[n])]
        named = [n for n in names if n.strip().lower() in TIME_COLUMNS and pa.types.is_string(types[n])]
        given = stamped[0] if len(stamped) == 1 else (named[0] if len(named) == 1 and not stamped else None)
    if label_column is not None and label_column == given:
        raise _error(purpose, "the time and label columns must differ")
    return given


def _variable_columns(
    names: list[str], filename: str, purpose: Purpose, variables: Sequence[str] | None, reserved: set[str | None]
) -> tuple[list[str], list[str]]:
    """The variables' columns, and (scoring) those absent from the file."""
    chosen = [str(v) for v in variables] if variables else [n for n in names if n not in reserved]
    if not chosen:
        raise _error(purpose, f"'{filename}' has no variable columns")
    if len(chosen) > MAX_VARIABLES:
        raise _error(purpose, f"at most {MAX_VARIABLES} variables, '{filename}' has {len(chosen)}")
    clash = sorted(set(chosen) & {r for r in reserved if r is not None})
    if clash:
        raise _error(purpose, f"{_list(clash)} cannot be both a variable and the time or label column")
    absent = [v for v in chosen if v not in names]
    if absent and purpose == "training":
        raise TrainingDataError(
            f"mismatched columns: {_list(absent)} not in '{filename}' (columns: {_list(names)})", variables=absent
        )
    return chosen, absent


def _list(names: Iterable[str], most: int = 20) -> str:
    items = [f"'{n}'" for n in names]
    return ", ".join(items[:most]) + (f" and {len(items) - most} more" if len(items) > most else "")


def _place(row: int, line_offset: int | None) -> str:
    return f"row {row + 1} (line {row + line_offset})" if line_offset is not None else f"row {row + 1}"


def _read_parquet(content: bytes, filename: str) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    try:
        return pq.read_table(pa.BufferReader(content))
    except (pa.ArrowException, OSError, ValueError) as err:
        raise Invalid(f"'{filename}' cannot be read as Parquet: {err}", code="file_unreadable") from err


def _read_csv(content: bytes, filename: str, purpose: Purpose) -> Any:
    import pyarrow as pa
    import pyarrow.csv as pacsv  # type: ignore[import-untyped]

    try:
        content.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _error(purpose, f"'{filename}' cannot be read as CSV: not UTF-8 text (byte {err.start})") from None
    try:
        return pacsv.read_csv(pa.BufferReader(content))
    except (pa.ArrowException, OSError, ValueError) as err:
        detail = _csv_shape_problem(content) or str(err).removeprefix("CSV parse error: ")
        raise _error(purpose, f"'{filename}' cannot be read as CSV: {detail}") from err


def _csv_shape_problem(content: bytes) -> str | None:
    """The first row whose cell count differs from the header's, found again with the csv module."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        return f"not UTF-8 text (byte {err.start})"
    rows = csv.reader(io.StringIO(text))
    header = next(rows, None)
    if not header:
        return "no header row"
    for number, row in enumerate(rows, start=1):
        if row and len(row) != len(header):
            return (
                f"mismatched columns: row {number} (line {number + 1}) has {len(row)} cells, "
                f"the header names {len(header)}"
            )
    return None


def _numeric(column: Any, name: str, purpose: Purpose, line_offset: int | None) -> FloatArray:
    """A column as floats; a non-numeric cell is an error, and so (for training) is an empty or infinite one."""
    import pyarrow as pa
    import pyarrow.compute as pc  # type: ignore[import-untyped]

    kind = column.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind) or pa.types.is_null(kind):
        values = np.array(pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        cells = column.to_pylist()
        values = np.full(len(cells), np.nan)
        for i, cell in enumerate(cells):
            if cell is None or not cell.strip():
                continue
            try:
                values[i] = float(cell)
            except ValueError:
                raise _error(
                    purpose,
                    f"non-numeric value '{cell[:40]}' at {_place(i, line_offset)}, column '{name}'",
                    column=name,
                    row=i + 1,
                ) from None
    else:
        raise _error(purpose, f"column '{name}' is not numeric (it holds {kind})", column=name)
    if purpose == "training":
        bad = ~np.isfinite(values)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            what = "missing value" if math.isnan(values[first]) else f"non-finite value {values[first]}"
            raise TrainingDataError(
                f"{what} at {_place(first, line_offset)}, column '{name}' "
                f"({int(bad.sum())} such cells in the column); training data must be complete",
                column=name,
                row=first + 1,
                cells=int(bad.sum()),
            )
    else:
        values[~np.isfinite(values)] = np.nan
    return values


def _times(column: Any, name: str, line_offset: int | None) -> IntArray:
    """A time column as Unix milliseconds (naive times are taken as UTC)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = column.type
    if pa.types.is_timestamp(kind):
        as_ms = pc.cast(column, pa.timestamp("ms", tz=kind.tz)) if kind.unit != "ms" else column
        values = as_ms.cast(pa.int64())
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        out = []
        for i, cell in enumerate(column.to_pylist()):
            try:
                at = dt.datetime.fromisoformat(str(cell).strip().replace("Z", "+00:00"))
            except ValueError:
                raise Invalid(
                    f"time '{str(cell)[:40]}' at {_place(i, line_offset)}, column '{name}' is not ISO 8601",
                    code="time_invalid",
                ) from None
            out.append(int((at if at.tzinfo else at.replace(tzinfo=dt.UTC)).timestamp() * 1000))
        return np.array(out, dtype=np.int64)
    else:
        raise Invalid(f"time column '{name}' must hold ISO 8601 times (it holds {kind})", code="time_invalid")
    if values.null_count:
        first = int(np.flatnonzero(np.asarray(values.is_null().to_numpy(zero_copy_only=False)))[0])
        raise Invalid(f"empty time at {_place(first, line_offset)}, column '{name}'", code="time_invalid")
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.int64)
