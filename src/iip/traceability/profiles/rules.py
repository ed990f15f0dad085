"""A profile's checks (pure): which CTE an event is, the KDEs it lacks, and the rules across events.

Events are in the internal form of `epcis.documents`; locations are JSON pointers (`at` for the event,
then the pointer within it). Profiles add validation, they never change events: an event that matches
no CTE of the profile is not the profile's business and yields no issue.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from iip.traceability.epcis import identifiers
from iip.traceability.profiles.locate import (
    Found,
    Lookup,
    MasterData,
    Scope,
    canonical,
    find,
    find_first,
    gln,
    identity_keys,
    local_date,
    master_keys,
    match_keys,
    matching_keys,
    parse_time,
    serial_key,
    site,
    vocabulary_term,
    walk,
)
from iip.traceability.profiles.model import (
    CriticalEvent,
    KdeUse,
    Profile,
    ReleasedWithoutInspection,
    Shape,
    ShippedNotReceived,
    UsedAfterExpiry,
    UsedTwice,
    UsedWithoutReceiving,
    parse_path,
    static_prefix,
)

Severity = Literal["error", "warning"]
CBV_MDA = {"cbvmda": "urn:epcglobal:cbv:mda"}


@dataclass(frozen=True, slots=True)
class ProfileIssue:
    """A KDE an event lacks (or holds in a form the profile cannot use)."""

    location: str
    message: str
    element: str = ""
    severity: Severity = "error"  # a required KDE; "warning" for a recommended one


@dataclass(frozen=True, slots=True)
class ChainIssue:
    """A rule broken across events: at the event that breaks it, with the others involved."""

    rule: str
    location: str
    message: str
    identifier: str = ""
    related: tuple[str, ...] = ()


def scope_of(
    profile: Profile, context: Mapping[str, str] | None = None, master_data: MasterData | None = None
) -> Scope:
    return Scope(profile.namespaces, dict(context or {}), master_data or {})


def master_data_keys(
    profile: Profile, events: Iterable[Mapping[str, Any]], context: Mapping[str, str] | None = None
) -> set[str]:
    """Every master data key a check or report of these events may look up (what a `master:` locator of
    the profile reaches, as `locate.master_keys` gives it), so master data held elsewhere is read once."""
    locators = [locator for element in profile.elements.values() for locator in element.find]
    for cte in profile.events:
        locators += [locator for use in cte.kdes for locator in use.find or ()]
        locators += [marker for shape in cte.shapes for marker in shape.having]
    paths = {locator.path for locator in locators if locator.master is not None}
    scope = scope_of(profile, context)
    keys: set[str] = set()
    for event in events:
        for path in paths:
            for _, value in walk(event, parse_path(path), scope):
                keys.update(master_keys(value))
    return keys


def layered(document: MasterData, stored: MasterData) -> dict[str, dict[str, str]]:
    """Master data of the document first, then the stored: per element, an attribute the document gives wins."""
    return {key: {**stored.get(key, {}), **document.get(key, {})} for key in {*stored, *document}}


# --- one event -----------------------------------------------------------------------------------


def shape_matches(shape: Shape, event: Mapping[str, Any], scope: Scope) -> bool:
    if event.get("type") not in shape.types:
        return False
    if shape.actions and event.get("action") not in shape.actions:
        return False
    if shape.biz_steps and vocabulary_term(event.get("bizStep")) not in {vocabulary_term(s) for s in shape.biz_steps}:
        return False
    return not shape.having or any(find(marker, event, scope).found for marker in shape.having)


def classify(
    profile: Profile,
    event: Mapping[str, Any],
    *,
    context: Mapping[str, str] | None = None,
    master_data: MasterData | None = None,
) -> CriticalEvent | None:
    """The profile's CTE the event is: the first (in the profile's order) with a shape it matches."""
    scope = scope_of(profile, context, master_data)
    return next((cte for cte in profile.events if any(shape_matches(s, event, scope) for s in cte.shapes)), None)


def kde_lookups(profile: Profile, cte: CriticalEvent, event: Mapping[str, Any], scope: Scope) -> dict[str, Lookup]:
    """Each KDE of the CTE as found in the event (the first of its locators that finds a valid value)."""
    return {use.element: find_first(profile.locators(use), event, scope) for use in cte.kdes}


def _kde_issue(profile: Profile, cte: CriticalEvent, use: KdeUse, lookup: Lookup, at: str) -> ProfileIssue:
    element = profile.elements[use.element]
    severity: Severity = "error" if use.required else "warning"
    needed = "required" if use.required else "recommended"
    cite = f" ({use.cite})" if use.cite else ""
    if lookup.rejected:
        first = lookup.rejected[0]
        return ProfileIssue(
            at + first.pointer,
            f"{cte.label}: {element.label}{cite}, {needed}, is not usable: {first.reason}",
            use.element,
            severity,
        )
    where = static_prefix(profile.locators(use)[0].path)
    return ProfileIssue(
        at + where, f"{cte.label}: {element.label}{cite}, {needed}, is missing: {element.where}", use.element, severity
    )


def check_event(
    profile: Profile,
    event: Mapping[str, Any],
    *,
    at: str = "",
    context: Mapping[str, str] | None = None,
    master_data: MasterData | None = None,
) -> list[ProfileIssue]:
    """The KDEs the event's CTE requires (errors) or recommends (warnings) that it lacks; [] for no CTE.

    `at` is the event's JSON pointer in its document, `context` the document's prefixes, `master_data`
    its master data (`inputs.master_data`), where product descriptions usually are.
    """
    scope = scope_of(profile, context, master_data)
    cte = classify(profile, event, context=context, master_data=master_data)
    if cte is None:
        return []
    lookups = kde_lookups(profile, cte, event, scope)
    return [
        _kde_issue(profile, cte, use, lookups[use.element], at) for use in cte.kdes if not lookups[use.element].found
    ]


# --- what an event is about ----------------------------------------------------------------------

_INSTANCE_LISTS = ("epcList", "childEPCs", "outputEPCList")
_CLASS_LISTS = ("quantityList", "childQuantityList", "outputQuantityList")


@dataclass(frozen=True, slots=True)
class EventObject:
    """An object an event is about: an item, a logistic unit or a class (a lot), with its amount."""

    identifier: str  # canonical Digital Link, or the URI as written when it is no GS1 identifier
    pointer: str
    kind: Literal["instance", "class"]
    quantity: float | int | None = None
    uom: str | None = None


def _identifier(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    return canonical(value) or value.strip()


def ilmd_lot(event: Mapping[str, Any], context: Mapping[str, str] | None = None) -> str | None:
    """The batch/lot number the event's ILMD gives (`cbvmda:lotNumber`)."""
    ilmd = event.get("ilmd")
    if not isinstance(ilmd, Mapping):
        return None
    scope = Scope(CBV_MDA, dict(context or {}))
    for key in matching_keys(ilmd, "cbvmda:lotNumber", scope):
        value = ilmd[key]
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def event_objects(
    event: Mapping[str, Any], context: Mapping[str, str] | None = None, *, inputs: bool = False
) -> list[EventObject]:
    """The objects an event is about (a transformation's outputs; its inputs with `inputs`).

    A GTIN class beside an ILMD lot number is that lot: GS1's way of naming a lot that has no LGTIN.
    """
    instance_lists = ("inputEPCList",) if inputs else _INSTANCE_LISTS
    class_lists = ("inputQuantityList",) if inputs else _CLASS_LISTS
    objects: list[EventObject] = []
    parent = _identifier(event.get("parentID")) if not inputs else None
    if parent:
        objects.append(EventObject(parent, "/parentID", "instance"))
    for name in instance_lists:
        values = event.get(name)
        for index, value in enumerate(values if isinstance(values, list) else []):
            identifier = _identifier(value)
            if identifier:
                objects.append(EventObject(identifier, f"/{name}/{index}", "instance", 1, "EA"))
    lot = None if inputs else ilmd_lot(event, context)
    for name in class_lists:
        values = event.get(name)
        for index, element in enumerate(values if isinstance(values, list) else []):
            if not isinstance(element, Mapping):
                continue
            identifier = _identifier(element.get("epcClass"))
            if identifier is None:
                continue
            if lot and identifier.startswith(identifiers.DL_BASE + "/01/") and "/10/" not in identifier:
                identifier = f"{identifier}/10/{lot}"
            amount = element.get("quantity")
            quantity = amount if isinstance(amount, int | float) and not isinstance(amount, bool) else None
            uom = element.get("uom") if isinstance(element.get("uom"), str) else None
            # EPCIS: a quantity without a unit counts trade items
            objects.append(EventObject(identifier, f"/{name}/{index}", "class", quantity, uom or "EA"))
    return objects


