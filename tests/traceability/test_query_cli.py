"""`iip trace events` end to end, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from iip.cli.context import out_console
from iip.kernel.auth import AccessService
from iip.traceability.epcis.documents import read_document
from iip.traceability.epcis.identifiers import urn_to_dl
from tests.cli.conftest import InProcessIip, one_line
from tests.conftest import CliDatabase
from tests.traceability.query_support import capture_events

SGTIN = "urn:epc:id:sgtin:0614141.107346.{}"


def event(day: int, **fields: Any) -> dict[str, Any]:
    return {
        "type": "ObjectEvent",
        "eventTime": f"2024-05-{day:02d}T08:00:00+08:00",
        "eventTimeZoneOffset": "+08:00",
        "action": "OBSERVE",
        "epcList": [SGTIN.format(day)],
        "bizStep": "shipping",
        "eventID": f"urn:uuid:00000000-0000-4000-8000-0000000000{day:02d}",
        **fields,
    }


@pytest.fixture
def tenant(iip: InProcessIip, cli_database: CliDatabase) -> str:
    name = f"t-{uuid.uuid4().hex[:12]}"
    assert iip("tenant", "create", name).exit_code == 0
    with cli_database.db.session() as session:
        owner = AccessService(session).tenant_by_name(name).id
        capture_events(
            session,
            owner,
            [
                event(1),
                event(2, bizStep="receiving", bizLocation={"id": "urn:epc:id:sgln:0614141.07346.0"}),
                event(3),
                {
                    **{k: v for k, v in event(4).items() if k != "epcList"},
                    "type": "AggregationEvent",
                    "action": "ADD",
                    "parentID": SGTIN.format(1),
                    "childEPCs": [SGTIN.format(4)],
                },
            ],
        )
    return name


def days(output: str) -> list[int]:
    """The days of the events in `--json` output, in order."""
    events = read_document(output).events
    return [int(e["eventTime"][8:10]) for e in events]


def test_events_newest_first_with_filters(iip: InProcessIip, tenant: str) -> None:
    everything = iip("trace", "events", "--tenant", tenant, "--json")
    assert everything.exit_code == 0, everything.output
    assert days(everything.stdout) == [4, 3, 2, 1]
    assert json.loads(everything.stdout)["epcisBody"]["queryResults"]["queryName"] == "SimpleEventQuery"

    def shown(*args: str) -> list[int]:
        result = iip("trace", "events", "--tenant", tenant, "--json", *args)
        assert result.exit_code == 0, result.output
        return days(result.stdout)

    assert shown("--type", "AggregationEvent") == [4]
    assert shown("--biz-step", "receiving") == [2]
    assert shown("--biz-step", "receiving", "--biz-step", "shipping") == [4, 3, 2, 1]
    assert shown("--biz-step", "shipping", "--type", "ObjectEvent") == [3, 1]
    assert shown("--epc", urn_to_dl(SGTIN.format(1))) == [4, 1]  # a parent counts too
    assert shown("--epc", "urn:epc:idpat:sgtin:0614141.107346.*") == [4, 3, 2, 1]
    assert shown("--since", "2024-05-02T00:00:00Z", "--until", "2024-05-03T00:00:00") == [2]
    assert shown("--since", "2024-05-03T08:00:00+08:00") == [4, 3]


def test_a_table_by_default_and_a_note_when_the_limit_cuts(
    iip: InProcessIip, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(out_console, "_width", 250)  # a wide terminal: the table's cells are not folded
    result = iip("trace", "events", "--tenant", tenant, "--limit", "2")
    assert result.exit_code == 0, result.output
    assert "urn:uuid:00000000-0000-4000-8000-000000000004" in result.stdout
    assert "urn:uuid:00000000-0000-4000-8000-000000000003" in result.stdout
    assert "urn:uuid:00000000-0000-4000-8000-000000000002" not in result.stdout
    assert "AggregationEvent" in result.stdout
    assert one_line(result.stderr) == "the first 2 events shown (--limit)"
    located = iip("trace", "events", "--tenant", tenant, "--biz-step", "receiving")
    assert "receiving" in located.stdout
    assert "https://id.gs1.org/414/0614141073467" in located.stdout
    assert located.stderr == ""


def test_a_bad_filter_or_tenant_is_one_line(iip: InProcessIip, tenant: str) -> None:
    bad_time = iip("trace", "events", "--tenant", tenant, "--since", "last week")
    assert bad_time.exit_code == 1
    assert "GE_eventTime" in one_line(bad_time.stderr)
    bad_epc = iip("trace", "events", "--tenant", tenant, "--epc", "urn:epc:id:sgtin:0614141.10734.1")
    assert bad_epc.exit_code == 1
    assert "MATCH_anyEPC" in one_line(bad_epc.stderr)
    nobody = iip("trace", "events", "--tenant", f"missing-{uuid.uuid4().hex[:8]}")
    assert nobody.exit_code == 1
    assert "not found" in one_line(nobody.stderr)
