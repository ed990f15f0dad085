"""Writing EPCIS documents: every GS1 example read, written as XML and as JSON-LD, validated and read back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from iip.traceability.epcis.documents import EPCIS_QUERY_NS, normalise_event, read_document
from iip.traceability.epcis.validation import validate
from iip.traceability.epcis.writer import EPCIS_CONTEXT_URL, json_document, merge_contexts, xml_document
from tests.traceability.conftest import DATASET, EVENT_DOCUMENTS, example_id

BINDINGS = ("xml", "json")

# Round trips into the other binding that differ beyond normalise_event, and why.
DEPARTURES = {
    ("JSON/Example-TransactionEvents-2020_07_03y.jsonld", "xml"): "a JSON boolean in an extension is XML text",
    ("XML/WithEventHashID/event_with_identical_hash_id_7.json", "xml"): "JSON numbers in extensions are XML text",
    ("JSON/WithSensorData/SensorDataExample9.jsonld", "xml"): "sensor exception ALARM_CONDITION is gs1:ALARM_CONDITION",
    ("JSON/WithSensorData/SensorDataExample10.jsonld", "xml"): "sensor component x is cbv:Comp-x in XML",
    ("JSON/WithSensorData/SensorDataExample14.jsonld", "xml"): "sensor component latitude is cbv:Comp-latitude",
    ("JSON/WithSensorData/SensorDataExample15.jsonld", "xml"): "sensor component northing is cbv:Comp-northing",
    ("XML/WithErrorDeclaration/ErrorDeclarationAndCorrectiveEvent.xml", "json"): "a nil quantity has no JSON form",
}
# Examples whose own binding is written back with another spelling, and why.
RESPELLED = {
    "XML/WithEventHashID/event_with_identical_hash_id_7.json": "its CBV URNs are written as the bare terms JSON wants",
}
# Written documents the binding's schema refuses, and why.
INVALID = {
    ("XML/WithSensorData/SensorDataExamples.xml", "json"): "a sensorReport without type: JSON requires one, XML not",
}
CREATED = "2024-05-01T08:00:00.000Z"


def write(binding: str, items: list[tuple[dict[str, Any], dict[str, str]]], **kwargs: Any) -> bytes:
    if binding == "xml":
        return xml_document(items, creation_date=CREATED, **kwargs)
    return json.dumps(json_document(items, creation_date=CREATED, **kwargs)).encode()


def example_items(path: Path) -> list[tuple[dict[str, Any], dict[str, str]]]:
    document = read_document(path.read_bytes())
    return [(event, document.context) for event in document.events]


def native(path: Path) -> str:
    return "xml" if path.suffix == ".xml" else "json"


def _textual(value: Any, in_extension: bool = False) -> Any:
    """Values as XML carries them: extension numbers and booleans as text, CURIE spellings of sensor terms bare."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key == "quantity" and item == "":
                continue
            spelled = item
            if key == "component" and isinstance(item, str):
                spelled = item.removeprefix("cbv:Comp-")
            elif key == "exception" and isinstance(item, str):
                spelled = item.removeprefix("gs1:")
            out[key] = _textual(spelled, in_extension or ":" in key)
        return out
    if isinstance(value, list):
        return [_textual(item, in_extension) for item in value]
    if in_extension and isinstance(value, bool):
        return "true" if value else "false"
    if in_extension and isinstance(value, int | float):
        return repr(value)
    return value


