"""Traceability profiles: FSMA 204 food, 一品一码 food records and medical device UDI as data, their KDE
checks per event, the rules across events, the report tables, and the API.

The fixtures under tests/traceability/data/ are realistic chains that pass every check (and are
schema-valid EPCIS); each rule's failing case is that chain with one thing changed.
"""

from __future__ import annotations

import copy
import csv
import datetime as dt
import io
import json
import uuid
import zipfile
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from iip.kernel.auth import Role
from iip.kernel.errors import Invalid, NotFound
from iip.traceability import recall
from iip.traceability.epcis.validation import validate
from iip.traceability.profiles.inputs import ProfileInput, read_input
from iip.traceability.profiles.locate import (
    Scope,
    gs1_date,
    matching_keys,
    vocabulary_term,
)
from iip.traceability.profiles.model import load_profile, parse_profile, profile_names
from iip.traceability.profiles.reports import ReportTable, csv_bytes, report, spreadsheet_columns, xlsx_bytes
from iip.traceability.profiles.rules import ChainIssue, ProfileIssue, check_chain, check_event, classify
from tests.api.support import assert_problem
from tests.conftest import TenantFixture
from tests.traceability.conftest import EVENT_DOCUMENTS, example_id

DATA = Path(__file__).parent / "data"
FSMA_FILE = DATA / "fsma204_romaine.jsonld"
UDI_FILE = DATA / "udi_stents.jsonld"
FOOD_CN_FILE = DATA / "food_cn_yogurt.xml"
EVENTS = "/epcisBody/eventList"

FSMA_CTES = [
    "harvesting",
    "cooling",
    "initial_packing",
    "shipping",
    "receiving",
    "shipping",
    "receiving",
    "transformation",
    "shipping",
    "receiving",
]
UDI_CTES = ["customs_import", "shipping", "receiving", "shipping", "hospital_acceptance", "use_on_patient"]
FOOD_CN_CTES = ["production", "inspection", "sales", "purchase_inspection", "sales", "catering_receipt"]


def read(path: Path) -> ProfileInput:
    return read_input(path.read_bytes())


def event_issues(
    profile_name: str, document: ProfileInput, events: list[dict[str, Any]] | None = None
) -> list[ProfileIssue]:
    profile = load_profile(profile_name)
    chosen = document.events if events is None else events
    return [
        issue
        for index, event in enumerate(chosen)
        for issue in check_event(
            profile, event, at=document.location(index), context=document.context, master_data=document.master_data
        )
    ]


def chain_issues(
    profile_name: str, document: ProfileInput, events: list[dict[str, Any]] | None = None
) -> list[ChainIssue]:
    chosen = document.events if events is None else events
    return check_chain(
        load_profile(profile_name),
        chosen,
        locations=[f"{EVENTS}/{i}" for i in range(len(chosen))],
        context=document.context,
        master_data=document.master_data,
    )


def errors(issues: list[ProfileIssue]) -> list[ProfileIssue]:
    return [i for i in issues if i.severity == "error"]


def the_issue(issues: list[ProfileIssue], element: str) -> ProfileIssue:
    matching = [i for i in issues if i.element == element]
    assert len(matching) == 1, issues
    return matching[0]


# --- the profiles as data ------------------------------------------------------------------------


def test_the_three_profiles_ship_and_load() -> None:
    assert profile_names() == ["food_cn", "food_fsma204", "udi"]
    fsma = load_profile("food_fsma204")
    assert [e.key for e in fsma.events] == [
        "first_land_based_receiving",
        "initial_packing",
        "harvesting",
        "cooling",
        "transformation",
        "shipping",
        "receiving",
    ]
    shipping = fsma.event("shipping")
    assert [k.element for k in shipping.kdes] == [
        "traceability_lot_code",
        "quantity",
        "product_description",
        "ship_to",
        "ship_from",
        "event_date",
        "tlc_source",
        "reference_document",
    ]
    assert {r.key for r in load_profile("udi").chain_rules} == {
        "used_twice",
        "used_after_expiry",
        "used_without_receiving",
    }


def test_an_unknown_profile_is_not_found() -> None:
    with pytest.raises(NotFound) as err:
        load_profile("food_eu")
    assert err.value.instance_code == "profile_not_found"
    assert "food_cn, food_fsma204, udi" in err.value.message


def test_a_profile_naming_an_element_it_lacks_is_refused() -> None:
    data = json.loads(json.dumps(load_profile("udi").model_dump(mode="json", by_alias=True)))
    data["events"][0]["kdes"].append({"element": "no_such_element"})
    with pytest.raises(Invalid) as err:
        parse_profile(data)
    assert "no_such_element" in err.value.message
    data = json.loads(json.dumps(load_profile("udi").model_dump(mode="json", by_alias=True)))
    data["elements"]["udi"]["find"][0]["path"] = "/epcList/[type]"
    with pytest.raises(Invalid) as bad_path:
        parse_profile(data)
    assert "[type]" in bad_path.value.message
    assert (
        parse_profile(json.loads(json.dumps(load_profile("udi").model_dump(mode="json", by_alias=True)))).name == "udi"
    )


@pytest.mark.parametrize("path", [FSMA_FILE, UDI_FILE, FOOD_CN_FILE], ids=lambda p: p.name)
def test_the_fixtures_are_valid_epcis(path: Path) -> None:
    assert validate(path.read_bytes()) == []


# --- FSMA 204: one event at a time ---------------------------------------------------------------


