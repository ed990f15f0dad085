"""The GS1-Conformant resolver over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.support import assert_problem
from tests.conftest import TenantFixture

GTIN = "09506000134352"
SSCC = "106141412345678908"
GLN = "9506000134352"
LINKSET_JSON = "application/linkset+json"
PIP = "https://gs1.org/voc/pip"
DEFAULT_LINK = "https://gs1.org/voc/defaultLink"


def add_link(client: TestClient, tenant: TenantFixture, **fields: Any) -> dict[str, Any]:
    body = {"link_type": "gs1:pip", "href": "https://example.com/", **fields}
    response = client.post("/api/gs1/links", json=body, headers=tenant.headers())
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def location(client: TestClient, path: str, **headers: str) -> str:
    response = client.get(path, headers=headers, follow_redirects=False)
    assert response.status_code == 307, response.text
    return response.headers["location"]


@pytest.fixture
def product(client: TestClient, tenant_a: TenantFixture) -> None:
    """A GTIN with a default page, per-language product pages, a leaflet, and lot/serial-level links."""
    key = f"01/{GTIN}"
    add_link(client, tenant_a, gs1_key=key, href="https://brand.example/p", is_default=True, title="Product")
    add_link(client, tenant_a, gs1_key=key, href="https://brand.example/en/pip", language="en", title="Info")
    add_link(client, tenant_a, gs1_key=key, href="https://brand.example/zh/pip", language="zh-CN", title="信息")
    add_link(client, tenant_a, gs1_key=key, link_type="gs1:epil", href="https://brand.example/leaflet")
    add_link(
        client,
        tenant_a,
        gs1_key=key,
        qualifiers="10/LOT1",
        link_type="gs1:recallStatus",
        href="https://brand.example/recall/LOT1",
    )
    add_link(
        client,
        tenant_a,
        gs1_key=key,
        qualifiers="10/LOT1/21/S1",
        link_type="gs1:traceability",
        href="https://brand.example/trace/S1",
    )


@pytest.mark.usefixtures("product")
def test_a_plain_scan_redirects_307_to_the_default_link(client: TestClient) -> None:
    response = client.get(f"/01/{GTIN}", follow_redirects=False)
    assert response.status_code == 307
    assert response.headers["location"] == "https://brand.example/p"
    assert 'rel="linkset"' in response.headers["link"]
    assert f'<https://id.gs1.org/01/{GTIN}>; rel="owl:sameAs"' in response.headers["link"]
    head = client.head(f"/01/{GTIN}", follow_redirects=False)
    assert head.status_code == 307
    assert head.headers["location"] == "https://brand.example/p"
    # A GTIN-13 in the path names the same item as its GTIN-14 form.
    assert location(client, "/01/9506000134352") == "https://brand.example/p"


@pytest.mark.usefixtures("product")
def test_link_type_selects_a_link_and_unknown_types_fall_back_to_the_default(client: TestClient) -> None:
    assert location(client, f"/01/{GTIN}?linkType=gs1:epil") == "https://brand.example/leaflet"
    assert location(client, f"/01/{GTIN}?linkType=https://gs1.org/voc/epil") == "https://brand.example/leaflet"
    assert location(client, f"/01/{GTIN}?linkType=gs1:defaultLink") == "https://brand.example/p"
    assert location(client, f"/01/{GTIN}?linkType=gs1:certificationInfo") == "https://brand.example/p"


@pytest.mark.usefixtures("product")
def test_qualified_requests_use_the_most_specific_links_and_fall_back(client: TestClient) -> None:
    serial = f"/01/{GTIN}/10/LOT1/21/S1"
    assert location(client, f"{serial}?linkType=gs1:traceability") == "https://brand.example/trace/S1"
    assert location(client, f"{serial}?linkType=gs1:recallStatus") == "https://brand.example/recall/LOT1"
    assert location(client, f"{serial}?linkType=gs1:epil") == "https://brand.example/leaflet"
    # The first link of a qualifier level is that level's default.
    assert location(client, serial) == "https://brand.example/trace/S1"
    assert location(client, f"/01/{GTIN}/10/LOT1") == "https://brand.example/recall/LOT1"
    # Qualifiers without links of their own resolve as the GTIN does.
    assert location(client, f"/01/{GTIN}/10/OTHER") == "https://brand.example/p"
    assert location(client, f"/01/{GTIN}/21/S9") == "https://brand.example/p"
    assert location(client, f"/01/{GTIN}/22/V1/10/LOT9/21/S9") == "https://brand.example/p"


@pytest.mark.usefixtures("product")
def test_data_attributes_are_passed_on_to_the_target(client: TestClient) -> None:
    assert location(client, f"/01/{GTIN}?17=261231&linkType=gs1:epil") == "https://brand.example/leaflet?17=261231"


@pytest.mark.usefixtures("product")
def test_accept_language_chooses_among_links_of_the_chosen_type(client: TestClient) -> None:
    pip = f"/01/{GTIN}?linkType=gs1:pip"
    assert location(client, pip, **{"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"}) == "https://brand.example/zh/pip"
    assert location(client, pip, **{"Accept-Language": "zh"}) == "https://brand.example/zh/pip"
    assert location(client, pip, **{"Accept-Language": "fr, en-GB;q=0.7"}) == "https://brand.example/en/pip"
    assert location(client, pip, **{"Accept-Language": "en;q=0.2, zh-CN;q=0.5"}) == "https://brand.example/zh/pip"
    # No language wanted, or none available: the type's default, else its language-neutral link.
    assert location(client, pip, **{"Accept-Language": "fr"}) == "https://brand.example/p"
    assert location(client, pip) == "https://brand.example/p"


def test_default_links_per_language(client: TestClient, tenant_a: TenantFixture) -> None:
    key = f"01/{GTIN}"
    add_link(client, tenant_a, gs1_key=key, href="https://brand.example/de", language="de", is_default=True)
    add_link(client, tenant_a, gs1_key=key, href="https://brand.example/en", language="en", is_default=True)
    assert location(client, f"/01/{GTIN}", **{"Accept-Language": "en-US"}) == "https://brand.example/en"
    assert location(client, f"/01/{GTIN}", **{"Accept-Language": "de"}) == "https://brand.example/de"
    linkset = client.get(f"/01/{GTIN}?linkType=linkset").json()["linkset"][0]
    assert {t["href"] for t in linkset["https://gs1.org/voc/defaultLinkMulti"]} == {
        "https://brand.example/de",
        "https://brand.example/en",
    }


@pytest.mark.usefixtures("product")
@pytest.mark.parametrize(
    ("query", "headers"),
    [
        ("?linkType=linkset", {}),
        ("?linkType=all", {}),
        ("", {"Accept": LINKSET_JSON}),
        ("", {"Accept": "application/json"}),
    ],
)
def test_linkset_is_rfc_9264_json(client: TestClient, query: str, headers: dict[str, str]) -> None:
    response = client.get(f"/01/{GTIN}/10/LOT1{query}", headers=headers, follow_redirects=False)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(LINKSET_JSON)
    assert "json-ld#context" in response.headers["link"]
    body = response.json()
    assert list(body) == ["linkset"]
    assert isinstance(body["linkset"], list)
    assert len(body["linkset"]) == 1
    entry = body["linkset"][0]
    assert entry["anchor"] == f"http://testserver/01/{GTIN}/10/LOT1"
    for relation, targets in entry.items():
        if relation == "anchor":
            continue
        assert relation.startswith("https://"), relation  # relations are URIs, CURIEs expanded
        assert isinstance(targets, list)
        assert all(isinstance(t["href"], str) for t in targets)
        assert all(isinstance(t.get("hreflang", []), list) for t in targets)
    assert entry[DEFAULT_LINK] == [{"href": "https://brand.example/recall/LOT1"}]
    assert {t["href"] for t in entry[PIP]} == {
        "https://brand.example/p",
        "https://brand.example/en/pip",
        "https://brand.example/zh/pip",
    }
    assert {"href": "https://brand.example/zh/pip", "title": "信息", "hreflang": ["zh-CN"]} in entry[PIP]
    assert entry["https://gs1.org/voc/epil"] == [{"href": "https://brand.example/leaflet"}]
    assert entry["https://gs1.org/voc/recallStatus"] == [{"href": "https://brand.example/recall/LOT1"}]
    assert "https://gs1.org/voc/traceability" not in entry  # a serial's link is not a lot's


@pytest.mark.usefixtures("product")
def test_an_explicit_link_type_wins_over_the_accept_header(client: TestClient) -> None:
    assert location(client, f"/01/{GTIN}?linkType=gs1:epil", Accept=LINKSET_JSON) == "https://brand.example/leaflet"


def test_other_primary_keys_resolve(client: TestClient, tenant_a: TenantFixture) -> None:
    add_link(client, tenant_a, gs1_key=f"00/{SSCC}", link_type="gs1:logisticsInfo", href="https://x.example/sscc")
    add_link(client, tenant_a, gs1_key=f"414/{GLN}", link_type="gs1:locationInfo", href="https://x.example/gln")
    add_link(client, tenant_a, gs1_key="8004/9506000134AB%2F1", link_type="gs1:pip", href="https://x.example/giai")
    assert location(client, f"/00/{SSCC}") == "https://x.example/sscc"
    assert location(client, f"/414/{GLN}") == "https://x.example/gln"
    assert location(client, "/8004/9506000134AB%2F1") == "https://x.example/giai"


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/01/09506000134353", "bad_check_digit"),
        (f"/01/{GTIN}/21/S1/10/L1", "bad_qualifier_order"),
        (f"/01/{GTIN}/99/X", "bad_qualifier"),
        (f"/01/{GTIN}/10", "bad_path"),
        ("/00/106141412345678909", "bad_check_digit"),
        ("/414/9506000134351", "bad_check_digit"),
        ("/00/106141412345678908/10/L1", "bad_qualifier"),
        ("/01/NOTANUMBER", "bad_element"),
    ],
)
def test_malformed_paths_are_400_problems(client: TestClient, path: str, code: str) -> None:
    body = assert_problem(client.get(path, follow_redirects=False), 400, code)
    assert body["detail"]


def test_unknown_keys_are_404_problems(client: TestClient, tenant_a: TenantFixture) -> None:
    assert_problem(client.get(f"/01/{GTIN}", follow_redirects=False), 404, "gs1_key_not_found")
    add_link(client, tenant_a, gs1_key=f"01/{GTIN}", qualifiers="10/LOT1", href="https://x.example/lot")
    # Links of one lot do not make the GTIN or another lot resolvable.
    assert_problem(client.get(f"/01/{GTIN}/10/LOT2", follow_redirects=False), 404, "gs1_key_not_found")
    assert location(client, f"/01/{GTIN}/10/LOT1/21/S1") == "https://x.example/lot"


def test_the_resolver_needs_no_credentials_and_ignores_tenants(client: TestClient, tenant_b: TenantFixture) -> None:
    add_link(client, tenant_b, gs1_key=f"01/{GTIN}", href="https://b.example/")
    assert location(client, f"/01/{GTIN}") == "https://b.example/"


def test_well_known_resolver_description(client: TestClient) -> None:
    response = client.get("/.well-known/gs1resolver")
    assert response.status_code == 200
    body = response.json()
    assert body["resolverRoot"] == "http://testserver"
    assert {"01", "00", "414", "8003", "8004"} <= set(body["supportedPrimaryKeys"])
    assert {"namespace": "https://gs1.org/voc/", "prefix": "gs1:"} in body["supportedLinkType"]
    assert body["linkTypeDefaultCanBeLinkset"] is False
    assert body["name"]