# --- across events -------------------------------------------------------------------------------


@dataclass
class _Entry:
    index: int
    location: str
    event: Mapping[str, Any]
    cte: str | None
    time: dt.datetime | None
    date: dt.date | None
    objects: list[EventObject]
    contents: set[str] = field(default_factory=set)  # the objects and what they contain (identifiers)


def _values(entries: Any) -> list[str]:
    return [v for v in entries if isinstance(v, str) and v.strip()] if isinstance(entries, list) else []


def _place(event: Mapping[str, Any], name: str) -> list[str]:
    place = event.get(name)
    value = place.get("id") if isinstance(place, Mapping) else None
    return [value] if isinstance(value, str) and value.strip() else []


def _list_values(event: Mapping[str, Any], name: str, key: str, types: Iterable[str] | None = None) -> list[str]:
    entries = event.get(name)
    wanted = set(types) if types is not None else None
    out: list[str] = []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, Mapping):
            continue
        if wanted is not None and vocabulary_term(entry.get("type")) not in wanted:
            continue
        value = entry.get(key)
        if isinstance(value, str) and value.strip():
            out.append(value)
    return out


def _destinations(event: Mapping[str, Any]) -> set[str]:
    """Where a shipment goes: its destination locations, else its destination parties."""
    places = _list_values(event, "destinationList", "destination", ["location"])
    return {site(v) for v in places or _list_values(event, "destinationList", "destination")}


