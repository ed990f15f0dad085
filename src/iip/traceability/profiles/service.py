"""Profile checks and reports of a whole EPCIS document, for the API: read, classify, check, no storage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from iip.kernel.errors import Invalid
from iip.traceability.capture import CAPTURE_LIMIT
from iip.traceability.epcis.documents import EpcisFormatError
from iip.traceability.profiles.inputs import ProfileInput, read_input
from iip.traceability.profiles.model import CriticalEvent, Profile, load_profile
from iip.traceability.profiles.reports import ReportTable, report
from iip.traceability.profiles.rules import ChainIssue, ProfileIssue, check_chain, check_event, classify


@dataclass(frozen=True)
class EventCheck:
    index: int
    location: str
    event: dict[str, Any]
    cte: CriticalEvent | None
    issues: list[ProfileIssue]


@dataclass(frozen=True)
class DocumentCheck:
    profile: Profile
    events: list[EventCheck]
    chain: list[ChainIssue]

    @property
    def error_count(self) -> int:
        return sum(1 for e in self.events for i in e.issues if i.severity == "error") + len(self.chain)


def read(data: bytes) -> ProfileInput:
    """A document's events; Invalid when it is unreadable or holds more events than a capture takes."""
    try:
        document = read_input(data)
    except EpcisFormatError as err:
        raise Invalid(str(err), code="unreadable_document") from None
    if len(document.events) > CAPTURE_LIMIT:
        raise Invalid(
            f"{len(document.events)} events; at most {CAPTURE_LIMIT} are checked at once", code="too_many_events"
        )
    return document


def check_document(name: str, data: bytes) -> DocumentCheck:
    """Each event's CTE and missing KDEs, and the profile's rules across the document's events."""
    profile = load_profile(name)
    document = read(data)
    context, master = document.context, document.master_data
    events = [
        EventCheck(
            index,
            document.location(index),
            event,
            classify(profile, event, context=context, master_data=master),
            check_event(profile, event, at=document.location(index), context=context, master_data=master),
        )
        for index, event in enumerate(document.events)
    ]
    chain = check_chain(profile, document.events, locations=document.locations, context=context, master_data=master)
    return DocumentCheck(profile, events, chain)


def report_document(name: str, data: bytes, table: str | None = None) -> list[ReportTable]:
    """The profile's report tables (or the one named) of the document's events."""
    profile = load_profile(name)
    document = read(data)
    return report(profile, document.events, context=document.context, master_data=document.master_data, table=table)
