"""Traceability profiles as data: what a regulation asks of EPCIS events, read from `data/<name>.yaml`.

A profile names the critical tracking events (CTEs) of a regulation, the EPCIS event shapes each maps
to (event type, action, business step, and markers that tell apart CTEs sharing a shape), the key
data elements (KDEs) each requires with where they are in the event, the rules that span several
events, and the report tables built from the events. The code knows how to find values and how to
apply a few kinds of chain rule; which of them a regulation needs is in the YAML.

Loading checks every cross reference (a KDE names an element the profile defines, a chain rule or a
report names CTEs it has, a locator's path parses), so a broken profile fails at its first use and
in the tests, never halfway through a check.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from iip.kernel.documents import validation_messages
from iip.kernel.errors import Invalid, NotFound

PACKAGE = "iip.traceability.profiles"
DATA_FOLDER = "data"
SUFFIX = ".yaml"
KEY = r"^[a-z][a-z0-9_]{0,63}$"
EVENT_TYPES = ("ObjectEvent", "AggregationEvent", "TransactionEvent", "TransformationEvent", "AssociationEvent")

EventType = Literal["ObjectEvent", "AggregationEvent", "TransactionEvent", "TransformationEvent", "AssociationEvent"]
Action = Literal["ADD", "OBSERVE", "DELETE"]
# What a value found at a locator's path must be (see `locate.check_value`).
ValueKind = Literal[
    "text",  # a non-empty string
    "quantity",  # a number above zero
    "datetime",  # an xsd:dateTime with its offset
    "date",  # an xsd:date or xsd:dateTime; with `ai`, GS1's YYMMDD
    "location",  # a GS1 location: SGLN or a Digital Link with AI 414
    "party",  # a GS1 party or location: PGLN (AI 417) or SGLN (AI 414)
    "gtin",  # a GS1 identifier with a GTIN (AI 01): a product class, a lot or an item
    "lot",  # a GTIN with a batch/lot (AI 10): an LGTIN class, or an item named with its lot
    "udi",  # a GTIN (UDI-DI) with a batch/lot or a serial number (UDI-PI)
    "identifier",  # any URI: a GS1 identifier (checked) or a private one
    "reference",  # a bizTransactionList entry with both a type and a value
    "term",  # a CBV or private vocabulary value among `terms`
    "pseudonym",  # text that is no national identity number, telephone number or e-mail address
]
ColumnValue = Literal[
    "object.identifier",
    "object.gtin",
    "object.lot",
    "object.serial",
    "object.quantity",
    "object.uom",
    "event.cte",
    "event.time",
    "event.date",
    "event.id",
    "event.biz_step",
    "event.disposition",
    "event.inputs",
    "kde",
]
ColumnPart = Literal["text", "gln", "date", "type", "number"]


class _Data(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Locator(_Data):
    """Where a value may be: a path pattern into the event, optionally a master data attribute or GS1 AI of it.

    Paths are JSON pointers with two wildcards: `*` is every member of a list, `[type=location]` every
    member whose `type` is that vocabulary term (CBV URN, web URI or bare name alike). A key written
    `prefix:name` matches the extension of that namespace whatever prefix the document chose.
    """

    path: str = Field(pattern=r"^(/[^/]+)+$")
    is_: ValueKind = Field(default="text", alias="is")
    master: str | None = Field(default=None, description="a master data attribute of the identifier at `path`")
    ai: str | None = Field(default=None, pattern=r"^\d{2,4}$", description="a GS1 AI taken from the identifier")
    terms: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> Locator:
        parse_path(self.path)
        if self.is_ == "term" and not self.terms:
            raise ValueError("a locator with `is: term` lists its `terms`")
        return self


class Element(_Data):
    """A key data element: its names, and every place it may be found (the first that holds a valid value wins)."""

    label: str
    label_zh: str
    where: str = Field(description="where the element is, in words, for the message when it is missing")
    find: tuple[Locator, ...] = Field(min_length=1)


class KdeUse(_Data):
    """A KDE a CTE asks for: an element of the profile, required or recommended, with its citation."""

    element: str = Field(pattern=KEY)
    required: bool = True
    cite: str = ""
    note: str = ""
    find: tuple[Locator, ...] | None = Field(default=None, description="replaces the element's own locators")

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"element": value} if isinstance(value, str) else value


class Shape(_Data):
    """An EPCIS event shape: empty `actions` or `biz_steps` match any; `having` markers must find a value."""

    types: tuple[EventType, ...] = Field(min_length=1)
    actions: tuple[Action, ...] = ()
    biz_steps: tuple[str, ...] = ()
    having: tuple[Locator, ...] = ()


class CriticalEvent(_Data):
    """A critical tracking event (or record type) and the EPCIS shapes it is recognised by."""

    key: str = Field(pattern=KEY)
    label: str
    label_zh: str
    cite: str = ""
    description: str = ""
    shapes: tuple[Shape, ...] = Field(min_length=1)
    kdes: tuple[KdeUse, ...] = Field(min_length=1)


class _Rule(_Data):
    key: str = Field(pattern=KEY)
    label: str
    label_zh: str
    description: str = ""

    def cte_keys(self) -> tuple[str, ...]:
        return ()

    def element_keys(self) -> tuple[str, ...]:
        return ()


class ShippedNotReceived(_Rule):
    """A shipment with no receiving at its destination, of what it carried, at or after its time."""

    kind: Literal["shipped_not_received"]
    shipping: tuple[str, ...] = Field(min_length=1)
    receiving: tuple[str, ...] = Field(min_length=1)

    def cte_keys(self) -> tuple[str, ...]:
        return self.shipping + self.receiving


class UsedTwice(_Rule):
    """A serialised item used more than once."""

    kind: Literal["used_twice"]
    use: tuple[str, ...] = Field(min_length=1)

    def cte_keys(self) -> tuple[str, ...]:
        return self.use


class UsedAfterExpiry(_Rule):
    """An item (or lot) used after its expiry date, as any event of the chain gives it (`expiry` element)."""

    kind: Literal["used_after_expiry"]
    use: tuple[str, ...] = Field(min_length=1)
    expiry: str = Field(pattern=KEY)

    def cte_keys(self) -> tuple[str, ...]:
        return self.use

    def element_keys(self) -> tuple[str, ...]:
        return (self.expiry,)


class UsedWithoutReceiving(_Rule):
    """An item used at a site with no receiving of it at that site before."""

    kind: Literal["used_without_receiving"]
    use: tuple[str, ...] = Field(min_length=1)
    receiving: tuple[str, ...] = Field(min_length=1)

    def cte_keys(self) -> tuple[str, ...]:
        return self.use + self.receiving


class ReleasedWithoutInspection(_Rule):
    """A lot made in the chain and released by its maker (from where it was made, or by a source there)
    with no conformant inspection before (or a failed one last)."""

    kind: Literal["released_without_inspection"]
    produced: tuple[str, ...] = Field(min_length=1)
    release: tuple[str, ...] = Field(min_length=1)
    inspection: tuple[str, ...] = Field(min_length=1)
    conformant: tuple[str, ...] = ("conformant",)

    def cte_keys(self) -> tuple[str, ...]:
        return self.produced + self.release + self.inspection


ChainRule = Annotated[
    ShippedNotReceived | UsedTwice | UsedAfterExpiry | UsedWithoutReceiving | ReleasedWithoutInspection,
    Field(discriminator="kind"),
]


class Column(_Data):
    """A report column: its heading and where its value comes from (the object of the row, the event, a KDE)."""

    key: str = Field(pattern=KEY)
    heading: str
    value: ColumnValue
    kde: tuple[str, ...] = Field(default=(), description="with value `kde`: the first of these KDEs the CTE finds")
    part: ColumnPart = "text"
    labels: dict[str, str] = Field(default_factory=dict, description="display text for values (vocabulary terms)")

    @model_validator(mode="after")
    def _kde_named(self) -> Column:
        if (self.value == "kde") != bool(self.kde):
            raise ValueError("`kde` names the KDEs of a column whose value is `kde`, and only then")
        return self


class Table(_Data):
    """A report table: one row per object (lot, item) of each event of its CTEs (all CTEs when none are named)."""

    key: str = Field(pattern=KEY)
    title: str
    language: Literal["en", "zh"] = "en"
    ctes: tuple[str, ...] = ()
    columns: tuple[Column, ...] = Field(min_length=1)


class Profile(_Data):
    """A traceability profile: its CTEs (tried in order, the first whose shape matches wins), rules, reports."""

    name: str = Field(pattern=KEY)
    title: str
    title_zh: str
    description: str
    regulation: str
    namespaces: dict[str, str] = Field(default_factory=dict)
    elements: dict[str, Element]
    events: tuple[CriticalEvent, ...] = Field(min_length=1)
    chain_rules: tuple[ChainRule, ...] = ()
    tables: tuple[Table, ...] = ()

    @model_validator(mode="after")
    def _references(self) -> Profile:
        ctes = [event.key for event in self.events]
        _unique("CTE", ctes)
        _unique("chain rule", [rule.key for rule in self.chain_rules])
        _unique("table", [table.key for table in self.tables])
        for event in self.events:
            _unique(f"KDE of CTE {event.key!r}", [use.element for use in event.kdes])
            self._elements_exist(f"CTE {event.key!r}", [use.element for use in event.kdes])
        for rule in self.chain_rules:
            _known(f"chain rule {rule.key!r}", "CTE", rule.cte_keys(), ctes)
            self._elements_exist(f"chain rule {rule.key!r}", rule.element_keys())
        for table in self.tables:
            _known(f"table {table.key!r}", "CTE", table.ctes, ctes)
            _unique(f"column of table {table.key!r}", [column.key for column in table.columns])
            for column in table.columns:
                self._elements_exist(f"table {table.key!r}, column {column.key!r}", column.kde)
        return self

    def _elements_exist(self, where: str, keys: Iterable[str]) -> None:
        _known(where, "element", keys, self.elements)

    def event(self, key: str) -> CriticalEvent:
        return next(event for event in self.events if event.key == key)

    def locators(self, use: KdeUse) -> tuple[Locator, ...]:
        return use.find if use.find is not None else self.elements[use.element].find


def _known(where: str, what: str, keys: Iterable[str], known: Collection[str]) -> None:
    for key in keys:
        if key not in known:
            raise ValueError(f"{where} names {what} {key!r}, which the profile does not define")


def _unique(what: str, keys: list[str]) -> None:
    seen: set[str] = set()
    for key in keys:
        if key in seen:
            raise ValueError(f"{what} {key!r} is defined twice")
        seen.add(key)


# --- paths ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Segment:
    """One step of a locator's path: a key, every list member (`*`), or the members of a vocabulary type."""

    kind: Literal["key", "each", "typed"]
    name: str = ""
    value: str = ""