def _receiving_sites(event: Mapping[str, Any]) -> set[str]:
    values = _place(event, "bizLocation") + _place(event, "readPoint")
    return {site(v) for v in values + _list_values(event, "destinationList", "destination")}


def _use_sites(event: Mapping[str, Any]) -> set[str]:
    return {site(v) for v in _place(event, "bizLocation") + _place(event, "readPoint")}


def _containment(entries: Sequence[_Entry]) -> dict[str, set[str]]:
    """What each parent holds, by the aggregation events checked (ADD and OBSERVE)."""
    children: dict[str, set[str]] = {}
    for entry in entries:
        event = entry.event
        if event.get("type") != "AggregationEvent" or event.get("action") not in ("ADD", "OBSERVE"):
            continue
        parent = _identifier(event.get("parentID"))
        if parent is None:
            continue
        held = children.setdefault(parent, set())
        for obj in entry.objects:
            if obj.identifier != parent:
                held.add(obj.identifier)
    return children


def _expanded(identifiers_: Iterable[str], children: Mapping[str, set[str]]) -> set[str]:
    """The identifiers and what they contain (transitively, by the aggregations checked)."""
    seen: set[str] = set()
    stack = list(identifiers_)
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        stack.extend(children.get(current, ()))
    return seen


def _not_before(later: dt.datetime | None, earlier: dt.datetime | None) -> bool:
    return later is None or earlier is None or later >= earlier


