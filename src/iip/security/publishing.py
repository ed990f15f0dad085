"""New alerts onto the alarms context's bus, once the transaction that stored them has committed.

Each event's message id is `security-alert:<alert id>`, so a repeated publication is dropped.
Whoever stores alerts (an upload, the live monitor) calls this after its commit; an event the bus
refuses is logged and lost to the alarms context, while the alert stands and is listed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from iip.alarms.public import ALARM_EVENTS, AlarmEvent
from iip.kernel.bus import Bus, BusError

logger = logging.getLogger(__name__)


def message_id(event: AlarmEvent) -> str:
    return f"security-alert:{event.details['alert_id']}"


async def publish_alert_events(bus: Bus, events: Sequence[AlarmEvent]) -> int:
    """Publish the events; how many the bus took."""
    published = 0
    for event in events:
        try:
            await bus.publish(ALARM_EVENTS, event, message_id=message_id(event))
        except (BusError, OSError) as err:
            logger.warning("could not publish security alert %s: %s", event.details.get("alert_id"), err)
        else:
            published += 1
    return published
