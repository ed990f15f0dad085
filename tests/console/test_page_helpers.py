"""What contexts build their pages with: refusals of an action, and the page header, filter and
table macros, rendered as the console renders them (strict undefined, translated)."""

from __future__ import annotations

import re

import pytest
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from iip.console.forms import not_done, refusal_status
from iip.console.i18n import load_catalogues
from iip.console.web import TEMPLATE_DIR
from iip.kernel.errors import Conflict, DomainError, Forbidden, Invalid, NotFound, Unavailable


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (NotFound("no such alert"), 404),
        (Forbidden("not yours"), 403),
        (Conflict("already closed"), 409),
        (Invalid("bad row"), 422),
        (Unavailable("bus down"), 422),
        (DomainError("anything else"), 422),
    ],
)
def test_a_refused_action_has_the_status_of_its_reason(error: DomainError, status: int) -> None:
    assert refusal_status(error) == status
    reason = not_done(error)
    assert reason.msgid == "Not done: %(reason)s"
    assert reason.params == {"reason": error.message}


def render_macro(call: str, language: str = "en", **values: object) -> str:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=select_autoescape(("html",), default_for_string=True),
        extensions=["jinja2.ext.i18n"],
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_translations(load_catalogues([]).translations[language], newstyle=True)  # type: ignore[attr-defined]
    source = '{% from "console/macros.html" import page_header, filter_form, filter_text, filter_select, table_card %}'
    return re.sub(r">\s+<", "><", env.from_string(source + call).render(**values)).strip()


def test_page_header_with_and_without_what_goes_beside_the_title() -> None:
    plain = render_macro('{{ page_header("Assets", "Seen in traffic.") }}')
    assert plain == '<div class="page-header"><div><h1>Assets</h1><p class="muted">Seen in traffic.</p></div></div>'
    untitled = render_macro('{{ page_header("Assets") }}')
    assert "<p" not in untitled
    linked = render_macro('{% call page_header("Bulletins", "Inbox.") %}<a href="/x">X</a>{% endcall %}')
    assert linked.endswith('</div><a href="/x">X</a></div>')


def test_filter_form_keeps_the_values_and_marks_the_choice() -> None:
    call = """{% call filter_form("/security/alerts", "alert-filters", clear_url) %}
    {{ filter_text("q", "Search", q, maxlength=100, placeholder="Address") }}
    {{ filter_select("severity", "Severity", ["low", "high"], {"low": "Low", "high": "High"}, "high") }}
    {% endcall %}"""
    page = render_macro(call, "zh_CN", q='a"b', clear_url="/security/alerts")
    assert '<form class="filters" method="get" action="/security/alerts" role="search" id="alert-filters">' in page
    assert 'name="q" value="a&#34;b" maxlength="100" placeholder="Address"' in page  # escaped
    assert '<option value="high" selected>' in page
    assert '<option value="low">' in page
    assert '<option value="">全部</option>' in page  # "Any", translated inside the macro
    assert '<a class="btn btn-ghost" href="/security/alerts">' in page
    assert "btn-ghost" not in render_macro(call, q="", clear_url="")


def test_table_card_headers_title_and_count() -> None:
    call = '{% call table_card("t", ["A", ""], title, count_id, 3) %}<tr><td>1</td></tr>{% endcall %}'
    counted = render_macro(call, title="Rows", count_id="row-count")
    assert '<h2>Rows <span class="badge" id="row-count">3</span></h2>' in counted
    assert (
        '<table class="table" id="t"><thead><tr><th>A</th><th></th></tr></thead><tbody><tr><td>1</td></tr>' in counted
    )
    bare = render_macro(call, title="", count_id="")
    assert "card-header" not in bare
