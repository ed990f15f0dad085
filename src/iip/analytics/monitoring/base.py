"""The monitor contract: fit on normal operating data, score telemetry, name the variables behind an alarm.

A monitor's state is plain JSON (`meta`) plus named numeric arrays, so it can be stored with
`np.savez` and read back with `np.load(..., allow_pickle=False)`: loading a stored model never runs
code from the file.
"""

from __future__ import annotations

import io
import itertools
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self, TypeVar

import numpy as np
import numpy.typing as npt

from iip.kernel.errors import Invalid

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
CoreT = TypeVar("CoreT")

STATE_FORMAT = 1
META_KEY = "__meta__"
# Relative spread below which a column counts as constant (scaling it would divide by ~0).
CONSTANT_TOLERANCE = 1e-10


class TrainingDataError(Invalid, ValueError):
    """Training or validation data a monitor cannot be fitted on; the message names the problem."""

    code = "training_data_invalid"
    title = "Training data not usable"


class ScoringDataError(Invalid, ValueError):
    """Scoring data whose shape does not match the monitor (a wrong column count, not a gap)."""

    code = "scoring_data_invalid"
    title = "Scoring data not usable"


class ModelStateError(Invalid, ValueError):
    """A stored monitor that cannot be loaded (unknown kind, missing or malformed arrays)."""

    code = "model_state_invalid"
    title = "Stored model not usable"


@dataclass(frozen=True, slots=True)
class MonitorScores:
    """Scores of a block of samples, one entry per input row.

    `statistics` maps a statistic ("t2", "spe", ...) to its value per row (NaN where the row could
    not be scored: a missing variable, or not enough history for a lagged model). `alarm` is true
    where any statistic exceeds its limit, after the persistence filter. `missing` names the
    variables that were absent or not finite in some row; `valid` marks the rows that were scored.
    """

    statistics: dict[str, FloatArray]
    limits: dict[str, float]
    alarm: BoolArray
    missing: list[str] = field(default_factory=list)
    valid: BoolArray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    def exceeded(self, statistic: str) -> BoolArray:
        """Rows where one statistic is over its limit (before the persistence filter)."""
        values = self.statistics[statistic]
        with np.errstate(invalid="ignore"):
            return np.asarray(values > self.limits[statistic], dtype=bool)


# Bytes of (lagged) rows scored at a time. A chunk's temporaries (scaled rows, scores, residuals)
# then stay below glibc's 128 KiB mmap threshold and come from the heap, not from fresh pages zeroed
# on every call: 10,000 rows of 52 variables in one go scored four times slower per row
# (bench/analytics_scoring.py).
CHUNK_BYTES = 96 * 1024