def test_the_romaine_chain_is_each_cte_and_lacks_nothing() -> None:
    document = read(FSMA_FILE)
    profile = load_profile("food_fsma204")
    ctes = [classify(profile, e, context=document.context) for e in document.events]
    assert [c.key if c else None for c in ctes] == FSMA_CTES
    assert event_issues("food_fsma204", document) == []
    assert chain_issues("food_fsma204", document) == []


def fsma_event(index: int) -> tuple[ProfileInput, dict[str, Any]]:
    document = read(FSMA_FILE)
    return document, copy.deepcopy(document.events[index])


def issues_of(profile_name: str, document: ProfileInput, index: int, event: dict[str, Any]) -> list[ProfileIssue]:
    return check_event(
        load_profile(profile_name),
        event,
        at=f"{EVENTS}/{index}",
        context=document.context,
        master_data=document.master_data,
    )


def test_a_shipment_without_its_lot_code_source_is_an_error_where_it_belongs() -> None:
    document, shipping = fsma_event(3)
    del shipping["fsma:tlcSource"]
    issue = the_issue(issues_of("food_fsma204", document, 3, shipping), "tlc_source")
    assert issue.severity == "error"
    assert issue.location == f"{EVENTS}/3/fsma:tlcSource"
    assert issue.message.startswith("Shipping: Traceability lot code source or source reference (1.1340(a)(7))")


def test_a_shipment_of_a_product_class_without_a_lot_has_no_traceability_lot_code() -> None:
    document, shipping = fsma_event(3)
    shipping["quantityList"][0]["epcClass"] = "urn:epc:idpat:sgtin:0614141.207346.*"
    issues = issues_of("food_fsma204", document, 3, shipping)
    issue = the_issue(issues, "traceability_lot_code")
    assert issue.location == f"{EVENTS}/3/quantityList/0/epcClass"
    assert "names no batch/lot" in issue.message
    # the lot given in the ILMD way (a class beside cbvmda:lotNumber) is one too
    document, commissioning = fsma_event(3)
    commissioning["quantityList"][0]["epcClass"] = "urn:epc:idpat:sgtin:0614141.207346.*"
    commissioning["ilmd"] = {"cbvmda:lotNumber": "RL2406A"}
    assert [i.element for i in issues_of("food_fsma204", document, 3, commissioning)] == []


def test_a_reference_document_needs_its_type() -> None:
    document, shipping = fsma_event(3)
    for entry in shipping["bizTransactionList"]:
        del entry["type"]
    issue = the_issue(issues_of("food_fsma204", document, 3, shipping), "reference_document")
    assert issue.location == f"{EVENTS}/3/bizTransactionList/0"
    assert "has no type" in issue.message


def test_ship_to_is_a_destination_location_or_party_and_nothing_else() -> None:
    document, shipping = fsma_event(3)
    shipping["destinationList"] = [{"type": "possessing_party", "destination": "urn:epc:id:pgln:4012345.00001"}]
    assert issues_of("food_fsma204", document, 3, shipping) == []
    del shipping["destinationList"]
    issue = the_issue(issues_of("food_fsma204", document, 3, shipping), "ship_to")
    assert issue.location == f"{EVENTS}/3/destinationList"


def test_a_location_must_be_a_gln_not_any_uri() -> None:
    document, receiving = fsma_event(4)
    receiving["bizLocation"] = {"id": "urn:example:dock:7"}
    receiving["destinationList"] = []
    issue = the_issue(issues_of("food_fsma204", document, 4, receiving), "received_at")
    assert issue.location == f"{EVENTS}/4/bizLocation/id"
    assert "is no valid GS1 identifier" in issue.message


def test_product_descriptions_come_from_the_documents_master_data() -> None:
    document = read(FSMA_FILE)
    without_master = ProfileInput(document.events, document.context, {}, document.event_list)
    issues = event_issues("food_fsma204", without_master)
    assert {(i.location, i.element) for i in errors(issues)} == {
        (f"{EVENTS}/3/quantityList/0/epcClass", "product_description"),
        (f"{EVENTS}/4/quantityList/0/epcClass", "product_description"),
        (f"{EVENTS}/5/quantityList/0/epcClass", "product_description"),
        (f"{EVENTS}/6/quantityList/0/epcClass", "product_description"),
        (f"{EVENTS}/7/inputQuantityList/0/epcClass", "input_product_description"),
        (f"{EVENTS}/7/outputQuantityList/0/epcClass", "output_product_description"),
        (f"{EVENTS}/2/outputQuantityList/0/epcClass", "output_product_description"),
        (f"{EVENTS}/8/quantityList/0/epcClass", "product_description"),
        (f"{EVENTS}/9/quantityList/0/epcClass", "product_description"),
    }
    # an extension on the event stands in for the master data
    shipping = copy.deepcopy(document.events[3])
    shipping["fsma:productDescription"] = "Romaine hearts 3 ct"
    assert issues_of("food_fsma204", without_master, 3, shipping) == []


def test_initial_packing_requires_the_harvest_date_and_recommends_the_harvester() -> None:
    document, packing = fsma_event(2)
    del packing["ilmd"]["fsma:harvester"]
    issue = the_issue(issues_of("food_fsma204", document, 2, packing), "harvester")
    assert issue.severity == "warning"
    assert "recommended" in issue.message
    del packing["ilmd"]["cbvmda:harvestStartDate"]
    assert the_issue(issues_of("food_fsma204", document, 2, packing), "harvest_date").severity == "error"


