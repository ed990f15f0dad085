"""Reading EPCIS JSON/JSON-LD and XML into the one internal form."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from iip.traceability.epcis.documents import (
    EpcisFormatError,
    normalise_event,
    normalise_time,
    normalise_vocabulary,
    read_document,
    read_events,
)
from tests.traceability.conftest import DATASET, EVENT_DOCUMENTS, example_id

# The same GS1 example published in both syntaxes: (JSON file, XML file, index of the event in the XML file or None).
PAIRS = [
    ("JSON/Example_9.6.1-ObjectEvent.jsonld", "XML/Example_9.6.1-ObjectEvent-2020_06_18a.xml", None),
    *[
        (
            f"JSON/AssociationEvent/AssociationEvent-{letter}.jsonld",
            "XML/AssociationEvent/AssociationEventExamples.xml",
            i,
        )
        for i, letter in enumerate("abcdef")
    ],
    ("JSON/AssociationEvent/AssociationEvent-h.jsonld", "XML/AssociationEvent/AssociationEventExamples.xml", 7),
]


def comparable(event: dict[str, Any]) -> dict[str, Any]:
    # eventID is a per-document choice (hash or UUID), not part of what happened.
    out = normalise_event(event)
    out.pop("eventID", None)
    return out


@pytest.mark.parametrize("path", EVENT_DOCUMENTS, ids=example_id)
def test_every_example_reads_into_typed_events(path: Path) -> None:
    document = read_document(path.read_bytes())
    assert document.events
    for event in document.events:
        assert event["type"].endswith("Event")
        assert "eventTime" in event


@pytest.mark.parametrize(("json_name", "xml_name", "index"), PAIRS, ids=str)
def test_json_and_xml_forms_of_an_example_come_out_equal(json_name: str, xml_name: str, index: int | None) -> None:
    from_json = [comparable(e) for e in read_events((DATASET / json_name).read_bytes())]
    from_xml = [comparable(e) for e in read_events((DATASET / xml_name).read_bytes())]
    assert from_json == (from_xml if index is None else [from_xml[index]])


def test_transaction_example_pair_differs_only_where_gs1_json_departs_from_its_xml() -> None:
    from_json = [
        comparable(e) for e in read_events((DATASET / "JSON/Example-TransactionEvents-2020_07_03y.jsonld").read_bytes())
    ]
    from_xml = [
        comparable(e) for e in read_events((DATASET / "XML/Example-TransactionEvent-2020_07_03y.xml").read_bytes())
    ]
    assert from_json[0] == from_xml[0]
    json_vehicles, xml_vehicles = from_json[1].pop("rail:vehicle"), from_xml[1].pop("rail:vehicle")
    assert from_json[1] == from_xml[1]
    # The JSON writes a boolean literal where the XML has text, and leaves out an element the XML has empty.
    assert json_vehicles[2]["rail:vehicleUniquelyIdentified"] is True
    assert xml_vehicles[2]["rail:vehicleUniquelyIdentified"] == "true"
    assert xml_vehicles[1]["rail:vehicleMasterGIAI"] == ""
    assert "rail:vehicleMasterGIAI" not in json_vehicles[1]
    assert [v["rail:vehiclePosition"] for v in json_vehicles] == [v["rail:vehiclePosition"] for v in xml_vehicles]


def test_xml_maps_onto_the_json_shape_and_keeps_extensions_with_their_prefix() -> None:
    document = read_document((DATASET / "XML/Example_9.6.1-ObjectEvent-2020_06_18a.xml").read_bytes())
    second = document.events[1]
    assert second["readPoint"] == {"id": "urn:epc:id:sgln:0012345.11111.400"}
    assert second["bizStep"] == "urn:epcglobal:cbv:bizstep:receiving"  # kept as written
    assert second["bizTransactionList"][1] == {
        "type": "urn:epcglobal:cbv:btt:desadv",
        "bizTransaction": "urn:epcglobal:cbv:bt:0614141073467:1152",
    }
    assert second["example:myField"] == "Example of a vendor/user extension"
    assert document.context["example"] == "http://ns.example.com/epcis"


def test_xml_sensor_data_becomes_typed_values() -> None:
    events = read_events(
        (DATASET / "XML/WithFullCombinationOfFields/object_event_all_possible_fields.xml").read_bytes()
    )
    element = events[0]["sensorElementList"][0]
    report = element["sensorReport"][0]
    assert report["value"] == 26.0
    assert report["booleanValue"] is True
    assert report["ext1:someFurtherReportData"] == "someText"
    assert element["ext1:object"]["ext2:object"] == {"ext3:string": "stringInObjectInObject"}
    assert events[0]["quantityList"] == [
        {"epcClass": "urn:epc:class:lgtin:4012345.012345.998877", "quantity": 200, "uom": "KGM"}
    ]
    assert events[0]["persistentDisposition"] == {
        "unset": ["urn:epcglobal:cbv:disp:completeness_inferred"],
        "set": ["urn:epcglobal:cbv:disp:completeness_verified"],
    }


def test_a_single_json_event_reads_as_one_event() -> None:
    event = {
        "type": "ObjectEvent",
        "eventTime": "2020-01-01T00:00:00Z",
        "eventTimeZoneOffset": "+00:00",
        "action": "OBSERVE",
        "epcList": [],
        "example:note": {"nested": [1, 2]},
    }
    assert read_events(json.dumps(event)) == [event]


@pytest.mark.parametrize(
    "value",
    ["urn:epcglobal:cbv:bizstep:shipping", "https://ref.gs1.org/cbv/BizStep-shipping", "shipping"],
)
def test_vocabulary_forms_normalise_to_one(value: str) -> None:
    assert normalise_vocabulary(value, "bizStep") == "https://ref.gs1.org/cbv/BizStep-shipping"


def test_private_vocabulary_is_left_alone() -> None:
    assert normalise_vocabulary("https://example.com/steps/x", "bizStep") == "https://example.com/steps/x"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2005-04-03T20:33:31.116000-06:00", "2005-04-04T02:33:31.116Z"),
        ("2005-04-04T02:33:31Z", "2005-04-04T02:33:31.000Z"),
        ("2005-04-04T02:33:31.9996+00:00", "2005-04-04T02:33:32.000Z"),
    ],
)
def test_times_normalise_to_utc_milliseconds(value: str, expected: str) -> None:
    assert normalise_time(value) == expected


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"type": "EPCISDocument", "epcisBody": ', "malformed JSON"),
        (b"<epcis:EPCISDocument xmlns:epcis='urn:epcglobal:epcis:xsd:2'><EPCISBody>", "malformed XML"),
        (
            b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x "boom">]><r>&x;</r>',
            "entity declarations",
        ),
        (b'<?xml version="1.0"?><!DOCTYPE r SYSTEM "http://example.com/x.dtd"><r/>', "DOCTYPE"),
        (b"hello", "neither JSON nor XML"),
        (b'{"type": "Invoice"}', "unknown document type"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"type": "EPCISDocument", "epcisBody": {"eventList": [1]}}', "eventList"),
    ],
)
def test_bad_input_gives_a_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(EpcisFormatError, match=message):
        read_document(data)


def test_oversize_documents_are_refused_before_parsing() -> None:
    data = (DATASET / "JSON/Example_9.6.1-ObjectEvent.jsonld").read_bytes()
    with pytest.raises(EpcisFormatError, match="exceeds"):
        read_document(data, max_bytes=len(data) - 1)
    assert read_document(data, max_bytes=len(data)).events
