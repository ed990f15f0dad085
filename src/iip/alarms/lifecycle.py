"""The ISA-18.2 / IEC 62682 alarm state machine, as a pure function.

`transition(current, action, at=...)` answers the alarm after the action and the history entry that
records it, or raises a kernel error: `Conflict` for an action the alarm's state does not allow
(acknowledging an acknowledged alarm, shelving an alarm out of service, resetting an alarm that is
not latched), `Invalid` for bad arguments. Nothing here reads a clock or a database.

States (figure 5 of the standard; `AlarmState`), condition and acknowledgement together:

    NORMAL        --activate-->    UNACK_ACTIVE
    UNACK_ACTIVE  --acknowledge--> ACK_ACTIVE       --clear--> NORMAL (LATCHED if latched)
    UNACK_ACTIVE  --clear-->       UNACK_RTN        --acknowledge--> NORMAL (LATCHED if latched)
    UNACK_RTN     --activate-->    UNACK_ACTIVE
    LATCHED       --reset-->       NORMAL
    LATCHED       --activate-->    UNACK_ACTIVE

Latching, precisely: a latched alarm (its rule says `latched: true`, taken at each activation)
does not return to NORMAL by itself. Once its condition has cleared *and* it has been acknowledged,
in either order, it is LATCHED; only an operator's `reset` brings it back to NORMAL. A reset is
refused in any other state: before the acknowledgement (UNACK_RTN) the operator acknowledges first,
while the condition is present (UNACK_ACTIVE, ACK_ACTIVE) there is nothing to reset yet. A new
activation of a LATCHED alarm raises it again (UNACK_ACTIVE) without a reset.

Beside the state, three flags say whether the alarm is announced to the operator: `shelved` (by an
operator, until an expiry), `suppressed` (by design, from the rule's `suppress_when`) and
`out_of_service` (maintenance). They never stop the state from tracking the condition: a shelved
alarm still goes UNACK_ACTIVE, UNACK_RTN ... and its changes are recorded and published with the
flags set, so that notifications and the console can leave them out (`AlarmSnapshot.announced`).
Removing an alarm from service ends its shelving (maintenance takes over); an alarm out of service
cannot be shelved. Comments change nothing but are recorded in the history.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from enum import StrEnum

from iip.alarms.public import AlarmState
from iip.kernel.errors import Conflict, Invalid


class Action(StrEnum):
    """What happened to an alarm. The first four come from the process, the rest from operators."""

    ACTIVATE = "activate"  # the condition became present
    CLEAR = "clear"  # the condition returned to normal
    SUPPRESS = "suppress"  # suppressed by design (the rule's suppress_when became true)
    UNSUPPRESS = "unsuppress"
    ACKNOWLEDGE = "acknowledge"
    RESET = "reset"  # a latched alarm back to normal
    SHELVE = "shelve"
    UNSHELVE = "unshelve"  # by an operator, or when the shelving expires (no actor)
    REMOVE_FROM_SERVICE = "out_of_service"
    RETURN_TO_SERVICE = "return_to_service"
    COMMENT = "comment"


PROCESS_ACTIONS = frozenset({Action.ACTIVATE, Action.CLEAR, Action.SUPPRESS, Action.UNSUPPRESS})
ACTIVE_STATES = frozenset({AlarmState.UNACK_ACTIVE, AlarmState.ACK_ACTIVE})
UNACKNOWLEDGED_STATES = frozenset({AlarmState.UNACK_ACTIVE, AlarmState.UNACK_RTN})
MAX_COMMENT = 2000


@dataclass(frozen=True, slots=True)
class AlarmSnapshot:
    """What the lifecycle knows of one alarm."""

    state: AlarmState = AlarmState.NORMAL
    latched: bool = False
    shelved: bool = False
    shelved_until: dt.datetime | None = None
    shelved_by: str = ""
    suppressed: bool = False
    out_of_service: bool = False
    value: float | None = None
    message: str = ""
    activation_count: int = 0
    acknowledge_count: int = 0
    first_activated_at: dt.datetime | None = None
    last_activated_at: dt.datetime | None = None
    acknowledged_at: dt.datetime | None = None
    acknowledged_by: str = ""
    sequence: int = 0  # of the newest history entry
    last_change_at: dt.datetime | None = None

    @property
    def active(self) -> bool:
        """Whether the condition is present."""
        return self.state in ACTIVE_STATES

    @property
    def acknowledged(self) -> bool:
        return self.state not in UNACKNOWLEDGED_STATES

    @property
    def announced(self) -> bool:
        """Whether the operator is shown it: not shelved, not suppressed by design, in service."""
        return not (self.shelved or self.suppressed or self.out_of_service)


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One transition, with the alarm's state and flags right after it."""

    sequence: int
    action: Action
    state: AlarmState
    shelved: bool
    suppressed: bool
    out_of_service: bool
    at: dt.datetime
    actor: str = ""
    comment: str = ""
    value: float | None = None
    message: str = ""


