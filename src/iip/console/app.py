"""Console mounting (placeholder until the console shell lands)."""

from __future__ import annotations

from fastapi import FastAPI

from iip.kernel.runtime import Runtime


def mount_console(app: FastAPI, runtime: Runtime) -> None:
    for module in runtime.modules:
        if module.pages_router is not None:
            app.include_router(module.pages_router)
