"""Attribute templates, a handle's attributes and search, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from iip.identifiers import catalog
from iip.identifiers.models import Handle
from iip.kernel.auth import Role
from iip.kernel.runtime import Runtime
from tests.conftest import TenantFixture
from tests.identifiers.conftest import HomedPrefix, admin_entry, home_prefix, url_value

H = "/api/handles/88.118.8"
ATTRS = "/api/identifiers/88.118.8/{suffix}/attributes"
SEARCH = "/api/identifiers/search"

BEARING = {
    "name": "精密轴承座 6204",
    "brand": "洛轴",
    "model": "6204-2RS",
    "manufacturer": "Luoyang Bearing",
    "category": "bearing",
    "spec": {"bore_mm": 20, "seal": "2RS"},
}


def register(client: TestClient, homed: HomedPrefix, suffix: str, url: str = "https://example.com/p") -> None:
    body = {"values": [url_value(url), admin_entry()]}
    response = client.put(f"{H}/{suffix}", json=body, headers=homed.auth)
    assert response.status_code == 200, response.text


def set_attributes(client: TestClient, homed: HomedPrefix, suffix: str, template: str | None, attributes: Any) -> Any:
    body = {"template": template, "attributes": attributes}
    return client.put(ATTRS.format(suffix=suffix), json=body, headers=homed.tenant.headers(Role.ENGINEER))


def found(client: TestClient, tenant: TenantFixture, **params: Any) -> list[str]:
    response = client.get(SEARCH, params=params, headers=tenant.headers(Role.VIEWER))
    assert response.status_code == 200, response.text
    return [item["handle"] for item in response.json()["items"]]


def test_templates_are_listed_and_served(client: TestClient) -> None:
    listed = client.get("/api/identifier-templates")
    assert listed.status_code == 200
    assert [t["name"] for t in listed.json()] == ["product", "batch", "part", "equipment"]
    batch = client.get("/api/identifier-templates/batch").json()
    assert batch["schema"]["required"] == ["product", "lot", "production_date"]
    assert set(batch["schema"]["properties"]) >= {"expiry_date", "quantity", "plant"}
    equipment = client.get("/api/identifier-templates/equipment").json()["schema"]["properties"]
    assert {"model", "serial_number", "manufacturer", "commissioning_date", "location", "rated_power_kw"} <= set(
        equipment
    )
    missing = client.get("/api/identifier-templates/nothing")
    assert (missing.status_code, missing.json()["code"]) == (404, "template_not_found")


def test_attributes_are_checked_against_the_template(client: TestClient, homed: HomedPrefix) -> None:
    register(client, homed, "B-1")
    good = {"product": "88.118.8/P-1", "lot": "L2026-01", "production_date": "2026-01-15", "quantity": 500}
    saved = set_attributes(client, homed, "B-1", "batch", good)
    assert saved.status_code == 200, saved.text
    assert saved.json()["attributes"] == good
    read = client.get(ATTRS.format(suffix="B-1"), headers=homed.tenant.headers(Role.VIEWER)).json()
    assert (read["template"], read["attributes"]) == ("batch", good)

    cases = [
        ({**good, "quantity": "many"}, "/quantity"),
        ({**good, "production_date": "15.01.2026"}, "/production_date"),
        ({k: v for k, v in good.items() if k != "lot"}, "/lot"),
        ({**good, "colour": "red"}, ""),  # additionalProperties: the error sits on the object
    ]
    for attributes, pointer in cases:
        refused = set_attributes(client, homed, "B-1", "batch", attributes)
        assert refused.status_code == 422, refused.text
        body = refused.json()
        assert (body["code"], body["pointer"]) == ("invalid_attributes", pointer), body
    unknown = set_attributes(client, homed, "B-1", "vehicle", {})
    assert unknown.status_code == 422
    # Refusals changed nothing.
    assert client.get(ATTRS.format(suffix="B-1"), headers=homed.tenant.headers()).json()["attributes"] == good


def test_attributes_need_write_and_stay_in_the_tenant(
    client: TestClient, runtime: Runtime, homed: HomedPrefix, tenant_b: TenantFixture
) -> None:
    register(client, homed, "W-1")
    viewer = client.put(
        ATTRS.format(suffix="W-1"),
        json={"template": None, "attributes": {"a": "b"}},
        headers=homed.tenant.headers(Role.VIEWER),
    )
    assert viewer.status_code == 403
    foreign = client.put(
        ATTRS.format(suffix="W-1"), json={"template": None, "attributes": {"a": "b"}}, headers=tenant_b.headers()
    )
    assert (foreign.status_code, foreign.json()["code"]) == (404, "handle_not_found")
    assert client.get(ATTRS.format(suffix="W-1"), headers=tenant_b.headers()).status_code == 404


def test_search_by_text_attribute_template_and_pages(client: TestClient, homed: HomedPrefix) -> None:
    register(client, homed, "JXDY2106023", "https://shop.example.com/bearing/6204")
    assert set_attributes(client, homed, "JXDY2106023", "product", BEARING).status_code == 200
    register(client, homed, "EQ-7", "https://plant.example.com/eq/7")
    equipment = {"model": "CNC-500", "serial_number": "SN-7", "manufacturer": "Acme", "rated_power_kw": 7.5}
    assert set_attributes(client, homed, "EQ-7", "equipment", equipment).status_code == 200
    for n in range(5):
        register(client, homed, f"PAGE-{n}", f"https://example.com/page/{n}")

    tenant = homed.tenant
    assert found(client, tenant, q="JXDY2106023") == ["88.118.8/JXDY2106023"]
    assert found(client, tenant, q="shop.example.com") == ["88.118.8/JXDY2106023"]
    assert found(client, tenant, q="6204-2RS") == ["88.118.8/JXDY2106023"]
    assert found(client, tenant, q="精密轴承") == ["88.118.8/JXDY2106023"]  # a substring of 精密轴承座
    assert found(client, tenant, q="洛轴 bearing") == ["88.118.8/JXDY2106023"]
    assert found(client, tenant, q="cnc") == ["88.118.8/EQ-7"]
    assert found(client, tenant, q="nowhere-to-be-found") == []
    assert found(client, tenant, template="equipment") == ["88.118.8/EQ-7"]
    assert found(client, tenant, **{"attr.manufacturer": "Acme"}) == ["88.118.8/EQ-7"]
    assert found(client, tenant, **{"attr.rated_power_kw": "7.5"}) == ["88.118.8/EQ-7"]
    assert found(client, tenant, **{"attr.manufacturer": "Acme", "template": "product"}) == []
    bad = client.get(SEARCH, params={"attr.bad name": "x"}, headers=tenant.headers())
    assert bad.status_code == 422

    first = client.get(SEARCH, params={"q": "page", "page_size": 2}, headers=tenant.headers()).json()
    assert first["total"] == 5
    assert [i["handle"] for i in first["items"]] == ["88.118.8/PAGE-0", "88.118.8/PAGE-1"]
    third = client.get(SEARCH, params={"q": "page", "page_size": 2, "page": 3}, headers=tenant.headers()).json()
    assert [i["handle"] for i in third["items"]] == ["88.118.8/PAGE-4"]
    assert third["items"][0]["url"] == "https://example.com/page/4"
    assert len(found(client, tenant, prefix="88.118.8", page_size=500)) == 7


def test_search_text_follows_value_changes(client: TestClient, runtime: Runtime, homed: HomedPrefix) -> None:
    register(client, homed, "MOVE-1", "https://old-host.example.com/x")
    assert found(client, homed.tenant, q="old-host") == ["88.118.8/MOVE-1"]
    changed = client.put(f"{H}/MOVE-1?index=1", json={"values": [url_value("https://new-host.example.com/x")]})
    assert changed.status_code == 401  # anonymous: nothing changes
    changed = client.put(
        f"{H}/MOVE-1?index=1", json={"values": [url_value("https://new-host.example.com/x")]}, headers=homed.auth
    )
    assert changed.status_code == 200
    assert found(client, homed.tenant, q="old-host") == []
    assert found(client, homed.tenant, q="new-host") == ["88.118.8/MOVE-1"]
    with runtime.db.session() as session:
        row = session.scalar(select(Handle).where(Handle.key == "88.118.8/move-1"))
        assert row is not None
        assert "new-host.example.com" in row.search_text
    assert client.delete(f"{H}/MOVE-1", headers=homed.auth).status_code == 200
    assert found(client, homed.tenant, q="new-host") == []


def test_search_never_shows_another_tenants_handles(
    client: TestClient, runtime: Runtime, homed: HomedPrefix, tenant_b: TenantFixture
) -> None:
    other = home_prefix(runtime, tenant_b, "88.999.1", "b-prefix-secret")
    for prefix, auth, suffix in (("88.118.8", homed.auth, "MINE"), ("88.999.1", other.auth, "THEIRS")):
        body = {"values": [url_value("https://shared-word.example.com"), admin_entry(f"0.NA/{prefix}")]}
        assert client.put(f"/api/handles/{prefix}/{suffix}", json=body, headers=auth).status_code == 200
    assert found(client, homed.tenant, q="shared-word") == ["88.118.8/MINE"]
    assert found(client, tenant_b, q="shared-word") == ["88.999.1/THEIRS"]
    assert found(client, homed.tenant, prefix="88.999.1") == []
    assert found(client, homed.tenant) == ["88.118.8/MINE"]  # not even the 0.NA prefix handles
    everyone = client.get(SEARCH, params={"q": "shared-word"}, headers=homed.tenant.headers(Role.PLATFORM_OPERATOR))
    assert {i["handle"] for i in everyone.json()["items"]} == {"88.118.8/MINE", "88.999.1/THEIRS"}
    assert client.get(SEARCH, params={"q": "x"}).status_code == 401


@pytest.mark.parametrize(
    ("query", "expected"),
    [("JXDY2106023", True), ("jxdy2106023", True), ('"JXDY2106023', True), ("AND OR NOT *", False), ("%", False)],
)
def test_query_text_is_not_query_syntax(
    client: TestClient, homed: HomedPrefix, query: str, expected: bool, backend: str
) -> None:
    register(client, homed, "JXDY2106023")
    response = client.get(SEARCH, params={"q": query}, headers=homed.tenant.headers())
    assert response.status_code == 200, response.text
    assert (response.json()["total"] == 1) is expected


def test_search_text_holds_handle_urls_and_attributes() -> None:
    values = [{"index": 1, "type": "URL", "data": {"format": "string", "value": "https://a.example/p?id=1"}}]
    text = catalog.search_text("88.118.8/AB-1", values, {"name": "精密轴承", "n": 3, "flag": True})
    assert "88.118.8/AB-1" in text
    assert " AB " in f" {text} "
    assert "a example" in text
    assert "精密轴承" in text
    assert "True" not in text


@pytest.mark.parametrize(
    ("name", "attributes"),
    [
        ("product", BEARING),
        ("product", {**BEARING, "gtin": "0950600013435"}),
        ("product", {**BEARING, "gtin": "123"}),
        ("product", {**BEARING, "spec": {"a": [1]}}),
        ("product", {**BEARING, "name": ""}),
        ("batch", {"product": "88.1/P", "lot": "L", "production_date": "2026-02-30"}),
        ("batch", {"product": "88.1/P", "lot": "L", "production_date": "2026-02-03", "quantity": 1.0}),
        ("batch", {"product": "88.1/P", "lot": "L", "production_date": "2026-02-03", "quantity": True}),
        ("batch", {"product": "88.1/P", "lot": "L", "production_date": "2026-02-03", "quantity": -1}),
        ("equipment", {"model": "M", "serial_number": "S", "manufacturer": "X", "rated_power_kw": 7.5}),
        ("equipment", {"model": "M", "serial_number": "S", "manufacturer": "X", "rated_power_kw": "7.5"}),
        ("part", {"part_number": "P", "parent_product": "no-slash"}),
    ],
)
def test_quick_check_never_passes_what_jsonschema_refuses(name: str, attributes: dict[str, Any]) -> None:
    valid = not list(catalog._validator(name).iter_errors(attributes))
    if catalog._quick_valid(catalog.template(name).schema, attributes):
        assert valid
    assert (catalog.attribute_problem(name, attributes) is None) is valid


def _search(client: TestClient, tenant: TenantFixture, **params: Any) -> dict[str, Any]:
    response = client.get(SEARCH, params=params, headers=tenant.headers(Role.VIEWER))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_search_answers_the_same_whichever_way_the_words_drive_it(
    client: TestClient, runtime: Runtime, homed: HomedPrefix, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Words few rows have are fetched through the full-text index and sorted; words most rows have
    # are found by walking key order (SQLite). Both must give the same pages, counts and order.
    for n in range(12):
        register(client, homed, f"R-{n:02d}", f"https://host{n % 3}.example.com/r/{n}")
        attributes = {"part_number": f"PN-{n}", "material": "GCr15" if n % 2 else "SUJ2", "name": f"grade {n % 4}"}
        assert set_attributes(client, homed, f"R-{n:02d}", "part", attributes).status_code == 200
    neighbour = home_prefix(runtime, homed.tenant, "88.118.80", "neighbour-secret")
    body = {"values": [url_value("https://host0.example.com/n"), admin_entry("0.NA/88.118.80")]}
    assert client.put("/api/handles/88.118.80/R-99", json=body, headers=neighbour.auth).status_code == 200

    queries: list[dict[str, Any]] = [
        {"q": "gcr15"},
        {"q": "host0"},
        {"q": "host0", "prefix": "88.118.8"},
        {"q": "grade 2", "template": "part"},
        {"attr.material": "SUJ2"},
        {"attr.name": "grade 1", "q": "host1"},
        {"attr.part_number": "PN-7"},
        {"prefix": "88.118.8"},
        {"prefix": "88.118.80"},
    ]
    expected = {
        0: [f"88.118.8/R-{n:02d}" for n in range(1, 12, 2)],
        1: [*(f"88.118.8/R-{n:02d}" for n in range(0, 12, 3)), "88.118.80/R-99"],
        2: [f"88.118.8/R-{n:02d}" for n in range(0, 12, 3)],
        3: ["88.118.8/R-02", "88.118.8/R-06", "88.118.8/R-10"],
        4: [f"88.118.8/R-{n:02d}" for n in range(0, 12, 2)],
        5: ["88.118.8/R-01"],
        6: ["88.118.8/R-07"],
        7: [f"88.118.8/R-{n:02d}" for n in range(12)],
        8: ["88.118.80/R-99"],
    }
    for common_rows in (catalog.COMMON_TERM_ROWS, 0):
        monkeypatch.setattr(catalog, "COMMON_TERM_ROWS", common_rows)
        for number, params in enumerate(queries):
            answer = _search(client, homed.tenant, **params, page_size=500)
            assert [i["handle"] for i in answer["items"]] == expected[number], (common_rows, params)
            assert (answer["total"], answer["total_exact"]) == (len(expected[number]), True), (common_rows, params)


def test_search_counts_up_to_a_limit_past_the_page(
    client: TestClient, homed: HomedPrefix, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(7):
        register(client, homed, f"C-{n}", f"https://counted.example.com/{n}")
    monkeypatch.setattr(catalog, "COUNT_LIMIT", 3)
    for common_rows in (catalog.COMMON_TERM_ROWS, 0):
        monkeypatch.setattr(catalog, "COMMON_TERM_ROWS", common_rows)
        first = _search(client, homed.tenant, q="counted", page_size=2)
        assert (first["total"], first["total_exact"]) == (3, False)
        assert [i["handle"] for i in first["items"]] == ["88.118.8/C-0", "88.118.8/C-1"]
        # Page 3 starts at the 5th match: the count reaches 4 + 3 = 7, all of them.
        third = _search(client, homed.tenant, q="counted", page_size=2, page=3)
        assert (third["total"], third["total_exact"]) == (7, True)
        assert [i["handle"] for i in third["items"]] == ["88.118.8/C-4", "88.118.8/C-5"]
    assert _search(client, homed.tenant, q="!!!")["items"] == []
