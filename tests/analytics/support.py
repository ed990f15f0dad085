"""Data the registry, API, CLI and live-scoring tests share: a small correlated process, as arrays and files."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from iip.kernel.auth import Principal, Role
from tests.conftest import TenantFixture

VARIABLES = ("temp", "pressure", "flow", "level", "speed")
FloatArray = npt.NDArray[np.float64]


def normal_data(rows: int = 300, seed: int = 7) -> FloatArray:
    """Five variables driven by two latent factors plus a little noise: what PCA is made for."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(rows, 2))
    mixing = np.array([[1.0, 0.8, -0.5, 0.3, 0.9], [0.2, -0.6, 0.7, 1.0, 0.4]])
    noise = 0.1 * rng.normal(size=(rows, len(VARIABLES)))
    return np.asarray(latent @ mixing + noise + np.array([80.0, 5.0, 12.0, 2.0, 1500.0]), dtype=np.float64)


def faulty(data: FloatArray, variable: str = "flow", shift: float = 3.0) -> FloatArray:
    """The rows with one variable pushed off its correlation with the others."""
    out = data.copy()
    out[:, VARIABLES.index(variable)] += shift
    return out


def csv_bytes(
    data: FloatArray,
    names: Sequence[str] = VARIABLES,
    *,
    times: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*(["time"] if times is not None else []), *names, *(["label"] if labels is not None else [])])
    for i, row in enumerate(data.tolist()):
        writer.writerow(
            [
                *([times[i]] if times is not None else []),
                *[f"{v:.6f}" for v in row],
                *([labels[i]] if labels is not None else []),
            ]
        )
    return buffer.getvalue().encode()


def engineer(tenant: TenantFixture) -> Principal:
    return Principal("user", "eng", f"{tenant.name}-engineer", tenant.id, Role.ENGINEER)


def viewer(tenant: TenantFixture) -> Principal:
    return Principal("user", "view", f"{tenant.name}-viewer", tenant.id, Role.VIEWER)


RUL_VARIABLES = ("temperature", "pressure", "vibration")
RUL_CAP = 125.0
# Small trees and few folds keep a fit to a few seconds.
RUL_QUICK = {"folds": 3, "max_iter": 40, "stride": 3}


def degrading_unit(rng: np.random.Generator, life: int) -> FloatArray:
    """A unit whose temperature rises and pressure falls over its last 125 cycles; vibration is noise."""
    wear = np.maximum(np.arange(life, dtype=np.float64) - (life - RUL_CAP), 0.0)
    temperature = 600.0 + rng.normal(0, 2.0) + 0.2 * wear + rng.normal(0, 0.5, life)
    pressure = 40.0 + rng.normal(0, 0.3) - 0.04 * wear + rng.normal(0, 0.1, life)
    vibration = rng.normal(1.0, 0.05, life)
    return np.column_stack([temperature, pressure, vibration])


def rul_fleet_csv(units: int, seed: int = 11, *, cut: bool = False) -> tuple[bytes, dict[str, float]]:
    """Run-to-failure histories as one CSV (`unit` column first, `truth`: the RUL at each row).

    With `cut`, each history stops before its failure, as a unit in service does; the truth says when.
    """
    rng = np.random.default_rng(seed)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["unit", *RUL_VARIABLES, "truth"])
    last: dict[str, float] = {}
    for number in range(units):
        life = int(rng.integers(150, 230))
        history = degrading_unit(rng, life)
        seen = int(rng.integers(90, life - 10)) if cut else life
        for cycle in range(seen):
            truth = float(life - 1 - cycle)
            writer.writerow([f"u{number}", *[f"{v:.4f}" for v in history[cycle]], f"{truth:g}"])
        last[f"u{number}"] = float(life - seen)
    return buffer.getvalue().encode(), last
