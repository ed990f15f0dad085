"""The EPCIS 2.0 standard event query (`SimpleEventQuery`) over the repository tables.

`parse_query` turns query parameters (a URL query string's, or a named query's stored JSON) into an
`EventQuery`, raising `Invalid` (code `query_parameter`, EPCIS QueryParameterException) that names
the parameter at fault. `select_events` and `run_query` run it in one tenant (None: every tenant).

Values are compared in the form the tables hold them (see `models`): identifiers canonical (so a URN
and a Digital Link find the same event; an SGTIN pattern `urn:epc:idpat:sgtin:0614141.107346.*` is
a prefix of the canonical form and matches every instance and lot of that GTIN), CBV values as CBV
web URIs, times in UTC. Most filters are SQL on the indexed columns or `IN` subqueries on the lookup
tables, each led by the tenant. The few conditions that live only in an event's body (persistent
dispositions, error declaration times and corrective ids, the sensor fields the report table does
not keep) narrow in SQL first (events that have such a part) and are checked on the body after.
`WD_readPoint` and `WD_bizLocation` take the named locations and those under them in the tenant's
stored location master data (`location_hierarchy`), read when the query runs.

Pages are keyset pages over (sort key, id): the next page token carries the last event's position,
the count delivered so far (for `eventCountLimit`), an expiry and a fingerprint of the query and
tenant, so a token replayed with other parameters is refused.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from iip.kernel.db import utcnow
from iip.kernel.errors import Invalid
from iip.traceability.epcis.documents import (
    CBV_WEB,
    EVENT_TYPES,
    VOCABULARIES,
    normalise_measurement_type,
    normalise_time,
)
from iip.traceability.epcis.identifiers import IdentifierError, canonical
from iip.traceability.epcis.master_data import BUSINESS_LOCATION, READ_POINT
from iip.traceability.indexing import vocabulary_uri
from iip.traceability.location_hierarchy import descendants
from iip.traceability.models import Event, EventEpc, EventLink, SensorReport

QUERY_PARAMETER = "query_parameter"
PAGE_TOKEN_LIFETIME = dt.timedelta(hours=24)
_BATCH = 500  # rows read at a time when some condition is checked on the event bodies

# MATCH_ parameter → the roles (`EventEpc.role`) it looks in.
INSTANCE_ROLES = ("epc", "child", "parent", "input", "output")
CLASS_ROLES = ("quantity", "child_quantity", "input_quantity", "output_quantity")
MATCH_ROLES: dict[str, tuple[str, ...]] = {
    "MATCH_epc": ("epc", "child"),
    "MATCH_parentID": ("parent",),
    "MATCH_inputEPC": ("input",),
    "MATCH_outputEPC": ("output",),
    "MATCH_anyEPC": INSTANCE_ROLES,
    "MATCH_epcClass": ("quantity", "child_quantity"),
    "MATCH_inputEPCClass": ("input_quantity",),
    "MATCH_outputEPCClass": ("output_quantity",),
    "MATCH_anyEPCClass": CLASS_ROLES,
}
ACTIONS = ("ADD", "OBSERVE", "DELETE")
ORDER_KEYS = ("eventTime", "recordTime")
COMPARISONS = ("EQ", "GT", "GE", "LT", "LE")
# Sensor report numbers → their column in `traceability_sensor_report` (None: only in the body).
SENSOR_NUMBERS: dict[str, str | None] = {
    "value": "value",
    "minValue": "min_value",
    "maxValue": "max_value",
    "meanValue": "mean_value",
    "sDev": None,
    "percValue": None,
}
LINK_KINDS = {"bizTransaction": "bizTransactionType", "source": "sourceDestType", "destination": "sourceDestType"}

_SENSOR_NUMBER = re.compile(rf"({'|'.join(COMPARISONS)})_({'|'.join(SENSOR_NUMBERS)})_([A-Za-z0-9]{{2,4}})")
_PERC_RANK = re.compile(rf"({'|'.join(COMPARISONS)})_percRank")
_QUANTITY = re.compile(rf"({'|'.join(COMPARISONS)})_quantity(?:_([A-Za-z0-9]{{2,4}}))?")
_LINK = re.compile(rf"EQ_({'|'.join(LINK_KINDS)})_(.+)")
_SGTIN_CLASS_PATTERN = re.compile(r"urn:epc:idpat:sgtin:\d+\.\d+\.\*")
# Filters on extension fields name them `prefix:localName`, after a scope such as INNER_ or ILMD_.
_FIELD_FILTER = re.compile(r"(EQ|GT|GE|LT|LE|EXISTS|HASATTR|EQ_ATTR)_.*:.+")
_SPLIT = re.compile(r"[|,]")


# --- the query -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bound:
    """A number compared: `op` one of COMPARISONS; EQ takes several values, the others one."""

    op: str
    values: tuple[float, ...]

    def holds(self, number: float) -> bool:
        first = self.values[0]
        checks: dict[str, Callable[[], bool]] = {
            "EQ": lambda: number in self.values,
            "GT": lambda: number > first,
            "GE": lambda: number >= first,
            "LT": lambda: number < first,
            "LE": lambda: number <= first,
        }
        return checks[self.op]()

    def sql(self, column: Any) -> ColumnElement[bool]:
        first = self.values[0]
        clauses: dict[str, Callable[[], ColumnElement[bool]]] = {
            "EQ": lambda: column.in_(self.values),
            "GT": lambda: column > first,
            "GE": lambda: column >= first,
            "LT": lambda: column < first,
            "LE": lambda: column <= first,
        }
        return clauses[self.op]()


@dataclass(frozen=True)
class SensorBound:
    """A sensor report number (`value`, `minValue`, ... `percRank`) compared, in one unit (None: unitless)."""

    name: str
    uom: str | None
    bound: Bound


@dataclass(frozen=True)
class QuantityBound:
    uom: str | None
    bound: Bound


@dataclass(frozen=True)
class EpcMatch:
    """One MATCH_ parameter: identifiers equal to `exact`, or under one of `prefixes` (SGTIN patterns)."""

    roles: tuple[str, ...]
    exact: tuple[str, ...]
    prefixes: tuple[str, ...] = ()


@dataclass(frozen=True)
class LinkMatch:
    """EQ_bizTransaction_<type>, EQ_source_<type>, EQ_destination_<type>."""

    kind: str
    type: str  # CBV web URI, or the private vocabulary URI as given
    values: tuple[str, ...]


@dataclass(frozen=True)
class SensorFilter:
    """Sensor conditions; all of them must hold for one sensor report of the event."""

    types: tuple[str, ...] = ()
    device_ids: tuple[str, ...] = ()
    string_values: tuple[str, ...] = ()
    boolean_value: bool | None = None
    time_from: dt.datetime | None = None
    time_before: dt.datetime | None = None
    bounds: tuple[SensorBound, ...] = ()
    # Only in the body: checked there.
    uri_values: tuple[str, ...] = ()
    hex_binary_values: tuple[str, ...] = ()
    microorganisms: tuple[str, ...] = ()
    chemical_substances: tuple[str, ...] = ()
    data_processing_methods: tuple[str, ...] = ()
    biz_rules: tuple[str, ...] = ()
    start_time_from: dt.datetime | None = None
    start_time_before: dt.datetime | None = None
    end_time_from: dt.datetime | None = None
    end_time_before: dt.datetime | None = None
    exists: bool = False  # EXISTS_sensorElementList

    @property
    def empty(self) -> bool:
        return self == SensorFilter()

    @property
    def needs_body(self) -> bool:
        """Whether some condition is not in `traceability_sensor_report`."""
        body_only = (
            self.uri_values,
            self.hex_binary_values,
            self.microorganisms,
            self.chemical_substances,
            self.data_processing_methods,
            self.biz_rules,
            self.start_time_from,
            self.start_time_before,
            self.end_time_from,
            self.end_time_before,
        )
        return any(value for value in body_only) or any(SENSOR_NUMBERS.get(b.name) is None for b in self.bounds)


@dataclass(frozen=True)
class EventQuery:
    """A parsed standard query. Empty fields do not filter."""

    event_types: tuple[str, ...] = ()
    event_time_from: dt.datetime | None = None
    event_time_before: dt.datetime | None = None
    record_time_from: dt.datetime | None = None
    record_time_before: dt.datetime | None = None
    actions: tuple[str, ...] = ()
    biz_steps: tuple[str, ...] = ()  # CBV web URIs
    dispositions: tuple[str, ...] = ()
    persistent_set: tuple[str, ...] = ()
    persistent_unset: tuple[str, ...] = ()
    read_points: tuple[str, ...] = ()  # canonical
    biz_locations: tuple[str, ...] = ()
    # WD_: these locations and those under them in the tenant's location master data (`location_hierarchy`)
    read_points_within: tuple[str, ...] = ()
    biz_locations_within: tuple[str, ...] = ()
    transformation_ids: tuple[str, ...] = ()
    epc_matches: tuple[EpcMatch, ...] = ()
    quantity_bounds: tuple[QuantityBound, ...] = ()
    links: tuple[LinkMatch, ...] = ()
    event_ids: tuple[str, ...] = ()
    error_declared: bool = False
    error_time_from: dt.datetime | None = None
    error_time_before: dt.datetime | None = None
    error_reasons: tuple[str, ...] = ()  # CBV web URIs
    corrective_event_ids: tuple[str, ...] = ()
    sensor: SensorFilter = field(default_factory=SensorFilter)
    order_by: str | None = None  # eventTime, recordTime; None: the order events were stored in
    descending: bool = True  # orderDirection, when order_by is given
    event_count_limit: int | None = None
    max_event_count: int | None = None

    def fingerprint(self, tenant_id: str | None) -> str:
        """A short digest of the query and tenant, carried in page tokens."""
        text = f"{tenant_id or '*'}|{self!r}"
        return base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()[:12]).decode()


@dataclass(frozen=True)
class QueryPage:
    events: list[Event]
    next_page_token: str | None
    next_page_expires: dt.datetime | None = None


# --- parsing ---------------------------------------------------------------------------------------


def _fail(name: str, message: str) -> Invalid:
    return Invalid(f"query parameter {name}: {message}", code=QUERY_PARAMETER, parameter=name[:100])


def _values(name: str, raw: str | Sequence[str]) -> list[str]:
    """A list parameter's values: repeated, and each split at '|' (the REST binding) and ','."""
    items = [raw] if isinstance(raw, str) else list(raw)
    values: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise _fail(name, "values must be strings")
        values.extend(part.strip() for part in _SPLIT.split(item))
    values = [value for value in values if value]
    if not values:
        raise _fail(name, "give at least one value")
    return list(dict.fromkeys(values))