def test_a_harvest_is_a_commissioning_with_a_harvest_date_and_a_cooling_reports_a_temperature() -> None:
    document = read(FSMA_FILE)
    profile = load_profile("food_fsma204")
    harvest = copy.deepcopy(document.events[0])
    harvest["ilmd"]["cbvmda:harvestStartDate"] = "June"  # not a date: no longer a harvest
    assert classify(profile, harvest, context=document.context) is None
    cooling = copy.deepcopy(document.events[1])
    del cooling["sensorElementList"]
    assert classify(profile, cooling, context=document.context) is None


def test_first_land_based_receiving_needs_the_catch() -> None:
    landing = {
        "type": "ObjectEvent",
        "eventTime": "2024-03-02T05:40:00.000-05:00",
        "eventTimeZoneOffset": "-05:00",
        "action": "ADD",
        "bizStep": "receiving",
        "bizLocation": {"id": "urn:epc:id:sgln:0614141.00044.0"},
        "quantityList": [{"epcClass": "urn:epc:class:lgtin:0614141.300011.SC0302", "quantity": 820, "uom": "KGM"}],
        "bizTransactionList": [{"type": "recadv", "bizTransaction": "urn:epcglobal:cbv:bt:0614141000449:LND-77"}],
        "ilmd": {
            "cbvmda:speciesForFisheryStatisticsPurposesName": "Placopecten magellanicus",
            "cbvmda:harvestStartDate": "2024-02-25",
            "cbvmda:harvestEndDate": "2024-03-01",
            "cbvmda:catchArea": "NMFS statistical area 537",
        },
    }
    profile = load_profile("food_fsma204")
    cte = classify(profile, landing)
    assert cte is not None
    assert cte.key == "first_land_based_receiving"
    assert check_event(profile, landing) == []
    del landing["ilmd"]["cbvmda:catchArea"]
    [issue] = check_event(profile, landing, at="")
    assert (issue.element, issue.location, issue.severity) == ("catch_area", "/ilmd/cbvmda:catchArea", "error")


def test_extensions_are_matched_by_namespace_not_by_prefix() -> None:
    document, shipping = fsma_event(3)
    shipping["t:tlcSource"] = shipping.pop("fsma:tlcSource")
    with_t = {**document.context, "t": "urn:iip:trace:fsma204:"}
    profile = load_profile("food_fsma204")
    assert check_event(profile, shipping, context=with_t, master_data=document.master_data) == []
    # the profile's prefix bound to another namespace is another element
    document, shipping = fsma_event(3)
    elsewhere = {**document.context, "fsma": "https://example.com/other/"}
    issues = check_event(profile, shipping, context=elsewhere, master_data=document.master_data)
    assert [i.element for i in issues] == ["tlc_source"]


# --- FSMA 204: across events ---------------------------------------------------------------------


def test_a_shipment_nobody_received_is_reported_at_the_shipment() -> None:
    document = read(FSMA_FILE)
    events = document.events[:9]  # the store's receiving is missing
    [issue] = chain_issues("food_fsma204", document, events)
    assert (issue.rule, issue.location) == ("shipped_not_received", f"{EVENTS}/8")
    assert issue.identifier == "https://id.gs1.org/01/00012345111112/10/SM240613"
    assert "5012345000305" in issue.message


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (
            {
                "bizLocation": {"id": "urn:epc:id:sgln:5012345.00031.0"},
                "readPoint": {"id": "urn:epc:id:sgln:5012345.00031.0"},
            },
            "another store",
        ),
        ({"eventTime": "2024-06-13T15:00:00.000-07:00"}, "before the shipment"),
        (
            {"quantityList": [{"epcClass": "urn:epc:class:lgtin:0012345.011111.SM240612", "quantity": 1200}]},
            "another lot",
        ),
    ],
)
def test_a_receiving_counts_only_at_the_destination_after_the_shipment_of_what_it_carried(
    change: dict[str, Any], why: str
) -> None:
    document = read(FSMA_FILE)
    events = copy.deepcopy(document.events)
    events[9].update(change)
    issues = chain_issues("food_fsma204", document, events)
    assert [(i.rule, i.location) for i in issues] == [("shipped_not_received", f"{EVENTS}/8")], why


def test_a_pallet_shipped_is_received_through_the_lots_its_aggregation_put_on_it() -> None:
    pallet = "urn:epc:id:sscc:0012345.0000000123"
    document = read(FSMA_FILE)
    events = copy.deepcopy(document.events)
    events[8]["epcList"] = [pallet]
    del events[8]["quantityList"]
    packed = {
        "type": "AggregationEvent",
        "eventTime": "2024-06-13T15:30:00.000-07:00",
        "eventTimeZoneOffset": "-07:00",
        "action": "ADD",
        "bizStep": "packing",
        "parentID": pallet,
        "childQuantityList": [{"epcClass": "urn:epc:class:lgtin:0012345.011111.SM240613", "quantity": 1200}],
        "bizLocation": {"id": "urn:epc:id:sgln:0012345.00020.0"},
    }
    assert chain_issues("food_fsma204", document, events) != []  # without the aggregation, nothing links them
    assert chain_issues("food_fsma204", document, [*events, packed]) == []


