"""Errors on console routes become pages in the layout; everything else keeps problem+json.

The app's handlers (`iip.api.problems`) stay in charge of the API: each handler installed here
answers console requests itself and hands any other request to the handler it replaced.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from iip.api.deps import get_runtime
from iip.api.problems import status_for
from iip.console.i18n import N_
from iip.console.web import LoginRequiredError, identify, local_url, login_url, redirect, render
from iip.kernel.errors import DomainError, Forbidden, Unauthenticated

logger = logging.getLogger(__name__)

Handler = Callable[[Request, Exception], Awaitable[Response]]

# Paths that are never console pages, even when a browser asks for them.
NON_CONSOLE_PREFIXES = ("/api/", "/openapi.json", "/docs", "/redoc", "/healthz", "/readyz", "/metrics")

PAGES: dict[int, tuple[str, str]] = {
    400: (N_("Bad request"), N_("The request could not be understood.")),
    403: (N_("Access denied"), N_("Your role does not allow this page or action.")),
    404: (N_("Page not found"), N_("The page or object does not exist, or it is not visible to you.")),
    405: (N_("Not allowed"), N_("This address does not accept that kind of request.")),
    409: (N_("Conflict"), N_("The change conflicts with the current state.")),
    422: (N_("Invalid input"), N_("Some of the submitted values are not valid.")),
    500: (N_("Something went wrong"), N_("An unexpected error occurred. It has been logged.")),
}
CSRF_DETAIL = N_("The form has expired. Reload the page and try again.")


class ConsolePageError(Exception):
    """An unexpected error on a console page, carried to the console's handler (its cause is the error)."""


async def mark_console_request(request: Request) -> AsyncIterator[None]:
    """An include-level dependency of console routers: errors on these routes render as pages."""
    request.state.console_page = True
    try:
        yield
    except Exception as err:
        # Errors with a handler go to it; anything else is wrapped so it reaches the console's 500
        # page through the app's handlers, not the generic answer of the outer middleware.
        handled = tuple(k for k in request.app.exception_handlers if isinstance(k, type) and k is not Exception)
        if isinstance(err, handled):
            raise
        raise ConsolePageError(str(err)) from err


def is_console_request(request: Request, err: Exception) -> bool:
    if getattr(request.state, "console_page", False):
        return True
    path = request.url.path
    if path == "/api" or path.startswith(NON_CONSOLE_PREFIXES):
        return False
    # No route ran (unknown address, wrong method): a browser gets the console's page, API clients JSON.
    unrouted = request.scope.get("route") is None or (
        isinstance(err, StarletteHTTPException) and err.status_code == 405
    )
    return unrouted and "text/html" in request.headers.get("accept", "")


def _identify(request: Request) -> None:
    with get_runtime(request).db.session() as session:
        identify(request, session)


async def error_page(request: Request, status: int, detail: str = "", *, look_up_user: bool = True) -> Response:
    if look_up_user and getattr(request.state, "console_identity", None) is None:
        try:
            await run_in_threadpool(_identify, request)
        except Exception:
            logger.warning("could not identify the user for an error page", exc_info=True)
    title, default_detail = PAGES.get(status, PAGES[500] if status >= 500 else PAGES[400])
    return render(
        request,
        "console/error.html",
        {"status": status, "title": title, "detail": detail or default_detail},
        status_code=status,
    )


def known_status(err: Exception) -> int | None:
    """The status of an error the console understands; None leaves it to the API's handler."""
    if isinstance(err, DomainError):
        return status_for(err)
    if isinstance(err, StarletteHTTPException):
        return err.status_code
    if isinstance(err, RequestValidationError):
        return 422
    return None


def install_error_pages(app: FastAPI) -> None:
    """Wrap every handler the app has: console requests get a page, others what they got before."""

    async def login_required(request: Request, _err: Exception) -> Response:
        return redirect(login_url(local_url(request) if request.method == "GET" else None))

    def console_aware(fallback: Handler) -> Handler:
        async def handler(request: Request, err: Exception) -> Response:
            if not is_console_request(request, err):
                return await fallback(request, err)
            if isinstance(err, Unauthenticated):
                return await login_required(request, err)
            status = known_status(err)
            if status is None:
                # Anything else: the API's handler logs it and picks the status; the page replaces its body.
                status = (await fallback(request, err)).status_code
            csrf = isinstance(err, Forbidden) and err.instance_code == "csrf"
            try:
                return await error_page(request, status, CSRF_DETAIL if csrf else "", look_up_user=status < 500)
            except Exception:
                logger.exception("could not render the error page")
                return PlainTextResponse("Internal error", status_code=500)

        return handler

    async def unexpected(request: Request, err: Exception) -> Response:
        logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=err.__cause__ or err)
        try:
            return await error_page(request, 500, look_up_user=False)
        except Exception:
            logger.exception("could not render the error page")
            return PlainTextResponse("Internal error", status_code=500)

    for kind, fallback in list(app.exception_handlers.items()):
        app.add_exception_handler(kind, console_aware(cast(Handler, fallback)))
    app.add_exception_handler(LoginRequiredError, login_required)
    app.add_exception_handler(ConsolePageError, unexpected)
