"""Events put in the repository the way clients put them: captured (`capture.CaptureService`)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from iip.kernel.auth import Principal, Role
from iip.traceability.capture import CaptureService
from iip.traceability.epcis.writer import EPCIS_CONTEXT_URL
from iip.traceability.models import CaptureJob, Event


def capturer(tenant_id: str) -> Principal:
    return Principal("system", "query-tests", "query-tests", tenant_id, Role.ADMIN)


def epcis_document(events: Sequence[Mapping[str, Any]], context: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {
        "@context": [EPCIS_CONTEXT_URL, *([dict(context)] if context else [])],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": "2024-03-01T00:00:00Z",
        "epcisBody": {"eventList": [dict(e) for e in events]},
    }


def captured(session: Session, job: CaptureJob) -> list[Event]:
    assert job.success, job.errors
    return list(session.scalars(select(Event).where(Event.capture_job_id == job.id).order_by(Event.id)))


def capture_events(
    session: Session, tenant_id: str, events: Sequence[Mapping[str, Any]], context: Mapping[str, str] | None = None
) -> list[Event]:
    """The events, captured as one JSON document; those the tenant held already are not among the answer."""
    data = json.dumps(epcis_document(events, context)).encode()
    return captured(session, CaptureService(session).capture(capturer(tenant_id), data))


def capture_file(session: Session, tenant_id: str, path: Path) -> list[Event]:
    """A GS1 example document (JSON or XML), captured."""
    return captured(session, CaptureService(session).capture(capturer(tenant_id), path.read_bytes()))
