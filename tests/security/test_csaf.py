"""CSAF 2.0 advisories: real CISA documents read into records, malformed ones refused with a reason."""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iip.security.advisories.csaf import (
    CsafAdvisory,
    InvalidAdvisory,
    import_directory,
    parse_advisory,
    read_advisory,
)
from tests.security.conftest import CSAF, require_dataset


@pytest.fixture(scope="module")
def feed() -> Path:
    return require_dataset(CSAF)


def _document(feed: Path, advisory: str) -> dict[str, Any]:
    path = next(feed.glob(f"*/{advisory}.json"))
    loaded: dict[str, Any] = json.loads(path.read_bytes())
    return loaded


def test_a_cisa_advisory_becomes_typed_records(feed: Path) -> None:
    advisory = read_advisory(next(feed.glob("*/icsa-22-286-04.json")))
    assert advisory.advisory_id == "ICSA-22-286-04"
    assert "S7-1200" in advisory.title
    assert advisory.tlp == "WHITE"
    assert advisory.initial_release.tzinfo is not None
    assert advisory.current_release >= advisory.initial_release
    by_id = {p.product_id: p for p in advisory.products}
    family = next(p for p in advisory.products if p.product.startswith("SIMATIC S7-1500 CPU family"))
    assert family.vendor == "Siemens"
    assert family.version_text == "< V2.9.2"
    assert family.constraint.understood
    vulnerability = advisory.vulnerabilities[0]
    assert vulnerability.cve.startswith("CVE-")
    assert vulnerability.cwe_id.startswith("CWE-")
    assert vulnerability.scores
    assert all(0 <= s.base_score <= 10 and s.vector.startswith("CVSS:3") for s in vulnerability.scores)
    assert set(vulnerability.product_status["known_affected"]) <= set(by_id)
    assert vulnerability.affects(family.product_id)
    fixes = [r for r in vulnerability.remediations if r.category == "vendor_fix"]
    assert any("V2.9.2" in r.details and family.product_id in r.product_ids for r in fixes)


def test_model_numbers_come_from_the_product_identification_and_the_name(feed: Path) -> None:
    advisory = read_advisory(next(feed.glob("*/icsa-17-339-01.json")))
    eco = next(p for p in advisory.products if "ET200ecoPN, 4AO" in p.product)
    assert "6ES7145-6HD00-0AB0" in eco.model_numbers


def test_relationships_become_products_of_the_platform(feed: Path) -> None:
    advisory = read_advisory(next(feed.glob("*/icsa-24-235-03.json")))
    installed = [p for p in advisory.products if " installed on " in p.full_name]
    assert installed
    assert all(p.vendor for p in installed)
    statuses = {s for v in advisory.vulnerabilities for s in v.product_status}
    assert "fixed" in statuses


def test_mis_decoded_vendor_names_are_repaired(feed: Path) -> None:
    advisory = read_advisory(next(feed.glob("*/icsa-20-219-03.json")))
    assert {p.vendor for p in advisory.products} == {"Geutebrück"}


def test_the_whole_feed_imports(feed: Path) -> None:
    report = import_directory(feed)
    assert len(report.results) == len(list(feed.glob("*/*.json")))
    assert report.refused == []
    advisories = report.advisories
    assert len({a.advisory_id for a in advisories}) == len(advisories)
    assert sum(len(a.products) for a in advisories) > 15_000
    assert all(a.products for a in advisories)


# --- malformed documents -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good(feed: Path) -> dict[str, Any]:
    return _document(feed, "icsa-20-056-04")


def _refused(document: dict[str, Any] | bytes | str) -> str:
    with pytest.raises(InvalidAdvisory) as caught:
        parse_advisory(document, source="x.json")
    assert caught.value.source == "x.json"
    return caught.value.reason


def test_the_unmodified_document_reads(good: dict[str, Any]) -> None:
    assert isinstance(parse_advisory(good), CsafAdvisory)