def _event_key(event: Mapping[str, Any]) -> str:
    event_id = event.get("eventID")
    if isinstance(event_id, str) and event_id.strip():
        return "id:" + event_id.strip()
    return "body:" + json.dumps(event, sort_keys=True, default=str)


def _entries(
    profile: Profile, events: Sequence[Mapping[str, Any]], locations: Sequence[str], scope: Scope
) -> list[_Entry]:
    # An event later declared erroneous (errorDeclaration, by eventID) takes no part; nor does a copy.
    retracted = {_event_key(e) for e in events if isinstance(e.get("errorDeclaration"), Mapping) and e.get("eventID")}
    seen: set[str] = set()
    entries: list[_Entry] = []
    for index, event in enumerate(events):
        key = _event_key(event)
        if key in retracted or key in seen or isinstance(event.get("errorDeclaration"), Mapping):
            continue
        seen.add(key)
        cte = next(
            (c.key for c in profile.events if any(shape_matches(s, event, scope) for s in c.shapes)),
            None,
        )
        entries.append(
            _Entry(
                index,
                locations[index],
                event,
                cte,
                parse_time(event.get("eventTime")),
                local_date(event),
                event_objects(event, scope.context),
            )
        )
    children = _containment(entries)
    for entry in entries:
        entry.contents = _expanded((o.identifier for o in entry.objects), children)
    return entries


def _keys(identifiers_: Iterable[str], *, lots: bool) -> set[str]:
    """Each identifier's names; with `lots`, also the lot each item is of."""
    name = match_keys if lots else identity_keys
    return {key for identifier in identifiers_ for key in name(identifier)}


def _holding(entries: Iterable[_Entry], ctes: tuple[str, ...], *, lots: bool = False) -> dict[str, list[_Entry]]:
    """The entries of these CTEs by each name of what they hold, so that a rule looks up, not scans.

    A receipt of one item is no receipt of another of its lot (`lots` False); an inspection of some
    of a lot is one of the lot (`lots` True).
    """
    index: dict[str, list[_Entry]] = {}
    for entry in entries:
        if entry.cte in ctes:
            for key in _keys(entry.contents, lots=lots):
                index.setdefault(key, []).append(entry)
    return index


def _holders(index: Mapping[str, list[_Entry]], keys: Iterable[str]) -> list[_Entry]:
    found: dict[int, _Entry] = {}
    for key in keys:
        for entry in index.get(key, ()):
            found.setdefault(entry.index, entry)
    return [found[i] for i in sorted(found)]


def _label(profile: Profile, keys: Iterable[str]) -> str:
    return " or ".join(profile.event(key).label.lower() for key in keys)


def _shown(identifier: str) -> str:
    return gln(identifier) if "/414/" in identifier or "/417/" in identifier else identifier


def _when(entry: _Entry) -> str:
    value = entry.event.get("eventTime")
    return value if isinstance(value, str) else "an unknown time"


def _shipped_not_received(profile: Profile, rule: ShippedNotReceived, entries: list[_Entry]) -> list[ChainIssue]:
    issues: list[ChainIssue] = []
    receipts = _holding(entries, rule.receiving)
    for shipment in (e for e in entries if e.cte in rule.shipping):
        destinations = _destinations(shipment.event)
        if not destinations or not shipment.objects:
            continue  # the KDE checks report a shipment without a destination or contents
        received = any(
            _not_before(r.time, shipment.time) and _receiving_sites(r.event) & destinations
            for r in _holders(receipts, _keys(shipment.contents, lots=True))
        )
        if not received:
            where = ", ".join(sorted(_shown(d) for d in destinations))
            issues.append(
                ChainIssue(
                    rule.key,
                    shipment.location,
                    f"{rule.label}: shipped to {where} at {_when(shipment)}, but no "
                    f"{_label(profile, rule.receiving)} of what it carried is recorded there at or after it",
                    shipment.objects[0].identifier,
                )
            )
    return issues