def test_an_event_declared_erroneous_takes_no_part_in_the_chain() -> None:
    document = read(FSMA_FILE)
    events = copy.deepcopy(document.events)
    retraction = copy.deepcopy(events[9])
    retraction["errorDeclaration"] = {"declarationTime": "2024-06-14T09:00:00.000-07:00", "reason": "incorrect_data"}
    issues = chain_issues("food_fsma204", document, [*events, retraction])
    assert [(i.rule, i.location) for i in issues] == [("shipped_not_received", f"{EVENTS}/8")]


# --- UDI -----------------------------------------------------------------------------------------


def udi_use(serial: str, when: str, **changes: Any) -> dict[str, Any]:
    document = read(UDI_FILE)
    use = copy.deepcopy(document.events[5])
    use["eventID"] = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, serial + when)}"
    use["eventTime"] = when
    use["epcList"] = [f"https://id.gs1.org/01/09506000134352/10/ST2404/21/{serial}?17=270430&11=240415"]
    use.update(changes)
    return use


def test_the_stent_chain_is_each_step_and_is_not_suspicious() -> None:
    document = read(UDI_FILE)
    profile = load_profile("udi")
    assert [
        c.key if (c := classify(profile, e, context=document.context)) else None for e in document.events
    ] == UDI_CTES
    assert event_issues("udi", document) == []
    assert chain_issues("udi", document) == []


def test_a_udi_used_twice_is_reported_at_the_second_use() -> None:
    document = read(UDI_FILE)
    second = udi_use("S1001", "2024-06-10T09:00:00.000+08:00", **{"udi:patientReference": "PSN-51d0aa93"})
    [issue] = chain_issues("udi", document, [*document.events, second])
    assert (issue.rule, issue.location, issue.related) == ("used_twice", f"{EVENTS}/6", (f"{EVENTS}/5",))
    assert issue.identifier == "https://id.gs1.org/01/09506000134352/21/S1001"
    # the same use sent twice is one use; another item is no second use
    assert chain_issues("udi", document, [*document.events, copy.deepcopy(document.events[5])]) == []
    other = udi_use("S1002", "2024-06-10T09:00:00.000+08:00")
    assert chain_issues("udi", document, [*document.events, other]) == []


def test_a_udi_used_after_the_expiry_its_code_carries() -> None:
    document = read(UDI_FILE)
    events = copy.deepcopy(document.events)
    events[5]["epcList"] = ["https://id.gs1.org/01/09506000134352/10/ST2404/21/S1001?17=240602&11=240415"]
    [issue] = [i for i in chain_issues("udi", document, events) if i.rule == "used_after_expiry"]
    assert issue.location == f"{EVENTS}/5"
    assert "used on 2024-06-03, after its expiry date 2024-06-02" in issue.message
    events[5]["epcList"] = ["https://id.gs1.org/01/09506000134352/10/ST2404/21/S1001?17=240603&11=240415"]
    assert chain_issues("udi", document, events) == []  # used on its expiry date: still valid


def test_expiry_is_compared_with_the_local_date_of_use() -> None:
    document = read(UDI_FILE)
    events = copy.deepcopy(document.events)
    events[5]["epcList"] = ["https://id.gs1.org/01/09506000134352/10/ST2404/21/S1001?17=240602"]
    events[5]["eventTime"] = "2024-06-02T20:00:00.000Z"  # 2 June in UTC, 3 June at the hospital (+08:00)
    assert [i.rule for i in chain_issues("udi", document, events)] == ["used_after_expiry"]
    events[5]["eventTimeZoneOffset"] = "+00:00"
    assert chain_issues("udi", document, events) == []


def test_a_lots_expiry_from_its_commissioning_ilmd_applies_to_its_items() -> None:
    document = read(UDI_FILE)
    commissioning = {
        "type": "ObjectEvent",
        "eventTime": "2024-04-15T08:00:00.000+01:00",
        "eventTimeZoneOffset": "+01:00",
        "action": "ADD",
        "bizStep": "commissioning",
        "bizLocation": {"id": "urn:epc:id:sgln:9506000.00002.0"},
        "quantityList": [{"epcClass": "https://id.gs1.org/01/09506000134352/10/ST2404", "quantity": 3}],
        "ilmd": {"cbvmda:itemExpirationDate": "2024-05-31"},
    }
    issues = chain_issues("udi", document, [commissioning, *document.events])
    assert [(i.rule, i.location) for i in issues] == [("used_after_expiry", f"{EVENTS}/6")]


def test_a_udi_used_where_it_was_never_received() -> None:
    document = read(UDI_FILE)
    never_shipped = udi_use("S1003", "2024-06-04T11:00:00.000+08:00")
    [issue] = chain_issues("udi", document, [*document.events, never_shipped])
    assert (issue.rule, issue.location) == ("used_without_receiving", f"{EVENTS}/6")
    assert "6934567000101.CATH2" in issue.message
    # another hospital, and a use before the acceptance, are no better
    elsewhere = udi_use("S1002", "2024-06-04T11:00:00.000+08:00", bizLocation={"id": "urn:epc:id:sgln:6934567.00099.0"})
    elsewhere["readPoint"] = {"id": "urn:epc:id:sgln:6934567.00099.0"}
    assert [i.rule for i in chain_issues("udi", document, [*document.events, elsewhere])] == ["used_without_receiving"]
    early = udi_use("S1002", "2024-05-20T14:00:00.000+08:00")
    assert [i.rule for i in chain_issues("udi", document, [*document.events, early])] == ["used_without_receiving"]
    # S1002 was accepted at the hospital: its use later in the cath lab (same GLN) is fine
    later = udi_use("S1002", "2024-06-04T11:00:00.000+08:00")
    assert chain_issues("udi", document, [*document.events, later]) == []


