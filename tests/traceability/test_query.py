"""The standard event query over the repository tables, on SQLite and PostgreSQL.

Eight events of tenant A (one of each kind of field a parameter filters on) and one of tenant B are
stored as capture stores them (tests/traceability/query_support.py); each parameter is asked for
in the forms a client may write it and must find exactly the events it names.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy.orm import Session

from iip.kernel.db import Database
from iip.kernel.errors import Invalid
from iip.traceability import query as query_module
from iip.traceability.epcis.documents import read_document
from iip.traceability.epcis.identifiers import canonical, urn_to_dl
from iip.traceability.models import Event
from iip.traceability.query import (
    PAGE_TOKEN_LIFETIME,
    EventQuery,
    count_events,
    parse_query,
    parse_stored_query,
    run_query,
    select_events,
)
from tests.conftest import BACKENDS, MigratedTemplates, TenantFixture, make_tenant
from tests.traceability.conftest import VALID_DOCUMENTS, example_id
from tests.traceability.query_support import capture_events, capture_file

RECORDED = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
SGTIN = "urn:epc:id:sgtin:0614141.107346.{}"
LGTIN = "urn:epc:class:lgtin:4012345.012345.998877"


def event_id(name: str) -> str:
    return f"urn:uuid:00000000-0000-4000-8000-0000000000{name[1:].zfill(2)}"


EVENTS: dict[str, dict[str, Any]] = {
    "e1": {
        "type": "ObjectEvent",
        "eventTime": "2024-01-01T10:00:00+08:00",
        "eventTimeZoneOffset": "+08:00",
        "action": "ADD",
        "epcList": [SGTIN.format(2017), urn_to_dl(SGTIN.format(2018))],
        "bizStep": "shipping",
        "disposition": "in_transit",
        "readPoint": {"id": "urn:epc:id:sgln:0614141.07346.1234"},
        "bizLocation": {"id": "urn:epc:id:sgln:0614141.07346.0"},
        "bizTransactionList": [{"type": "po", "bizTransaction": "http://transaction.acme.com/po/12345678"}],
        "sourceList": [{"type": "owning_party", "source": "urn:epc:id:pgln:0614141.00001"}],
        "destinationList": [{"type": "owning_party", "destination": "urn:epc:id:pgln:4012345.00002"}],
    },
    "e2": {
        "type": "ObjectEvent",
        "eventTime": "2024-01-02T00:00:00Z",
        "eventTimeZoneOffset": "+00:00",
        "action": "OBSERVE",
        "epcList": [SGTIN.format(2019)],
        "quantityList": [{"epcClass": LGTIN, "quantity": 200, "uom": "KGM"}],
        "bizStep": "https://ref.gs1.org/cbv/BizStep-receiving",
        "disposition": "https://ref.gs1.org/cbv/Disp-in_progress",
        "persistentDisposition": {"set": ["completeness_verified"], "unset": ["completeness_inferred"]},
        "readPoint": {"id": "urn:epc:id:sgln:4012345.00001.0"},
    },
    "e3": {
        "type": "AggregationEvent",
        "eventTime": "2024-01-03T00:00:00Z",
        "eventTimeZoneOffset": "+00:00",
        "action": "ADD",
        "parentID": "urn:epc:id:sscc:0614141.1234567890",
        "childEPCs": [SGTIN.format(2017)],
        "childQuantityList": [{"epcClass": "urn:epc:idpat:sgtin:4012345.098765.*", "quantity": 10}],
        "bizStep": "https://ref.gs1.org/cbv/BizStep-packing",
        "bizLocation": {"id": "urn:epc:id:sgln:0614141.07346.0"},
    },
    "e4": {
        "type": "TransformationEvent",
        "eventTime": "2024-01-04T00:00:00Z",
        "eventTimeZoneOffset": "+00:00",
        "inputEPCList": [SGTIN.format(2018)],
        "inputQuantityList": [{"epcClass": "urn:epc:class:lgtin:4012345.011111.4444", "quantity": 10, "uom": "KGM"}],
        "outputEPCList": [SGTIN.format(3000)],
        "outputQuantityList": [{"epcClass": LGTIN, "quantity": 5, "uom": "KGM"}],
        "transformationID": "urn:epc:id:gdti:0614141.12345.400",
        "bizStep": "commissioning",
    },
    "e5": {
        "type": "TransactionEvent",
        "eventTime": "2024-01-05T00:00:00Z",
        "eventTimeZoneOffset": "+00:00",
        "action": "ADD",
        "parentID": "urn:epc:id:sscc:0614141.1234567890",
        "epcList": [SGTIN.format(2020)],
        "bizTransactionList": [{"type": "inv", "bizTransaction": "urn:epcglobal:cbv:bt:0614141073467:1152"}],
        "bizStep": "shipping",
    },
    "e6": {
        "type": "ObjectEvent",
        "eventTime": "2024-01-06T00:00:00Z",
        "eventTimeZoneOffset": "+00:00",
        "action": "OBSERVE",
        "epcList": [SGTIN.format(4000)],
        "bizStep": "sensor_reporting",
        "sensorElementList": [
            {
                "sensorMetadata": {"time": "2024-01-06T00:00:00Z", "deviceID": "urn:epc:id:giai:4000001.111"},
                "sensorReport": [
                    {"type": "Temperature", "value": 26.0, "uom": "CEL"},
                    {"type": "gs1:RelativeHumidity", "value": 12.1, "uom": "A93"},
                    {"type": "Temperature", "booleanValue": True, "stringValue": "door open"},
                    {"type": "Temperature", "uriValue": "https://example.com/probe/7"},
                ],
            }
        ],
    },
    "e7": {
        "type": "ObjectEvent",
        "eventTime": "2024-01-07T00:00:00Z",
        "eventTimeZoneOffset": "+00:00",
        "action": "DELETE",
        "epcList": [SGTIN.format(5000)],
        "errorDeclaration": {
            "declarationTime": "2024-02-01T00:30:00+01:00",
            "reason": "incorrect_data",
            "correctiveEventIDs": [event_id("e1")],
        },
    },
    "e8": {
        "type": "AssociationEvent",
        "eventTime": "2024-01-08T00:00:00Z",
        "eventTimeZoneOffset": "+00:00",
        "action": "ADD",
        "parentID": "urn:epc:id:grai:4000001.00012.5555",
        "childEPCs": ["urn:epc:id:giai:4000001.111"],
    },
}
ALL = list(EVENTS)
B_EVENT = {**EVENTS["e1"], "eventID": "urn:uuid:bbbbbbbb-0000-4000-8000-000000000001"}


@dataclass(frozen=True)
class Repository:
    db: Database
    tenant: str
    other: str

    def names(self, params: Mapping[str, str | Sequence[str]], tenant: str | None = "own") -> list[str]:
        """The names of the events the query selects, in the order it gives them."""
        query = parse_query(params)
        with self.db.session() as session:
            page = run_query(session, self.tenant if tenant == "own" else tenant, query, None, 1000)
        return [_name(event.event_id) for event in page.events]


def _name(stored_id: str) -> str:
    for name in EVENTS:
        if event_id(name) == stored_id:
            return name
    return "B" if stored_id == B_EVENT["eventID"] else stored_id


def recorded_at(session: Session, events: Sequence[Event], first: dt.datetime) -> None:
    """Record times an hour apart, so that the recordTime filters have something to tell apart."""
    for index, event in enumerate(events):
        event.record_time = first + dt.timedelta(hours=index)
    session.flush()


def seeded(db: Database, tenant_a: str, tenant_b: str) -> Repository:
    with db.session() as session:
        events = [{**event, "eventID": event_id(name)} for name, event in EVENTS.items()]
        stored = capture_events(session, tenant_a, events)
        assert [e.event_id for e in stored] == [event_id(name) for name in EVENTS]
        recorded_at(session, stored, RECORDED)
        recorded_at(session, capture_events(session, tenant_b, [B_EVENT]), RECORDED)
    return Repository(db, tenant_a, tenant_b)


@pytest.fixture(scope="module", params=BACKENDS)
def repo(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, migrated_templates: MigratedTemplates
) -> Iterator[Repository]:
    """One seeded database per backend for the tests that only read."""
    with migrated_templates.copy(str(request.param), tmp_path_factory.mktemp("query")) as url:
        db = Database(url)
        yield seeded(db, make_tenant(db, "tenant-a").id, make_tenant(db, "tenant-b").id)
        db.dispose()


@pytest.fixture
def fresh_repo(migrated_db: Database, tenant_a: TenantFixture, tenant_b: TenantFixture) -> Repository:
    """A seeded database of the test's own, for tests that store more."""
    return seeded(migrated_db, tenant_a.id, tenant_b.id)


