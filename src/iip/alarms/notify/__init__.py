"""Alarm notifications: signed webhooks and e-mail, routed by priority, site and role, escalated, rate limited.

`router` (the API under /api/alarm-notifications) and `notifications_lifespan` (the dispatcher:
the `alarms.changes` consumer and its periodic check) are what the alarms module mounts.
"""

from iip.alarms.notify import models as models
from iip.alarms.notify.dispatcher import notifications_lifespan
from iip.alarms.notify.router import router

__all__ = ["notifications_lifespan", "router"]