@pytest.mark.parametrize(
    "reference",
    ["110101199003077578", "patient 13800138000", "li.ming@example.com"],
)
def test_the_patient_reference_must_be_de_identified(reference: str) -> None:
    document = read(UDI_FILE)
    use = copy.deepcopy(document.events[5])
    use["udi:patientReference"] = reference
    issue = the_issue(issues_of("udi", document, 5, use), "patient_reference")
    assert issue.location == f"{EVENTS}/5/udi:patientReference"
    assert "de-identified" in issue.message


def test_an_import_without_its_registration_certificate() -> None:
    document = read(UDI_FILE)
    entry = copy.deepcopy(document.events[0])
    del entry["udi:registrationCertificate"]
    issue = the_issue(issues_of("udi", document, 0, entry), "registration_certificate")
    assert (issue.location, issue.severity) == (f"{EVENTS}/0/udi:registrationCertificate", "error")


def test_an_acceptance_checks_the_expiry_the_code_carries() -> None:
    document = read(UDI_FILE)
    acceptance = copy.deepcopy(document.events[4])
    acceptance["epcList"] = [e.replace("17=270430", "17=271399") for e in acceptance["epcList"]]
    issue = the_issue(issues_of("udi", document, 4, acceptance), "expiry_date")
    assert issue.location == f"{EVENTS}/4/epcList/0"
    assert "no YYMMDD date" in issue.message


# --- 一品一码 food records -------------------------------------------------------------------------


def test_the_yogurt_records_are_each_record_type_and_lack_nothing_required() -> None:
    document = read(FOOD_CN_FILE)
    profile = load_profile("food_cn")
    assert [
        c.key if (c := classify(profile, e, context=document.context)) else None for e in document.events
    ] == FOOD_CN_CTES
    issues = event_issues("food_cn", document)
    assert errors(issues) == []
    # the wholesaler's own sale names no inspection certificate: recommended only
    assert [(i.location, i.element) for i in issues] == [(f"{EVENTS}/4/bizTransactionList", "certificate")]
    assert chain_issues("food_cn", document) == []


def test_a_batch_sold_after_a_failed_inspection() -> None:
    document = read(FOOD_CN_FILE)
    events = copy.deepcopy(document.events)
    events[1]["disposition"] = "urn:epcglobal:cbv:disp:non_conformant"
    [issue] = chain_issues("food_cn", document, events)
    assert (issue.rule, issue.location, issue.related) == (
        "released_without_inspection",
        f"{EVENTS}/2",
        (f"{EVENTS}/1",),
    )
    assert "non_conformant" in issue.message


def test_a_batch_sold_before_or_without_its_inspection() -> None:
    document = read(FOOD_CN_FILE)
    events = copy.deepcopy(document.events)
    without = [e for i, e in enumerate(events) if i != 1]
    issues = chain_issues("food_cn", document, without)
    assert [(i.rule, i.location) for i in issues] == [("released_without_inspection", f"{EVENTS}/1")]
    events[1]["eventTime"] = "2024-06-02T08:00:00.000+08:00"  # an hour after the sale
    assert [i.rule for i in chain_issues("food_cn", document, events)] == ["released_without_inspection"]


def test_what_a_wholesaler_sells_is_checked_in_by_the_canteen() -> None:
    document = read(FOOD_CN_FILE)
    issues = chain_issues("food_cn", document, document.events[:5])
    assert [(i.rule, i.location) for i in issues] == [("sold_not_received", f"{EVENTS}/4")]


def test_purchase_inspection_and_factory_inspection_records_need_their_elements() -> None:
    document = read(FOOD_CN_FILE)
    purchase = copy.deepcopy(document.events[3])
    del purchase["foodcn:expirationDate"]
    issue = the_issue(issues_of("food_cn", document, 3, purchase), "expiry")
    assert issue.severity == "error"
    assert issue.message.startswith("Purchase inspection record: Shelf life")  # messages are English
    inspection = copy.deepcopy(document.events[1])
    inspection["disposition"] = "urn:epcglobal:cbv:disp:damaged"
    inspection["bizTransactionList"] = []
    issues = issues_of("food_cn", document, 1, inspection)
    assert {(i.element, i.location) for i in issues} == {
        ("inspection_result", f"{EVENTS}/1/disposition"),
        ("inspection_report", f"{EVENTS}/1/bizTransactionList"),
    }


# --- reports -------------------------------------------------------------------------------------


def rows_by(table: ReportTable) -> list[dict[str, Any]]:
    return [dict(zip(table.keys, row, strict=True)) for row in table.rows]


