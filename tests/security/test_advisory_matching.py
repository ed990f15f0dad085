"""Matching an asset inventory against the CISA advisories: hand-labelled pairs, statuses, evidence."""

from __future__ import annotations

import copy
import csv
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iip.security.advisories.csaf import CsafAdvisory, import_directory, parse_advisory
from iip.security.advisories.matching import (
    AdvisoryIndex,
    MatchableAsset,
    MatchStatus,
    match_assets,
    product_agreement,
)
from iip.security.advisories.vendors import product_tokens, vendor_key, vendor_keys
from tests.security.conftest import CSAF, require_dataset

PAIRS = Path(__file__).resolve().parent / "data" / "advisory_pairs.csv"


@pytest.fixture(scope="module")
def advisories() -> list[CsafAdvisory]:
    report = import_directory(require_dataset(CSAF))
    assert not report.refused
    return report.advisories


@pytest.fixture(scope="module")
def index(advisories: list[CsafAdvisory]) -> AdvisoryIndex:
    return AdvisoryIndex(advisories)


def _asset(row: dict[str, str], number: int) -> MatchableAsset:
    return MatchableAsset(
        id=f"pair-{number}",
        vendor=row["asset_vendor"],
        product=row["asset_product"],
        model=row["asset_model"],
        firmware_version=row["asset_version"],
    )


# --- the hand-labelled pairs ---------------------------------------------------------------------


def _pairs() -> list[dict[str, str]]:
    with PAIRS.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_the_labelled_set_is_broad_and_balanced() -> None:
    pairs = _pairs()
    assert len(pairs) >= 200
    assert {p["affected"] for p in pairs} == {"yes", "no"}
    assert 0.3 < sum(p["affected"] == "yes" for p in pairs) / len(pairs) < 0.7
    assert len({p["advisory_id"] for p in pairs}) >= 50
    assert len({vendor_key(p["asset_vendor"]) for p in pairs}) >= 40
    assert all(p["reason"].strip() for p in pairs)


def test_precision_and_recall_on_the_labelled_pairs(index: AdvisoryIndex) -> None:
    true_positives, false_positives, misses = 0, [], []
    for number, row in enumerate(_pairs()):
        matches = [m for m in index.match(_asset(row, number)) if m.advisory_id == row["advisory_id"]]
        predicted = any(m.status == MatchStatus.AFFECTED for m in matches)
        expected = row["affected"] == "yes"
        if predicted and expected:
            true_positives += 1
        elif predicted:
            false_positives.append(row)
        elif expected:
            misses.append(row)
    precision = true_positives / (true_positives + len(false_positives))
    recall = true_positives / (true_positives + len(misses))
    assert precision >= 0.95, f"precision {precision:.3f}; false positives: {false_positives}"
    assert recall >= 0.95, f"recall {recall:.3f}; misses: {misses}"


# --- statuses ------------------------------------------------------------------------------------


def _only(index: AdvisoryIndex, asset: MatchableAsset, advisory_id: str) -> list[Any]:
    return [m for m in index.match(asset) if m.advisory_id == advisory_id]


def test_a_match_carries_the_advisory_cves_score_remediations_and_evidence(index: AdvisoryIndex) -> None:
    asset = MatchableAsset("plc-1", "Siemens AG", "SIMATIC S7-1500", "CPU 1518-4 PN/DP", "V2.8.3")
    (match,) = _only(index, asset, "ICSA-22-286-04")
    assert match.status == MatchStatus.AFFECTED
    assert match.asset_id == "plc-1"
    assert match.product.product.startswith("SIMATIC S7-1500 CPU family")
    assert match.cves == ("CVE-2022-38465",)
    assert match.max_cvss == 9.3
    assert any("V2.9.2" in r.details for r in match.remediations)
    assert "siemens" in match.evidence.vendor
    assert "1500" in match.evidence.product
    assert "V2.8.3" in match.evidence.version
    assert "<V2.9.2" in match.evidence.version


def test_an_unknown_version_is_possibly_affected_not_affected(index: AdvisoryIndex) -> None:
    known = MatchableAsset("a", "Moxa", "EDS-510E", "", "5.0")
    unknown = MatchableAsset("b", "Moxa", "EDS-510E", "", "")
    unreadable = MatchableAsset("c", "Moxa", "EDS-510E", "", "unknown")
    assert [m.status for m in _only(index, known, "ICSA-20-056-04")] == [MatchStatus.AFFECTED]
    (possibly,) = _only(index, unknown, "ICSA-20-056-04")
    assert possibly.status == MatchStatus.POSSIBLY_AFFECTED
    assert "unknown" in possibly.evidence.version
    assert [m.status for m in _only(index, unreadable, "ICSA-20-056-04")] == [MatchStatus.POSSIBLY_AFFECTED]


