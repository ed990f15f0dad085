"""Shared by the security tests: where the ICS data sets are, and a guard that needs them."""

from __future__ import annotations

import fcntl
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services import in_ci

# The data sets live beside the project (`../shared/datasets/ics/`), not in it.
ICS_DATASETS = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "ics"
PCAPS = ICS_DATASETS / "pcaps"
MODBUS_ATTACKS = ICS_DATASETS / "modbus-attacks"
CSAF = ICS_DATASETS / "csaf"


def require_dataset(path: Path) -> Path:
    """`path` if it exists; otherwise skip locally, fail under CI=true."""
    if path.exists():
        return path
    message = f"ICS data set not found at {path}"
    if in_ci():
        pytest.fail(message + " (CI=true: the data sets are required)")
    pytest.skip(message)


LOOPBACK_LOCK = Path(tempfile.gettempdir()) / "iip-tests-loopback-capture.lock"


@pytest.fixture
def loopback_turn() -> Iterator[None]:
    """One test at a time, across xdist workers, captures on `lo`: each sees the others' traffic
    (and floods), which would change what it counts."""
    with LOOPBACK_LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


LOOPBACK_CAPTURE = pytest.mark.usefixtures("loopback_turn")


def require_raw_sockets() -> None:
    """Skip locally, fail under CI=true, when AF_PACKET raw sockets (live capture) are not allowed."""
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)).close()
    except (OSError, AttributeError):
        message = f"raw AF_PACKET sockets not allowed here (uid {os.getuid()})"
        if in_ci():
            pytest.fail(message + " (CI runs as root)")
        pytest.skip(message)
