"""The ISA-18.2 state machine: every action from every state, valid or refused, and the flags."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from iip.alarms.lifecycle import Action, AlarmSnapshot, redundant, transition
from iip.alarms.public import AlarmState
from iip.kernel.errors import Conflict, Invalid

T0 = dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.UTC)
S = AlarmState
N, UA, AA, RTN, L = S.NORMAL, S.UNACK_ACTIVE, S.ACK_ACTIVE, S.UNACK_RTN, S.LATCHED
OPERATOR = "user:op"

# (state, latched, action) -> state after; None: refused with Conflict. Every state x action of the
# condition and acknowledgement, both for ordinary and latched alarms.
STATE_TABLE: dict[tuple[AlarmState, bool, Action], AlarmState | None] = {}
for latched in (False, True):
    back = L if latched else N  # returned to normal and acknowledged
    STATE_TABLE.update(
        {
            (N, latched, Action.ACTIVATE): UA,
            (N, latched, Action.CLEAR): None,
            (N, latched, Action.ACKNOWLEDGE): None,
            (N, latched, Action.RESET): None,
            (UA, latched, Action.ACTIVATE): None,
            (UA, latched, Action.CLEAR): RTN,
            (UA, latched, Action.ACKNOWLEDGE): AA,
            (UA, latched, Action.RESET): None,
            (AA, latched, Action.ACTIVATE): None,
            (AA, latched, Action.CLEAR): back,
            (AA, latched, Action.ACKNOWLEDGE): None,
            (AA, latched, Action.RESET): None,
            (RTN, latched, Action.ACTIVATE): UA,
            (RTN, latched, Action.CLEAR): None,
            (RTN, latched, Action.ACKNOWLEDGE): back,
            (RTN, latched, Action.RESET): None,
        }
    )
# Only a latched alarm is ever LATCHED.
STATE_TABLE.update(
    {
        (L, True, Action.ACTIVATE): UA,
        (L, True, Action.CLEAR): None,
        (L, True, Action.ACKNOWLEDGE): None,
        (L, True, Action.RESET): N,
    }
)


def snapshot(state: AlarmState = N, **flags: object) -> AlarmSnapshot:
    return dataclasses.replace(AlarmSnapshot(state=state, sequence=7), **flags)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("state", "latched", "action", "after"),
    [(state, latched, action, after) for (state, latched, action), after in STATE_TABLE.items()],
    ids=[f"{s.value}-{'latched' if la else 'plain'}-{a.value}" for (s, la, a) in STATE_TABLE],
)
def test_condition_and_acknowledgement_transitions(
    state: AlarmState, latched: bool, action: Action, after: AlarmState | None
) -> None:
    current = snapshot(state, latched=latched)
    at = T0 + dt.timedelta(minutes=1)
    if after is None:
        with pytest.raises(Conflict) as refused:
            transition(current, action, at=at, actor=OPERATOR)
        assert refused.value.message  # a sentence, not a bare code
        return
    result, entry = transition(
        current, action, at=at, actor=OPERATOR, latched=latched if action is Action.ACTIVATE else None
    )
    assert result.state is after
    assert entry.state is after
    assert entry.action is action
    assert entry.sequence == result.sequence == 8
    assert entry.at == result.last_change_at == at
    assert result.latched is latched


def test_the_refusals_say_why() -> None:
    with pytest.raises(Conflict, match="nothing to acknowledge") as acked:
        transition(snapshot(AA), Action.ACKNOWLEDGE, at=T0)
    assert acked.value.instance_code == "already_acknowledged"
    with pytest.raises(Conflict, match="not latched") as plain:
        transition(snapshot(N), Action.RESET, at=T0)
    assert plain.value.instance_code == "not_latched"
    with pytest.raises(Conflict, match="acknowledge it, then reset"):
        transition(snapshot(RTN, latched=True), Action.RESET, at=T0)
    with pytest.raises(Conflict, match="still present"):
        transition(snapshot(AA, latched=True), Action.RESET, at=T0)
    with pytest.raises(Conflict, match="already present") as again:
        transition(snapshot(UA), Action.ACTIVATE, at=T0)
    assert again.value.instance_code == "unchanged"


def test_a_latched_alarm_waits_for_reset_whichever_came_first() -> None:
    """Acknowledged then cleared, or cleared then acknowledged: LATCHED either way, NORMAL only on reset."""
    raised, _ = transition(AlarmSnapshot(), Action.ACTIVATE, at=T0, latched=True)
    acked, _ = transition(raised, Action.ACKNOWLEDGE, at=T0, actor=OPERATOR)
    first, _ = transition(acked, Action.CLEAR, at=T0)
    returned, _ = transition(raised, Action.CLEAR, at=T0)
    second, _ = transition(returned, Action.ACKNOWLEDGE, at=T0, actor=OPERATOR)
    assert first.state is second.state is L
    reset, entry = transition(first, Action.RESET, at=T0, actor=OPERATOR, comment="checked the valve")
    assert reset.state is N
    assert entry.comment == "checked the valve"
    # A new activation of a latched alarm raises it again without a reset.
    again, _ = transition(second, Action.ACTIVATE, at=T0, latched=True)
    assert again.state is UA


def test_activation_counts_and_times() -> None:
    first_at, second_at = T0, T0 + dt.timedelta(hours=1)
    one, _ = transition(AlarmSnapshot(), Action.ACTIVATE, at=first_at, value=9.5, message="high")
    back, _ = transition(one, Action.CLEAR, at=first_at + dt.timedelta(minutes=5), value=4.0)
    two, entry = transition(back, Action.ACTIVATE, at=second_at, value=10.0)
    assert (two.activation_count, two.first_activated_at, two.last_activated_at) == (2, first_at, second_at)
    assert (two.value, entry.value, two.message) == (10.0, 10.0, "high")  # no new message keeps the old one
    acked, _ = transition(two, Action.ACKNOWLEDGE, at=second_at, actor=OPERATOR)
    assert (acked.acknowledge_count, acked.acknowledged_by, acked.acknowledged_at) == (1, OPERATOR, second_at)
    assert acked.value == 10.0  # an operator action leaves the process value alone


# --- flags


def test_shelving_keeps_tracking_the_condition_unannounced() -> None:
    until = T0 + dt.timedelta(hours=2)
    shelved, entry = transition(
        snapshot(N), Action.SHELVE, at=T0, actor=OPERATOR, comment="sensor being replaced", shelve_until=until
    )
    assert (shelved.shelved, shelved.shelved_until, shelved.shelved_by) == (True, until, OPERATOR)
    assert entry.shelved
    assert not shelved.announced
    raised, entry = transition(shelved, Action.ACTIVATE, at=T0 + dt.timedelta(minutes=1))
    assert raised.state is UA
    assert entry.shelved
    assert not raised.announced
    back, entry = transition(raised, Action.UNSHELVE, at=T0 + dt.timedelta(minutes=2))
    assert back.state is UA
    assert not back.shelved
    assert back.shelved_until is None
    assert back.announced
    assert entry.action is Action.UNSHELVE
    assert not entry.shelved


@pytest.mark.parametrize(
    ("flags", "action", "code"),
    [
        ({"shelved": True, "shelved_until": T0 + dt.timedelta(hours=1)}, Action.SHELVE, "already_shelved"),
        ({"out_of_service": True}, Action.SHELVE, "out_of_service"),
        ({}, Action.UNSHELVE, "not_shelved"),
        ({"out_of_service": True}, Action.REMOVE_FROM_SERVICE, "already_out_of_service"),
        ({}, Action.RETURN_TO_SERVICE, "in_service"),
        ({"suppressed": True}, Action.SUPPRESS, "unchanged"),
        ({}, Action.UNSUPPRESS, "unchanged"),
    ],
)
def test_flag_actions_refused(flags: dict[str, object], action: Action, code: str) -> None:
    with pytest.raises(Conflict) as refused:
        transition(snapshot(UA, **flags), action, at=T0, actor=OPERATOR, shelve_until=T0 + dt.timedelta(hours=1))
    assert refused.value.instance_code == code


@pytest.mark.parametrize(
    ("until", "limit", "match"),
    [
        (None, None, "expiry"),
        (T0, None, "future"),
        (T0 - dt.timedelta(seconds=1), None, "future"),
        (T0 + dt.timedelta(hours=25), dt.timedelta(hours=24), "at most 24 hours"),
        (dt.datetime(2026, 3, 2, 9, 0), None, "time zone"),
    ],
)
def test_shelving_needs_a_future_expiry_within_the_limit(
    until: dt.datetime | None, limit: dt.timedelta | None, match: str
) -> None:
    with pytest.raises(Invalid, match=match):
        transition(snapshot(UA), Action.SHELVE, at=T0, shelve_until=until, max_shelve=limit)


def test_the_longest_shelving_allowed_is_accepted() -> None:
    limit = dt.timedelta(hours=24)
    shelved, _ = transition(snapshot(UA), Action.SHELVE, at=T0, shelve_until=T0 + limit, max_shelve=limit)
    assert shelved.shelved_until == T0 + limit


def test_suppression_by_design_and_out_of_service() -> None:
    suppressed, entry = transition(snapshot(N), Action.SUPPRESS, at=T0)
    assert suppressed.suppressed
    assert entry.suppressed
    assert not suppressed.announced
    raised, entry = transition(suppressed, Action.ACTIVATE, at=T0)
    assert raised.state is UA
    assert entry.suppressed
    released, _ = transition(raised, Action.UNSUPPRESS, at=T0)
    assert released.announced
    assert released.state is UA

    shelved, _ = transition(snapshot(UA), Action.SHELVE, at=T0, shelve_until=T0 + dt.timedelta(hours=1))
    away, entry = transition(shelved, Action.REMOVE_FROM_SERVICE, at=T0, actor=OPERATOR, comment="maintenance")
    assert away.out_of_service
    assert entry.out_of_service
    assert not away.announced
    assert not away.shelved
    assert away.shelved_until is None
    cleared, _ = transition(away, Action.CLEAR, at=T0)
    assert cleared.state is RTN
    assert cleared.out_of_service
    back, _ = transition(cleared, Action.RETURN_TO_SERVICE, at=T0, actor=OPERATOR)
    assert not back.out_of_service
    assert back.state is RTN
    assert back.announced


def test_comments_change_nothing_but_the_history() -> None:
    current = snapshot(AA, value=3.0)
    after, entry = transition(current, Action.COMMENT, at=T0, actor=OPERATOR, comment="field check done")
    assert dataclasses.replace(after, sequence=current.sequence, last_change_at=None) == current
    assert (entry.action, entry.comment, entry.state) == (Action.COMMENT, "field check done", AA)
    with pytest.raises(Invalid, match="needs some text"):
        transition(current, Action.COMMENT, at=T0, comment="   ")
    with pytest.raises(Invalid, match="at most"):
        transition(current, Action.COMMENT, at=T0, comment="x" * 2001)


def test_times_must_carry_a_zone() -> None:
    with pytest.raises(Invalid, match="time zone"):
        transition(snapshot(N), Action.ACTIVATE, at=dt.datetime(2026, 1, 1))


@pytest.mark.parametrize(
    ("current", "action", "expected"),
    [
        (snapshot(UA), Action.ACTIVATE, True),
        (snapshot(AA), Action.ACTIVATE, True),
        (snapshot(RTN), Action.ACTIVATE, False),
        (snapshot(N), Action.CLEAR, True),
        (snapshot(L, latched=True), Action.CLEAR, True),
        (snapshot(AA), Action.CLEAR, False),
        (snapshot(N, suppressed=True), Action.SUPPRESS, True),
        (snapshot(N), Action.UNSUPPRESS, True),
        (snapshot(AA), Action.ACKNOWLEDGE, False),  # operator actions are refused, never redundant
    ],
)
def test_redundant_process_changes(current: AlarmSnapshot, action: Action, expected: bool) -> None:
    assert redundant(current, action) is expected