def test_a_version_outside_the_range_is_not_matched(index: AdvisoryIndex) -> None:
    assert _only(index, MatchableAsset("a", "Moxa", "EDS-510E", "", "5.3"), "ICSA-20-056-04") == []


def _fixed_advisory(feed_document: dict[str, Any]) -> CsafAdvisory:
    """ICSA-20-056-04, with its first product affected in every version but 2.0, which is fixed."""
    document = copy.deepcopy(feed_document)
    vendor = document["product_tree"]["branches"][0]
    product = vendor["branches"][0]
    product["branches"] = [
        {"category": "product_version_range", "name": "vers:all/*", "product": {"name": "all", "product_id": "ALL"}},
        {"category": "product_version", "name": "2.0", "product": {"name": "fixed", "product_id": "FIXED"}},
    ]
    for vulnerability in document["vulnerabilities"]:
        vulnerability["product_status"] = {"known_affected": ["ALL"], "fixed": ["FIXED"]}
        for remediation in vulnerability["remediations"]:
            remediation["product_ids"] = ["ALL"]
        for score in vulnerability["scores"]:
            score["products"] = ["ALL"]
    return parse_advisory(document)


def test_a_version_the_advisory_lists_as_fixed_is_not_matched() -> None:
    path = next(require_dataset(CSAF).glob("*/icsa-20-056-04.json"))
    import orjson

    advisory = _fixed_advisory(orjson.loads(path.read_bytes()))
    index = AdvisoryIndex([advisory])
    assert [m.status for m in index.match(MatchableAsset("a", "Moxa", "EDS-510E", "", "1.9"))] == [MatchStatus.AFFECTED]
    assert index.match(MatchableAsset("b", "Moxa", "EDS-510E", "", "2.0")) == []


def test_the_real_fixed_status_of_data_center_expert(index: AdvisoryIndex) -> None:
    affected = MatchableAsset("a", "Schneider Electric", "Data Center Expert", "", "8.1.1.3")
    fixed = MatchableAsset("b", "Schneider Electric", "Data Center Expert", "", "8.2")
    assert [m.status for m in _only(index, affected, "ICSA-24-289-02")] == [MatchStatus.AFFECTED]
    assert _only(index, fixed, "ICSA-24-289-02") == []


def test_release_lines_of_one_product_do_not_swallow_each_others_fixes(index: AdvisoryIndex) -> None:
    # ICSA-17-129-03: WinCC < 7.3 Update 11 and WinCC < 7.4 SP1
    def wincc(version: str) -> list[Any]:
        return _only(index, MatchableAsset("w", "Siemens", "SIMATIC WinCC", "", version), "ICSA-17-129-03")

    assert wincc("V7.3 Update 10")
    assert not wincc("V7.3 Update 11")
    assert wincc("V7.4")
    assert not wincc("V7.4 SP1")


def test_matches_are_ordered_most_severe_first(index: AdvisoryIndex) -> None:
    matches = index.match(MatchableAsset("a", "Siemens", "SIMATIC S7-1500", "CPU 1518-4 PN/DP", "V2.8.3"))
    scores = [m.max_cvss or 0.0 for m in matches]
    assert len(matches) >= 5
    assert scores == sorted(scores, reverse=True)
    assert len({m.advisory_id for m in matches}) == len(matches)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    pick=st.integers(min_value=0),
    version=st.sampled_from(["", "1.0", "2.5.1", "V3.1 SP2", "4.0.17", "10.97", "R6.03.10", "V2.9.1"]),
    with_model=st.booleans(),
)
def test_the_index_finds_what_comparing_every_pair_finds(
    index: AdvisoryIndex, advisories: list[CsafAdvisory], pick: int, version: str, with_model: bool
) -> None:
    products = [p for a in advisories for p in a.products]
    product = products[pick % len(products)]
    model = product.model_numbers[0] if with_model and product.model_numbers else ""
    asset = MatchableAsset("x", product.vendor, product.product, model, version)
    indexed = [(m.advisory_id, m.status, m.cves, m.max_cvss) for m in index.match(asset)]
    all_pairs = [(m.advisory_id, m.status, m.cves, m.max_cvss) for m in index.match_without_index(asset)]
    assert indexed == all_pairs


def test_an_asset_named_as_the_advisory_names_it_is_matched(advisories: list[CsafAdvisory]) -> None:
    advisory = next(a for a in advisories if a.advisory_id == "ICSA-24-030-01")
    matches = match_assets([MatchableAsset("gc", "Emerson", "GC370XA", "", "")], [advisory])
    assert [(m.advisory_id, m.status) for m in matches] == [("ICSA-24-030-01", MatchStatus.POSSIBLY_AFFECTED)]