def _single(name: str, raw: str | Sequence[str]) -> str:
    items = [raw] if isinstance(raw, str) else list(raw)
    if len(items) != 1 or not isinstance(items[0], str):
        raise _fail(name, "takes exactly one value")
    return items[0].strip()


def _time(name: str, raw: str | Sequence[str]) -> dt.datetime:
    text = _single(name, raw)
    try:
        moment = dt.datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise _fail(name, f"{text[:60]!r} is not a date-time such as 2024-05-01T08:00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)  # a time without offset is taken as UTC
    try:
        return moment.astimezone(dt.UTC)
    except OverflowError:
        raise _fail(name, "out of range") from None


def _number(name: str, text: str) -> float:
    try:
        number = float(text)
    except ValueError:
        raise _fail(name, f"{text[:60]!r} is not a number") from None
    if not math.isfinite(number):
        raise _fail(name, "must be a finite number")
    return number


def _count(name: str, raw: str | Sequence[str]) -> int:
    text = _single(name, raw)
    if not text.isdigit() or len(text) > 12:
        raise _fail(name, f"{text[:60]!r} is not a non-negative integer")
    return int(text)


def _flag(name: str, raw: str | Sequence[str]) -> bool:
    """EXISTS_ parameters: present (or true, 1) asks for the field; false or 0 leaves events unfiltered."""
    text = _single(name, raw).lower()
    if text in ("", "true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise _fail(name, "must be true or false")


def _boolean(name: str, raw: str | Sequence[str]) -> bool:
    text = _single(name, raw).lower()
    if text not in ("true", "false"):
        raise _fail(name, "must be true or false")
    return text == "true"


def _bound(name: str, op: str, raw: str | Sequence[str]) -> Bound:
    if op == "EQ":
        return Bound(op, tuple(_number(name, v) for v in _values(name, raw)))
    return Bound(op, (_number(name, _single(name, raw)),))


def _identifier(name: str, value: str) -> str:
    try:
        return canonical(value)
    except IdentifierError as err:
        raise _fail(name, str(err)) from None


def _link_value(kind: str, value: str) -> str:
    # Business transaction ids are any URI; a string that merely looks like a broken GS1 key is kept as given.
    if kind != "bizTransaction":
        return canonical(value)
    try:
        return canonical(value)
    except IdentifierError:
        return value


def _epc_match(name: str, raw: str | Sequence[str]) -> EpcMatch:
    exact: list[str] = []
    prefixes: list[str] = []
    for given in _values(name, raw):
        value = given
        if value.startswith("urn:epc:idpat:"):
            if _SGTIN_CLASS_PATTERN.fullmatch(value):
                prefixes.append(_identifier(name, value))
                continue
            if "*" in value:
                raise _fail(name, f"{value[:80]!r}: only SGTIN patterns of one GTIN (company.item.*) are supported")
            value = "urn:epc:id:" + value.removeprefix("urn:epc:idpat:")  # a pattern naming one EPC
        exact.append(_identifier(name, value))
    return EpcMatch(MATCH_ROLES[name], tuple(exact), tuple(prefixes))


def _vocabulary(name: str, raw: str | Sequence[str], kind: str) -> tuple[str, ...]:
    # As capture stores them: `cbv:` and `gs1:` CURIEs expanded, then CBV URNs and bare names as web URIs.
    return tuple(vocabulary_uri(v, kind, {}) for v in _values(name, raw))


def _event_types(name: str, raw: str | Sequence[str]) -> tuple[str, ...]:
    values = _values(name, raw)
    unknown = [v for v in values if v not in EVENT_TYPES and ":" not in v]
    if unknown:
        raise _fail(name, f"unknown event type {unknown[0][:60]!r} (an extension type is a URI)")
    return tuple(values)


def _actions(name: str, raw: str | Sequence[str]) -> tuple[str, ...]:
    values = _values(name, raw)
    wrong = [v for v in values if v not in ACTIONS]
    if wrong:
        raise _fail(name, f"{wrong[0][:40]!r} is not one of ADD, OBSERVE, DELETE")
    return tuple(values)


# Fixed-name parameters: name → (EventQuery or SensorFilter field, reader). Readers take (name, raw).
_Reader = Callable[[str, str | Sequence[str]], Any]


def _strings(name: str, raw: str | Sequence[str]) -> tuple[str, ...]:
    return tuple(_values(name, raw))


def _identifiers(name: str, raw: str | Sequence[str]) -> tuple[str, ...]:
    return tuple(_identifier(name, v) for v in _values(name, raw))


def _vocabulary_reader(kind: str) -> _Reader:
    return lambda name, raw: _vocabulary(name, raw, kind)


_EVENT_PARAMETERS: dict[str, tuple[str, _Reader]] = {
    "eventType": ("event_types", _event_types),
    "GE_eventTime": ("event_time_from", _time),
    "LT_eventTime": ("event_time_before", _time),
    "GE_recordTime": ("record_time_from", _time),
    "LT_recordTime": ("record_time_before", _time),
    "EQ_action": ("actions", _actions),
    "EQ_bizStep": ("biz_steps", _vocabulary_reader("bizStep")),
    "EQ_disposition": ("dispositions", _vocabulary_reader("disposition")),
    "EQ_persistentDisposition_set": ("persistent_set", _vocabulary_reader("disposition")),
    "EQ_persistentDisposition_unset": ("persistent_unset", _vocabulary_reader("disposition")),
    "EQ_readPoint": ("read_points", _identifiers),
    "WD_readPoint": ("read_points_within", _identifiers),
    "EQ_bizLocation": ("biz_locations", _identifiers),
    "WD_bizLocation": ("biz_locations_within", _identifiers),
    "EQ_transformationID": ("transformation_ids", _strings),
    "EQ_eventID": ("event_ids", _strings),
    "EXISTS_errorDeclaration": ("error_declared", _flag),
    "GE_errorDeclarationTime": ("error_time_from", _time),
    "LT_errorDeclarationTime": ("error_time_before", _time),
    "EQ_errorReason": ("error_reasons", _vocabulary_reader("errorReason")),
    "EQ_correctiveEventID": ("corrective_event_ids", _strings),
    "eventCountLimit": ("event_count_limit", _count),
    "maxEventCount": ("max_event_count", _count),
}
_SENSOR_PARAMETERS: dict[str, tuple[str, _Reader]] = {
    "EQ_type": ("types", lambda name, raw: tuple(normalise_measurement_type(v) for v in _values(name, raw))),
    "EQ_deviceID": ("device_ids", _strings),
    "EQ_stringValue": ("string_values", _strings),
    "EQ_booleanValue": ("boolean_value", _boolean),
    "GE_time": ("time_from", _time),
    "LT_time": ("time_before", _time),
    "EQ_uriValue": ("uri_values", _strings),
    "EQ_hexBinaryValue": ("hex_binary_values", lambda name, raw: tuple(v.upper() for v in _values(name, raw))),
    "EQ_microorganism": ("microorganisms", _strings),
    "EQ_chemicalSubstance": ("chemical_substances", _strings),
    "EQ_dataProcessingMethod": ("data_processing_methods", _strings),
    "EQ_bizRules": ("biz_rules", _strings),
    "GE_startTime": ("start_time_from", _time),
    "LT_startTime": ("start_time_before", _time),
    "GE_endTime": ("end_time_from", _time),
    "LT_endTime": ("end_time_before", _time),
    "EXISTS_sensorElementList": ("exists", _flag),
}
# Keys a stored query may carry beside its parameters.
_IGNORED = frozenset({"@context"})


def parse_query(params: Mapping[str, str | Sequence[str]]) -> EventQuery:  # noqa: PLR0912 - one branch per kind
    """The query the parameters ask for; `Invalid` (code `query_parameter`) names a bad or unknown one."""
    found: dict[str, Any] = {}
    sensor: dict[str, Any] = {}
    epc_matches: list[EpcMatch] = []
    links: list[LinkMatch] = []
    quantities: list[QuantityBound] = []
    sensor_bounds: list[SensorBound] = []
    order: dict[str, str] = {}
    for name, raw in params.items():
        if name in _IGNORED:
            continue
        if name in _EVENT_PARAMETERS:
            attribute, reader = _EVENT_PARAMETERS[name]
            found[attribute] = reader(name, raw)
        elif name in _SENSOR_PARAMETERS:
            attribute, reader = _SENSOR_PARAMETERS[name]
            sensor[attribute] = reader(name, raw)
        elif name in MATCH_ROLES:
            epc_matches.append(_epc_match(name, raw))
        elif name in ("orderBy", "orderDirection"):
            order[name] = _single(name, raw)
        elif match := _SENSOR_NUMBER.fullmatch(name):
            op, number, uom = match.groups()
            sensor_bounds.append(SensorBound(number, uom.upper(), _bound(name, op, raw)))
        elif match := _PERC_RANK.fullmatch(name):
            sensor_bounds.append(SensorBound("percRank", None, _bound(name, match.group(1), raw)))
        elif match := _QUANTITY.fullmatch(name):
            op, uom = match.groups()
            quantities.append(QuantityBound(uom.upper() if uom else None, _bound(name, op, raw)))
        elif match := _LINK.fullmatch(name):
            kind, type_name = match.groups()
            try:
                values = tuple(_link_value(kind, v) for v in _values(name, raw))
            except IdentifierError as err:
                raise _fail(name, str(err)) from None
            links.append(LinkMatch(kind, vocabulary_uri(type_name, LINK_KINDS[kind], {}), values))
        elif _FIELD_FILTER.fullmatch(name):
            raise _fail(name, "filters on extension, ILMD, inner or attribute fields are not supported")
        else:
            raise _fail(name, "unknown parameter")
    found.update(_ordering(order, found))
    if sensor_bounds:
        sensor["bounds"] = tuple(sensor_bounds)
    return EventQuery(
        **found,
        epc_matches=tuple(epc_matches),
        links=tuple(links),
        quantity_bounds=tuple(quantities),
        sensor=SensorFilter(**sensor),
    )


def _ordering(order: Mapping[str, str], found: Mapping[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    order_by = order.get("orderBy")
    if order_by is not None:
        if order_by not in ORDER_KEYS:
            raise _fail("orderBy", f"{order_by[:60]!r}: only eventTime and recordTime are supported")
        result["order_by"] = order_by
    direction = order.get("orderDirection")
    if direction is not None:
        if direction not in ("ASC", "DESC"):
            raise _fail("orderDirection", "must be ASC or DESC")
        result["descending"] = direction == "DESC"
    if found.get("event_count_limit") is not None:
        if found.get("max_event_count") is not None:
            raise _fail("eventCountLimit", "eventCountLimit and maxEventCount exclude each other")
        if order_by is None:
            raise _fail("eventCountLimit", "needs orderBy")
    return result


def query_parameters(stored: Mapping[str, Any]) -> dict[str, list[str]]:
    """A named query's JSON (`{"EQ_bizStep": ["shipping"], "GE_value_CEL": 8, ...}`) as query parameters."""
    params: dict[str, list[str]] = {}
    for name, value in stored.items():
        if name in _IGNORED:
            continue
        items = value if isinstance(value, list) else [value]
        texts: list[str] = []
        for item in items:
            if isinstance(item, bool):
                texts.append("true" if item else "false")
            elif isinstance(item, int | float | str):
                texts.append(str(item))
            elif item is None and name.startswith("EXISTS_"):
                texts.append("")
            else:
                raise _fail(str(name), "values must be strings, numbers or booleans")
        params[str(name)] = texts
    return params


def parse_stored_query(stored: Mapping[str, Any]) -> EventQuery:
    """`parse_query` of a named query's stored JSON."""
    return parse_query(query_parameters(stored))


# --- SQL ---------------------------------------------------------------------------------------------


def _json_text(dialect: str, column: Any, *path: str) -> ColumnElement[Any]:
    """A body field as SQL text (objects as their JSON text), NULL when absent."""
    if dialect == "postgresql":
        return func.json_extract_path_text(column, *path)
    return func.json_extract(column, "$" + "".join(f'."{key}"' for key in path))


def _spellings(uri: str, kind: str) -> tuple[str, ...]:
    """The ways a body may write a CBV value: web URI, CBV 1.x URN, bare name."""
    urn, term = VOCABULARIES[kind]
    if not uri.startswith(CBV_WEB + term):
        return (uri,)
    bare = uri.removeprefix(CBV_WEB + term)
    return (uri, urn + bare, bare)


def _in_lookup(
    tenant_id: str | None, column: InstrumentedAttribute[int], *conditions: ColumnElement[bool]
) -> ColumnElement[bool]:
    """`event.id IN (SELECT event_id FROM <lookup> WHERE tenant AND conditions)`: the lookup's index leads."""
    table = column.class_
    tenant = [table.tenant_id == tenant_id] if tenant_id is not None else []
    return Event.id.in_(select(column).where(*tenant, *conditions))


def _epc_condition(tenant_id: str | None, match: EpcMatch) -> ColumnElement[bool]:
    # A prefix is a range: every string that starts with "<prefix>/" sorts in ["<prefix>/", "<prefix>0").
    alternatives: list[ColumnElement[bool]] = []
    if match.exact:
        alternatives.append(EventEpc.epc.in_(match.exact))
    for prefix in match.prefixes:
        alternatives.append(EventEpc.epc == prefix)
        alternatives.append(and_(EventEpc.epc >= prefix + "/", EventEpc.epc < prefix + "0"))
    return _in_lookup(tenant_id, EventEpc.event_id, EventEpc.role.in_(match.roles), or_(*alternatives))


def _sensor_condition(tenant_id: str | None, sensor: SensorFilter) -> ColumnElement[bool]:
    conditions: list[ColumnElement[bool]] = []
    if sensor.types:
        conditions.append(SensorReport.type.in_(sensor.types))
    if sensor.device_ids:
        given = {*sensor.device_ids, *(_canonical_or_raw(v) for v in sensor.device_ids)}
        conditions.append(SensorReport.device_id.in_(sorted(given)))
    if sensor.string_values:
        conditions.append(SensorReport.string_value.in_(sensor.string_values))
    if sensor.boolean_value is not None:
        conditions.append(SensorReport.boolean_value.is_(sensor.boolean_value))
    if sensor.time_from is not None:
        conditions.append(SensorReport.time >= sensor.time_from)
    if sensor.time_before is not None:
        conditions.append(SensorReport.time < sensor.time_before)
    for bound in sensor.bounds:
        column_name = SENSOR_NUMBERS.get(bound.name)
        if column_name is not None:
            conditions.append(bound.bound.sql(getattr(SensorReport, column_name)))
            conditions.append(SensorReport.uom == bound.uom)
    return _in_lookup(tenant_id, SensorReport.event_id, *conditions)


def _canonical_or_raw(value: str) -> str:
    try:
        return canonical(value)
    except IdentifierError:
        return value


def _conditions(dialect: str, tenant_id: str | None, query: EventQuery) -> list[ColumnElement[bool]]:  # noqa: PLR0912 - one branch per filter
    where: list[ColumnElement[bool]] = []
    if tenant_id is not None:
        where.append(Event.tenant_id == tenant_id)
    if query.event_types:
        where.append(Event.event_type.in_(query.event_types))
    ranges = (
        (Event.event_time, query.event_time_from, query.event_time_before),
        (Event.record_time, query.record_time_from, query.record_time_before),
    )
    for column, start, end in ranges:
        if start is not None:
            where.append(column >= start)
        if end is not None:
            where.append(column < end)
    columns = (
        (Event.action, query.actions),
        (Event.biz_step, query.biz_steps),
        (Event.disposition, query.dispositions),
        (Event.read_point, query.read_points),
        (Event.biz_location, query.biz_locations),
        (Event.event_id, query.event_ids),
    )
    where.extend(column.in_(values) for column, values in columns if values)
    if query.transformation_ids:
        where.append(_json_text(dialect, Event.body, "transformationID").in_(query.transformation_ids))
    where.extend(_epc_condition(tenant_id, match) for match in query.epc_matches)
    for link in query.links:
        where.append(
            _in_lookup(
                tenant_id,
                EventLink.event_id,
                EventLink.kind == link.kind,
                EventLink.value.in_(link.values),
                EventLink.type == link.type,
            )
        )
    if query.quantity_bounds:
        quantity: list[ColumnElement[bool]] = [EventEpc.role.in_(CLASS_ROLES), EventEpc.quantity.is_not(None)]
        for bound in query.quantity_bounds:
            quantity.append(bound.bound.sql(EventEpc.quantity))
            if bound.uom is not None:
                quantity.append(EventEpc.uom == bound.uom)
        where.append(_in_lookup(tenant_id, EventEpc.event_id, *quantity))
    if _needs_error_declaration(query):
        where.append(_json_text(dialect, Event.body, "errorDeclaration").is_not(None))
    if query.error_reasons:
        spellings = [s for reason in query.error_reasons for s in _spellings(reason, "errorReason")]
        where.append(_json_text(dialect, Event.body, "errorDeclaration", "reason").in_(spellings))
    if query.persistent_set or query.persistent_unset:
        where.append(_json_text(dialect, Event.body, "persistentDisposition").is_not(None))
    if not query.sensor.empty:
        where.append(_sensor_condition(tenant_id, query.sensor))
    return where


def _needs_error_declaration(query: EventQuery) -> bool:
    return bool(
        query.error_declared
        or query.error_time_from
        or query.error_time_before
        or query.error_reasons
        or query.corrective_event_ids
    )


# --- checks on the body --------------------------------------------------------------------------------


def _body_check(query: EventQuery) -> Callable[[Event], bool] | None:
    """What SQL cannot decide, checked on each candidate's body; None when SQL decides everything."""
    checks: list[Callable[[Event], bool]] = []
    if query.persistent_set or query.persistent_unset:
        checks.append(lambda event: _persistent_holds(event, query))
    if query.error_time_from or query.error_time_before or query.corrective_event_ids:
        checks.append(lambda event: _error_declaration_holds(event.body, query))
    if query.sensor.needs_body:
        checks.append(lambda event: _sensor_holds(event.body, query.sensor))
    if not checks:
        return None
    return lambda event: all(check(event) for check in checks)


def _strings_in(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _persistent_holds(event: Event, query: EventQuery) -> bool:
    persistent = event.body.get("persistentDisposition")
    if not isinstance(persistent, dict):
        return False
    for key, wanted in (("set", query.persistent_set), ("unset", query.persistent_unset)):
        if wanted:
            have = {vocabulary_uri(v, "disposition", event.context) for v in _strings_in(persistent.get(key))}
            if not have.intersection(wanted):
                return False
    return True


def _utc(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(normalise_time(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def _in_window(moment: dt.datetime | None, start: dt.datetime | None, end: dt.datetime | None) -> bool:
    if start is None and end is None:
        return True
    if moment is None:
        return False
    return (start is None or moment >= start) and (end is None or moment < end)


def _error_declaration_holds(body: dict[str, Any], query: EventQuery) -> bool:
    declaration = body.get("errorDeclaration")
    if not isinstance(declaration, dict):
        return False
    if not _in_window(_utc(declaration.get("declarationTime")), query.error_time_from, query.error_time_before):
        return False
    ids = _strings_in(declaration.get("correctiveEventIDs"))
    return not query.corrective_event_ids or bool(set(ids).intersection(query.corrective_event_ids))


def _sensor_reports(body: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for element in body.get("sensorElementList") or []:
        if not isinstance(element, dict):
            continue
        metadata = element.get("sensorMetadata")
        metadata = metadata if isinstance(metadata, dict) else {}
        for report in element.get("sensorReport") or []:
            if isinstance(report, dict):
                yield report, metadata


def _sensor_holds(body: dict[str, Any], sensor: SensorFilter) -> bool:
    return any(_report_holds(report, metadata, sensor) for report, metadata in _sensor_reports(body))


def _report_holds(report: dict[str, Any], metadata: dict[str, Any], sensor: SensorFilter) -> bool:  # noqa: PLR0911
    def either(key: str) -> Any:
        return report.get(key, metadata.get(key))

    kind = report.get("type")
    hex_value = report.get("hexBinaryValue")
    if sensor.device_ids and not _device_matches(either("deviceID"), sensor.device_ids):
        return False
    memberships = (
        (sensor.types, normalise_measurement_type(kind) if isinstance(kind, str) else None),
        (sensor.string_values, report.get("stringValue")),
        (sensor.uri_values, report.get("uriValue")),
        (sensor.hex_binary_values, hex_value.upper() if isinstance(hex_value, str) else None),
        (sensor.microorganisms, report.get("microorganism")),
        (sensor.chemical_substances, report.get("chemicalSubstance")),
        (sensor.data_processing_methods, either("dataProcessingMethod")),
        (sensor.biz_rules, metadata.get("bizRules")),
    )
    for wanted, value in memberships:
        if wanted and value not in wanted:
            return False
    if sensor.boolean_value is not None and report.get("booleanValue") is not sensor.boolean_value:
        return False
    windows = (
        (either("time"), sensor.time_from, sensor.time_before),
        (metadata.get("startTime"), sensor.start_time_from, sensor.start_time_before),
        (metadata.get("endTime"), sensor.end_time_from, sensor.end_time_before),
    )
    if not all(_in_window(_utc(value), start, end) for value, start, end in windows):
        return False
    for bound in sensor.bounds:
        number = report.get(bound.name)
        if isinstance(number, bool) or not isinstance(number, int | float):
            return False
        if bound.uom is not None and report.get("uom") != bound.uom:
            return False
        if not bound.bound.holds(float(number)):
            return False
    return True


def _device_matches(value: Any, wanted: tuple[str, ...]) -> bool:
    return isinstance(value, str) and _canonical_or_raw(value) in {_canonical_or_raw(w) for w in wanted}


# --- locations with descendants ------------------------------------------------------------------------

# WD_ field → the event column it filters, the master data vocabulary its hierarchy is read from, its parameter.
_WITHIN: tuple[tuple[str, InstrumentedAttribute[str | None], str, str], ...] = (
    ("read_points_within", Event.read_point, READ_POINT, "WD_readPoint"),
    ("biz_locations_within", Event.biz_location, BUSINESS_LOCATION, "WD_bizLocation"),
)


def _within(session: Session, tenant_id: str | None, query: EventQuery) -> list[ColumnElement[bool]]:
    """The WD_ conditions, resolved against the master data stored now: the named locations, or those
    under them in the event's own tenant's hierarchy. One per WD_ parameter given; EQ_ of the same field
    is a condition of its own (an event must meet both)."""
    conditions: list[ColumnElement[bool]] = []
    for name, column, vocabulary_type, parameter in _WITHIN:
        roots: tuple[str, ...] = getattr(query, name)
        if not roots:
            continue
        below = descendants(session, tenant_id, vocabulary_type, roots, parameter=parameter)
        if tenant_id is not None:
            conditions.append(column.in_(sorted({*roots, *below.get(tenant_id, ())})))
            continue
        alternatives: list[ColumnElement[bool]] = [column.in_(roots)]
        alternatives += [
            and_(Event.tenant_id == tenant, column.in_(sorted(found))) for tenant, found in sorted(below.items())
        ]
        conditions.append(or_(*alternatives))
    return conditions


# --- running -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Position:
    """Where a page ended: the last event's sort key (None when sorted by id alone) and id."""

    key: dt.datetime | None
    id: int


def _sort_column(query: EventQuery) -> InstrumentedAttribute[dt.datetime] | None:
    return {"eventTime": Event.event_time, "recordTime": Event.record_time}.get(query.order_by or "")


def _statement(
    dialect: str,
    tenant_id: str | None,
    query: EventQuery,
    after: _Position | None,
    within: Sequence[ColumnElement[bool]],
    *,
    by_id: bool = False,
) -> Select[Event]:
    column = None if by_id else _sort_column(query)
    descending = column is not None and query.descending
    where = [*_conditions(dialect, tenant_id, query), *within]
    if after is not None:
        if column is None:
            where.append(Event.id > after.id)
        elif descending:
            where.extend((column <= after.key, or_(column < after.key, Event.id < after.id)))
        else:
            where.extend((column >= after.key, or_(column > after.key, Event.id > after.id)))
    statement = select(Event).where(*where)
    if column is None:
        return statement.order_by(Event.id)
    if descending:
        return statement.order_by(column.desc(), Event.id.desc())
    return statement.order_by(column, Event.id)


def _position(event: Event, query: EventQuery, *, by_id: bool = False) -> _Position:
    column = None if by_id else _sort_column(query)
    return _Position(None if column is None else getattr(event, column.key), event.id)


def _rows(
    session: Session,
    tenant_id: str | None,
    query: EventQuery,
    after: _Position | None,
    limit: int | None,
    within: Sequence[ColumnElement[bool]],
    *,
    by_id: bool = False,
) -> list[Event]:
    """Up to `limit` matching events after `after`, in the query's order (by id with `by_id`)."""
    dialect = session.get_bind().dialect.name
    check = _body_check(query)
    if check is None:
        statement = _statement(dialect, tenant_id, query, after, within, by_id=by_id)
        return list(session.scalars(statement if limit is None else statement.limit(limit)))
    found: list[Event] = []
    while limit is None or len(found) < limit:
        statement = _statement(dialect, tenant_id, query, after, within, by_id=by_id)
        batch = list(session.scalars(statement.limit(_BATCH)))
        found.extend(event for event in batch if check(event))
        if len(batch) < _BATCH:
            break
        after = _position(batch[-1], query, by_id=by_id)
    return found if limit is None else found[:limit]


def select_events(
    session: Session, tenant_id: str | None, query: EventQuery, *, after_id: int = 0, limit: int | None
) -> list[Event]:
    """The matching events stored after `after_id`, in the order they were stored (subscriptions).

    `orderBy`, `orderDirection`, `eventCountLimit` and `maxEventCount` play no part here.
    """
    within = _within(session, tenant_id, query)
    return _rows(session, tenant_id, query, _Position(None, after_id), limit, within, by_id=True)


def count_events(session: Session, tenant_id: str | None, query: EventQuery, *, up_to: int) -> int:
    """How many events match, counting no further than `up_to`."""
    return _count_matching(session, tenant_id, query, up_to, _within(session, tenant_id, query))


def _count_matching(
    session: Session, tenant_id: str | None, query: EventQuery, up_to: int, within: Sequence[ColumnElement[bool]]
) -> int:
    check = _body_check(query)
    if check is None:
        dialect = session.get_bind().dialect.name
        statement = _statement(dialect, tenant_id, query, None, within, by_id=True)
        ids = statement.with_only_columns(Event.id).limit(up_to)
        return int(session.scalar(select(func.count()).select_from(ids.subquery())) or 0)
    return len(_rows(session, tenant_id, query, None, up_to, within, by_id=True))


def run_query(
    session: Session,
    tenant_id: str | None,
    query: EventQuery,
    page_token: str | None,
    per_page: int,
    *,
    now: dt.datetime | None = None,
) -> QueryPage:
    """One page of the query's result, and the token of the next page (None on the last one).

    Raises `Invalid`: code `query_too_large` when more events than `maxEventCount` match,
    `page_token` for a token that is malformed, expired or issued for another query or tenant.
    """
    if per_page < 1:
        raise Invalid("perPage must be at least 1", code=QUERY_PARAMETER, parameter="perPage")
    now = now or utcnow()
    fingerprint = query.fingerprint(tenant_id)
    after, delivered = (None, 0) if page_token is None else _read_token(page_token, fingerprint, now)
    within = _within(session, tenant_id, query)
    if page_token is None and query.max_event_count is not None:
        matching = _count_matching(session, tenant_id, query, query.max_event_count + 1, within)
        if matching > query.max_event_count:
            raise Invalid(
                f"more than maxEventCount ({query.max_event_count}) events match the query",
                code="query_too_large",
                parameter="maxEventCount",
            )
    wanted = per_page
    if query.event_count_limit is not None:
        wanted = min(wanted, query.event_count_limit - delivered)
    if wanted <= 0:
        return QueryPage([], None)
    rows = _rows(session, tenant_id, query, after, wanted + 1, within)
    events = rows[:wanted]
    delivered += len(events)
    limit_reached = query.event_count_limit is not None and delivered >= query.event_count_limit
    if len(rows) <= wanted or not events or limit_reached:
        return QueryPage(events, None)
    expires = (now + PAGE_TOKEN_LIFETIME).replace(microsecond=0)
    token = _write_token(fingerprint, _position(events[-1], query), delivered, expires)
    return QueryPage(events, token, expires)


# --- page tokens ---------------------------------------------------------------------------------------


def _write_token(fingerprint: str, position: _Position, delivered: int, expires: dt.datetime) -> str:
    key = None if position.key is None else position.key.astimezone(dt.UTC).isoformat()
    content = {"q": fingerprint, "k": key, "i": position.id, "n": delivered, "x": int(expires.timestamp())}
    raw = json.dumps(content, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _token_error(message: str) -> Invalid:
    return Invalid(message, code="page_token", parameter="nextPageToken")


def _read_token(token: str, fingerprint: str, now: dt.datetime) -> tuple[_Position, int]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        content = json.loads(raw)
        key = content["k"]
        position = _Position(None if key is None else dt.datetime.fromisoformat(key), int(content["i"]))
        delivered, expires, issued_for = int(content["n"]), int(content["x"]), str(content["q"])
    except (binascii.Error, ValueError, TypeError, KeyError, OverflowError):
        raise _token_error("nextPageToken is not a token this server issued") from None
    in_range = 0 <= position.id < 2**63 and 0 <= delivered < 2**63
    if not in_range or (position.key is not None and position.key.tzinfo is None):
        raise _token_error("nextPageToken is not a token this server issued")
    if issued_for != fingerprint:
        raise _token_error("nextPageToken was issued for other query parameters: repeat the query unchanged")
    if expires < now.timestamp():
        raise _token_error("nextPageToken has expired: run the query again")
    return position, delivered
