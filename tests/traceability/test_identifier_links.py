"""GTINs and IIP identifiers resolve to their trace page, on SQLite and PostgreSQL.

The GS1 resolver (`/01/...`) and the identifiers console record page ask the link sources other
contexts register (`iip.identifiers.public`); traceability's adds a `gs1:traceability` link when the
tenant that owns the key or handle has events naming it. Events are captured through the capture
service; resolution goes through the platform over HTTP, its lifespan running.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from iip.identifiers.public import ExtraLink, register_link_source, unregister_link_source
from iip.kernel.runtime import Runtime
from iip.traceability.identifier_links import lookup_form
from tests.conftest import TenantFixture
from tests.console.support import assert_html
from tests.console.test_identifiers_pages import admin, register
from tests.identifiers.conftest import home_prefix
from tests.traceability.genealogy_support import gtin
from tests.traceability.query_support import capture_events

TRACED, QUIET, OWN_LINK = gtin(301), gtin(302), gtin(303)
TRACEABILITY = "https://gs1.org/voc/traceability"
DL = "https://id.gs1.org"


def add_link(client: TestClient, tenant: TenantFixture, key: str, **fields: Any) -> None:
    body = {"gs1_key": f"01/{key}", "link_type": "gs1:pip", "href": f"https://brand.example/{key}", **fields}
    response = client.post("/api/gs1/links", json=body, headers=tenant.headers())
    assert response.status_code == 201, response.text


def event(**fields: Any) -> dict[str, Any]:
    return {
        "type": "ObjectEvent",
        "eventTime": "2024-06-01T08:00:00.000+08:00",
        "eventTimeZoneOffset": "+08:00",
        "action": "OBSERVE",
        "bizStep": "shipping",
        **fields,
    }


def capture(runtime: Runtime, tenant: TenantFixture, *events: dict[str, Any]) -> None:
    with runtime.db.session() as session:
        capture_events(session, tenant.id, events)


def trace_epc(location: str) -> str:
    """The `epc` a trace page URL names (the URL must be the trace page's)."""
    parts = urlsplit(location)
    assert (parts.scheme, parts.netloc, parts.path) == ("http", "testserver", "/traceability/trace"), location
    [epc] = parse_qs(parts.query)["epc"]
    return epc


def linkset_entry(client: TestClient, path: str, **headers: str) -> dict[str, Any]:
    response = client.get(path, headers=headers)
    assert response.status_code == 200, response.text
    [entry] = response.json()["linkset"]
    assert isinstance(entry, dict)
    return entry


def redirect(client: TestClient, path: str) -> str:
    response = client.get(path, follow_redirects=False)
    assert response.status_code == 307, response.text
    return response.headers["location"]


@pytest.fixture
def keys(client: TestClient, runtime: Runtime, tenant_a: TenantFixture, tenant_b: TenantFixture) -> None:
    """Tenant A links three GTINs; its events name serials and a lot of TRACED only. B's events name QUIET."""
    for key in (TRACED, QUIET, OWN_LINK):
        add_link(client, tenant_a, key, is_default=True)
    add_link(client, tenant_a, OWN_LINK, link_type="gs1:traceability", href="https://brand.example/own-trace")
    capture(
        runtime,
        tenant_a,
        event(epcList=[f"urn:epc:id:sgtin:{TRACED[1:8]}.{TRACED[0]}{TRACED[8:13]}.S1"]),
        event(quantityList=[{"epcClass": f"{DL}/01/{TRACED}/10/L1", "quantity": 5}]),
        event(epcList=[f"{DL}/01/{OWN_LINK}/21/S9"]),
    )
    capture(runtime, tenant_b, event(epcList=[f"{DL}/01/{QUIET}/21/S1"]))


# --- the resolver


@pytest.mark.usefixtures("keys")
def test_the_linkset_of_a_gtin_with_events_links_its_trace_page(client: TestClient) -> None:
    entry = linkset_entry(client, f"/01/{TRACED}?linkType=linkset")
    [link] = entry[TRACEABILITY]
    assert trace_epc(link["href"]) == f"{DL}/01/{TRACED}"
    assert link["title"] == "View trace"
    assert entry["https://gs1.org/voc/pip"] == [{"href": f"https://brand.example/{TRACED}"}]
    # Asked for by media type as well as by linkType.
    by_accept = linkset_entry(client, f"/01/{TRACED}", Accept="application/linkset+json")
    assert by_accept[TRACEABILITY] == entry[TRACEABILITY]


@pytest.mark.usefixtures("keys")
def test_a_gtin_without_events_of_its_owner_has_no_trace_link(client: TestClient) -> None:
    # Tenant B's events name QUIET, but A links the key: B's events are not A's to show.
    entry = linkset_entry(client, f"/01/{QUIET}?linkType=linkset")
    assert TRACEABILITY not in entry
    assert redirect(client, f"/01/{QUIET}?linkType=gs1:traceability") == f"https://brand.example/{QUIET}"


@pytest.mark.usefixtures("keys")
def test_link_type_traceability_redirects_to_the_trace_page_of_what_was_scanned(client: TestClient) -> None:
    assert trace_epc(redirect(client, f"/01/{TRACED}?linkType=gs1:traceability")) == f"{DL}/01/{TRACED}"
    assert trace_epc(redirect(client, f"/01/{TRACED}/21/S1?linkType=gs1:traceability")) == f"{DL}/01/{TRACED}/21/S1"
    assert trace_epc(redirect(client, f"/01/{TRACED}/10/L1?linkType=gs1:traceability")) == f"{DL}/01/{TRACED}/10/L1"
    # A lot in the path does not belong to a serial's identity.
    with_lot = redirect(client, f"/01/{TRACED}/10/L1/21/S1?linkType=https://gs1.org/voc/traceability")
    assert trace_epc(with_lot) == f"{DL}/01/{TRACED}/21/S1"
    # A serial no event names falls back to the default link, as a missing link type does.
    assert redirect(client, f"/01/{TRACED}/21/S2?linkType=gs1:traceability") == f"https://brand.example/{TRACED}"
    # A plain scan is unchanged.
    assert redirect(client, f"/01/{TRACED}") == f"https://brand.example/{TRACED}"


@pytest.mark.usefixtures("keys")
def test_a_traceability_link_the_brand_stored_wins(client: TestClient) -> None:
    assert redirect(client, f"/01/{OWN_LINK}?linkType=gs1:traceability") == "https://brand.example/own-trace"
    entry = linkset_entry(client, f"/01/{OWN_LINK}?linkType=linkset")
    assert entry[TRACEABILITY] == [{"href": "https://brand.example/own-trace"}]


@pytest.mark.usefixtures("keys")
def test_a_failing_link_source_adds_nothing_and_breaks_nothing(client: TestClient, runtime: Runtime) -> None:
    def broken(session: Session, identifier: str, tenant_id: str) -> Sequence[ExtraLink]:
        session.execute(text("SELECT * FROM no_such_table"))
        return [ExtraLink("gs1:epil", "/never")]

    register_link_source(runtime, broken)
    try:
        entry = linkset_entry(client, f"/01/{TRACED}?linkType=linkset")
    finally:
        unregister_link_source(runtime, broken)
    assert "https://gs1.org/voc/epil" not in entry
    assert trace_epc(entry[TRACEABILITY][0]["href"]) == f"{DL}/01/{TRACED}"  # the other source still answered


# --- the identifiers console record page


def test_the_record_page_of_a_handle_used_as_an_epc_links_its_trace(
    client: TestClient, runtime: Runtime, tenant_a: TenantFixture
) -> None:
    home_prefix(runtime, tenant_a, "88.118.8", "prefix-secret-a")
    token = admin(client, tenant_a)
    used = register(client, token, suffix="Part-7")
    unused = register(client, token, suffix="Part-8")
    capture(runtime, tenant_a, event(epcList=["https://hdl.handle.net/88.118.8/PART-7"]))

    page = assert_html(client.get(f"/identifiers/records/{used}"), 200)
    assert 'data-link-type="gs1:traceability" href="/traceability/trace?epc=hdl%3A88.118.8%2Fpart-7"' in page
    assert "查看追溯" in page
    other = assert_html(client.get(f"/identifiers/records/{unused}"), 200)
    assert "gs1:traceability" not in other


# --- what is looked up


@pytest.mark.parametrize(
    ("identifier", "expected"),
    [
        (f"{DL}/01/{TRACED}", (f"{DL}/01/{TRACED}", True)),
        (f"https://brand.example/01/{TRACED}/22/V2/10/L1", (f"{DL}/01/{TRACED}/10/L1", False)),
        (f"{DL}/01/{TRACED}/10/L1/21/S%2F1", (f"{DL}/01/{TRACED}/21/S%2F1", False)),
        ("urn:epc:id:sscc:0614141.1234567890", (f"{DL}/00/106141412345678908", False)),
        ("hdl:88.118.8/Part-7", ("hdl:88.118.8/part-7", False)),
        ("https://example.com/no/key", None),
        (f"{DL}/01/{TRACED[:-1]}{(int(TRACED[-1]) + 1) % 10}", None),  # a wrong check digit
        ("hdl:88.118.8", None),
    ],
)
def test_what_an_identifier_is_looked_up_by(identifier: str, expected: tuple[str, bool] | None) -> None:
    assert lookup_form(identifier) == expected
