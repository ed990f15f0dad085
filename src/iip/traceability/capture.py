"""Capture: EPCIS documents (JSON/JSON-LD or XML) validated, hashed and stored with their lookup rows.

One call is one capture job. The document is read and validated whole (`capture_validation`):
a problem outside every event (unreadable, the envelope breaking the schema) refuses the document
(`DocumentRejected`, no job). Otherwise each event is valid or not, and the job's mode decides, as
the EPCIS REST binding's `GS1-Capture-Error-Behaviour` header does:

- `rollback` (the default): one invalid event and the job fails; no event of the document is stored;
- `proceed`: the valid events are stored, each invalid one is reported in the job's errors.

Each stored event gets its CBV 2.0 event hash; its `event_id` is the `eventID` it carries, or the
hash. An event whose hash the tenant already holds, or that came earlier in the same document, is a
duplicate: dropped and counted (the insert skips a hash the tenant holds, so two captures racing
with one event store it once). The events of a job are written in one savepoint (all or none) with
batched inserts, chunk by chunk as they are prepared (`capture_workers`: in worker processes for
large documents, so preparing and writing overlap); the job row is written beside the savepoint
and survives a failed write, so its status reads back. The header's master data (`master_data`) is
written last in the same savepoint: kept when the job keeps its events, undone when it rolls back.
Everything runs before the call returns, so a job is finished when its id is handed out.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import and_, or_, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, SessionTransaction

from iip.kernel.auth import AccessService, Principal, new_id
from iip.kernel.db import utcnow
from iip.kernel.errors import Conflict, DomainError, Invalid, NotFound
from iip.traceability import master_data
from iip.traceability.capture_storage import RepositoryRefused, capture_page_cache, insert_events, insert_lookups
from iip.traceability.capture_validation import DocumentCheck, Syntax, check_document
from iip.traceability.capture_workers import (
    JobRows,
    Row,
    Stored,
    collector_paused,
    dumps,
    prepared_chunks,
    stored_time,
)
from iip.traceability.epcis.documents import EVENT_TYPES, MAX_DOCUMENT_BYTES, EpcisFormatError
from iip.traceability.epcis.validation import ValidationIssue
from iip.traceability.models import ACTOR_LENGTH, CaptureJob, Event
from iip.traceability.subscription_signal import announce_capture

MODES = ("rollback", "proceed")
CAPTURE_LIMIT = 20_000  # events per document (GS1-EPCIS-Capture-Limit)
CAPTURE_FILE_SIZE_LIMIT = MAX_DOCUMENT_BYTES  # bytes per document (GS1-EPCIS-Capture-File-Size-Limit)
MAX_REPORTED_ERRORS = 1_000  # problems kept per job or refusal; a last one says how many more there were


class DocumentRejected(DomainError):
    """The document as a whole is unreadable or invalid; `errors` locates every problem (HTTP 400)."""

    code = "epcis_validation"
    title = "Invalid EPCIS document"

    def __init__(self, message: str, issues: Sequence[ValidationIssue]) -> None:
        super().__init__(message, errors=reported(issues))
        self.issues = list(issues)


class CaptureTooLarge(DomainError):
    """More events or bytes than one capture takes (HTTP 413 with the limits in headers)."""

    code = "capture_too_large"
    title = "Capture payload too large"


def reported(issues: Sequence[ValidationIssue]) -> list[dict[str, str]]:
    """Issues as stored and answered: location and message, at most MAX_REPORTED_ERRORS and a count of the rest."""
    out = [{"location": i.location, "message": i.message} for i in issues[:MAX_REPORTED_ERRORS]]
    if len(issues) > MAX_REPORTED_ERRORS:
        out.append({"location": "", "message": f"... and {len(issues) - MAX_REPORTED_ERRORS} more problems"})
    return out


@dataclass(frozen=True)
class JobPage:
    jobs: list[CaptureJob]
    next_token: str | None


class _Writer:
    """Writes one job's prepared events, chunk by chunk, in one savepoint; counts what it stored and dropped."""

    def __init__(self, session: Session, tenant_id: str, job_id: str | None, check: DocumentCheck) -> None:
        self.session = session
        self.tenant_id = tenant_id
        self.job_id = job_id
        text_times = session.get_bind().dialect.name != "postgresql"
        # Every row of the job carries these; the workers put them in, in the form the database takes.
        self.job = JobRows(
            tenant_id, job_id, stored_time(utcnow(), text_times), dumps(check.document.context), text_times
        )
        self.seen: set[str] = set()  # hashes of this document written or dropped so far
        self.stored: list[int] = []  # row ids, in document order
        self.duplicates = 0
        self.savepoint: SessionTransaction | None = None

    def write(self, chunk: Sequence[Stored]) -> None:
        if self.savepoint is None or not self.savepoint.is_active:
            self.savepoint = self.session.begin_nested()
        fresh: list[Stored] = []
        seen = self.seen
        for event in chunk:
            if event[0] in seen:
                self.duplicates += 1  # the first of a document's duplicates is kept
            else:
                seen.add(event[0])
                fresh.append(event)
        if not fresh:
            return
        ids = insert_events(self.session, [event[1] for event in fresh])
        epcs: list[Row] = []
        links: list[Row] = []
        reports: list[Row] = []
        for event_hash, _, event_epcs, event_links, event_reports in fresh:
            row_id = ids.get(event_hash)
            if row_id is None:  # the tenant holds it already
                self.duplicates += 1
                continue
            self.stored.append(row_id)
            last = (row_id,)
            epcs += [row + last for row in event_epcs]
            links += [row + last for row in event_links]
            reports += [row + last for row in event_reports]
        insert_lookups(self.session, (epcs, links, reports))
        announce_capture(self.session, self.tenant_id)  # wakes subscription deliveries once committed

    def write_master_data(self, check: DocumentCheck) -> None:
        """The header's master data, in the events' savepoint: stored with them, or not at all."""
        if not check.master_data:
            return
        if self.savepoint is None or not self.savepoint.is_active:
            self.savepoint = self.session.begin_nested()
        master_data.store(
            self.session, self.tenant_id, check.master_data, check.document.context, job_id=self.job_id, now=utcnow()
        )

    def commit(self) -> None:
        if self.savepoint is not None and self.savepoint.is_active:
            self.savepoint.commit()

    def discard(self) -> None:
        """Undo every event written (the job row, outside the savepoint, stays)."""
        if self.savepoint is not None and self.savepoint.is_active:
            self.savepoint.rollback()
        self.stored, self.duplicates, self.seen = [], 0, set()


