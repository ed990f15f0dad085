"""Which alarm changes are notified, to which channels and people: pure functions over plain values.

A change is announced only when the alarm is shown to operators: a change of a shelved, suppressed
(by design) or out-of-service alarm is never notified. A route matches a change when the route is
enabled and the change's priority, site and action are among the route's (an empty list of
priorities or sites matches every one). The channels of every matching route are merged: each
channel gets one message per change, to the union of the e-mail addresses the routes reach (the
channel's own addresses, and the contacts of each route's audience role at the alarm's site).

Escalation: a route with `escalate_after_min` starts an escalation when it matches an activation
that leaves the alarm unacknowledged. The escalation is cancelled as soon as a change shows the
alarm no longer waits for an operator: acknowledged (or reset to normal), shelved, suppressed by
design or taken out of service. A clear of an unacknowledged alarm does not cancel it: the alarm
returned to normal still waits for its acknowledgement (ISA-18.2 state `unack_rtn`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from iip.alarms.public import AlarmChange, AlarmState


class ChannelKind(StrEnum):
    WEBHOOK = "webhook"
    EMAIL = "email"


class NotifyAction(StrEnum):
    """The lifecycle actions a route may notify (shelving, suppression and removal never are)."""

    ACTIVATE = "activate"
    CLEAR = "clear"
    ACKNOWLEDGE = "acknowledge"
    RESET = "reset"
    UNSHELVE = "unshelve"
    UNSUPPRESS = "unsuppress"
    RETURN_TO_SERVICE = "return_to_service"


DEFAULT_ACTIONS = (NotifyAction.ACTIVATE,)
WAITING_STATES = frozenset({AlarmState.UNACK_ACTIVE, AlarmState.UNACK_RTN})


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    id: str
    name: str
    kind: ChannelKind
    enabled: bool = True
    addresses: tuple[str, ...] = ()
    rate_limit: int | None = None  # None: the setting


@dataclass(frozen=True, slots=True)
class ContactInfo:
    email: str
    role: str
    site: str = ""  # empty: every site
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class RouteRule:
    """A route as routing needs it: what it matches and where it sends."""

    id: str
    name: str
    priorities: frozenset[str] = frozenset()
    sites: frozenset[str] = frozenset()
    actions: frozenset[str] = frozenset(DEFAULT_ACTIONS)
    audience_role: str = ""
    channels: tuple[str, ...] = ()
    escalate_after_min: int | None = None
    escalation_channels: tuple[str, ...] = ()
    escalation_role: str = ""
    enabled: bool = True


@dataclass(slots=True)
class Target:
    """One message for one channel: its recipients (e-mail) and the routes that chose it."""

    channel: ChannelInfo
    recipients: set[str] = field(default_factory=set)
    routes: list[str] = field(default_factory=list)


def announced(change: AlarmChange) -> bool:
    """Whether operators are shown the alarm after this change (nothing else is notified)."""
    return not (change.shelved or change.suppressed or change.out_of_service)


def waiting_for_acknowledgement(change: AlarmChange) -> bool:
    """Whether, after this change, the alarm still waits for an operator to acknowledge it."""
    return announced(change) and change.state in WAITING_STATES


def _in_scope(rule: RouteRule, change: AlarmChange) -> bool:
    return (
        rule.enabled
        and (not rule.priorities or change.priority.value in rule.priorities)
        and (not rule.sites or change.site in rule.sites)
    )


def route_matches(rule: RouteRule, change: AlarmChange) -> bool:
    return announced(change) and _in_scope(rule, change) and change.action in rule.actions


def starts_escalation(rule: RouteRule, change: AlarmChange) -> bool:
    return (
        rule.escalate_after_min is not None
        and bool(rule.escalation_channels)
        and change.action == NotifyAction.ACTIVATE
        and change.state == AlarmState.UNACK_ACTIVE
        and announced(change)
        and _in_scope(rule, change)
    )


def audience(contacts: Iterable[ContactInfo], role: str, site: str) -> set[str]:
    """The addresses of the enabled contacts with `role` at `site` (a contact without a site: every site)."""
    if not role:
        return set()
    return {c.email for c in contacts if c.enabled and c.role == role and c.site in ("", site)}


def _add(
    targets: dict[str, Target],
    channel_ids: Iterable[str],
    channels: Mapping[str, ChannelInfo],
    people: set[str],
    route: str,
) -> None:
    for channel_id in channel_ids:
        channel = channels.get(channel_id)
        if channel is None or not channel.enabled:
            continue
        target = targets.get(channel_id)
        if target is None:
            target = targets[channel_id] = Target(channel)
            if channel.kind is ChannelKind.EMAIL:
                target.recipients.update(channel.addresses)
        if channel.kind is ChannelKind.EMAIL:
            target.recipients.update(people)
        if route not in target.routes:
            target.routes.append(route)


def plan(
    change: AlarmChange,
    rules: Iterable[RouteRule],
    channels: Mapping[str, ChannelInfo],
    contacts: Iterable[ContactInfo],
) -> dict[str, Target]:
    """The messages a change makes, by channel id: one per channel, whatever number of routes chose it."""
    contact_list = list(contacts)
    targets: dict[str, Target] = {}
    for rule in rules:
        if route_matches(rule, change):
            people = audience(contact_list, rule.audience_role, change.site)
            _add(targets, rule.channels, channels, people, rule.name)
    return _deliverable(targets)


def escalation_plan(
    change: AlarmChange,
    rule: RouteRule,
    channels: Mapping[str, ChannelInfo],
    contacts: Iterable[ContactInfo],
) -> dict[str, Target]:
    """The messages an escalation of `rule` sends: its escalation channels and role."""
    targets: dict[str, Target] = {}
    people = audience(contacts, rule.escalation_role, change.site)
    _add(targets, rule.escalation_channels, channels, people, rule.name)
    return _deliverable(targets)


def _deliverable(targets: dict[str, Target]) -> dict[str, Target]:
    # An e-mail channel nobody is reached through (no addresses, no contact of the role) sends nothing.
    return {
        channel_id: target
        for channel_id, target in targets.items()
        if target.channel.kind is not ChannelKind.EMAIL or target.recipients
    }
