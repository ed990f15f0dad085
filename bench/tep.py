"""Reader of the Tennessee Eastman benchmark files (Braatz group): dNN.dat training, dNN_te.dat test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

TEP_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "tep"
FAULT_START = 160  # test files: normal for the first 160 samples (8 h at 3 min), faulty afterwards
FAULTS = tuple(range(1, 22))
# Faults averaged in the literature: 3, 9 and 15 are not observable in these data, 21 is reported apart.
AVERAGED = (1, 2, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 16, 17, 18, 19, 20)
SEPARATE = (3, 9, 15, 21)
VARIABLES = tuple([f"XMEAS({i})" for i in range(1, 42)] + [f"XMV({i})" for i in range(1, 12)])


def read(name: str, directory: Path = TEP_DIR) -> npt.NDArray[np.float64]:
    """One file as rows x 52 variables; d00.dat is stored transposed (52 x 500) and is turned round."""
    table = np.loadtxt(directory / name, dtype=np.float64)
    if table.shape[0] == len(VARIABLES) and table.shape[1] != len(VARIABLES):
        table = table.T
    if table.shape[1] != len(VARIABLES):
        raise ValueError(f"{name}: expected {len(VARIABLES)} columns, got {table.shape}")
    return table


def training(fault: int = 0, directory: Path = TEP_DIR) -> npt.NDArray[np.float64]:
    return read(f"d{fault:02d}.dat", directory)


def evaluation_run(fault: int, directory: Path = TEP_DIR) -> npt.NDArray[np.float64]:
    return read(f"d{fault:02d}_te.dat", directory)


def available(directory: Path = TEP_DIR) -> bool:
    return (directory / "d00.dat").is_file() and (directory / "d21_te.dat").is_file()
