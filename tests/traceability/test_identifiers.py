"""EPC URN ↔ GS1 Digital Link, and the canonical matching form."""

from __future__ import annotations

import pytest

from iip.traceability.epcis.identifiers import (
    IdentifierError,
    canonical,
    check,
    dl_to_urn,
    same_object,
    urn_to_dl,
)

# (EPC URN, Digital Link), GS1 Tag Data Standard examples and the dataset's identifiers.
CASES = [
    ("urn:epc:id:sgtin:0614141.107346.2017", "https://id.gs1.org/01/10614141073464/21/2017"),
    ("urn:epc:id:sscc:0614141.1234567890", "https://id.gs1.org/00/106141412345678908"),
    ("urn:epc:id:sgln:0614141.07346.1234", "https://id.gs1.org/414/0614141073467/254/1234"),
    ("urn:epc:id:sgln:0012345.11111.0", "https://id.gs1.org/414/0012345111112"),
    ("urn:epc:id:grai:0614141.12345.400", "https://id.gs1.org/8003/00614141123452400"),
    ("urn:epc:id:giai:4000001.111", "https://id.gs1.org/8004/4000001111"),
    ("urn:epc:id:gsrn:0614141.0000010253", "https://id.gs1.org/8018/061414100000102534"),
    ("urn:epc:id:gdti:0614141.00001.1618034", "https://id.gs1.org/253/06141410000121618034"),
    ("urn:epc:class:lgtin:4012345.012345.998877", "https://id.gs1.org/01/04012345123456/10/998877"),
]


@pytest.mark.parametrize(("urn", "dl"), CASES)
def test_urn_and_digital_link_convert_both_ways(urn: str, dl: str) -> None:
    assert urn_to_dl(urn) == dl
    company_prefix_length = len(urn.split(":")[4].split(".", maxsplit=1)[0])
    assert dl_to_urn(dl, company_prefix_length) == urn


@pytest.mark.parametrize(("urn", "dl"), CASES)
def test_urn_and_digital_link_of_one_object_compare_equal(urn: str, dl: str) -> None:
    assert canonical(urn) == canonical(dl) == dl
    assert same_object(urn, dl.replace("https://id.gs1.org", "https://example.com/some/prefix"))


def test_company_prefix_length_is_looked_up_when_not_given() -> None:
    assert dl_to_urn("https://id.gs1.org/01/10614141073464/21/2017") == "urn:epc:id:sgtin:0614141.107346.2017"


def test_different_objects_differ() -> None:
    assert not same_object("urn:epc:id:sgtin:0614141.107346.2017", "urn:epc:id:sgtin:0614141.107346.2018")


def test_canonical_form_drops_data_attributes_and_pads_gtins() -> None:
    assert (
        canonical("https://example.com/01/614141073467/21/ABC?17=250101")
        == "https://id.gs1.org/01/00614141073467/21/ABC"
    )


def test_serials_are_percent_encoded_the_same_way_from_both_forms() -> None:
    assert canonical("urn:epc:id:sgtin:0614141.107346.A%2FB") == canonical(
        "https://id.gs1.org/01/10614141073464/21/A%2FB"
    )


@pytest.mark.parametrize(
    "value",
    [
        "https://id.gs1.org/01/10614141073465/21/2017",
        "https://id.gs1.org/00/106141412345678907",
        "https://id.gs1.org/414/0614141073468",
        "https://id.gs1.org/8018/061414100000102535",
    ],
)
def test_wrong_check_digits_are_rejected(value: str) -> None:
    with pytest.raises(IdentifierError, match="check digit"):
        canonical(value)
    assert check(value) is not None


@pytest.mark.parametrize(
    "value",
    [
        "urn:epc:id:sgtin:0614141.10734x.1",
        "urn:epc:id:sgtin:0614141",
        "urn:epc:id:unknown:1.2",
        "urn:epc:id:sscc:0614141.123",
    ],
)
def test_malformed_urns_are_rejected(value: str) -> None:
    assert check(value) is not None


@pytest.mark.parametrize("value", ["https://id.gs1.org/01/1061414107346²", "https://id.gs1.org/414/061414107346\u0663"])
def test_digits_other_than_ascii_are_refused_not_a_crash(value: str) -> None:
    # str.isdigit() takes superscripts and other scripts' digits; a GS1 key is ASCII digits only.
    problem = check(value)
    assert problem is not None
    with pytest.raises(IdentifierError):
        canonical(value)


def test_non_gs1_identifiers_pass_through() -> None:
    assert canonical("urn:uuid:374d95fc-9457-4a51-bd6a-0bba133845a8") == "urn:uuid:374d95fc-9457-4a51-bd6a-0bba133845a8"
    assert check("https://transaction.acme.com/po/12345678") is None