def test_without_parameters_every_event_of_the_tenant_in_the_order_stored(repo: Repository) -> None:
    assert repo.names({}) == ALL
    assert repo.names({}, tenant=repo.other) == ["B"]
    assert sorted(repo.names({}, tenant=None)) == sorted([*ALL, "B"])  # every tenant


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"eventType": "AggregationEvent"}, ["e3"]),
        ({"eventType": "TransformationEvent|AssociationEvent"}, ["e4", "e8"]),
        ({"eventType": ["TransactionEvent", "AggregationEvent"]}, ["e3", "e5"]),
        # 10:00+08:00 is 02:00 UTC: GE is inclusive, LT exclusive.
        ({"GE_eventTime": "2024-01-01T02:00:00Z", "LT_eventTime": "2024-01-03T00:00:00Z"}, ["e1", "e2"]),
        ({"LT_eventTime": "2024-01-01T10:00:00+08:00"}, []),
        ({"GE_eventTime": "2024-01-07T09:00:00+09:00"}, ["e7", "e8"]),
        ({"GE_recordTime": "2024-03-01T02:00:00Z", "LT_recordTime": "2024-03-01T04:00:00Z"}, ["e3", "e4"]),
        ({"EQ_action": "DELETE"}, ["e7"]),
        ({"EQ_action": "OBSERVE,DELETE"}, ["e2", "e6", "e7"]),
    ],
)
def test_type_time_and_action(repo: Repository, params: dict[str, Any], expected: list[str]) -> None:
    assert repo.names(params) == expected


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"EQ_bizStep": "shipping"}, ["e1", "e5"]),
        ({"EQ_bizStep": "urn:epcglobal:cbv:bizstep:shipping"}, ["e1", "e5"]),
        ({"EQ_bizStep": "urn:epcglobal:cbv:bizstep:receiving"}, ["e2"]),  # captured as web URI
        ({"EQ_bizStep": "cbv:BizStep-packing"}, ["e3"]),
        ({"EQ_bizStep": ["receiving", "packing|commissioning"]}, ["e2", "e3", "e4"]),
        ({"EQ_disposition": "in_progress"}, ["e2"]),
        ({"EQ_disposition": "urn:epcglobal:cbv:disp:in_transit"}, ["e1"]),
        ({"EQ_persistentDisposition_set": "completeness_verified"}, ["e2"]),
        ({"EQ_persistentDisposition_set": "completeness_inferred"}, []),  # that one is unset
        ({"EQ_persistentDisposition_unset": "urn:epcglobal:cbv:disp:completeness_inferred"}, ["e2"]),
    ],
)
def test_vocabulary_in_any_spelling(repo: Repository, params: dict[str, Any], expected: list[str]) -> None:
    assert repo.names(params) == expected


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"EQ_readPoint": "urn:epc:id:sgln:0614141.07346.1234"}, ["e1"]),
        ({"EQ_readPoint": "https://id.gs1.org/414/0614141073467/254/1234"}, ["e1"]),
        ({"EQ_readPoint": "https://example.com/414/0614141073467/254/1234?x=1"}, ["e1"]),  # any Digital Link domain
        ({"WD_readPoint": "urn:epc:id:sgln:4012345.00001.0"}, ["e2"]),
        ({"EQ_bizLocation": "urn:epc:id:sgln:0614141.07346.0"}, ["e1", "e3"]),
        ({"EQ_bizLocation": "https://id.gs1.org/414/0614141073467/254/0"}, ["e1", "e3"]),  # extension 0 is the GLN
        ({"EQ_transformationID": "urn:epc:id:gdti:0614141.12345.400"}, ["e4"]),
        ({"EQ_eventID": [event_id("e2"), event_id("e8")]}, ["e2", "e8"]),
        ({"EQ_eventID": B_EVENT["eventID"]}, []),  # tenant B's
    ],
)
def test_locations_transformation_and_event_ids(repo: Repository, params: dict[str, Any], expected: list[str]) -> None:
    assert repo.names(params) == expected


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"MATCH_epc": SGTIN.format(2018)}, ["e1"]),  # stored as Digital Link, asked as URN
        ({"MATCH_epc": urn_to_dl(SGTIN.format(2017))}, ["e1", "e3"]),  # stored as URN; childEPCs count
        ({"MATCH_epc": "urn:epc:idpat:sgtin:0614141.107346.2019"}, ["e2"]),  # a pattern naming one EPC
        ({"MATCH_epc": "urn:epc:idpat:sgtin:0614141.107346.*"}, ["e1", "e2", "e3", "e5", "e6", "e7"]),
        ({"MATCH_epc": "urn:epc:id:sscc:0614141.1234567890"}, []),  # a parent only
        ({"MATCH_parentID": "urn:epc:id:sscc:0614141.1234567890"}, ["e3", "e5"]),
        ({"MATCH_parentID": "https://id.gs1.org/8003/040000010001285555"}, ["e8"]),
        ({"MATCH_inputEPC": SGTIN.format(2018)}, ["e4"]),
        ({"MATCH_outputEPC": SGTIN.format(3000)}, ["e4"]),
        ({"MATCH_outputEPC": SGTIN.format(2018)}, []),
        ({"MATCH_anyEPC": SGTIN.format(2018)}, ["e1", "e4"]),
        ({"MATCH_anyEPC": "urn:epc:id:giai:4000001.111"}, ["e8"]),
        ({"MATCH_anyEPC": ["urn:epc:id:sscc:0614141.1234567890", SGTIN.format(3000)]}, ["e3", "e4", "e5"]),
        ({"MATCH_epcClass": LGTIN}, ["e2"]),
        ({"MATCH_epcClass": "urn:epc:idpat:sgtin:4012345.012345.*"}, ["e2"]),  # every lot of the GTIN
        ({"MATCH_epcClass": "urn:epc:idpat:sgtin:4012345.098765.*"}, ["e3"]),  # the GTIN as a class
        ({"MATCH_inputEPCClass": "urn:epc:idpat:sgtin:4012345.011111.*"}, ["e4"]),
        ({"MATCH_outputEPCClass": LGTIN}, ["e4"]),
        ({"MATCH_anyEPCClass": urn_to_dl(LGTIN)}, ["e2", "e4"]),
        ({"MATCH_epc": SGTIN.format(2017), "MATCH_parentID": "urn:epc:id:sscc:0614141.1234567890"}, ["e3"]),
    ],
)
def test_epc_and_class_matches(repo: Repository, params: dict[str, Any], expected: list[str]) -> None:
    assert repo.names(params) == expected


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"EQ_quantity": "200"}, ["e2"]),
        ({"GT_quantity": "5"}, ["e2", "e3", "e4"]),
        ({"GE_quantity": "5", "LT_quantity": "10"}, ["e4"]),  # one element of e4 holds 5
        ({"LE_quantity": "5"}, ["e4"]),
        ({"GE_quantity_KGM": "10"}, ["e2", "e4"]),  # e3's 10 has no unit
        ({"EQ_quantity_KGM": "10|200"}, ["e2", "e4"]),
    ],
)
def test_quantities(repo: Repository, params: dict[str, Any], expected: list[str]) -> None:
    assert repo.names(params) == expected


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"EQ_bizTransaction_po": "http://transaction.acme.com/po/12345678"}, ["e1"]),
        ({"EQ_bizTransaction_urn:epcglobal:cbv:btt:po": "http://transaction.acme.com/po/12345678"}, ["e1"]),
        ({"EQ_bizTransaction_inv": "http://transaction.acme.com/po/12345678"}, []),  # the type must match
        ({"EQ_bizTransaction_inv": "urn:epcglobal:cbv:bt:0614141073467:1152"}, ["e5"]),
        ({"EQ_source_owning_party": "https://id.gs1.org/417/0614141000012"}, ["e1"]),
        ({"EQ_source_owning_party": "urn:epc:id:pgln:4012345.00002"}, []),  # that is the destination
        ({"EQ_destination_owning_party": "urn:epc:id:pgln:4012345.00002"}, ["e1"]),
    ],
)
def test_business_transactions_sources_destinations(
    repo: Repository, params: dict[str, Any], expected: list[str]
) -> None:
    assert repo.names(params) == expected


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"EXISTS_errorDeclaration": ""}, ["e7"]),
        ({"EXISTS_errorDeclaration": "true"}, ["e7"]),
        ({"EXISTS_errorDeclaration": "false"}, ALL),
        ({"GE_errorDeclarationTime": "2024-01-31T23:30:00Z"}, ["e7"]),  # 00:30+01:00
        ({"GE_errorDeclarationTime": "2024-01-31T23:30:01Z"}, []),
        ({"LT_errorDeclarationTime": "2024-01-31T23:30:01Z"}, ["e7"]),
        ({"EQ_errorReason": "urn:epcglobal:cbv:er:incorrect_data"}, ["e7"]),
        ({"EQ_errorReason": "did_not_occur"}, []),
        ({"EQ_correctiveEventID": event_id("e1")}, ["e7"]),
        ({"EQ_correctiveEventID": event_id("e2")}, []),
    ],
)
def test_error_declarations(repo: Repository, params: dict[str, Any], expected: list[str]) -> None:
    assert repo.names(params) == expected


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"EQ_type": "Temperature"}, ["e6"]),
        ({"EQ_type": "https://gs1.org/voc/RelativeHumidity"}, ["e6"]),
        ({"EQ_type": "Pressure"}, []),
        ({"GE_value_CEL": "26"}, ["e6"]),
        ({"GT_value_CEL": "26"}, []),
        ({"LT_value_CEL": "30", "GE_value_CEL": "20"}, ["e6"]),
        ({"EQ_value_CEL": "25|26"}, ["e6"]),
        ({"GE_value_KEL": "0"}, []),  # no report in kelvin
        # All conditions hold for one report: the temperature is not in %RH.
        ({"EQ_type": "Temperature", "GE_value_A93": "10"}, []),
        ({"EQ_type": "RelativeHumidity", "GE_value_A93": "10"}, ["e6"]),
        ({"EQ_deviceID": "https://id.gs1.org/8004/4000001111"}, ["e6"]),  # given in the metadata as URN
        ({"EQ_booleanValue": "true"}, ["e6"]),
        ({"EQ_booleanValue": "false"}, []),
        ({"EQ_stringValue": "door open"}, ["e6"]),
        ({"EQ_stringValue": "door open", "GE_value_CEL": "0"}, []),  # not the same report
        ({"GE_time": "2024-01-06T00:00:00Z"}, ["e6"]),
        ({"LT_time": "2024-01-06T00:00:00Z"}, []),
        ({"EQ_uriValue": "https://example.com/probe/7"}, ["e6"]),  # only in the body
        ({"EQ_uriValue": "https://example.com/probe/7", "EQ_type": "RelativeHumidity"}, []),
        ({"EXISTS_sensorElementList": "true"}, ["e6"]),
    ],
)
def test_sensor_reports(repo: Repository, params: dict[str, Any], expected: list[str]) -> None:
    assert repo.names(params) == expected


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"orderBy": "eventTime"}, list(reversed(ALL))),  # DESC unless told
        ({"orderBy": "eventTime", "orderDirection": "ASC"}, ALL),
        ({"orderBy": "recordTime", "orderDirection": "DESC", "EQ_bizStep": "shipping"}, ["e5", "e1"]),
        ({"orderBy": "eventTime", "eventCountLimit": "2"}, ["e8", "e7"]),
        ({"orderBy": "eventTime", "orderDirection": "ASC", "eventCountLimit": "0"}, []),
        ({"maxEventCount": "8"}, ALL),
    ],
)
def test_order_and_limits(repo: Repository, params: dict[str, Any], expected: list[str]) -> None:
    assert repo.names(params) == expected


