"""What the profile API answers: the profiles, a document's check, its report tables."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from iip.traceability.profiles.model import Profile
from iip.traceability.profiles.reports import Cell, ReportTable
from iip.traceability.profiles.service import DocumentCheck


class _Out(BaseModel):
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class CriticalEventSummary(_Out):
    key: str
    label: str
    label_zh: str = Field(alias="labelZh")


class ProfileSummaryOut(_Out):
    name: str = Field(examples=["food_fsma204"])
    title: str
    title_zh: str = Field(alias="titleZh")
    description: str
    regulation: str
    events: list[CriticalEventSummary] = Field(description="the critical tracking events (record types), in order")
    chain_rules: list[str] = Field(alias="chainRules", description="the keys of the rules across events")
    tables: list[str] = Field(description="the keys of the report tables")

    @classmethod
    def of(cls, profile: Profile) -> ProfileSummaryOut:
        return cls(
            name=profile.name,
            title=profile.title,
            title_zh=profile.title_zh,
            description=profile.description,
            regulation=profile.regulation,
            events=[CriticalEventSummary(key=e.key, label=e.label, label_zh=e.label_zh) for e in profile.events],
            chain_rules=[rule.key for rule in profile.chain_rules],
            tables=[table.key for table in profile.tables],
        )


class IssueOut(_Out):
    location: str = Field(
        description="JSON pointer into the document", examples=["/epcisBody/eventList/3/fsma:tlcSource"]
    )
    message: str
    element: str = Field(description="the key data element", examples=["tlc_source"])
    severity: Literal["error", "warning"] = Field(description="error: required by the profile; warning: recommended")


class EventCheckOut(_Out):
    index: int
    location: str = Field(description="the event's JSON pointer ('' for a document that is one event)")
    event_id: str | None = Field(alias="eventID")
    type: str | None
    critical_tracking_event: str | None = Field(
        alias="criticalTrackingEvent", description="the profile's CTE the event is; null when it is none of them"
    )
    label: str | None = None
    issues: list[IssueOut]


class ChainIssueOut(_Out):
    rule: str = Field(examples=["used_twice"])
    location: str = Field(description="JSON pointer of the event that breaks the rule")
    message: str
    identifier: str = Field(description="the object concerned, as a canonical GS1 Digital Link")
    related: list[str] = Field(description="JSON pointers of the other events involved")


class CheckOut(_Out):
    profile: str
    valid: bool = Field(description="no required KDE missing and no rule across events broken")
    event_count: int = Field(alias="eventCount")
    error_count: int = Field(alias="errorCount")
    warning_count: int = Field(alias="warningCount")
    events: list[EventCheckOut]
    chain: list[ChainIssueOut]

    @classmethod
    def of(cls, result: DocumentCheck) -> CheckOut:
        events = []
        for checked in result.events:
            event_id, event_type = checked.event.get("eventID"), checked.event.get("type")
            events.append(
                EventCheckOut(
                    index=checked.index,
                    location=checked.location,
                    event_id=event_id if isinstance(event_id, str) else None,
                    type=event_type if isinstance(event_type, str) else None,
                    critical_tracking_event=checked.cte.key if checked.cte else None,
                    label=checked.cte.label if checked.cte else None,
                    issues=[
                        IssueOut(location=i.location, message=i.message, element=i.element, severity=i.severity)
                        for i in checked.issues
                    ],
                )
            )
        chain = [
            ChainIssueOut(
                rule=c.rule, location=c.location, message=c.message, identifier=c.identifier, related=list(c.related)
            )
            for c in result.chain
        ]
        warnings = sum(1 for e in result.events for i in e.issues if i.severity == "warning")
        return cls(
            profile=result.profile.name,
            valid=result.error_count == 0,
            event_count=len(result.events),
            error_count=result.error_count,
            warning_count=warnings,
            events=events,
            chain=chain,
        )


class ColumnOut(_Out):
    key: str
    heading: str


class TableOut(_Out):
    key: str
    title: str
    columns: list[ColumnOut]
    rows: list[list[Cell]]

    @classmethod
    def of(cls, table: ReportTable) -> TableOut:
        columns = [ColumnOut(key=k, heading=h) for k, h in zip(table.keys, table.headings, strict=True)]
        return cls(key=table.key, title=table.title, columns=columns, rows=[list(row) for row in table.rows])


class ReportOut(_Out):
    profile: str
    tables: list[TableOut]
