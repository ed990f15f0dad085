"""`mount_console(app, runtime)`: the web console at `/`, its static files and every module's pages."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import Depends, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from iip.console.errors import install_error_pages, mark_console_request
from iip.console.routes import router
from iip.console.web import PLOTLY_JS_URL, STATIC_DIR, Console
from iip.kernel.runtime import Runtime


def plotly_js_path() -> Path:
    """plotly.js as bundled in the installed plotly package: the console never loads it from a CDN."""
    return Path(str(files("plotly") / "package_data" / "plotly.min.js"))


def mount_console(app: FastAPI, runtime: Runtime) -> None:
    app.state.console = Console(runtime)
    plotly_js = plotly_js_path()

    async def plotly_script() -> FileResponse:
        return FileResponse(
            plotly_js, media_type="text/javascript", headers={"Cache-Control": "public, max-age=604800"}
        )

    # Before the /static mount, which would otherwise answer these paths.
    app.add_api_route(PLOTLY_JS_URL, plotly_script, methods=["GET"], include_in_schema=False)
    for module in runtime.modules:
        if module.template_dir and (folder := Path(module.template_dir).parent / "static").is_dir():
            # A context's own scripts and styles, beside its templates: `static("<module>/file.js")`.
            app.mount(f"/static/{module.name}", StaticFiles(directory=folder), name=f"static-{module.name}")
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    marked = [Depends(mark_console_request, scope="function")]
    app.include_router(router, dependencies=marked)
    for module in runtime.modules:
        if module.pages_router is not None:
            app.include_router(module.pages_router, dependencies=marked, include_in_schema=False)
    install_error_pages(app)
