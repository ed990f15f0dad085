"""Tells this process's subscription deliveries that events were committed, so streams go out at once.

Capture calls `announce_capture(session, tenant_id)` after writing events; once that session
commits, every listener added with `listen` is called with the tenants whose events were committed
(in the committing thread: a listener hands over to its own event loop). A rolled-back session
announces nothing. Other processes' captures are not seen here: deliveries also poll, so the signal
only makes them prompt.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy import event
from sqlalchemy.orm import Session

logger = logging.getLogger(__name__)

Listener = Callable[[frozenset[str]], None]

_CAPTURED = "traceability.captured_tenants"  # Session.info key: tenants with uncommitted events
_listeners: set[Listener] = set()
_lock = threading.Lock()


def listen(listener: Listener) -> None:
    with _lock:
        _listeners.add(listener)


def unlisten(listener: Listener) -> None:
    with _lock:
        _listeners.discard(listener)


def announce_capture(session: Session, tenant_id: str) -> None:
    """Call the listeners with `tenant_id` once `session` commits (not if it rolls back)."""
    pending: set[str] = session.info.setdefault(_CAPTURED, set())
    pending.add(tenant_id)
    if not event.contains(session, "after_commit", _after_commit):
        event.listen(session, "after_commit", _after_commit)
        event.listen(session, "after_rollback", _after_rollback)


def _after_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint released: nothing is visible to others before the transaction commits
    tenants = frozenset(session.info.pop(_CAPTURED, ()))
    if not tenants:
        return
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        try:
            listener(tenants)
        except Exception:  # the events are committed: a listener's fault must not reach the capture
            logger.exception("a capture listener failed")


def _after_rollback(session: Session) -> None:
    # A savepoint rolled back may not hold all that was announced: a wake too many costs a round, one
    # too few a poll's wait, so only the whole transaction's rollback forgets.
    if not session.in_nested_transaction():
        session.info.pop(_CAPTURED, None)