def test_an_order_number_alone_identifies_the_product(index: AdvisoryIndex) -> None:
    asset = MatchableAsset("io", "Siemens", "ET 200eco PN", "6ES7145-6HD00-0AB0", "V1.0")
    assert _only(index, asset, "ICSA-17-339-01")


# --- vendors and products ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("Siemens AG", "SIEMENS"),
        ("Siemens", "siemens ag"),
        ("Schneider Electric", "Schneider"),
        ("Schneider Electric Software, LLC", "Schneider Electric SE"),
        ("Rockwell Automation", "Allen-Bradley"),
        ("Rockwell Automation, Inc.", "Rockwell Automation "),
        ("Mitsubishi Electric Corporation", "Mitsubishi Electric"),
        ("GeutebrÃ¼ck GmbH", "Geutebrück"),
        ("Geutebrück", "Geutebruck"),
        ("Phoenix Contact GmbH & Co. KG", "PHOENIX CONTACT"),
        ("Pepperl+Fuchs", "PEPPERL+FUCHS"),
        ("General Electric (GE)", "GE"),
        ("Hitachi Energy Ltd.", "Hitachi Energy"),
    ],
)
def test_vendor_names_normalise_to_one_key(left: str, right: str) -> None:
    assert vendor_key(left) == vendor_key(right)


@pytest.mark.parametrize(
    ("left", "right"), [("Siemens", "Schneider Electric"), ("Delta Electronics", "Delta Controls")]
)
def test_different_vendors_stay_different(left: str, right: str) -> None:
    assert vendor_key(left) != vendor_key(right)


def test_an_advisory_vendor_field_naming_several_vendors_names_each() -> None:
    keys = vendor_keys("Sensormatic Electronics, LLC, a subsidiary of Johnson Controls Inc.")
    assert {"sensormatic electronics", "johnson controls"} <= keys
    assert {"red lion", "automation direct"} <= vendor_keys("Red Lion, AutomationDirect")


def _agree(product: str, model: str, entry: str, vendor: str = "Siemens") -> bool:
    tokens = product_tokens(entry, vendor)
    return product_agreement(product_tokens(product, vendor), product_tokens(model, vendor), tokens) is not None


@pytest.mark.parametrize(
    ("product", "model", "entry"),
    [
        ("S7-1500", "CPU 1518-4 PN/DP", "SIMATIC S7-1500 CPU 1518-4 PN/DP (6ES7518-4AP00-0AB0)"),
        ("S7-1500", "CPU 1518-4 PN/DP", "SIMATIC S7-1500 CPU family (incl. related ET200 CPUs and SIPLUS variants)"),
        ("SIMATIC S7-1500", "", "SIMATIC S7-1500 CPU family"),
        ("SCALANCE X-200", "X208", "SCALANCE X-200 switch family (incl. SIPLUS NET variants)"),
        ("ET200SP", "", "SIMATIC ET 200SP"),
        ("SINUMERIK 840D sl", "", "SINUMERIK 840D sl V4.7"),
    ],
)
def test_the_same_product_written_differently_agrees(product: str, model: str, entry: str) -> None:
    assert _agree(product, model, entry)


@pytest.mark.parametrize(
    ("product", "model", "entry"),
    [
        ("S7-1500", "CPU 1518-4 PN/DP", "SIMATIC S7-1500 CPU 1516-3 PN/DP"),
        ("S7-1500", "CPU 1518-4 PN/DP", "SIMATIC S7-1500 CPU 1518F-4 PN/DP"),
        ("S7-1500", "CPU 1518-4 PN/DP", "SIMATIC S7-1500 CPU 1518-4 PN/DP MFP"),
        ("S7-1500", "CPU 1518-4 PN/DP", "SIMATIC S7-1500 Software Controller"),
        ("S7-1500", "CPU 1518-4 PN/DP", "SIPLUS S7-1500 CPU 1518-4 PN/DP"),
        ("S7-1200", "", "SIMATIC S7-1500 CPU family"),
        ("SIMATIC WinCC", "", "SIMATIC WinCC OA"),
        ("SIMATIC WinCC Unified", "", "SIMATIC WinCC"),
        ("SCALANCE X-200", "X208", "SCALANCE X-200RNA switch family"),
        ("SCALANCE XC-200", "", "SCALANCE X-200 switch family"),
    ],
)
def test_similar_but_different_products_do_not_agree(product: str, model: str, entry: str) -> None:
    assert not _agree(product, model, entry)
