"""Validation: GS1's JSON Schema and XSD, then the rules no schema expresses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from iip.traceability.epcis.validation import validate
from tests.traceability.conftest import DATASET, VALID_DOCUMENTS, example_id


def json_document(*events: dict[str, Any]) -> str:
    return json.dumps(
        {
            "@context": ["https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"],
            "type": "EPCISDocument",
            "schemaVersion": "2.0",
            "creationDate": "2024-01-01T00:00:00Z",
            "epcisBody": {"eventList": list(events)},
        }
    )


def object_event(**fields: Any) -> dict[str, Any]:
    event = {
        "type": "ObjectEvent",
        "eventTime": "2024-01-01T10:00:00.000+01:00",
        "eventTimeZoneOffset": "+01:00",
        "epcList": ["urn:epc:id:sgtin:0614141.107346.2017"],
        "action": "OBSERVE",
        "bizStep": "shipping",
    }
    event.update(fields)
    return {k: v for k, v in event.items() if v is not None}


@pytest.mark.parametrize("path", VALID_DOCUMENTS, ids=example_id)
def test_gs1_examples_are_valid(path: Path) -> None:
    assert validate(path.read_bytes()) == []


def test_json_schema_findings_carry_a_json_pointer() -> None:
    issues = validate((DATASET / "XML/WithEventHashID/event_with_identical_hash_id_7.json").read_bytes())
    assert ("/epcisBody/eventList/0/bizStep") in {i.location for i in issues}


def test_every_problem_is_reported_not_only_the_first() -> None:
    bad = object_event(
        action=None,
        eventTimeZoneOffset="+1:00",
        epcList=["https://id.gs1.org/01/10614141073465/21/2017"],  # check digit should be 4
        disposition="urn:epcglobal:cbv:disp:not_a_disposition",
    )
    locations = {i.location: i.message for i in validate(json_document(object_event(), bad))}
    assert "/epcisBody/eventList/1/action" in locations
    assert "/epcisBody/eventList/1/eventTimeZoneOffset" in locations
    assert "check digit" in locations["/epcisBody/eventList/1/epcList/0"]
    assert "not a CBV disposition" in locations["/epcisBody/eventList/1/disposition"]
    assert not any(loc.startswith("/epcisBody/eventList/0/") for loc in locations)


def test_aggregation_add_needs_a_parent() -> None:
    event = {
        "type": "AggregationEvent",
        "eventTime": "2024-01-01T10:00:00Z",
        "eventTimeZoneOffset": "+00:00",
        "childEPCs": ["urn:epc:id:sgtin:0614141.107346.2017"],
        "action": "ADD",
    }
    issues = validate(json_document(event))
    assert [i.message for i in issues if i.location == "/epcisBody/eventList/0/parentID"] == [
        "AggregationEvent requires parentID"
    ]
    event["parentID"] = "urn:epc:id:sscc:0614141.1234567890"
    assert validate(json_document(event)) == []


def test_wrong_check_digit_in_a_location_is_found() -> None:
    issues = validate(json_document(object_event(readPoint={"id": "https://id.gs1.org/414/0614141073468"})))
    assert [i.location for i in issues] == ["/epcisBody/eventList/0/readPoint/id"]


def test_xml_rules_and_xsd_are_both_applied() -> None:
    text = (DATASET / "XML/Example_9.6.1-ObjectEvent-2020_06_18a.xml").read_text()
    broken = text.replace("<action>OBSERVE</action>", "", 1).replace(
        "urn:epcglobal:cbv:bizstep:shipping", "urn:epcglobal:cbv:bizstep:shipingg"
    )
    issues = validate(broken)
    messages = " | ".join(f"{i.location}: {i.message}" for i in issues)
    assert any("/EPCISBody/EventList/ObjectEvent" in i.location for i in issues), messages  # from the XSD
    assert any(i.location == "/epcisBody/eventList/0/action" for i in issues), messages
    assert any(i.location == "/epcisBody/eventList/0/bizStep" for i in issues), messages


@pytest.mark.parametrize(
    "data",
    [b"{not json", b"<a><b></a>", b'<!DOCTYPE r [<!ENTITY x "y">]><r/>', b""],
)
def test_unreadable_input_is_one_issue_not_a_crash(data: bytes) -> None:
    issues = validate(data)
    assert len(issues) == 1
    assert issues[0].location == ""