def _uses(rule_use: tuple[str, ...], entries: list[_Entry]) -> list[_Entry]:
    far = dt.datetime.max.replace(tzinfo=dt.UTC)
    return sorted((e for e in entries if e.cte in rule_use), key=lambda e: (e.time or far, e.index))


def _used_twice(rule: UsedTwice, entries: list[_Entry]) -> list[ChainIssue]:
    issues: list[ChainIssue] = []
    first_use: dict[str, _Entry] = {}
    for use in _uses(rule.use, entries):
        for key in sorted({k for o in use.objects if (k := serial_key(o.identifier)) is not None}):
            earlier = first_use.get(key)
            if earlier is None:
                first_use[key] = use
                continue
            issues.append(
                ChainIssue(
                    rule.key,
                    use.location,
                    f"{rule.label}: {key} is used at {_when(use)}, and was used already at {_when(earlier)}",
                    key,
                    (earlier.location,),
                )
            )
    return issues


def _resolve(event: Mapping[str, Any], pointer: str) -> Any:
    node: Any = event
    for raw in pointer.split("/")[1:]:
        key = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        elif isinstance(node, Mapping) and key in node:
            node = node[key]
        else:
            return None
    return node


def _expiries(profile: Profile, rule: UsedAfterExpiry, entries: list[_Entry], scope: Scope) -> dict[str, dt.date]:
    """The earliest expiry date any event gives for each object (an identifier's own, or its event's)."""
    expiry: dict[str, dt.date] = {}

    def note(keys: Iterable[str], day: dt.date) -> None:
        for key in keys:
            if key not in expiry or day < expiry[key]:
                expiry[key] = day

    for entry in entries:
        for locator in profile.elements[rule.expiry].find:
            for found in find(locator, entry.event, scope).found:
                if not isinstance(found.value, dt.date):
                    continue
                if locator.ai is not None:  # the identifier's own date (AI 17): that identifier only
                    identifier = _identifier(_resolve(entry.event, found.pointer))
                    note(identity_keys(identifier) if identifier else (), found.value)
                else:  # ILMD or an extension: every object of the event
                    note(_keys((o.identifier for o in entry.objects), lots=False), found.value)
    return expiry


def _used_after_expiry(
    profile: Profile, rule: UsedAfterExpiry, entries: list[_Entry], scope: Scope
) -> list[ChainIssue]:
    expiry = _expiries(profile, rule, entries, scope)
    issues: list[ChainIssue] = []
    for use in _uses(rule.use, entries):
        if use.date is None:
            continue
        for obj in use.objects:
            dates = [expiry[k] for k in match_keys(obj.identifier) if k in expiry]
            if dates and use.date > min(dates):
                issues.append(
                    ChainIssue(
                        rule.key,
                        use.location,
                        f"{rule.label}: {obj.identifier} is used on {use.date.isoformat()}, "
                        f"after its expiry date {min(dates).isoformat()}",
                        obj.identifier,
                    )
                )
    return issues


def _used_without_receiving(profile: Profile, rule: UsedWithoutReceiving, entries: list[_Entry]) -> list[ChainIssue]:
    issues: list[ChainIssue] = []
    receipts = _holding(entries, rule.receiving)
    for use in _uses(rule.use, entries):
        sites = _use_sites(use.event)
        if not sites:
            continue  # the KDE checks report a use without a location
        for obj in use.objects:
            keys = match_keys(obj.identifier)
            if any(
                _not_before(use.time, r.time) and _receiving_sites(r.event) & sites for r in _holders(receipts, keys)
            ):
                continue
            where = ", ".join(
                sorted({gln(v) for v in _place(use.event, "bizLocation") + _place(use.event, "readPoint")})
            )
            issues.append(
                ChainIssue(
                    rule.key,
                    use.location,
                    f"{rule.label}: {obj.identifier} is used at {where} with no "
                    f"{_label(profile, rule.receiving)} of it there before",
                    obj.identifier,
                )
            )
    return issues


