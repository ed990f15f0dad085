"""Analytics tests run numerical code: one BLAS thread each, so parallel workers do not oversubscribe the cores."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from threadpoolctl import threadpool_limits


@pytest.fixture(autouse=True)
def single_blas_thread() -> Iterator[None]:
    with threadpool_limits(limits=1):
        yield