def test_more_events_than_max_event_count_is_refused(repo: Repository) -> None:
    with pytest.raises(Invalid) as refused:
        repo.names({"maxEventCount": "7"})
    assert refused.value.instance_code == "query_too_large"
    assert repo.names({"maxEventCount": "1", "eventType": "AssociationEvent"}) == ["e8"]


@pytest.mark.parametrize(
    ("params", "names"),
    [
        ({"bizStep": "shipping"}, "bizStep"),
        ({"EQ_bizstep": "shipping"}, "EQ_bizstep"),
        ({"GE_eventTime": "yesterday"}, "GE_eventTime"),
        ({"GE_eventTime": ["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"]}, "GE_eventTime"),
        ({"EQ_action": "UPDATE"}, "EQ_action"),
        ({"eventType": "Event"}, "eventType"),
        ({"MATCH_epc": "https://id.gs1.org/01/10614141073465/21/2018"}, "MATCH_epc"),  # wrong check digit
        ({"MATCH_epc": "urn:epc:idpat:sgtin:0614141.*.*"}, "MATCH_epc"),
        ({"MATCH_epc": ""}, "MATCH_epc"),
        ({"EQ_source_owning_party": "urn:epc:id:pgln:0614141"}, "EQ_source_owning_party"),
        ({"GE_value_CEL": "warm"}, "GE_value_CEL"),
        ({"GE_value_CEL": "nan"}, "GE_value_CEL"),
        ({"EQ_booleanValue": "yes"}, "EQ_booleanValue"),
        ({"orderBy": "ex:weight"}, "orderBy"),
        ({"orderBy": "eventTime", "orderDirection": "UP"}, "orderDirection"),
        ({"eventCountLimit": "3"}, "eventCountLimit"),  # needs orderBy
        ({"orderBy": "eventTime", "eventCountLimit": "3", "maxEventCount": "3"}, "eventCountLimit"),
        ({"maxEventCount": "-1"}, "maxEventCount"),
        ({"EQ_ex:weight": "3"}, "EQ_ex:weight"),
        ({"EXISTS_errorDeclaration": "perhaps"}, "EXISTS_errorDeclaration"),
    ],
)
def test_a_bad_parameter_is_refused_by_name(params: dict[str, Any], names: str) -> None:
    with pytest.raises(Invalid) as refused:
        parse_query(params)
    assert refused.value.instance_code == "query_parameter"
    assert refused.value.details["parameter"] == names
    assert names in refused.value.message


