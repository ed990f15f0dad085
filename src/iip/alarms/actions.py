"""The operator actions on one alarm that take nothing but an optional comment.

The API and the console both offer each of them as `POST …/{alarm_id}/<segment>`; this table is
the one place that says which there are, who may take them and what they do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from iip.alarms.models import Alarm
from iip.alarms.service import AlarmService


@dataclass(frozen=True)
class CommentedAction:
    name: str  # the route's name, so also its operation id
    segment: str  # the last part of its path
    permission: str
    run: Callable[[AlarmService, str, str], Alarm]  # (service, alarm id, comment)
    summary: str  # what the API documentation says of it


COMMENTED_ACTIONS = (
    CommentedAction(
        "acknowledge",
        "acknowledge",
        "alarms.operate",
        AlarmService.acknowledge,
        "Acknowledge an alarm (409 when there is nothing to acknowledge).",
    ),
    CommentedAction(
        "unshelve", "unshelve", "alarms.operate", AlarmService.unshelve, "Return a shelved alarm to its live state."
    ),
    CommentedAction(
        "reset",
        "reset",
        "alarms.operate",
        AlarmService.reset,
        "Reset a latched alarm that has returned to normal and been acknowledged.",
    ),
    CommentedAction(
        "remove_from_service",
        "out-of-service",
        "alarms.write",
        AlarmService.remove_from_service,
        "Take an alarm out of service (maintenance): it keeps tracking its condition, unannounced.",
    ),
    CommentedAction(
        "return_to_service",
        "return-to-service",
        "alarms.write",
        AlarmService.return_to_service,
        "Return an alarm to service: it is announced again as its condition stands.",
    ),
)