def chunk_rows(width: int) -> int:
    """Rows of `width` float64 columns in one scoring chunk."""
    return max(32, CHUNK_BYTES // (8 * max(width, 1)))


def persistent(flags: BoolArray, run: int) -> BoolArray:
    """True where `flags` has been true for `run` consecutive rows ending at that row."""
    if run <= 1:
        return flags.copy()
    counts = np.zeros(flags.shape[0] + 1, dtype=np.int64)
    np.cumsum(flags, out=counts[1:])
    out = np.zeros(flags.shape[0], dtype=bool)
    out[run - 1 :] = (counts[run:] - counts[:-run]) == run
    return out


def check_variables(variables: Sequence[str], columns: int) -> tuple[str, ...]:
    names = tuple(str(v) for v in variables)
    if len(names) != columns:
        raise TrainingDataError(
            f"mismatched columns: the data has {columns} columns but {len(names)} variable names were given",
            columns=columns,
            variables=len(names),
        )
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise TrainingDataError(f"duplicate variable names: {', '.join(duplicates)}", variables=duplicates)
    if any(not n.strip() for n in names):
        raise TrainingDataError("variable names must not be empty")
    return names


def check_training_data(
    data: npt.ArrayLike,
    variables: Sequence[str],
    *,
    min_rows: int,
    what: str = "training data",
    check_constant: bool = True,
) -> FloatArray:
    """The data as a float array, or a `TrainingDataError` naming what is wrong with it."""
    try:
        array = np.asarray(data, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TrainingDataError(f"{what} is not numeric: {err}") from err
    if array.ndim != 2:
        raise TrainingDataError(f"{what} must be a table (rows x variables), got {array.ndim} dimension(s)")
    names = check_variables(variables, array.shape[1])
    if array.shape[0] < min_rows:
        raise TrainingDataError(
            f"too few rows in {what}: {array.shape[0]} (at least {min_rows} needed)",
            rows=array.shape[0],
            min_rows=min_rows,
        )
    bad = ~np.isfinite(array).all(axis=0)
    if bad.any():
        named = [names[i] for i in np.flatnonzero(bad)]
        raise TrainingDataError(
            f"missing or non-finite values in {what}, variables: {', '.join(named)}", variables=named
        )
    if check_constant:
        spread = array.max(axis=0) - array.min(axis=0)
        scale = np.maximum(np.abs(array).max(axis=0), 1.0)
        constant = spread <= CONSTANT_TOLERANCE * scale
        if constant.any():
            named = [names[i] for i in np.flatnonzero(constant)]
            raise TrainingDataError(
                f"constant columns in {what} (no variation to model), variables: {', '.join(named)}",
                variables=named,
            )
    return array


def check_validation(validation: npt.ArrayLike | None, variables: Sequence[str]) -> FloatArray | None:
    if validation is None:
        return None
    return check_training_data(validation, variables, min_rows=1, what="validation data", check_constant=False)


def check_folds(folds: int, rows: int, min_rows: int) -> int:
    folds = int(folds)
    if folds < 2:
        raise TrainingDataError(f"folds must be at least 2, got {folds}")
    if rows - rows // folds - 1 < min_rows:
        raise TrainingDataError(
            f"too few rows in training data: {rows} rows in {folds} folds leave fewer than {min_rows} to fit each fold",
            rows=rows,
            min_rows=min_rows,
        )
    return folds


def held_out_statistics(
    fit_core: Callable[[list[FloatArray]], CoreT],
    statistics: Callable[[CoreT, FloatArray], dict[str, FloatArray]],
    data: FloatArray,
    folds: int,
) -> dict[str, FloatArray]:
    """Statistics of every training row computed by a model that did not see it.

    Blocked cross-validation: the rows are cut into `folds` contiguous blocks; each block is scored
    by a model fitted on the rest (kept as separate segments, so lagged models never join rows across
    the gap). Contiguous blocks matter for autocorrelated process data: a row's neighbours resemble it.
    """
    n = data.shape[0]
    bounds = np.linspace(0, n, folds + 1).round().astype(int)
    collected: dict[str, list[FloatArray]] = {}
    for start, stop in itertools.pairwise(bounds):
        segments = [part for part in (data[:start], data[stop:]) if part.shape[0] > 0]
        core = fit_core(segments)
        for name, values in statistics(core, data[start:stop]).items():
            collected.setdefault(name, []).append(values)
    return {name: np.concatenate(parts) for name, parts in collected.items()}


def fit_with_limits(
    fit_core: Callable[[list[FloatArray]], CoreT],
    statistics: Callable[[CoreT, FloatArray], dict[str, FloatArray]],
    data: FloatArray,
    validation: FloatArray | None,
    *,
    folds: int,
    false_alarm_rate: float,
) -> tuple[CoreT, dict[str, float]]:
    """The model fitted on all of `data`, and limits set on held-out normal rows.

    The held-out rows are `validation` when given, else every training row scored by a
    cross-validation model that did not see it (`held_out_statistics`).
    """
    core = fit_core([data])
    if validation is not None:
        held = statistics(core, validation)
    else:
        held = held_out_statistics(fit_core, statistics, data, folds)
    return core, {name: empirical_limit(values, false_alarm_rate) for name, values in held.items()}


def empirical_limit(values: FloatArray, false_alarm_rate: float) -> float:
    """The (1 - rate) quantile of a statistic on held-out normal rows."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise TrainingDataError("no held-out rows could be scored to set the control limits")
    return float(np.quantile(finite, 1.0 - false_alarm_rate, method="higher"))


def check_rate(false_alarm_rate: float) -> float:
    rate = float(false_alarm_rate)
    if not 0.0 < rate < 0.5:
        raise TrainingDataError(f"false_alarm_rate must be between 0 and 0.5, got {false_alarm_rate}")
    return rate


class Monitor(ABC):
    """A process monitor trained on normal operating data.

    Subclasses implement `fit`, `_statistics` (rows known to be complete), `contributions`,
    `params`, `_state_meta`/`_state_arrays` and `_from_state`; input checks, missing-variable
    flagging, limits, the persistence filter and the state envelope live here.
    """

    kind: ClassVar[str]
    # Rows of history a row needs before it can be scored (lagged models).
    history: int = 0

    def __init__(
        self,
        variables: Sequence[str],
        limits: Mapping[str, float],
        *,
        false_alarm_rate: float,
        persistence: int = 1,
    ) -> None:
        self.variables: tuple[str, ...] = tuple(variables)
        self.limits: dict[str, float] = {k: float(v) for k, v in limits.items()}
        self.false_alarm_rate = float(false_alarm_rate)
        self.persistence = int(persistence)
        if self.persistence < 1:
            raise TrainingDataError(f"persistence must be at least 1, got {persistence}")

    @classmethod
    @abstractmethod
    def fit(
        cls,
        data: npt.ArrayLike,
        variables: Sequence[str],
        *,
        false_alarm_rate: float = 0.01,
        validation: npt.ArrayLike | None = None,
        **params: Any,
    ) -> Self:
        """Fit on normal rows; set the limits on `validation` (or a held-out tail of `data`)."""

    @abstractmethod
    def _statistics(self, rows: FloatArray) -> dict[str, FloatArray]:
        """Statistics per row for finite rows in `variables` order (the first `history` rows may be NaN)."""

    @abstractmethod
    def contributions(self, rows: npt.ArrayLike) -> dict[str, dict[str, float]]:
        """Per statistic, each variable's share of it, averaged over `rows` (one sample or a block)."""

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """The model's settings and sizes, JSON-serialisable."""

    @abstractmethod
    def _state_meta(self) -> dict[str, Any]: ...

    @abstractmethod
    def _state_arrays(self) -> dict[str, FloatArray]: ...

    @classmethod
    @abstractmethod
    def _from_state(cls, meta: Mapping[str, Any], arrays: Mapping[str, FloatArray], common: dict[str, Any]) -> Self:
        """Rebuild from state; `common` holds the keyword arguments of `Monitor.__init__`."""

    # -- scoring -----------------------------------------------------------------------------

    def rows(self, data: npt.ArrayLike | Mapping[str, npt.ArrayLike]) -> tuple[FloatArray, list[str]]:
        """Input as a float table in `variables` order, and the variables missing from it.

        A mapping may lack variables (their column becomes NaN and they are reported); an array
        must have one column per variable. Nothing is imputed.
        """
        p = len(self.variables)
        if isinstance(data, Mapping):
            unknown = sorted(set(data) - set(self.variables))
            if unknown:
                raise ScoringDataError(f"unknown variables in scoring data: {', '.join(unknown)}", variables=unknown)
            lengths = {np.asarray(v).reshape(-1).shape[0] for v in data.values()}
            if len(lengths) > 1:
                raise ScoringDataError("scoring data columns have different lengths")
            n = lengths.pop() if lengths else 0
            array = np.full((n, p), np.nan)
            for j, name in enumerate(self.variables):
                if name in data:
                    array[:, j] = np.asarray(data[name], dtype=np.float64).reshape(-1)
        else:
            try:
                array = np.asarray(data, dtype=np.float64)
            except (TypeError, ValueError) as err:
                raise ScoringDataError(f"scoring data is not numeric: {err}") from err
            if array.ndim == 1:
                array = array.reshape(1, -1)
            if array.ndim != 2 or array.shape[1] != p:
                raise ScoringDataError(
                    f"mismatched columns: the monitor has {p} variables, the scoring data has shape {array.shape}",
                    expected=p,
                )
        finite_columns = np.isfinite(array).all(axis=0)
        missing = [self.variables[j] for j in np.flatnonzero(~finite_columns)]
        return array, missing

    def complete_rows(self, data: npt.ArrayLike | Mapping[str, npt.ArrayLike]) -> FloatArray:
        """Input for contribution analysis: every variable present in every row."""
        array, missing = self.rows(data)
        if missing:
            raise ScoringDataError(
                f"contributions need every variable; missing: {', '.join(missing)}", variables=missing
            )
        if array.shape[0] <= self.history:
            raise ScoringDataError(f"contributions need more than {self.history} consecutive rows")
        return array

    def score(
        self, data: npt.ArrayLike | Mapping[str, npt.ArrayLike], *, persistence: int | None = None
    ) -> MonitorScores:
        """Statistics, limits and alarms for a block of consecutive samples.

        Rows with a missing variable are not scored (NaN statistics, no alarm) and the variable is
        named in `missing`; a lagged model also leaves unscored the rows after such a gap until its
        history is complete again.
        """
        array, missing = self.rows(data)
        n = array.shape[0]
        run = self.persistence if persistence is None else int(persistence)
        if run < 1:
            raise ScoringDataError(f"persistence must be at least 1, got {run}")
        if missing:
            complete: BoolArray = np.asarray(np.isfinite(array).all(axis=1), dtype=bool)
            filled = np.where(np.isfinite(array), array, 0.0)
            stats = self._chunked_statistics(filled)
            valid: BoolArray = complete.copy()
            if self.history:
                # A lagged row needs every row of its window complete.
                valid = persistent(complete, self.history + 1)
            for values in stats.values():
                values[~valid] = np.nan
        else:
            stats = self._chunked_statistics(array)
            valid = np.ones(n, dtype=bool)
            valid[: min(self.history, n)] = False
        over = np.zeros(n, dtype=bool)
        with np.errstate(invalid="ignore"):
            for name, values in stats.items():
                over |= values > self.limits[name]
        alarm = persistent(over, run) if run > 1 else over
        return MonitorScores(statistics=stats, limits=dict(self.limits), alarm=alarm, missing=missing, valid=valid)

    def _chunked_statistics(self, rows: FloatArray) -> dict[str, FloatArray]:
        """`_statistics` of a long block, worked through in chunks that carry their lagged history."""
        n, step = rows.shape[0], chunk_rows(rows.shape[1] * (self.history + 1))
        if n <= step:
            return self._statistics(rows)
        parts: list[dict[str, FloatArray]] = []
        for start in range(0, n, step):
            first = max(0, start - self.history)
            part = self._statistics(rows[first : start + step])
            parts.append({name: values[start - first :] for name, values in part.items()})
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    # -- state -------------------------------------------------------------------------------

    def to_state(self) -> tuple[dict[str, Any], dict[str, FloatArray]]:
        """Plain JSON metadata and numeric arrays that `load_monitor` turns back into this monitor."""
        meta: dict[str, Any] = {
            "format": STATE_FORMAT,
            "kind": self.kind,
            "variables": list(self.variables),
            "limits": dict(self.limits),
            "false_alarm_rate": self.false_alarm_rate,
            "persistence": self.persistence,
            "params": self.params(),
            "model": self._state_meta(),
        }
        arrays = {k: np.ascontiguousarray(v) for k, v in self._state_arrays().items()}
        return meta, arrays

    @classmethod
    def from_state(cls, meta: Mapping[str, Any], arrays: Mapping[str, npt.ArrayLike]) -> Self:
        if meta.get("kind") != cls.kind:
            raise ModelStateError(f"stored model is of kind {meta.get('kind')!r}, not {cls.kind!r}")
        if meta.get("format") != STATE_FORMAT:
            raise ModelStateError(f"unsupported stored model format {meta.get('format')!r}")
        try:
            variables = [str(v) for v in meta["variables"]]
            limits = {str(k): float(v) for k, v in dict(meta["limits"]).items()}
            common: dict[str, Any] = {
                "variables": variables,
                "limits": limits,
                "false_alarm_rate": float(meta["false_alarm_rate"]),
                "persistence": int(meta["persistence"]),
            }
            model_meta = dict(meta["model"])
        except (KeyError, TypeError, ValueError) as err:
            raise ModelStateError(f"stored model metadata is incomplete: {err}") from err
        if not all(math.isfinite(v) for v in limits.values()):
            raise ModelStateError("stored model has non-finite control limits")
        numeric: dict[str, FloatArray] = {}
        for key, value in arrays.items():
            array = np.asarray(value)
            if array.dtype.kind not in "fiub":
                raise ModelStateError(f"stored array {key!r} is not numeric (dtype {array.dtype})")
            numeric[key] = array.astype(np.float64, copy=False)
        try:
            return cls._from_state(model_meta, numeric, common)
        except (KeyError, TypeError, ValueError, IndexError) as err:
            if isinstance(err, ModelStateError):
                raise
            raise ModelStateError(f"stored model of kind {cls.kind!r} is malformed: {err}") from err

    @staticmethod
    def require(arrays: Mapping[str, FloatArray], name: str, shape: tuple[int | None, ...]) -> FloatArray:
        """A stored array with the expected shape (None: any length on that axis)."""
        if name not in arrays:
            raise ModelStateError(f"stored model lacks the array {name!r}")
        array = arrays[name]
        if array.ndim != len(shape) or any(e is not None and e != s for e, s in zip(shape, array.shape, strict=True)):
            raise ModelStateError(f"stored array {name!r} has shape {array.shape}, expected {shape}")
        if not np.isfinite(array).all():
            raise ModelStateError(f"stored array {name!r} has non-finite values")
        return array


MONITOR_KINDS: dict[str, type[Monitor]] = {}


def register(cls: type[Monitor]) -> type[Monitor]:
    """Class decorator: make a monitor kind loadable by `load_monitor`."""
    MONITOR_KINDS[cls.kind] = cls
    return cls


def load_monitor(meta: Mapping[str, Any], arrays: Mapping[str, npt.ArrayLike]) -> Monitor:
    """The monitor a `to_state()` pair describes."""
    from iip.analytics.monitoring import kinds  # noqa: F401  (registers every kind)

    kind = meta.get("kind")
    cls = MONITOR_KINDS.get(str(kind))
    if cls is None:
        raise ModelStateError(f"unknown monitor kind {kind!r}; known: {', '.join(sorted(MONITOR_KINDS))}")
    return cls.from_state(meta, arrays)


def state_to_bytes(meta: Mapping[str, Any], arrays: Mapping[str, npt.ArrayLike]) -> bytes:
    """An `.npz` file: the arrays plus the JSON metadata as a unicode scalar, no pickled objects."""
    if META_KEY in arrays:
        raise ModelStateError(f"array name {META_KEY!r} is reserved")
    numeric: dict[str, npt.NDArray[Any]] = {META_KEY: np.array(json.dumps(meta, sort_keys=True))}
    numeric.update((name, np.asarray(value)) for name, value in arrays.items())
    for name, array in numeric.items():
        if name != META_KEY and array.dtype.kind not in "fiub":
            raise ModelStateError(f"array {name!r} is not numeric (dtype {array.dtype}) and would need pickling")
    buffer = io.BytesIO()
    np.savez(buffer, **numeric)  # type: ignore[arg-type]  # a name could be allow_pickle, says the stub
    return buffer.getvalue()


def state_from_bytes(blob: bytes) -> tuple[dict[str, Any], dict[str, FloatArray]]:
    """Read an `.npz` written by `state_to_bytes`; object arrays are refused, never unpickled."""
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as archive:
            if META_KEY not in archive.files:
                raise ModelStateError("stored model has no metadata")
            meta = json.loads(str(archive[META_KEY][()]))
            arrays = {name: np.asarray(archive[name]) for name in archive.files if name != META_KEY}
    except ModelStateError:
        raise
    except (ValueError, OSError, EOFError, json.JSONDecodeError, KeyError) as err:
        raise ModelStateError(f"stored model cannot be read: {err}") from err
    if not isinstance(meta, dict):
        raise ModelStateError("stored model metadata is not an object")
    return meta, arrays


def monitor_to_bytes(monitor: Monitor) -> bytes:
    meta, arrays = monitor.to_state()
    return state_to_bytes(meta, arrays)


def monitor_from_bytes(blob: bytes) -> Monitor:
    meta, arrays = state_from_bytes(blob)
    return load_monitor(meta, arrays)


def lag_matrix(rows: FloatArray, lags: int) -> FloatArray:
    """Rows [xₜ, xₜ₋₁, …, xₜ₋ₗ] for t = lags … n−1 (n − lags rows; none when n ≤ lags)."""
    n, p = rows.shape
    if lags == 0:
        return rows
    if n <= lags:
        return np.empty((0, p * (lags + 1)))
    return np.hstack([rows[lags - k : n - k] for k in range(lags + 1)])


def pad_front(values: FloatArray, count: int) -> FloatArray:
    """`values` preceded by `count` NaNs: statistics of the rows that lacked history."""
    if count == 0:
        return values
    return np.concatenate([np.full(count, np.nan), values])


def group_contributions(z: FloatArray, weights: FloatArray, groups: int) -> FloatArray:
    """Reconstruction-based contributions (Alcala and Qin 2009) per row, one column per variable.

    For an index zᵀ M z, the contribution of a variable is how much the index falls when that
    variable (all of its `groups` lagged copies at once, columns j, j+p, j+2p, …) is reconstructed
    along its own directions: (Ξᵀ M z)ᵀ (Ξᵀ M Ξ)⁺ (Ξᵀ M z). Non-negative; for a fault along one
    variable, that variable gets the largest share.
    """
    width = z.shape[1]
    p = width // groups
    projected = z @ weights
    out = np.zeros((z.shape[0], p))
    for j in range(p):
        columns = np.arange(j, width, p)
        block = weights[np.ix_(columns, columns)]
        inverse = np.linalg.pinv(block, rcond=1e-10, hermitian=True)
        own = projected[:, columns]
        out[:, j] = np.einsum("ij,jk,ik->i", own, inverse, own)
    return out


def named(variables: Sequence[str], values: FloatArray) -> dict[str, float]:
    return dict(zip(variables, map(float, values), strict=True))
