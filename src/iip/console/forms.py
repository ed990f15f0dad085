"""What the console's list and form pages share: form state, refusals, filters, paging and number display."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse

from iip.console.i18n import N_, Message, message
from iip.console.web import render
from iip.kernel.errors import Conflict, DomainError, Forbidden, NotFound

FILTER_LENGTH = 200  # longer filters are cut: nothing a person types into a search box is longer
MAX_PAGE = 1_000_000

Errors = dict[str, Message]


@dataclass
class FormState:
    """What a form was filled in with and what is wrong with it, for showing it again."""

    values: dict[str, str] = field(default_factory=dict)
    errors: Errors = field(default_factory=dict)

    def error(self, name: str, msgid: str, **params: object) -> None:
        self.errors.setdefault(name, message(msgid, **params))

    @property
    def ok(self) -> bool:
        return not self.errors


def render_form_page(
    request: Request,
    template: str,
    context: Mapping[str, Any],
    form: FormState | None = None,
    *,
    status_code: int | None = None,
) -> HTMLResponse:
    """A page holding a form: 422 while the submitted form has errors, as the API answers invalid input.

    `status_code` overrides that, for a valid form the service refused."""
    state = form or FormState()
    values = {**context, "form": state.values, "errors": state.errors}
    return render(request, template, values, status_code=status_code or (200 if state.ok else 422))


def not_done(err: DomainError) -> Message:
    """Why the service refused an action, for the page that says so."""
    return message(N_("Not done: %(reason)s"), reason=err.message)


def refusal_status(err: DomainError) -> int:
    """The status of a page refusing an action: as the API would answer, any other refusal 422."""
    if isinstance(err, NotFound):
        return 404
    if isinstance(err, Forbidden):
        return 403
    return 409 if isinstance(err, Conflict) else 422


def clean_filter(value: str, limit: int = FILTER_LENGTH) -> str:
    """A query-string filter as services take it: trimmed, bounded, without control characters."""
    value = value.strip()[:limit]
    return "" if any(ord(c) < 32 for c in value) else value


def page_number(value: str, last: int = MAX_PAGE) -> int:
    """A page number from the query string; anything else is the first page."""
    return int(value) if value.isdigit() and 0 < int(value) <= last else 1


def url_with(path: str, query: Mapping[str, str | int]) -> str:
    kept = {k: str(v) for k, v in query.items() if v not in ("", None)}
    return path + ("?" + urlencode(kept) if kept else "")


def format_number(value: float | None) -> str:
    """Six significant digits without exponent noise for everyday magnitudes (devices.js does the same)."""
    if value is None or not math.isfinite(value):
        return "—"
    rounded = float(f"{value:.6g}")
    if rounded.is_integer() and abs(rounded) < 1e15:
        return str(int(rounded))
    return repr(rounded)