def test_truncated_json_is_refused(good: dict[str, Any]) -> None:
    text = orjson.dumps(good)
    assert "not valid JSON" in _refused(text[: len(text) // 2])


def test_a_document_that_is_not_an_object_is_refused() -> None:
    assert "must be an object" in _refused(b"[1, 2, 3]")


def test_a_missing_product_tree_is_refused(good: dict[str, Any]) -> None:
    document = copy.deepcopy(good)
    del document["product_tree"]
    assert "product_tree" in _refused(document)


def test_an_empty_product_tree_is_refused(good: dict[str, Any]) -> None:
    document = copy.deepcopy(good)
    document["product_tree"] = {"branches": []}
    assert "no products" in _refused(document)


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        (("document", "tracking", "id"), 42, "tracking.id"),
        (("document", "title"), None, "document.title"),
        (("document", "csaf_version"), "1.2", "csaf_version"),
        (("document", "tracking", "current_release_date"), "yesterday", "not a date-time"),
        (("product_tree", "branches"), {"vendor": "Moxa"}, "must be an array"),
        (("vulnerabilities",), "CVE-2020-1", "must be an array"),
        (("vulnerabilities", 0, "product_status", "known_affected"), "CSAFPID-0001", "must be an array"),
        (("vulnerabilities", 0, "product_status", "known_affected"), ["CSAFPID-9999"], "undefined products"),
        (("vulnerabilities", 0, "product_status", "maybe"), ["CSAFPID-0001"], "unknown status"),
        (("vulnerabilities", 0, "scores", 0, "cvss_v3", "baseScore"), "9.8", "baseScore"),
        (("vulnerabilities", 0, "scores", 0, "cvss_v3", "baseScore"), 11.0, "baseScore"),
        (("vulnerabilities", 0, "remediations", 0, "details"), 7, "details"),
    ],
)
def test_a_field_of_the_wrong_type_is_refused_with_its_path(
    good: dict[str, Any], path: tuple[str | int, ...], value: object, reason: str
) -> None:
    document = copy.deepcopy(good)
    target: Any = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert reason in _refused(document)


def _branch_product(document: dict[str, Any]) -> dict[str, Any]:
    product: dict[str, Any] = document["product_tree"]["branches"][0]["branches"][0]["branches"][0]["product"]
    return product


def test_a_product_without_an_id_is_refused(good: dict[str, Any]) -> None:
    document = copy.deepcopy(good)
    del _branch_product(document)["product_id"]
    assert "product_id" in _refused(document)


def test_a_tree_nested_beyond_reason_is_refused(good: dict[str, Any]) -> None:
    document = copy.deepcopy(good)
    branch: dict[str, Any] = {"category": "product_name", "name": "deep"}
    for _ in range(5000):
        branch = {"category": "product_name", "name": "deep", "branches": [branch]}
    document["product_tree"]["branches"].append(branch)
    assert "nested" in _refused(document)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_a_randomly_damaged_document_is_read_whole_or_refused(good: dict[str, Any], data: st.DataObject) -> None:
    text = orjson.dumps(good)
    cut = data.draw(st.integers(0, len(text)))
    junk = data.draw(st.binary(max_size=8))
    damaged = text[:cut] + junk + text[cut + len(junk) :]
    outcome: CsafAdvisory | str
    try:
        outcome = parse_advisory(damaged)
    except InvalidAdvisory as refused:
        outcome = refused.reason
    if isinstance(outcome, str):
        assert outcome  # refused, with a reason
    else:
        assert outcome.advisory_id
        assert outcome.products


# --- directories and feeds -----------------------------------------------------------------------


def test_a_directory_import_says_per_file_what_was_refused_and_why(good: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "2020").mkdir()
    (tmp_path / "2020" / "good.json").write_bytes(orjson.dumps(good))
    (tmp_path / "2020" / "truncated.json").write_bytes(orjson.dumps(good)[:100])
    no_tree = copy.deepcopy(good)
    del no_tree["product_tree"]
    (tmp_path / "2020" / "no-tree.json").write_bytes(orjson.dumps(no_tree))
    report = import_directory(tmp_path)
    outcome = {Path(r.source).name: r for r in report.results}
    assert set(outcome) == {"good.json", "truncated.json", "no-tree.json"}
    assert outcome["good.json"].imported
    assert outcome["good.json"].advisory is not None
    assert outcome["good.json"].advisory.advisory_id == "ICSA-20-056-04"
    assert "not valid JSON" in outcome["truncated.json"].error
    assert "product_tree" in outcome["no-tree.json"].error
    assert len(report.advisories) == 1
    assert len(report.refused) == 2


def test_a_rolie_style_tree_skips_its_feed_and_metadata_files(good: dict[str, Any], tmp_path: Path) -> None:
    white = tmp_path / "white" / "2020"
    white.mkdir(parents=True)
    (white / "icsa-20-056-04.json").write_bytes(orjson.dumps(good))
    (tmp_path / "provider-metadata.json").write_text('{"metadata_version": "2.0"}')
    (tmp_path / "white" / "csaf-feed-tlp-white.json").write_text('{"feed": {"entry": []}}')
    (white / "icsa-20-056-04.json.sha256").write_text("00 icsa-20-056-04.json")
    report = import_directory(tmp_path)
    assert [Path(r.source).name for r in report.results] == ["icsa-20-056-04.json"]
    assert report.advisories[0].initial_release.year == 2020


def test_an_unreadable_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidAdvisory, match="cannot read"):
        read_advisory(tmp_path / "missing.json")


def test_release_dates_are_timezone_aware(good: dict[str, Any]) -> None:
    document = copy.deepcopy(good)
    document["document"]["tracking"]["initial_release_date"] = "2020-02-25T00:00:00"
    advisory = parse_advisory(document)
    assert advisory.initial_release == dt.datetime(2020, 2, 25, tzinfo=dt.UTC)