def _released_without_inspection(
    profile: Profile, rule: ReleasedWithoutInspection, entries: list[_Entry]
) -> list[ChainIssue]:
    # Where each batch was made: a release counts when it leaves from there (its maker's sale).
    made_at: dict[str, set[str]] = {}
    for entry in entries:
        if entry.cte in rule.produced:
            for obj in entry.objects:
                for key in match_keys(obj.identifier):
                    made_at.setdefault(key, set()).update(_use_sites(entry.event))
    conformant = {vocabulary_term(t) for t in rule.conformant}
    inspected = _holding(entries, rule.inspection, lots=True)
    issues: list[ChainIssue] = []
    for release in (e for e in entries if e.cte in rule.release):
        leaves_from = _use_sites(release.event) | {site(v) for v in _list_values(release.event, "sourceList", "source")}
        for obj in release.objects:
            keys = match_keys(obj.identifier)
            if not any(made_at.get(k, set()) & leaves_from for k in keys):
                continue  # not its maker's release: the maker's inspection is not this sale's business
            inspections = [i for i in _holders(inspected, keys) if _not_before(release.time, i.time)]
            if not inspections:
                issues.append(
                    ChainIssue(
                        rule.key,
                        release.location,
                        f"{rule.label}: {obj.identifier} is released with no {_label(profile, rule.inspection)} before",
                        obj.identifier,
                    )
                )
                continue
            far = dt.datetime.min.replace(tzinfo=dt.UTC)
            last = max(inspections, key=lambda i: (i.time or far, i.index))
            if vocabulary_term(last.event.get("disposition")) in conformant:
                continue
            issues.append(
                ChainIssue(
                    rule.key,
                    release.location,
                    f"{rule.label}: {obj.identifier} is released after an inspection that did not find it "
                    f"conformant (disposition {last.event.get('disposition')!r})",
                    obj.identifier,
                    (last.location,),
                )
            )
    return issues


def check_chain(
    profile: Profile,
    events: Sequence[Mapping[str, Any]],
    *,
    locations: Sequence[str] | None = None,
    context: Mapping[str, str] | None = None,
    master_data: MasterData | None = None,
) -> list[ChainIssue]:
    """The profile's rules across the events: what no single event can show (a shipment never received,
    an item used twice, after its expiry, or where it was never received).

    Only the events given are known: a receiving recorded elsewhere is missing here. `locations` are
    the events' JSON pointers (default `/0`, `/1`, ...). Events declared erroneous and copies of an
    event take no part.
    """
    scope = scope_of(profile, context, master_data)
    where = list(locations) if locations is not None else [f"/{i}" for i in range(len(events))]
    entries = _entries(profile, events, where, scope)
    checks: dict[type, Callable[[Any], list[ChainIssue]]] = {
        ShippedNotReceived: lambda r: _shipped_not_received(profile, r, entries),
        UsedTwice: lambda r: _used_twice(r, entries),
        UsedAfterExpiry: lambda r: _used_after_expiry(profile, r, entries, scope),
        UsedWithoutReceiving: lambda r: _used_without_receiving(profile, r, entries),
        ReleasedWithoutInspection: lambda r: _released_without_inspection(profile, r, entries),
    }
    issues: list[ChainIssue] = []
    for rule in profile.chain_rules:
        issues.extend(checks[type(rule)](rule))
    return issues


def found_text(lookup: Lookup) -> str:
    """A KDE's values as one cell: distinct texts in order, `; ` between them."""
    texts: list[str] = []
    for found in lookup.found:
        if found.text not in texts:
            texts.append(found.text)
    return "; ".join(texts)


__all__ = [
    "ChainIssue",
    "EventObject",
    "Found",
    "ProfileIssue",
    "check_chain",
    "check_event",
    "classify",
    "event_objects",
    "kde_lookups",
]