def test_the_fsma_spreadsheet_has_a_row_per_lot_per_cte() -> None:
    document = read(FSMA_FILE)
    [table] = report(
        load_profile("food_fsma204"), document.events, context=document.context, master_data=document.master_data
    )
    rows = rows_by(table)
    assert [r["critical_tracking_event"] for r in rows] == [
        "Harvesting",
        "Cooling",
        "Initial packing",
        "Shipping",
        "Receiving",
        "Shipping",
        "Receiving",
        "Transformation",
        "Shipping",
        "Receiving",
    ]
    assert rows[3] == {
        "traceability_lot_code": "RL2406A",
        "product_gtin": "20614141073461",
        "product_description": "Romaine hearts 3 ct, case of 12 x 18 oz",
        "quantity": 200,
        "unit_of_measure": "EA",
        "critical_tracking_event": "Shipping",
        "event_date": "2024-06-11",
        "location_description": "0614141000036",
        "location_identifier": "https://id.gs1.org/414/0614141000036",
        "ship_from_location": "0614141000036",
        "ship_to_location": "4012345000108",
        "tlc_source": "0614141000036",
        "input_lot_codes": "",
        "reference_document_type": "Bill of Lading; Purchase Order",
        "reference_document_number": "BOL-88123; PO-55017",
        "event_id": "urn:uuid:6a1f0b8e-1c3d-4e5f-8a9b-0c1d2e3f4a04",
    }
    transformation = rows[7]
    assert transformation["traceability_lot_code"] == "SM240613"
    assert transformation["tlc_source"] == "0012345000201"
    assert transformation["input_lot_codes"] == (
        "https://id.gs1.org/01/20614141073461/10/RL2406A; https://id.gs1.org/01/04012345123456/10/CR2406B"
    )
    assert rows[0]["traceability_lot_code"] == ""  # a harvest has no lot code yet
    assert (rows[0]["quantity"], rows[0]["unit_of_measure"]) == (2400, "KGM")


def test_the_recall_export_and_the_profile_spreadsheet_head_shared_columns_alike() -> None:
    recall_headings = dict(zip((f.name for f in fields(recall.RecallRow)), recall.COLUMNS, strict=True))
    shared = [c for c in spreadsheet_columns() if c.key in recall_headings]
    assert len(shared) >= 10
    assert {c.key: c.heading for c in shared} == {c.key: recall_headings[c.key] for c in shared}


def test_the_food_records_report_has_a_table_per_record_type_with_chinese_headings() -> None:
    document = read(FOOD_CN_FILE)
    tables = report(
        load_profile("food_cn"), document.events, context=document.context, master_data=document.master_data
    )
    assert [(t.title, len(t.rows)) for t in tables] == [
        ("生产记录", 1),
        ("出厂检验记录", 1),
        ("进货查验记录", 1),
        ("销售记录", 2),
        ("餐饮服务进货查验记录", 1),
    ]
    production, inspection, purchase, sales, _ = (rows_by(t) for t in tables)
    assert tables[0].headings[:4] == ("产品名称", "商品条码", "规格", "生产批号")
    assert production[0]["product_name"] == "风味发酵乳（原味）"
    assert (production[0]["lot"], production[0]["expiry"], production[0]["license"]) == (
        "Y240601A",
        "2024-06-22",
        "SC10533010200123",
    )
    assert inspection[0]["result"] == "合格"
    assert inspection[0]["report"] == "QC-240601-01"
    assert purchase[0]["supplier"] == "6912345000017"
    assert [r["buyer"] for r in sales] == ["6945678000010", "6956789000011"]


def test_the_udi_report_gives_each_item_its_own_dates() -> None:
    document = read(UDI_FILE)
    events = copy.deepcopy(document.events)
    events[0]["epcList"][2] = events[0]["epcList"][2].replace("17=270430", "17=261130")
    [table] = report(load_profile("udi"), events, context=document.context, master_data=document.master_data)
    imported = [r for r in rows_by(table) if r["cte"] == "进口报关"]
    assert [(r["serial"], r["expiry_date"]) for r in imported] == [
        ("S1001", "2027-04-30"),
        ("S1002", "2027-04-30"),
        ("S1003", "2026-11-30"),
    ]
    assert imported[0]["customs_declaration"] == "220120240012345678"
    assert rows_by(table)[-1]["patient_reference"] == "PSN-8c1f27e4"


def test_reports_as_csv_and_xlsx() -> None:
    document = read(FOOD_CN_FILE)
    tables = report(
        load_profile("food_cn"), document.events, context=document.context, master_data=document.master_data
    )
    text = csv_bytes(tables[3]).decode("utf-8")
    assert text.startswith("\ufeff产品名称,商品条码")
    parsed = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
    assert len(parsed) == 3
    assert parsed[1][5] == "Y240601A"
    with zipfile.ZipFile(io.BytesIO(xlsx_bytes(tables))) as workbook:
        sheets = [n for n in workbook.namelist() if n.startswith("xl/worksheets/sheet")]
        assert len(sheets) == 5
        assert "销售记录" in workbook.read("xl/workbook.xml").decode("utf-8")


# --- GS1's examples and the pieces ---------------------------------------------------------------


@pytest.mark.parametrize("path", EVENT_DOCUMENTS, ids=example_id)
def test_gs1_examples_run_through_every_profile(path: Path) -> None:
    document = read(path)
    for name in profile_names():
        profile = load_profile(name)
        for index, event in enumerate(document.events):
            for issue in check_event(
                profile, event, at=document.location(index), context=document.context, master_data=document.master_data
            ):
                assert issue.location.startswith(document.location(index))
        check_chain(profile, document.events, locations=document.locations, context=document.context)
        report(profile, document.events, context=document.context, master_data=document.master_data)


def test_gs1_examples_are_recognised_as_ctes() -> None:
    profile = load_profile("food_fsma204")
    seen: set[str] = set()
    for path in EVENT_DOCUMENTS:
        document = read(path)
        ctes = (classify(profile, event, context=document.context) for event in document.events)
        seen |= {cte.key for cte in ctes if cte is not None}
    assert {"shipping", "receiving", "transformation"} <= seen