def comparable(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [normalise_event(event) for event in events]


@pytest.mark.parametrize("binding", BINDINGS)
@pytest.mark.parametrize("path", EVENT_DOCUMENTS, ids=example_id)
def test_every_example_written_is_valid(path: Path, binding: str) -> None:
    output = write(binding, example_items(path))
    issues = validate(output)
    reason = INVALID.get((example_id(path), binding))
    if reason is None:
        assert issues == []
    else:
        assert issues
        assert {i.message for i in issues} == {"'type' is a required property"}, reason


@pytest.mark.parametrize("path", EVENT_DOCUMENTS, ids=example_id)
def test_written_in_its_own_binding_an_example_reads_back_exactly(path: Path) -> None:
    original = read_document(path.read_bytes()).events
    back = read_document(write(native(path), example_items(path))).events
    if example_id(path) in RESPELLED:
        assert back != original
        assert comparable(back) == comparable(original), RESPELLED[example_id(path)]
    else:
        assert back == original


@pytest.mark.parametrize("path", EVENT_DOCUMENTS, ids=example_id)
def test_written_in_the_other_binding_an_example_reads_back_equal_after_normalising(path: Path) -> None:
    other = "json" if native(path) == "xml" else "xml"
    original = read_document(path.read_bytes()).events
    back = read_document(write(other, example_items(path))).events
    departure = DEPARTURES.get((example_id(path), other))
    if departure is None:
        assert comparable(back) == comparable(original)
    else:
        # The listed departure is real, and it is the only difference.
        assert comparable(back) != comparable(original), departure
        assert _textual(comparable(back)) == _textual(comparable(original)), departure


def test_cbv_values_are_urns_in_xml_and_bare_terms_in_json() -> None:
    items = example_items(DATASET / "JSON/Example_9.6.1-ObjectEvent.jsonld")
    assert items[0][0]["bizStep"] == "shipping"
    xml_event = read_document(xml_document(items)).events[0]
    assert xml_event["bizStep"] == "urn:epcglobal:cbv:bizstep:shipping"
    assert xml_event["disposition"] == "urn:epcglobal:cbv:disp:in_transit"
    from_xml = example_items(DATASET / "XML/Example_9.6.1-ObjectEvent-2020_06_18a.xml")
    json_event = json_document(from_xml)["epcisBody"]["eventList"][1]
    assert json_event["bizStep"] == "receiving"
    assert json_event["bizTransactionList"][1]["type"] == "desadv"


def test_xml_fields_follow_the_xsd_order_whatever_the_dict_order() -> None:
    event = {
        "persistentDisposition": {"set": ["completeness_verified"], "unset": ["completeness_inferred"]},
        "action": "OBSERVE",
        "bizStep": "shipping",
        "epcList": ["urn:epc:id:sgtin:0614141.107346.2017"],
        "eventTimeZoneOffset": "+01:00",
        "eventTime": "2024-01-01T10:00:00.000+01:00",
        "type": "ObjectEvent",
    }
    output = xml_document([(event, {})])
    assert validate(output) == []
    written = etree.fromstring(output).find(".//ObjectEvent")
    assert written is not None
    names = [etree.QName(e).localname for e in written]
    assert names == ["eventTime", "eventTimeZoneOffset", "epcList", "action", "bizStep", "persistentDisposition"]
    persistent = etree.fromstring(output).find(".//persistentDisposition")
    assert persistent is not None
    assert [etree.QName(e).localname for e in persistent] == ["unset", "set"]


@pytest.mark.parametrize("binding", BINDINGS)
def test_a_prefix_two_documents_use_for_different_namespaces_is_renamed_in_one_of_them(binding: str) -> None:
    def event(note: str) -> dict[str, Any]:
        return {
            "type": "ObjectEvent",
            "eventTime": "2024-01-01T10:00:00.000+01:00",
            "eventTimeZoneOffset": "+01:00",
            "epcList": ["urn:epc:id:sgtin:0614141.107346.2017"],
            "action": "OBSERVE",
            "ex:note": {"ex:detail": note, "ex:part": ["a", "b"]},
        }

    items = [
        (event("first"), {"ex": "https://one.example.com/ns/"}),
        (event("second"), {"ex": "https://two.example.com/ns/"}),
        (event("third"), {"other": "https://one.example.com/ns/"}),
    ]
    output = write(binding, items)
    assert validate(output) == []
    document = read_document(output)
    first, second, third = document.events
    assert first["ex:note"] == {"ex:detail": "first", "ex:part": ["a", "b"]}
    assert second["ex2:note"] == {"ex2:detail": "second", "ex2:part": ["a", "b"]}
    # One namespace keeps one prefix: the third document's `other` is the first one's `ex`.
    assert third["ex:note"] == {"ex:detail": "third", "ex:part": ["a", "b"]}
    assert document.context["ex"] == "https://one.example.com/ns/"
    assert document.context["ex2"] == "https://two.example.com/ns/"
    assert "other" not in document.context


def test_merging_renames_keys_only_where_the_prefix_clashes() -> None:
    prefixes, events = merge_contexts(
        [
            ({"type": "ObjectEvent", "a:x": 1}, {"a": "urn:ns:1"}),
            ({"type": "ObjectEvent", "a:x": 2, "ilmd": {"a:y": {"a:z": 3}}}, {"a": "urn:ns:2"}),
        ]
    )
    assert prefixes == {"a": "urn:ns:1", "a2": "urn:ns:2"}
    assert events[0] == {"type": "ObjectEvent", "a:x": 1}
    assert events[1] == {"type": "ObjectEvent", "a2:x": 2, "ilmd": {"a2:y": {"a2:z": 3}}}


def test_query_document_in_json() -> None:
    items = example_items(DATASET / "JSON/Example_9.6.1-ObjectEvent.jsonld")
    document = json_document(items, query_name="SimpleEventQuery", subscription_id="sub-1")
    assert document["type"] == "EPCISQueryDocument"
    assert document["@context"][0] == EPCIS_CONTEXT_URL
    results = document["epcisBody"]["queryResults"]
    assert results["queryName"] == "SimpleEventQuery"
    assert results["subscriptionID"] == "sub-1"
    assert results["resultsBody"]["eventList"] == [e for e, _ in items]
    assert validate(json.dumps(document)) == []
    assert "subscriptionID" not in json_document(items, query_name="q")["epcisBody"]["queryResults"]


def test_query_document_in_xml() -> None:
    items = example_items(DATASET / "XML/Example_9.6.1-ObjectEvent-2020_06_18a.xml")
    output = xml_document(items, query_name="SimpleEventQuery", subscription_id="sub-1")
    assert validate(output) == []
    root = etree.fromstring(output)
    assert root.tag == f"{{{EPCIS_QUERY_NS}}}EPCISQueryDocument"
    assert root.findtext(f".//{{{EPCIS_QUERY_NS}}}QueryResults/queryName") == "SimpleEventQuery"
    assert root.findtext(f".//{{{EPCIS_QUERY_NS}}}QueryResults/subscriptionID") == "sub-1"
    document = read_document(output)
    assert document.type == "EPCISQueryDocument"
    assert document.events == [e for e, _ in items]


def test_an_empty_event_list_is_a_valid_document_in_both_bindings() -> None:
    for binding in BINDINGS:
        assert validate(write(binding, [])) == []
        assert validate(write(binding, [], query_name="q")) == []


def test_xml_writes_an_extension_key_given_as_a_full_iri_back_as_the_same_key() -> None:
    event = {
        "type": "ObjectEvent",
        "eventTime": "2024-01-01T10:00:00.000+01:00",
        "eventTimeZoneOffset": "+01:00",
        "epcList": [],
        "action": "OBSERVE",
        "https://ns.example.com/epcis/temperatureBand": "chilled",
    }
    output = xml_document([(event, {})])
    assert validate(output) == []
    assert read_document(output).events == [event]


def test_xml_refuses_an_extension_prefix_with_no_namespace() -> None:
    event = {
        "type": "ObjectEvent",
        "eventTime": "2024-01-01T10:00:00.000+01:00",
        "eventTimeZoneOffset": "+01:00",
        "action": "OBSERVE",
        "nowhere:field": "x",
    }
    with pytest.raises(ValueError, match="nowhere"):
        xml_document([(event, {})])
