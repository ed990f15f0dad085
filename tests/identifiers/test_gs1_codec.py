"""Digital Link and element string parsing and conversion (pure, through biip)."""

from __future__ import annotations

import pytest

from iip.identifiers.gs1 import codec
from iip.kernel.errors import Invalid

GTIN = "09506000134352"
GS = "\x1d"


@pytest.mark.parametrize(
    ("text", "key", "qualifiers"),
    [
        (f"/01/{GTIN}", f"01/{GTIN}", ""),
        ("/01/9506000134352", f"01/{GTIN}", ""),  # GTIN-13 padded to 14 digits
        (f"https://example.com/01/{GTIN}/10/ABC1", f"01/{GTIN}", "10/ABC1"),
        (f"https://example.com/some/prefix/01/{GTIN}/21/S%2F1", f"01/{GTIN}", "21/S%2F1"),
        (f"/01/{GTIN}/22/2A/10/L1/21/S1", f"01/{GTIN}", "22/2A/10/L1/21/S1"),
        (f"/gtin/{GTIN}/lot/L1/ser/S1", f"01/{GTIN}", "10/L1/21/S1"),  # convenience aliases
        ("/00/106141412345678908", "00/106141412345678908", ""),
        ("/414/9506000134352", "414/9506000134352", ""),
        ("/414/9506000134352/254/12", "414/9506000134352", "254/12"),
        ("/8004/9506000134AB12", "8004/9506000134AB12", ""),
        ("/8003/09506000134352SER1", "8003/09506000134352SER1", ""),
    ],
)
def test_valid_digital_links_name_their_key_and_qualifiers(text: str, key: str, qualifiers: str) -> None:
    link = codec.parse_digital_link(text)
    assert link.key == key
    assert link.qualifier_path == qualifiers


def test_data_attributes_come_from_the_query_and_other_parameters_are_ignored() -> None:
    link = codec.parse_digital_link(f"https://example.com/01/{GTIN}/10/L1?17=261231&3103=000195&linkType=gs1:pip")
    assert [(a.ai, a.value) for a in link.attributes] == [("17", "261231"), ("3103", "000195")]
    assert link.uri() == f"https://id.gs1.org/01/{GTIN}/10/L1?17=261231&3103=000195"


def test_qualifier_levels_go_from_most_specific_to_none() -> None:
    link = codec.parse_digital_link(f"/01/{GTIN}/22/2A/10/L1/21/S1")
    assert link.qualifier_levels == ("22/2A/10/L1/21/S1", "22/2A/10/L1", "22/2A", "")


@pytest.mark.parametrize(
    ("text", "code", "words"),
    [
        ("/01/09506000134353", "bad_check_digit", "expected 2, got 3"),
        ("/01/12345678", "bad_check_digit", "check digit"),
        ("/00/106141412345678909", "bad_check_digit", "SSCC"),
        ("/414/9506000134351", "bad_check_digit", "GLN"),
        ("/8003/09506000134353SER1", "bad_check_digit", "GRAI"),
        (f"/01/{GTIN}/21/S1/10/L1", "bad_qualifier_order", "21 before 10"),
        (f"/01/{GTIN}/10/L1/10/L2", "bad_qualifier_order", "order 22, 10, 21, 235"),
        (f"/01/{GTIN}/99/X", "bad_qualifier", "AI 99 is not a key qualifier"),
        ("/00/106141412345678908/10/L1", "bad_qualifier", "allowed qualifiers, in order: none"),
        ("/99/ABC", "no_primary_key", "no GS1 primary key"),
        (f"/01/{GTIN}/10", "bad_path", "without a value"),
        ("/01/ABC", "bad_element", "invalid GS1 Digital Link"),
        ("ftp://example.com/01/09506000134352", "invalid", "http(s)"),
    ],
)
def test_malformed_digital_links_are_invalid_with_a_reason(text: str, code: str, words: str) -> None:
    with pytest.raises(Invalid) as caught:
        codec.parse_digital_link(text)
    assert caught.value.instance_code == code
    assert words in caught.value.message


@pytest.mark.parametrize(
    ("element_string", "uri"),
    [
        (f"]C101{GTIN}10ABC{GS}17261231", f"https://id.gs1.org/01/{GTIN}/10/ABC?17=261231"),
        (f"]d201{GTIN}21S1{GS}10L1", f"https://id.gs1.org/01/{GTIN}/10/L1/21/S1"),
        (f"]Q301{GTIN}", f"https://id.gs1.org/01/{GTIN}"),
        (f"{GS}01{GTIN}10ABC", f"https://id.gs1.org/01/{GTIN}/10/ABC"),  # leading FNC1 as GS
        ("00106141412345678908", "https://id.gs1.org/00/106141412345678908"),
        (f"(01){GTIN}(10)ABC", f"https://id.gs1.org/01/{GTIN}/10/ABC"),  # human-readable form
    ],
)
def test_element_strings_become_digital_links(element_string: str, uri: str) -> None:
    assert codec.element_string_to_digital_link(element_string) == uri


def test_element_string_and_digital_link_round_trip() -> None:
    scanned = f"]d201{GTIN}10LOT{GS}21SER{GS}17261231"
    uri = codec.element_string_to_digital_link(scanned, root="https://resolver.example.com")
    assert uri == f"https://resolver.example.com/01/{GTIN}/10/LOT/21/SER?17=261231"
    # Fixed-length 17 goes last so no separator is needed after it; variable-length fields end with GS.
    assert codec.digital_link_to_element_string(uri, "]d2") == f"]d201{GTIN}10LOT{GS}21SER{GS}17261231"
    assert codec.element_string_to_digital_link(codec.digital_link_to_element_string(uri)) == (
        f"https://id.gs1.org/01/{GTIN}/10/LOT/21/SER?17=261231"
    )


def test_a_slash_inside_a_value_survives_both_ways() -> None:
    uri = codec.element_string_to_digital_link(f"01{GTIN}21A/B")
    assert uri == f"https://id.gs1.org/01/{GTIN}/21/A%2FB"
    link = codec.parse_digital_link(uri)
    assert link.qualifiers[0].value == "A/B"
    assert link.element_string() == f"01{GTIN}21A/B"
    assert link.hri() == f"(01){GTIN}(21)A/B"


@pytest.mark.parametrize(
    ("element_string", "words"),
    [
        ("]C10109506000134353", "check digit"),
        ("]E00109506000134352", "does not announce GS1 element strings"),
        ("]Z9abc", "symbology identifier"),
        ("10ABC", "no GS1 primary key"),
        ("0109506000134352414950600013435 2", "invalid GS1 element string"),
        (f"01{GTIN}00106141412345678908", "more than one GS1 primary key"),
        ("9", "invalid GS1 element string"),
    ],
)
def test_bad_element_strings_are_invalid(element_string: str, words: str) -> None:
    with pytest.raises(Invalid, match=words):
        codec.parse_element_string(element_string)


def test_query_without_drops_only_the_named_parameters() -> None:
    assert codec.query_without("linkType=gs1:pip&17=261231&x=1", "linkType") == "17=261231&x=1"