@pytest.mark.parametrize(
    ("text", "year", "expected"),
    [
        ("270430", 2024, dt.date(2027, 4, 30)),
        ("240200", 2024, dt.date(2024, 2, 29)),  # day 00: the month's last day
        ("740101", 2024, dt.date(2074, 1, 1)),  # up to 50 years ahead: this century
        ("750101", 2024, dt.date(1975, 1, 1)),  # more than 50 years ahead: the century before
        ("241301", 2024, None),
        ("2404", 2024, None),
    ],
)
def test_gs1_dates(text: str, year: int, expected: dt.date | None) -> None:
    assert gs1_date(text, year) == expected


@pytest.mark.parametrize(
    "value",
    ["location", "urn:epcglobal:cbv:sdt:location", "https://ref.gs1.org/cbv/SDT-location"],
)
def test_vocabulary_values_compare_as_their_terms(value: str) -> None:
    assert vocabulary_term(value) == "location"


def test_extension_keys_match_a_namespace_written_as_an_iri() -> None:
    scope = Scope({"cbvmda": "urn:epcglobal:cbv:mda"}, {"m": "urn:epcglobal:cbv:mda#"})
    node = {"m:lotNumber": "A", "urn:epcglobal:cbv:mda#lotNumber": "B", "x:lotNumber": "C", "lotNumber": "D"}
    assert matching_keys(node, "cbvmda:lotNumber", scope) == ["m:lotNumber", "urn:epcglobal:cbv:mda#lotNumber"]


# --- the API -------------------------------------------------------------------------------------

PROFILES = "/api/traceability/profiles"


def test_the_profiles_are_listed_and_shown(client: TestClient, tenant_a: TenantFixture) -> None:
    headers = tenant_a.headers(Role.VIEWER)
    listed = client.get(PROFILES, headers=headers)
    assert listed.status_code == 200, listed.text
    assert [p["name"] for p in listed.json()] == ["food_cn", "food_fsma204", "udi"]
    udi = next(p for p in listed.json() if p["name"] == "udi")
    assert udi["chainRules"] == ["used_twice", "used_after_expiry", "used_without_receiving"]
    assert {"key": "use_on_patient", "label": "Use on a patient", "labelZh": "临床使用"} in udi["events"]
    shown = client.get(f"{PROFILES}/udi", headers=headers)
    assert shown.status_code == 200, shown.text
    use = next(e for e in shown.json()["events"] if e["key"] == "use_on_patient")
    assert "patient_reference" in [k["element"] for k in use["kdes"]]
    assert shown.json()["elements"]["patient_reference"]["find"] == [
        {"path": "/udi:patientReference", "is": "pseudonym", "master": None, "ai": None, "terms": []}
    ]
    assert_problem(client.get(f"{PROFILES}/food_eu", headers=headers), 404, "profile_not_found")
    assert client.get(PROFILES).status_code == 401


