"""Wire models of alarm notifications: channels, routes, contacts, the delivery log, escalations."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator

from iip.alarms.notify.email import check_address
from iip.alarms.notify.models import SECRET_LENGTH
from iip.alarms.notify.routing import DEFAULT_ACTIONS, NotifyAction
from iip.alarms.notify.webhook import check_url
from iip.alarms.public import Priority

# PostgreSQL text cannot hold NUL while SQLite can; refusing it keeps both backends alike.
NO_NUL = r"^[^\x00]*$"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$"
ROLE_PATTERN = r"^[a-z0-9][a-z0-9_.\-]{0,99}$"
MAX_ADDRESSES = 100
MAX_LIST = 100

Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
Role = Annotated[str, StringConstraints(pattern=ROLE_PATTERN)]
OptionalRole = Annotated[str, StringConstraints(max_length=100, pattern=r"^(?:[a-z0-9][a-z0-9_.\-]{0,99})?$")]
Site = Annotated[str, StringConstraints(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")]
Url = Annotated[str, StringConstraints(max_length=2000), AfterValidator(check_url)]
Address = Annotated[str, StringConstraints(max_length=254), AfterValidator(check_address)]
Secret = Annotated[str, StringConstraints(min_length=16, max_length=SECRET_LENGTH, pattern=r"^[\x21-\x7e]+$")]
ChannelRef = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=NO_NUL)]
RateLimit = Annotated[int, Field(ge=0, le=100_000)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _unique(values: list[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


def _unique_or_none(values: list[Any] | None) -> list[Any] | None:
    return None if values is None else _unique(values)


# --- channels


class WebhookChannelCreate(Strict):
    """A webhook: signed POSTs of each notification to `url`."""

    kind: Literal["webhook"] = "webhook"
    name: Name = Field(examples=["scada-gateway"])
    url: Url = Field(examples=["https://ops.example.com/iip/alarms"])
    secret: Secret | None = Field(
        default=None, description="signing key (16-200 printable characters); default: generated and answered once"
    )
    enabled: bool = True
    rate_limit: RateLimit | None = Field(
        default=None, description="messages per rate window (0: no limit); default: the setting"
    )


class EmailChannelCreate(Strict):
    """E-mail: each notification to `addresses`, and to the contacts a route's audience names."""

    kind: Literal["email"] = "email"
    name: Name = Field(examples=["plant-a-mail"])
    addresses: list[Address] = Field(default_factory=list, max_length=MAX_ADDRESSES, examples=[["ops@example.com"]])
    enabled: bool = True
    rate_limit: RateLimit | None = None

    _unique_addresses = field_validator("addresses")(_unique)


ChannelCreate = Annotated[WebhookChannelCreate | EmailChannelCreate, Field(discriminator="kind")]


class ChannelUpdate(Strict):
    """The fields to change; `rate_limit: null` returns to the setting."""

    name: Name | None = None
    enabled: bool | None = None
    url: Url | None = None
    addresses: list[Address] | None = Field(default=None, max_length=MAX_ADDRESSES)
    rate_limit: RateLimit | None = None

    _unique_addresses = field_validator("addresses")(_unique_or_none)


class ChannelOut(BaseModel):
    id: str
    tenant_id: str
    name: str
    kind: Literal["webhook", "email"]
    enabled: bool
    url: str
    addresses: list[str]
    rate_limit: int | None
    secret_set: bool = Field(description="whether the webhook has a signing secret (it is answered only once)")
    created_at: dt.datetime
    updated_at: dt.datetime


class ChannelCreated(ChannelOut):
    secret: str | None = Field(description="the webhook's signing secret, shown this once")


class SecretIssued(BaseModel):
    id: str
    name: str
    secret: str


# --- contacts


class ContactCreate(Strict):
    name: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$", examples=["Li Wei"])
    email: Address = Field(examples=["li.wei@example.com"])
    role: Role = Field(examples=["shift_engineer"], description="a-z 0-9 _ . -, e.g. shift_engineer")
    site: Site = Field(default="", description="the site the contact answers for; empty: every site")
    enabled: bool = True


class ContactUpdate(Strict):
    name: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")
    email: Address | None = None
    role: Role | None = None
    site: Site | None = None
    enabled: bool | None = None


class ContactOut(BaseModel):
    id: str
    tenant_id: str
    name: str
    email: str
    role: str
    site: str
    enabled: bool
    created_at: dt.datetime
    updated_at: dt.datetime


# --- routes


class RouteSpec(Strict):
    """Which alarm changes go to which channels and people, and where they escalate.

    Channels are named by id or name. An audience role needs an e-mail channel to reach its
    contacts through; an escalation needs `escalate_after_min` and escalation channels.
    """

    name: Name = Field(examples=["critical-plant-a"])
    enabled: bool = True
    priorities: list[Priority] = Field(default_factory=list, description="empty: every priority")
    sites: list[Site] = Field(default_factory=list, max_length=MAX_LIST, description="empty: every site")
    actions: list[NotifyAction] = Field(default_factory=lambda: list(DEFAULT_ACTIONS), min_length=1)
    audience_role: OptionalRole = Field(default="", description="contacts of this role at the alarm's site")
    channels: list[ChannelRef] = Field(default_factory=list, max_length=MAX_LIST)
    escalate_after_min: int | None = Field(
        default=None, ge=1, le=7 * 24 * 60, description="escalate when not acknowledged within this many minutes"
    )
    escalation_channels: list[ChannelRef] = Field(default_factory=list, max_length=MAX_LIST)
    escalation_role: OptionalRole = Field(default="", description="contacts of this role the escalation reaches")

    _unique_lists = field_validator("priorities", "sites", "actions", "channels", "escalation_channels")(_unique)


class RouteOut(BaseModel):
    id: str
    tenant_id: str
    name: str
    enabled: bool
    priorities: list[Priority]
    sites: list[str]
    actions: list[NotifyAction]
    audience_role: str
    channels: list[str] = Field(description="channel names")
    escalate_after_min: int | None
    escalation_channels: list[str]
    escalation_role: str
    created_at: dt.datetime
    updated_at: dt.datetime


# --- the delivery log and escalations

DeliveryStatus = Literal["pending", "retrying", "sent", "failed", "held", "digested"]
DeliveryKind = Literal["notification", "escalation", "digest", "test"]
EscalationStatus = Literal["pending", "fired", "cancelled"]


class DeliveryOut(BaseModel):
    id: str = Field(description="the delivery id (webhooks: X-IIP-Delivery)")
    tenant_id: str
    channel_id: str
    channel: str
    kind: DeliveryKind
    alarm_id: str
    sequence: int | None
    status: DeliveryStatus
    attempts: int
    last_error: str
    recipients: list[str]
    digest_id: str | None = Field(description="the digest it was sent in (status digested)")
    next_attempt_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime
    sent_at: dt.datetime | None
    payload: dict[str, Any]


class EscalationOut(BaseModel):
    id: str
    tenant_id: str
    route_id: str
    route: str
    alarm_id: str
    sequence: int
    due_at: dt.datetime
    status: EscalationStatus
    resolution: str
    created_at: dt.datetime
    resolved_at: dt.datetime | None


class SampleAlarm(Strict):
    """The made-up alarm a test notification carries."""

    message: str = Field(default="", max_length=500, pattern=NO_NUL, description="its text")
