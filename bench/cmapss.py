"""Reader of NASA's C-MAPSS turbofan files (Saxena et al. 2008): train_FDxxx, test_FDxxx, RUL_FDxxx.

Each row: unit, cycle, 3 operational settings, 21 sensors, space-separated. Training units run to
failure; test units stop earlier and RUL_FDxxx.txt gives the cycles each had left.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

CMAPSS_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "cmapss"
COLUMNS = ("unit", "cycle", "setting1", "setting2", "setting3", *(f"s{i}" for i in range(1, 22)))
# The 14 sensors that vary in FD001 (Li, Ding and Sun 2018 and most work since): s1, s5, s10, s16,
# s18, s19 and setting 3 are constant; s6 takes two values; settings 1 and 2 are noise at sea level.
FD001_SENSORS = ("s2", "s3", "s4", "s7", "s8", "s9", "s11", "s12", "s13", "s14", "s15", "s17", "s20", "s21")

FloatArray = npt.NDArray[np.float64]


def read_table(path: Path) -> FloatArray:
    table = np.loadtxt(path, dtype=np.float64)
    if table.ndim != 2 or table.shape[1] != len(COLUMNS):
        raise ValueError(f"{path.name}: expected {len(COLUMNS)} columns, got shape {table.shape}")
    return table


def histories(path: Path, variables: tuple[str, ...] = FD001_SENSORS) -> list[FloatArray]:
    """One array per unit (cycles x variables), in unit order, rows in cycle order."""
    table = read_table(path)
    columns = [COLUMNS.index(v) for v in variables]
    out = []
    for unit in np.unique(table[:, 0]):
        rows = table[table[:, 0] == unit]
        out.append(rows[np.argsort(rows[:, 1], kind="stable")][:, columns])
    return out


def training(dataset: str = "FD001", directory: Path = CMAPSS_DIR) -> list[FloatArray]:
    return histories(directory / f"train_{dataset}.txt")


def evaluation_units(dataset: str = "FD001", directory: Path = CMAPSS_DIR) -> tuple[list[FloatArray], FloatArray]:
    """The truncated test histories and the true RUL at the last cycle of each."""
    truth = np.loadtxt(directory / f"RUL_{dataset}.txt", dtype=np.float64).reshape(-1)
    units = histories(directory / f"test_{dataset}.txt")
    if len(units) != truth.shape[0]:
        raise ValueError(f"{len(units)} test units but {truth.shape[0]} true RUL values")
    return units, truth


def available(dataset: str = "FD001", directory: Path = CMAPSS_DIR) -> bool:
    return all((directory / f"{kind}_{dataset}.txt").is_file() for kind in ("train", "test", "RUL"))


def rmse(predicted: FloatArray, actual: FloatArray) -> float:
    return float(np.sqrt(np.mean((predicted - actual) ** 2)))


def nasa_score(predicted: FloatArray, actual: FloatArray) -> float:
    """PHM08 scoring function (Saxena et al. 2008): late predictions cost more than early ones.

    d = predicted − actual; s = Σ exp(−d/13) − 1 for d < 0, exp(d/10) − 1 for d ≥ 0. Lower is better.
    """
    d = predicted - actual
    return float(np.sum(np.where(d < 0, np.exp(-d / 13.0) - 1.0, np.exp(d / 10.0) - 1.0)))
