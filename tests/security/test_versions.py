"""Vendor versions and advisory version ranges: ordering, the forms CISA writes, and the real feed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iip.security.advisories.versions import Version, compare_keys, parse_constraint, parse_version
from tests.security.conftest import CSAF, require_dataset


def v(text: str) -> Version:
    version = parse_version(text)
    assert version is not None, text
    return version


# --- ordering ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lower", "higher"),
    [
        ("2.1", "2.10"),
        ("V2.1", "V2.1 HF1"),
        ("V2.1 HF1", "V2.1 SP1"),
        ("V2.1 SP1", "V2.1 SP3"),
        ("V2.1 SP3", "V2.1 SP3 HF1"),
        ("V2.1 SP3 HF1", "V2.1 SP10"),
        ("V2.1 SP10", "V2.1.1"),
        ("V14 SP1 Update 9", "V14 SP1 Update 14"),
        ("V14 SP1 Update 14", "V14 SP2"),
        ("1.2.3", "1.2.3a"),
        ("1.2.3a", "1.2.3b"),
        ("1.2.3b", "1.2.4"),
        ("2.0 beta", "2.0"),
        ("2.0 rc1", "2.0"),
        ("2.0 alpha", "2.0 beta"),
        ("2021.06", "2021.10"),
        ("2014 R2", "2014 R2 SP1"),
        ("2014 R2 SP1", "2017"),
        ("R3.05.00", "R3.09.50"),
        ("15.2(5)EA.fc4", "15.2(6)E0a"),
        ("V02.20.126.11-40", "V02.20.126.11-41"),
        ("4.1.1 Patch04", "4.1.2"),
        ("3.1 release 3111.00", "3.1 release 3112.00"),
        ("1.10L", "1.11M"),
        ("SV4.02", "SV4.10"),
    ],
)
def test_vendor_versions_order_as_their_schemes_mean(lower: str, higher: str) -> None:
    assert v(lower) < v(higher)
    assert v(higher) > v(lower)
    assert v(lower) != v(higher)


@pytest.mark.parametrize(
    ("left", "right"),
    [("2.1", "2.1.0"), ("V2.1", "2.1"), ("2.1.0.0", "v2.1"), ("V 4.83", "4.83"), ("Version 2.2.1", "2.2.1")],
)
def test_equal_versions_written_differently(left: str, right: str) -> None:
    assert v(left) == v(right)
    assert hash(v(left)) == hash(v(right))


@pytest.mark.parametrize("text", ["", "   ", "n/a", "unknown", "All versions"])
def test_a_string_without_a_number_is_no_version(text: str) -> None:
    assert parse_version(text) is None


_QUALIFIERS = st.sampled_from(["", " SP", " HF", " Update ", " beta", " rc", "a", "b", " build ", " R", " Patch"])
_VERSIONS = st.builds(
    lambda prefix, numbers, qualifier, tail: f"{prefix}{'.'.join(map(str, numbers))}{qualifier}{tail}",
    st.sampled_from(["", "V", "v", "R"]),
    st.lists(st.integers(0, 40), min_size=1, max_size=4),
    _QUALIFIERS,
    st.sampled_from(["", "1", "2", "10"]),
)


@given(_VERSIONS, _VERSIONS)
def test_ordering_is_antisymmetric_and_total(a: str, b: str) -> None:
    x, y = v(a), v(b)
    assert (x < y) + (x == y) + (x > y) == 1
    assert compare_keys(x.key, y.key) == -compare_keys(y.key, x.key)


@given(_VERSIONS, _VERSIONS, _VERSIONS)
def test_ordering_is_transitive(a: str, b: str, c: str) -> None:
    x, y, z = sorted([v(a), v(b), v(c)])
    assert x <= y <= z
    assert x <= z


@given(_VERSIONS)
def test_trailing_zeros_and_the_v_prefix_do_not_change_a_release(text: str) -> None:
    version = v(text)
    if text[:1] in {"V", "v"}:
        assert v(text[1:]) == version
    bare = text.lstrip("Vv R")
    if bare.replace(".", "").isdigit():
        assert v(bare + ".0") == version


@given(st.lists(st.integers(0, 99), min_size=1, max_size=4), st.integers(1, 30))
def test_service_packs_sit_between_a_release_and_the_next(numbers: list[int], pack: int) -> None:
    release = ".".join(map(str, numbers))
    following = ".".join(map(str, [*numbers, 1]))
    assert v(release) < v(f"{release} SP{pack}") < v(following)


# --- constraints ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "inside", "outside"),
    [
        ("vers:all/<V4.3.8", ["V4.3.7", "4.0"], ["V4.3.8", "5.0"]),
        ("vers:all/>=V7.80<V9.40", ["V7.80", "V9.3"], ["V7.7", "V9.40"]),
        ("vers:all/*", ["0.1", "99"], []),
        ("<=V2.1", ["V2.1", "2.0.9"], ["V2.1.1", "V2.1 SP1"]),
        ("All versions", ["1.0"], []),
        ("All versions < V6.0.8", ["6.0.7"], ["6.0.8"]),
        ("versions prior to 4.3.1", ["4.3.0"], ["4.3.1"]),
        ("V3.0 and prior", ["3.0", "2.9"], ["3.0.1"]),
        ("2.3.6 and below", ["2.3.6"], ["2.3.7"]),
        ("< V9.0 SP1", ["V9.0"], ["V9.0 SP1", "V9.1"]),
        ("before 2.0.13", ["2.0.12"], ["2.0.13"]),
        ("1.0 to 1.6", ["1.0", "1.3", "1.6"], ["0.9", "1.6.1"]),
        ("28  - 32", ["28", "30"], ["27", "33"]),
        ("firmware 4.x", ["4.0", "4.9.9"], ["3.9", "5.0"]),
        ("All versions <= V7.x", ["7.9"], ["8.0"]),
        ("12.2.*", ["12.2.5"], ["12.3", "12.1"]),
        (">= 1.0 | <= 1.32", ["1.0", "1.32"], ["1.33", "0.9"]),
        (">= V2.3 and < V6.30.016", ["V2.3", "6.30.015"], ["V6.30.016"]),
        ("All versions between V2.5 (including) and V2.7 (excluding)", ["V2.5", "V2.6"], ["V2.7"]),
        ("1.1 | 1.2 | 1.3", ["1.1", "1.3"], ["1.4", "1.15"]),
        ("<= 4.2.21 | <= 5.0.27 | <= 5.1.19", ["4.2.21", "5.0.27", "5.1.1"], ["5.0.28", "4.3"]),
        ("<v36.011_v35.013_v34.014", ["33.011", "35.012"], ["35.013", "36.011"]),
        ("< 1.99 | 2.20 | 2.40", ["1.98", "2.20"], ["2.21"]),
        ("<=W", ["T"], ["Y"]),
        ("<April/20/2023", ["2023.04.19"], ["2023.04.20"]),
        ("<= 15.2(5)EA.fc4", ["15.2(4)EA"], ["15.2(6)E0a"]),
    ],
)
def test_range_forms_found_in_advisories(text: str, inside: list[str], outside: list[str]) -> None:
    constraint = parse_constraint(text)
    assert constraint.understood, text
    for version in inside:
        assert constraint.contains(v(version)), f"{version} should be in {text!r} ({constraint})"
    for version in outside:
        assert not constraint.contains(v(version)), f"{version} should not be in {text!r} ({constraint})"


def test_conditions_are_kept_apart_from_the_range() -> None:
    constraint = parse_constraint("All versions < V8.1 with WinCC V7.3 Upd 19")
    assert constraint.contains(v("V8.0"))
    assert not constraint.contains(v("V8.1"))
    assert "WinCC V7.3 Upd 19" in constraint.condition
    # a shipping date is no firmware version: every version, on that condition
    shipped = parse_constraint("distributed  < april 1, 2018")
    assert shipped.all_versions
    assert shipped.condition.startswith("distributed")
    optional = parse_constraint("* (with option G28)")
    assert optional.all_versions
    assert optional.condition == "with option G28"


def test_a_variant_name_in_the_version_slot_names_no_version() -> None:
    constraint = parse_constraint("CODESYS Control for Linux")
    assert constraint.names_no_version
    assert constraint.all_versions


def test_an_unreadable_range_is_not_understood_and_contains_nothing() -> None:
    constraint = parse_constraint("<=")
    assert not constraint.understood
    assert not constraint.contains(v("1.0"))


def test_prose_is_not_read_as_a_range() -> None:
    constraint = parse_constraint("all versions before 2.0 " * 40)
    assert not constraint.understood
    assert not constraint.contains(v("1.0"))


def test_a_service_pack_range_reads_against_the_release_the_name_states() -> None:
    constraint = parse_constraint("< SP1 P01", release="2014 R2")
    assert constraint.contains(v("2014 R2"))
    assert not constraint.contains(v("2014 R2 SP1 P01"))
    assert not constraint.contains(v("2012"))


@given(st.text(max_size=60))
def test_no_text_crashes_the_range_parser(text: str) -> None:
    constraint = parse_constraint(text)
    assert isinstance(constraint.understood, bool)


# --- the real feed -------------------------------------------------------------------------------


def _version_strings(root: Path) -> Iterator[str]:
    def walk(branch: dict[str, object]) -> Iterator[str]:
        if branch.get("category") in {"product_version_range", "product_version"}:
            yield str(branch["name"])
        children = branch.get("branches", [])
        assert isinstance(children, list)
        for child in children:
            yield from walk(child)

    for path in sorted(root.glob("*/*.json")):
        for branch in json.loads(path.read_bytes()).get("product_tree", {}).get("branches", []):
            yield from walk(branch)


def test_at_least_99_percent_of_the_feeds_version_strings_are_read() -> None:
    root = require_dataset(CSAF)
    strings = list(_version_strings(root))
    assert len(strings) > 10_000
    constraints = [parse_constraint(s) for s in strings]
    understood = sum(c.understood for c in constraints)
    with_a_range = sum(c.understood and not c.names_no_version for c in constraints)
    assert understood / len(strings) >= 0.99
    assert with_a_range / len(strings) >= 0.97  # the rest name a variant in the version slot