def test_a_document_is_checked_against_a_profile(client: TestClient, tenant_a: TenantFixture) -> None:
    document = json.loads(UDI_FILE.read_text(encoding="utf-8"))
    second = udi_use("S1001", "2024-06-10T09:00:00.000+08:00", **{"udi:patientReference": "110101199003077578"})
    document["epcisBody"]["eventList"].append(second)
    response = client.post(
        f"{PROFILES}/udi/check",
        content=json.dumps(document).encode(),
        headers={**tenant_a.headers(Role.VIEWER), "Content-Type": "application/ld+json"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["profile"], body["valid"], body["eventCount"], body["errorCount"]) == ("udi", False, 7, 2)
    assert [e["criticalTrackingEvent"] for e in body["events"]] == [*UDI_CTES, "use_on_patient"]
    [issue] = body["events"][6]["issues"]
    assert (issue["element"], issue["location"], issue["severity"]) == (
        "patient_reference",
        f"{EVENTS}/6/udi:patientReference",
        "error",
    )
    assert body["chain"] == [
        {
            "rule": "used_twice",
            "location": f"{EVENTS}/6",
            "message": body["chain"][0]["message"],
            "identifier": "https://id.gs1.org/01/09506000134352/21/S1001",
            "related": [f"{EVENTS}/5"],
        }
    ]


def test_an_xml_document_is_checked_too(client: TestClient, tenant_a: TenantFixture) -> None:
    response = client.post(
        f"{PROFILES}/food_cn/check",
        content=FOOD_CN_FILE.read_bytes(),
        headers={**tenant_a.headers(Role.VIEWER), "Content-Type": "application/xml"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["valid"], body["errorCount"], body["warningCount"], body["chain"]) == (True, 0, 1, [])


def test_unreadable_or_unknown_input_is_refused(client: TestClient, tenant_a: TenantFixture) -> None:
    headers = tenant_a.headers(Role.VIEWER)
    unreadable = client.post(f"{PROFILES}/udi/check", content=b"{not json", headers=headers)
    assert_problem(unreadable, 422, "unreadable_document")
    assert_problem(
        client.post(f"{PROFILES}/udi/check", content=b"a,b", headers={**headers, "Content-Type": "text/csv"}), 415
    )
    assert_problem(client.post(f"{PROFILES}/nope/check", content=UDI_FILE.read_bytes(), headers=headers), 404)


def test_reports_over_http(client: TestClient, tenant_a: TenantFixture) -> None:
    headers = tenant_a.headers(Role.VIEWER)
    fsma = client.post(
        f"{PROFILES}/food_fsma204/report", params={"format": "csv"}, content=FSMA_FILE.read_bytes(), headers=headers
    )
    assert fsma.status_code == 200, fsma.text
    assert fsma.headers["content-type"].startswith("text/csv")
    assert 'filename="food_fsma204-spreadsheet.csv"' in fsma.headers["content-disposition"]
    lines = list(csv.reader(io.StringIO(fsma.content.decode("utf-8").lstrip("\ufeff"))))
    assert lines[0] == [c.heading for c in spreadsheet_columns()]
    assert len(lines) == 11
    as_json = client.post(f"{PROFILES}/food_cn/report", content=FOOD_CN_FILE.read_bytes(), headers=headers)
    assert [t["key"] for t in as_json.json()["tables"]] == [
        "production",
        "inspection",
        "purchase_inspection",
        "sales",
        "catering_receipt",
    ]
    several = client.post(
        f"{PROFILES}/food_cn/report", params={"format": "csv"}, content=FOOD_CN_FILE.read_bytes(), headers=headers
    )
    assert_problem(several, 422, "table_required")
    sales = client.post(
        f"{PROFILES}/food_cn/report",
        params={"format": "csv", "table": "sales"},
        content=FOOD_CN_FILE.read_bytes(),
        headers=headers,
    )
    assert "销售日期" in sales.content.decode("utf-8")
    missing = client.post(
        f"{PROFILES}/food_cn/report", params={"table": "recall"}, content=FOOD_CN_FILE.read_bytes(), headers=headers
    )
    assert_problem(missing, 404, "table_not_found")
    workbook = client.post(
        f"{PROFILES}/udi/report", params={"format": "xlsx"}, content=UDI_FILE.read_bytes(), headers=headers
    )
    assert workbook.status_code == 200
    assert zipfile.is_zipfile(io.BytesIO(workbook.content))


# --- master data captured earlier ------------------------------------------------------------------


def _romaine_without_master_data() -> tuple[bytes, bytes]:
    """The romaine chain with its header's master data taken out, and that master data alone as a document."""
    whole = json.loads(FSMA_FILE.read_text(encoding="utf-8"))
    header = whole.pop("epcisHeader")
    master_only = {**whole, "epcisHeader": header, "epcisBody": {"eventList": []}}
    return json.dumps(whole).encode(), json.dumps(master_only).encode()


def test_master_data_captured_earlier_completes_a_document_without_any(
    client: TestClient, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    without, master_only = _romaine_without_master_data()
    json_type = {"Content-Type": "application/ld+json"}

    def check(tenant: TenantFixture) -> dict[str, Any]:
        response = client.post(
            f"{PROFILES}/food_fsma204/check", content=without, headers={**tenant.headers(Role.VIEWER), **json_type}
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    never = check(tenant_a)
    assert never["valid"] is False
    [issue] = [i for i in never["events"][3]["issues"] if i["element"] == "product_description"]
    assert issue["location"] == f"{EVENTS}/3/quantityList/0/epcClass"
    assert "gives descriptionShort for" in issue["message"]
    assert "the tenant's" in issue["message"]

    captured = client.post("/epcis/capture", content=master_only, headers={**tenant_a.headers(), **json_type})
    assert captured.status_code == 202, captured.text
    assert captured.json()["success"], captured.json()["errors"]
    after = check(tenant_a)
    assert (after["valid"], after["errorCount"]) == (True, 0)
    assert check(tenant_b)["valid"] is False  # another tenant's master data is not read

    report = client.post(
        f"{PROFILES}/food_fsma204/report",
        content=without,
        headers={**tenant_a.headers(Role.VIEWER), **json_type},
    )
    assert report.status_code == 200, report.text
    rows = report.json()["tables"][0]["rows"]
    assert any("Romaine" in json.dumps(row) for row in rows)


def test_stored_master_data_is_read_once_per_check_and_the_documents_own_wins(migrated_db: Any) -> None:
    from sqlalchemy import event as sql_event

    from iip.traceability.capture import CaptureService
    from iip.traceability.profiles import service
    from tests.conftest import make_tenant
    from tests.traceability.query_support import capturer

    tenant = make_tenant(migrated_db, f"p-{uuid.uuid4().hex[:8]}").id
    without, master_only = _romaine_without_master_data()
    with migrated_db.session() as session:
        assert CaptureService(session).capture(capturer(tenant), master_only).success
    reads: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "traceability_master_data" in statement:
            reads.append(statement)

    sql_event.listen(migrated_db.engine, "before_cursor_execute", count)
    try:
        with migrated_db.session() as session:
            checked = service.check_document("food_fsma204", without, session=session, tenant_id=tenant)
            # The document's own description wins over the stored one.
            own = json.loads(FSMA_FILE.read_text(encoding="utf-8"))
            for vocabulary in own["epcisHeader"]["epcisMasterData"]["vocabularyList"]:
                for element in vocabulary["vocabularyElementList"]:
                    for attribute in element.get("attributes", []):
                        if attribute["id"].endswith("descriptionShort"):
                            attribute["attribute"] = "Document's own " + attribute["attribute"]
            tables = service.report_document(
                "food_fsma204", json.dumps(own).encode(), session=session, tenant_id=tenant
            )
    finally:
        sql_event.remove(migrated_db.engine, "before_cursor_execute", count)
    assert checked.error_count == 0
    assert len(checked.events) == 10
    assert len(reads) == 2  # one read per check or report, not one per event
    assert "Document's own" in json.dumps([row for table in tables for row in table.rows], default=str)
