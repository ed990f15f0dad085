"""Routing as pure functions: what a change matches, who is reached, what starts and ends escalations."""

from __future__ import annotations

from typing import Any

import pytest

from iip.alarms.notify.routing import (
    ChannelInfo,
    ChannelKind,
    ContactInfo,
    RouteRule,
    audience,
    escalation_plan,
    plan,
    route_matches,
    starts_escalation,
    waiting_for_acknowledgement,
)
from iip.alarms.public import AlarmChange, AlarmState, Priority
from tests.alarms.notify.conftest import Clock, alarm_change

HOOK = ChannelInfo("c-hook", "scada", ChannelKind.WEBHOOK)
MAIL = ChannelInfo("c-mail", "plant-mail", ChannelKind.EMAIL, addresses=("control-room@example.com",))
ROLE_MAIL = ChannelInfo("c-role", "people", ChannelKind.EMAIL)
CHANNELS = {c.id: c for c in (HOOK, MAIL, ROLE_MAIL)}
CONTACTS = [
    ContactInfo("wang@example.com", "shift_engineer", "plant-a"),
    ContactInfo("zhao@example.com", "shift_engineer", "plant-b"),
    ContactInfo("chen@example.com", "shift_engineer", ""),  # every site
    ContactInfo("liu@example.com", "shift_engineer", "plant-a", enabled=False),
    ContactInfo("sun@example.com", "plant_manager", "plant-a"),
]


def change(**fields: Any) -> AlarmChange:
    return alarm_change("t1", Clock(), **fields)


def test_priority_site_and_action_each_narrow_a_route() -> None:
    rule = RouteRule("r", "critical-a", priorities=frozenset({"critical", "high"}), sites=frozenset({"plant-a"}))
    assert route_matches(rule, change())
    assert not route_matches(rule, change(priority=Priority.MEDIUM))
    assert not route_matches(rule, change(site="plant-b"))
    assert not route_matches(rule, change(action="clear", state=AlarmState.ACK_ACTIVE))
    everything = RouteRule("r", "all", actions=frozenset({"activate", "clear"}))
    assert route_matches(everything, change(priority=Priority.LOW, site="anywhere"))
    assert route_matches(everything, change(action="clear", state=AlarmState.UNACK_RTN))
    assert not route_matches(RouteRule("r", "off", enabled=False), change())


@pytest.mark.parametrize("flag", ["shelved", "suppressed", "out_of_service"])
def test_shelved_suppressed_and_out_of_service_changes_are_not_notified(flag: str) -> None:
    rule = RouteRule("r", "all", channels=(HOOK.id,))
    assert plan(change(), [rule], CHANNELS, CONTACTS)
    assert plan(change(**{flag: True}), [rule], CHANNELS, CONTACTS) == {}


def test_audience_is_the_enabled_contacts_of_the_role_at_the_site_or_everywhere() -> None:
    assert audience(CONTACTS, "shift_engineer", "plant-a") == {"wang@example.com", "chen@example.com"}
    assert audience(CONTACTS, "shift_engineer", "plant-b") == {"zhao@example.com", "chen@example.com"}
    assert audience(CONTACTS, "plant_manager", "plant-b") == set()
    assert audience(CONTACTS, "", "plant-a") == set()


def test_channels_of_several_routes_merge_into_one_message_per_channel() -> None:
    engineers = RouteRule("r1", "engineers", audience_role="shift_engineer", channels=(ROLE_MAIL.id, HOOK.id))
    room = RouteRule("r2", "control-room", channels=(MAIL.id, HOOK.id))
    managers = RouteRule("r3", "managers", priorities=frozenset({"critical"}), channels=(ROLE_MAIL.id,))
    targets = plan(change(), [engineers, room, managers], CHANNELS, CONTACTS)
    assert set(targets) == {HOOK.id, MAIL.id, ROLE_MAIL.id}
    assert targets[HOOK.id].routes == ["engineers", "control-room"]
    assert targets[HOOK.id].recipients == set()
    assert targets[MAIL.id].recipients == {"control-room@example.com"}
    assert targets[ROLE_MAIL.id].recipients == {"wang@example.com", "chen@example.com"}


def test_an_email_channel_reaching_nobody_and_disabled_channels_send_nothing() -> None:
    off = ChannelInfo("c-off", "off", ChannelKind.WEBHOOK, enabled=False)
    rule = RouteRule("r", "nobody", audience_role="plant_manager", channels=(ROLE_MAIL.id, off.id))
    assert plan(change(site="plant-b"), [rule], {**CHANNELS, off.id: off}, CONTACTS) == {}


def test_escalation_starts_on_an_unacknowledged_activation_in_scope() -> None:
    rule = RouteRule(
        "r",
        "escalate",
        priorities=frozenset({"high"}),
        escalate_after_min=10,
        escalation_channels=(ROLE_MAIL.id,),
        escalation_role="plant_manager",
    )
    assert starts_escalation(rule, change())
    assert not starts_escalation(rule, change(priority=Priority.LOW))
    assert not starts_escalation(rule, change(action="clear", state=AlarmState.UNACK_RTN))
    assert not starts_escalation(rule, change(shelved=True))
    assert not starts_escalation(RouteRule("r", "no-escalation", channels=(HOOK.id,)), change())
    targets = escalation_plan(change(), rule, CHANNELS, CONTACTS)
    assert {t.channel.id: t.recipients for t in targets.values()} == {ROLE_MAIL.id: {"sun@example.com"}}


@pytest.mark.parametrize(
    ("fields", "waiting"),
    [
        ({}, True),
        ({"action": "clear", "state": AlarmState.UNACK_RTN}, True),  # still to be acknowledged
        ({"action": "acknowledge", "state": AlarmState.ACK_ACTIVE}, False),
        ({"action": "acknowledge", "state": AlarmState.NORMAL}, False),
        ({"action": "shelve", "shelved": True}, False),
        ({"action": "out_of_service", "out_of_service": True}, False),
        ({"action": "suppress", "suppressed": True}, False),
    ],
)
def test_what_ends_the_wait_for_acknowledgement(fields: dict[str, object], waiting: bool) -> None:
    assert waiting_for_acknowledgement(change(**fields)) is waiting