def redundant(current: AlarmSnapshot, action: Action) -> bool:
    """Whether a process action changes nothing (raising an active alarm, suppressing a suppressed one).

    Such a change is normal (evaluation restarts, rules change version) and is skipped, not refused.
    """
    match action:
        case Action.ACTIVATE:
            return current.active
        case Action.CLEAR:
            return not current.active
        case Action.SUPPRESS:
            return current.suppressed
        case Action.UNSUPPRESS:
            return not current.suppressed
        case _:
            return False


def _after_return(latched: bool) -> AlarmState:
    """The state of an alarm whose condition cleared and that has been acknowledged."""
    return AlarmState.LATCHED if latched else AlarmState.NORMAL


def transition(  # noqa: PLR0912, PLR0915 - one case per action reads best as one table
    current: AlarmSnapshot,
    action: Action,
    *,
    at: dt.datetime,
    actor: str = "",
    comment: str = "",
    value: float | None = None,
    message: str | None = None,
    latched: bool | None = None,
    shelve_until: dt.datetime | None = None,
    max_shelve: dt.timedelta | None = None,
) -> tuple[AlarmSnapshot, HistoryEntry]:
    """The alarm after `action` at `at`, and the history entry recording it.

    `value` and `message` (process actions) replace the alarm's; `latched` (activate) is the rule's
    setting now in force; `shelve_until` (shelve) must lie after `at` and within `max_shelve`.
    Raises `Conflict` when the state does not allow the action, `Invalid` for bad arguments; a
    process action that changes nothing (`redundant`) is refused with `Conflict` code `unchanged`.
    """
    if at.tzinfo is None:
        raise Invalid("the time of an alarm transition must carry a time zone")
    if len(comment) > MAX_COMMENT:
        raise Invalid(f"a comment is at most {MAX_COMMENT} characters")
    if action in PROCESS_ACTIONS and redundant(current, action):
        raise Conflict(f"{UNCHANGED[action]}: {action.value} changes nothing", code="unchanged")
    state = current.state
    changes: dict[str, object] = {}
    match action:
        case Action.ACTIVATE:
            state = AlarmState.UNACK_ACTIVE
            changes.update(
                activation_count=current.activation_count + 1,
                first_activated_at=current.first_activated_at or at,
                last_activated_at=at,
            )
            if latched is not None:
                changes["latched"] = latched
        case Action.CLEAR:
            # Unacknowledged, it waits for the operator; acknowledged, it is done (or latched).
            state = AlarmState.UNACK_RTN if state is AlarmState.UNACK_ACTIVE else _after_return(current.latched)
        case Action.SUPPRESS:
            changes["suppressed"] = True
        case Action.UNSUPPRESS:
            changes["suppressed"] = False
        case Action.ACKNOWLEDGE:
            if state is AlarmState.UNACK_ACTIVE:
                state = AlarmState.ACK_ACTIVE
            elif state is AlarmState.UNACK_RTN:
                state = _after_return(current.latched)
            else:
                raise Conflict(
                    f"the alarm is {_describe(current)}: there is nothing to acknowledge", code="already_acknowledged"
                )
            changes.update(acknowledge_count=current.acknowledge_count + 1, acknowledged_at=at, acknowledged_by=actor)
        case Action.RESET:
            if state is not AlarmState.LATCHED:
                raise Conflict(_reset_refusal(current), code="not_latched")
            state = AlarmState.NORMAL
        case Action.SHELVE:
            if current.out_of_service:
                raise Conflict(
                    "the alarm is out of service: return it to service before shelving it", code="out_of_service"
                )
            if current.shelved:
                raise Conflict(
                    f"the alarm is already shelved until {_iso(current.shelved_until)}: unshelve it first",
                    code="already_shelved",
                )
            if shelve_until is None or shelve_until.tzinfo is None:
                raise Invalid("shelving needs an expiry time with a time zone")
            if shelve_until <= at:
                raise Invalid("a shelving must end in the future")
            if max_shelve is not None and shelve_until - at > max_shelve:
                raise Invalid(f"an alarm may be shelved for at most {_duration(max_shelve)}", code="shelve_too_long")
            changes.update(shelved=True, shelved_until=shelve_until, shelved_by=actor)
        case Action.UNSHELVE:
            if not current.shelved:
                raise Conflict("the alarm is not shelved", code="not_shelved")
            changes.update(shelved=False, shelved_until=None, shelved_by="")
        case Action.REMOVE_FROM_SERVICE:
            if current.out_of_service:
                raise Conflict("the alarm is already out of service", code="already_out_of_service")
            changes.update(out_of_service=True, shelved=False, shelved_until=None, shelved_by="")
        case Action.RETURN_TO_SERVICE:
            if not current.out_of_service:
                raise Conflict("the alarm is in service", code="in_service")
            changes["out_of_service"] = False
        case Action.COMMENT:
            if not comment.strip():
                raise Invalid("a comment needs some text")
    if action in PROCESS_ACTIONS:
        if value is not None:
            changes["value"] = value
        if message is not None:
            changes["message"] = message
    sequence = current.sequence + 1
    after = dataclasses.replace(current, state=state, sequence=sequence, last_change_at=at, **changes)  # type: ignore[arg-type]
    entry = HistoryEntry(
        sequence=sequence,
        action=action,
        state=after.state,
        shelved=after.shelved,
        suppressed=after.suppressed,
        out_of_service=after.out_of_service,
        at=at,
        actor=actor,
        comment=comment,
        value=after.value,
        message=after.message,
    )
    return after, entry


