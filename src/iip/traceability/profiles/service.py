"""Profile checks and reports of a whole EPCIS document, for the API: read, classify, check, no storage.

A `master:` locator reads the document's master data first, then the tenant's stored master data
(`master_data`, what earlier captures' headers gave): every key the document's events may look up is
read in one batch per check, never per event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from iip.kernel.errors import Invalid
from iip.traceability import master_data
from iip.traceability.capture import CAPTURE_LIMIT
from iip.traceability.epcis.documents import EpcisFormatError
from iip.traceability.profiles.inputs import ProfileInput, add_element, read_input
from iip.traceability.profiles.locate import MasterData
from iip.traceability.profiles.model import CriticalEvent, Profile, load_profile
from iip.traceability.profiles.reports import ReportTable, report
from iip.traceability.profiles.rules import (
    ChainIssue,
    ProfileIssue,
    check_chain,
    check_event,
    classify,
    layered,
    master_data_keys,
)


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


def stored_master_data(
    session: Session, tenant_id: str, profile: Profile, document: ProfileInput
) -> dict[str, dict[str, str]]:
    """The tenant's stored master data of every key the profile may look up in the document's events."""
    keys = master_data_keys(profile, document.events, document.context)
    found: dict[str, dict[str, str]] = {}
    for key, attributes in master_data.attributes_by_key(session, tenant_id, keys):
        add_element(found, key, [(a.get("id"), a.get("attribute")) for a in attributes])
    return found


def _master_data(
    profile: Profile, document: ProfileInput, session: Session | None, tenant_id: str | None
) -> MasterData:
    if session is None or tenant_id is None:
        return document.master_data
    return layered(document.master_data, stored_master_data(session, tenant_id, profile, document))


def check_document(
    name: str, data: bytes, *, session: Session | None = None, tenant_id: str | None = None
) -> DocumentCheck:
    """Each event's CTE and missing KDEs, and the profile's rules across the document's events; with a
    session and tenant, master data the document lacks is read from the tenant's stored master data."""
    profile = load_profile(name)
    document = read(data)
    context, master = document.context, _master_data(profile, document, session, tenant_id)
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


def report_document(
    name: str, data: bytes, table: str | None = None, *, session: Session | None = None, tenant_id: str | None = None
) -> list[ReportTable]:
    """The profile's report tables (or the one named) of the document's events (master data as `check_document`)."""
    profile = load_profile(name)
    document = read(data)
    master = _master_data(profile, document, session, tenant_id)
    return report(profile, document.events, context=document.context, master_data=master, table=table)