def _tokens(value: str) -> tuple[dt.datetime, str]:
    try:
        created, _, job_id = base64.urlsafe_b64decode(value.encode() + b"==").decode().partition("|")
        moment = dt.datetime.fromisoformat(created)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise Invalid("nextPageToken is not one this server gave", code="bad_page_token") from None
    if moment.tzinfo is None or not job_id:
        raise Invalid("nextPageToken is not one this server gave", code="bad_page_token")
    return moment, job_id


def _token(job: CaptureJob) -> str:
    raw = f"{job.created_at.isoformat()}|{job.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


class CaptureService:
    """Capture jobs of the principal's tenant (platform operators: any tenant)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    # --- capture

    def capture(
        self,
        actor: Principal,
        data: bytes,
        *,
        syntax: Syntax | None = None,
        mode: str = "rollback",
        tenant_id: str | None = None,
    ) -> CaptureJob:
        """Capture a document; the job returned is finished (its `success` says how it went)."""
        actor.require("traceability.write")
        if mode not in MODES:
            raise Invalid(f"capture error behaviour must be one of {', '.join(MODES)}, not {mode!r}", code="bad_mode")
        tenant = self._tenant_for(actor, tenant_id)
        with collector_paused():
            return self._capture(actor, data, syntax, mode, tenant)

    def _capture(self, actor: Principal, data: bytes, syntax: Syntax | None, mode: str, tenant: str) -> CaptureJob:
        check = self._check(data, syntax)
        events = check.document.events
        if len(events) > CAPTURE_LIMIT:
            raise CaptureTooLarge(f"{len(events)} events in one capture; at most {CAPTURE_LIMIT} are taken")
        job = CaptureJob(
            id=new_id(),
            tenant_id=tenant,
            mode=mode,
            running=True,
            success=False,
            event_count=len(events),
            captured_count=0,
            duplicate_count=0,
            errors=[],
            created_by=actor.label[:ACTOR_LENGTH],
            created_at=utcnow(),
        )
        self.session.add(job)
        self.session.flush()
        writer = _Writer(self.session, tenant, job.id, check)
        with capture_page_cache(self.session, len(events)):
            issues = self._write(writer, check, mode)
        return self._finish(job, issues, stored=len(writer.stored), duplicates=writer.duplicates)

    def _write(self, writer: _Writer, check: DocumentCheck, mode: str) -> list[ValidationIssue]:
        """Prepare and write a document's events and master data as the mode says: every problem found."""
        issues: list[ValidationIssue] = []
        refused: ValidationIssue | None = None
        for chunk in prepared_chunks(check, writer.job):
            issues += [ValidationIssue(where, message) for where, message in chunk.problems]
            if refused is not None or (issues and mode == "rollback"):
                continue  # every problem is still reported; nothing more is written
            try:
                writer.write(chunk.stored)
            except (DBAPIError, RepositoryRefused) as err:
                writer.discard()
                reason = type(err.orig).__name__ if isinstance(err, DBAPIError) else err.reason
                refused = ValidationIssue("", f"the repository refused the events: {reason}")
        if refused is None and not (issues and mode == "rollback"):
            try:
                writer.write_master_data(check)
            except DBAPIError as err:
                refused = ValidationIssue("", f"the repository refused the master data: {type(err.orig).__name__}")
        if refused is not None:
            issues.append(refused)
        if (issues and mode == "rollback") or refused is not None:
            writer.discard()
        else:
            writer.commit()
        return issues

    def capture_event(
        self, actor: Principal, data: bytes, *, syntax: Syntax | None = None, tenant_id: str | None = None
    ) -> Event:
        """Capture one event given on its own (`POST /events`): stored, or refused whole; a duplicate conflicts."""
        actor.require("traceability.write")
        tenant = self._tenant_for(actor, tenant_id)
        check = self._check(data, syntax)
        if check.document.type not in EVENT_TYPES:
            raise DocumentRejected(
                "one event is expected here, not a document; capture documents at /capture",
                [ValidationIssue("/type", f"{check.document.type} is not an event type")],
            )
        writer = _Writer(self.session, tenant, None, check)
        [chunk] = prepared_chunks(check, writer.job)
        if chunk.problems:
            issues = [ValidationIssue(where, message) for where, message in chunk.problems]
            raise DocumentRejected(f"the event is invalid: {issues[0].location or '/'}: {issues[0].message}", issues)
        writer.write(chunk.stored)
        writer.commit()
        if not writer.stored:
            event_hash = chunk.stored[0][0]
            existing = self.session.scalar(
                select(Event.event_id).where(Event.tenant_id == tenant, Event.event_hash == event_hash)
            )
            raise Conflict("this event is captured already", code="event_exists", eventID=existing)
        row = self.session.get(Event, writer.stored[0])
        if row is None:  # pragma: no cover - inserted in this transaction
            raise NotFound("the event just stored is missing")
        return row

    def _check(self, data: bytes, syntax: Syntax | None) -> DocumentCheck:
        if len(data) > CAPTURE_FILE_SIZE_LIMIT:
            raise CaptureTooLarge(f"document of {len(data)} bytes; at most {CAPTURE_FILE_SIZE_LIMIT} are taken")
        try:
            check = check_document(data, syntax, max_bytes=CAPTURE_FILE_SIZE_LIMIT)
        except EpcisFormatError as err:
            raise DocumentRejected(str(err), [ValidationIssue("", str(err))]) from None
        if check.document_issues:
            first = check.document_issues[0]
            count = len(check.document_issues)
            raise DocumentRejected(
                f"{count} problem{'s' if count > 1 else ''} in the document; first at {first.location or '/'}: "
                f"{first.message}",
                check.document_issues,
            )
        return check

    def _finish(self, job: CaptureJob, issues: list[ValidationIssue], *, stored: int, duplicates: int) -> CaptureJob:
        job.errors = reported(issues)
        job.success = not issues
        job.running = False
        job.captured_count = stored
        job.duplicate_count = duplicates
        job.finished_at = utcnow()
        self.session.flush()
        return job

    # --- jobs

    def _tenant_for(self, actor: Principal, tenant_id: str | None) -> str:
        """The tenant events go to: the actor's own, or (platform operators) the one named."""
        return AccessService(self.session).tenant_to_write(actor, tenant_id)

    def job(self, actor: Principal, job_id: str) -> CaptureJob:
        actor.require("traceability.read")
        job = self.session.get(CaptureJob, job_id)
        if job is None or not (actor.is_platform or job.tenant_id == actor.tenant_id):
            raise NotFound(f"capture job '{job_id}' not found")
        return job

    def jobs(
        self, actor: Principal, *, per_page: int = 30, page_token: str | None = None, tenant_id: str | None = None
    ) -> JobPage:
        """Capture jobs, newest first, a page at a time (keyset: the token names the last job shown)."""
        actor.require("traceability.read")
        query = select(CaptureJob)
        scope = (tenant_id or None) if actor.is_platform else actor.tenant_id
        if scope is not None:
            query = query.where(CaptureJob.tenant_id == scope)
        if page_token:
            created, last_id = _tokens(page_token)
            query = query.where(
                or_(
                    CaptureJob.created_at < created,
                    and_(CaptureJob.created_at == created, CaptureJob.id < last_id),
                )
            )
        query = query.order_by(CaptureJob.created_at.desc(), CaptureJob.id.desc()).limit(per_page + 1)
        jobs = list(self.session.scalars(query))
        if len(jobs) > per_page:
            return JobPage(jobs[:per_page], _token(jobs[per_page - 1]))
        return JobPage(jobs, None)