STATE_WORDS = {
    AlarmState.NORMAL: "normal",
    AlarmState.UNACK_ACTIVE: "active and unacknowledged",
    AlarmState.ACK_ACTIVE: "active and acknowledged",
    AlarmState.UNACK_RTN: "returned to normal, unacknowledged",
    AlarmState.LATCHED: "latched (acknowledged, waiting for reset)",
}
UNCHANGED = {
    Action.ACTIVATE: "the alarm's condition is already present",
    Action.CLEAR: "the alarm's condition is already clear",
    Action.SUPPRESS: "the alarm is already suppressed",
    Action.UNSUPPRESS: "the alarm is not suppressed",
}


def _describe(current: AlarmSnapshot) -> str:
    return STATE_WORDS[current.state]


def _reset_refusal(current: AlarmSnapshot) -> str:
    if not current.latched:
        return "only a latched alarm can be reset, and this one is not latched"
    if current.state is AlarmState.UNACK_RTN:
        return "the latched alarm is not acknowledged yet: acknowledge it, then reset it"
    if current.active:
        return "the latched alarm's condition is still present: it can be reset once it has returned to normal"
    return "the alarm is normal: there is nothing to reset"


def _iso(at: dt.datetime | None) -> str:
    return at.isoformat() if at is not None else "further notice"


def _duration(span: dt.timedelta) -> str:
    hours = span / dt.timedelta(hours=1)
    return f"{hours:g} hours" if hours != 1 else "1 hour"
