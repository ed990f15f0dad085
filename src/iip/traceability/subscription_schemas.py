"""Query subscriptions over the wire, in the EPCIS REST binding's shapes (`QueryStreamSubscription`, ...)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from iip.traceability.models import NamedQuery, Subscription
from iip.traceability.subscriptions import MAX_DEST_CHARS, MAX_TOKEN_CHARS, SubscriptionRequest

NO_NUL = r"^[^\x00]*$"


class SubscriptionIn(BaseModel):
    """A subscription to create: where to deliver, how to sign, and when (`stream`, `schedule` or `scheduleSeconds`)."""

    model_config = ConfigDict(populate_by_name=True)

    dest: str = Field(max_length=MAX_DEST_CHARS, pattern=NO_NUL, examples=["https://client.example.com/queryCallback"])
    signature_token: str | None = Field(
        default=None,
        alias="signatureToken",
        max_length=MAX_TOKEN_CHARS,
        description="The key deliveries are signed with (HMAC-SHA256, header GS1-Signature); "
        "one is made and answered once when none is given",
        examples=["13df38d8275b13f05704629e5f1cf3d45d6132d5"],
    )
    stream: bool | None = Field(default=None, description="true: deliver whenever captured events match")
    schedule_seconds: int | None = Field(
        default=None, alias="scheduleSeconds", description="IIP: deliver every this many seconds instead of a stream"
    )
    report_if_empty: bool = Field(
        default=False, alias="reportIfEmpty", description="scheduled only: deliver at each time, with no new events too"
    )
    initial_record_time: dt.datetime | None = Field(
        default=None,
        alias="initialRecordTime",
        description="deliver the events recorded since then first (default: only those captured from now on)",
    )
    schedule: dict[str, Any] | None = Field(
        default=None,
        description="The binding's cron-like schedule, in UTC: any of second, minute, hour, dayOfMonth, month, "
        "dayOfWeek (1 is Monday), each a string of numbers and [low-high] ranges separated by commas; "
        "fields finer than the finest one given are their first value ({hour: 1, minute: 5} is 01:05:00 daily)",
        examples=[{"hour": "1", "minute": "5"}, {"second": "0", "minute": "0", "dayOfWeek": "[1-5]"}],
    )

    def request(self) -> SubscriptionRequest:
        return SubscriptionRequest(
            destination=self.dest,
            signature_token=self.signature_token,
            stream=self.stream,
            schedule_seconds=self.schedule_seconds,
            report_if_empty=self.report_if_empty,
            initial_record_time=self.initial_record_time,
            schedule=self.schedule,
        )


class DeliveryStateOut(BaseModel):
    """How delivery goes: failed tries since the last success, the last error, when the next try is."""

    failedAttempts: int  # noqa: N815 - the binding's spelling
    lastError: str  # noqa: N815
    nextAttemptAt: dt.datetime | None = None  # noqa: N815


class SubscriptionOut(BaseModel):
    """A subscription as the binding answers it (`AbstractQuerySubscriptionResponse`); never its key."""

    subscriptionID: str  # noqa: N815
    queryName: str  # noqa: N815
    dest: str
    createdAt: dt.datetime  # noqa: N815
    stream: bool | None = None
    schedule: dict[str, str] | None = None
    scheduleSeconds: int | None = None  # noqa: N815
    reportIfEmpty: bool | None = None  # noqa: N815 - scheduled subscriptions only
    initialRecordTime: dt.datetime | None = None  # noqa: N815 - as asked when it was made
    lastNotifiedAt: dt.datetime | None = None  # noqa: N815 - the last delivery its receiver answered 2xx
    delivery: DeliveryStateOut

    @classmethod
    def of(cls, row: Subscription, query: NamedQuery) -> SubscriptionOut:
        return cls(
            subscriptionID=row.id,
            queryName=query.name,
            dest=row.destination,
            createdAt=row.created_at,
            stream=True if row.stream else None,
            schedule=row.schedule,
            scheduleSeconds=row.schedule_seconds,
            reportIfEmpty=None if row.stream else row.report_if_empty,
            initialRecordTime=row.initial_record_time,
            lastNotifiedAt=row.last_notified_at,
            delivery=DeliveryStateOut(
                failedAttempts=row.attempts, lastError=row.last_error, nextAttemptAt=row.next_attempt_at
            ),
        )

    def answer(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class SubscriptionCreatedOut(SubscriptionOut):
    signatureToken: str | None = Field(  # noqa: N815
        default=None, description="the signing key made for this subscription: answered this once"
    )