def test_stored_query_json_takes_numbers_booleans_and_lists(repo: Repository) -> None:
    stored = {
        "@context": [{"ex": "https://example.com/"}],
        "eventType": ["ObjectEvent"],
        "GE_value_CEL": 25.5,
        "EQ_booleanValue": True,
        "EXISTS_sensorElementList": None,
    }
    query = parse_stored_query(stored)
    with repo.db.session() as session:
        assert [e.event_id for e in run_query(session, repo.tenant, query, None, 10).events] == []
        loose = parse_stored_query({"GE_value_CEL": 25.5, "eventType": ["ObjectEvent"]})
        assert [e.event_id for e in run_query(session, repo.tenant, loose, None, 10).events] == [event_id("e6")]
    with pytest.raises(Invalid):
        parse_stored_query({"EQ_bizStep": [{"nested": "object"}]})


# --- pages ---------------------------------------------------------------------------------------------


def all_pages(session: Session, tenant: str, query: EventQuery, per_page: int) -> Iterator[list[str]]:
    token: str | None = None
    while True:
        page = run_query(session, tenant, query, token, per_page)
        yield [_name(e.event_id) for e in page.events]
        if page.next_page_token is None:
            return
        assert page.next_page_expires is not None
        token = page.next_page_token


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"orderBy": "eventTime"},
        {"orderBy": "eventTime", "orderDirection": "ASC"},
        {"orderBy": "recordTime", "orderDirection": "ASC"},
        {"EQ_persistentDisposition_set": "completeness_verified"},
    ],
)
@pytest.mark.parametrize("per_page", [1, 3, 8])
def test_pages_give_every_event_once_in_order(repo: Repository, params: dict[str, Any], per_page: int) -> None:
    query = parse_query(params)
    with repo.db.session() as session:
        whole = [_name(e.event_id) for e in run_query(session, repo.tenant, query, None, 1000).events]
        pages = list(all_pages(session, repo.tenant, query, per_page))
    assert [name for page in pages for name in page] == whole
    assert all(0 < len(page) <= per_page for page in pages)
    assert len(pages) == max(1, -(-len(whole) // per_page))


def test_pages_stop_at_the_event_count_limit(repo: Repository) -> None:
    query = parse_query({"orderBy": "eventTime", "orderDirection": "ASC", "eventCountLimit": "5"})
    with repo.db.session() as session:
        assert list(all_pages(session, repo.tenant, query, 2)) == [["e1", "e2"], ["e3", "e4"], ["e5"]]


def test_events_sharing_a_sort_key_are_paged_by_id(fresh_repo: Repository) -> None:
    with fresh_repo.db.session() as session:
        twins = [{**EVENTS["e8"], "childEPCs": [f"urn:epc:id:giai:4000001.twin{n}"]} for n in range(5)]
        capture_events(session, fresh_repo.tenant, twins)
    query = parse_query({"orderBy": "eventTime", "eventType": "AssociationEvent"})
    with fresh_repo.db.session() as session:
        whole = [e.id for e in run_query(session, fresh_repo.tenant, query, None, 100).events]
        paged: list[int] = []
        token: str | None = None
        while True:
            page = run_query(session, fresh_repo.tenant, query, token, 2)
            paged.extend(e.id for e in page.events)
            if (token := page.next_page_token) is None:
                break
    assert len(whole) == 6
    assert paged == whole


def test_a_token_is_refused_for_other_parameters_tenants_or_when_expired(repo: Repository) -> None:
    query = parse_query({"orderBy": "eventTime"})
    now = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    with repo.db.session() as session:
        first = run_query(session, repo.tenant, query, None, 2, now=now)
        token = first.next_page_token
        assert token is not None
        assert first.next_page_expires == now + PAGE_TOKEN_LIFETIME
        refusals = {
            "other parameters": lambda: run_query(
                session, repo.tenant, parse_query({"orderBy": "eventTime", "orderDirection": "ASC"}), token, 2
            ),
            "other filter": lambda: run_query(
                session, repo.tenant, parse_query({"orderBy": "eventTime", "EQ_action": "ADD"}), token, 2
            ),
            "other tenant": lambda: run_query(session, repo.other, query, token, 2, now=now),
            "expired": lambda: run_query(session, repo.tenant, query, token, 2, now=now + PAGE_TOKEN_LIFETIME * 2),
            "garbled": lambda: run_query(session, repo.tenant, query, token[:-3] + "xyz", 2, now=now),
            "not base64": lambda: run_query(session, repo.tenant, query, "%%%", 2, now=now),
        }
        for why, attempt in refusals.items():
            with pytest.raises(Invalid) as refused:
                attempt()
            assert refused.value.instance_code == "page_token", why
        second = run_query(session, repo.tenant, query, token, 2, now=now + dt.timedelta(hours=1))
    assert [_name(e.event_id) for e in second.events] == ["e6", "e5"]


def test_body_checks_read_candidates_in_batches(fresh_repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(query_module, "_BATCH", 2)
    later = []
    for n in range(5):
        declaration = {**EVENTS["e7"]["errorDeclaration"], "declarationTime": f"2024-03-0{n + 1}T00:00:00Z"}
        later.append({**EVENTS["e7"], "epcList": [SGTIN.format(6000 + n)], "errorDeclaration": declaration})
    with fresh_repo.db.session() as session:
        capture_events(session, fresh_repo.tenant, later)
    query = parse_query({"GE_errorDeclarationTime": "2024-03-02T00:00:00Z"})
    with fresh_repo.db.session() as session:
        every = run_query(session, fresh_repo.tenant, query, None, 100).events
        pages = [len(page) for page in all_pages(session, fresh_repo.tenant, query, 3)]
        assert count_events(session, fresh_repo.tenant, query, up_to=100) == 4
    assert [e.body["errorDeclaration"]["declarationTime"][:10] for e in every] == [
        "2024-03-02",
        "2024-03-03",
        "2024-03-04",
        "2024-03-05",
    ]
    assert pages == [3, 1]


def test_select_events_gives_events_after_an_id_in_stored_order(repo: Repository) -> None:
    query = parse_query({"orderBy": "eventTime", "EQ_action": "ADD,OBSERVE"})
    with repo.db.session() as session:
        every = select_events(session, repo.tenant, query, limit=None)
        assert [_name(e.event_id) for e in every] == ["e1", "e2", "e3", "e5", "e6", "e8"]
        after = select_events(session, repo.tenant, query, after_id=every[2].id, limit=2)
        assert [_name(e.event_id) for e in after] == ["e5", "e6"]
        assert select_events(session, repo.other, query, limit=None)[0].event_id == B_EVENT["eventID"]


# --- GS1's examples ------------------------------------------------------------------------------------


def identifiers_of(event: dict[str, Any]) -> list[str]:
    found = [event["parentID"]] if isinstance(event.get("parentID"), str) else []
    for key in ("epcList", "childEPCs", "inputEPCList", "outputEPCList"):
        found.extend(v for v in event.get(key) or [] if isinstance(v, str))
    return found


def test_every_gs1_example_event_is_found_by_each_of_its_identifiers_in_either_form(
    migrated_db: Database, tenant_a: TenantFixture
) -> None:
    with migrated_db.session() as session:
        stored = [row for path in VALID_DOCUMENTS for row in capture_file(session, tenant_a.id, path)]
    assert len(stored) > 50
    checked = 0
    with migrated_db.session() as session:
        for row in stored:
            for identifier in identifiers_of(row.body):
                forms = {identifier, canonical(identifier)}
                for form in forms:
                    query = parse_query({"MATCH_anyEPC": [form]})
                    found = {e.id for e in select_events(session, tenant_a.id, query, limit=None)}
                    assert row.id in found, (form, row.body.get("eventID"))
                    checked += 1
            by_time = parse_query({"GE_eventTime": _utc(row.event_time), "eventType": row.event_type})
            assert row.id in {e.id for e in select_events(session, tenant_a.id, by_time, limit=None)}
    assert checked > 100


def _utc(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat()


@pytest.mark.parametrize("path", [p for p in VALID_DOCUMENTS if "Sensor" in p.name][:6], ids=example_id)
def test_gs1_sensor_examples_are_found_by_their_first_report(
    migrated_db: Database, tenant_a: TenantFixture, path: Any
) -> None:
    document = read_document(path.read_bytes())
    with migrated_db.session() as session:
        capture_file(session, tenant_a.id, path)
    for event in document.events:
        reports = [r for element in event.get("sensorElementList", []) for r in element.get("sensorReport", [])]
        numbered = [r for r in reports if isinstance(r.get("value"), int | float) and r.get("uom") and r.get("type")]
        if not numbered:
            continue
        report = numbered[0]
        params = {"EQ_type": report["type"], f"GE_value_{report['uom']}": str(report["value"])}
        with migrated_db.session() as session:
            found = select_events(session, tenant_a.id, parse_query(params), limit=None)
        assert any(e.body.get("eventTime") == event["eventTime"] for e in found), params