_TYPED = re.compile(r"^\[([A-Za-z_][\w]*)=([^\]]+)\]$")


@cache
def parse_path(path: str) -> tuple[Segment, ...]:
    """The segments of a locator path; ValueError when it is not one."""
    if not path.startswith("/"):
        raise ValueError(f"path {path!r} must start with '/'")
    segments: list[Segment] = []
    for raw in path[1:].split("/"):
        if raw == "*":
            segments.append(Segment("each"))
        elif raw.startswith("["):
            typed = _TYPED.match(raw)
            if typed is None:
                raise ValueError(f"path {path!r}: {raw!r} is not a filter like [type=location]")
            segments.append(Segment("typed", typed.group(1), typed.group(2)))
        elif raw:
            segments.append(Segment("key", raw.replace("~1", "/").replace("~0", "~")))
        else:
            raise ValueError(f"path {path!r} has an empty segment")
    return tuple(segments)


def static_prefix(path: str) -> str:
    """The part of a path before its first wildcard: where a missing value would go."""
    out = ""
    for segment in parse_path(path):
        if segment.kind != "key":
            break
        out += "/" + segment.name.replace("~", "~0").replace("/", "~1")
    return out


# --- loading -------------------------------------------------------------------------------------


def profile_names() -> list[str]:
    """The profiles shipped with the platform."""
    folder = resources.files(PACKAGE) / DATA_FOLDER
    return sorted(entry.name.removesuffix(SUFFIX) for entry in folder.iterdir() if entry.name.endswith(SUFFIX))


def load_profile(name: str) -> Profile:
    """A shipped profile by name; NotFound for any other name."""
    names = profile_names()
    if name not in names:
        shown = name[:100]
        raise NotFound(
            f"no traceability profile {shown!r}; the profiles are {', '.join(names)}", code="profile_not_found"
        )
    return _load(name)


def list_profiles() -> list[Profile]:
    return [_load(name) for name in profile_names()]


def parse_profile(data: Any, where: str = "profile") -> Profile:
    """A profile from its parsed YAML; Invalid naming every problem."""
    try:
        return Profile.model_validate(data)
    except ValidationError as err:
        raise Invalid(f"{where}: " + "; ".join(validation_messages(err)), code="invalid_profile") from None


@cache
def _load(name: str) -> Profile:
    text = (resources.files(PACKAGE) / DATA_FOLDER / f"{name}{SUFFIX}").read_text(encoding="utf-8")
    profile = parse_profile(yaml.safe_load(text), f"profile {name!r}")
    if profile.name != name:
        raise Invalid(f"profile file {name}{SUFFIX} names itself {profile.name!r}", code="invalid_profile")
    return profile
