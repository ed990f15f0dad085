"""Hash-chained, append-only audit log.

Each entry's hash is SHA-256 over the previous entry's hash and a canonical JSON encoding of the
entry (its sequence number included). A separate anchor row holds the last sequence number and hash,
so removing the newest entries is detected as surely as changing, removing or reordering older ones.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Integer, String, Text, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from iip.kernel.auth import Principal
from iip.kernel.db import Base, utcnow

GENESIS = "0" * 64


class AuditEntry(Base):
    __tablename__ = "kernel_audit_entry"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[dt.datetime] = mapped_column(index=True)
    principal: Mapped[str] = mapped_column(String(200))
    tenant_id: Mapped[str | None] = mapped_column(String(32), index=True)
    action: Mapped[str] = mapped_column(String(200))
    object_type: Mapped[str] = mapped_column(String(100), default="")
    object_id: Mapped[str] = mapped_column(String(200), default="")
    outcome: Mapped[str] = mapped_column(String(20))
    source: Mapped[str] = mapped_column(String(100), default="")
    detail: Mapped[str] = mapped_column(Text, default="")
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditAnchor(Base):
    """One row: the newest sequence number and hash."""

    __tablename__ = "kernel_audit_anchor"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger)
    last_hash: Mapped[str] = mapped_column(String(64))


def canonical(entry: AuditEntry) -> bytes:
    body: dict[str, Any] = {
        "seq": entry.seq,
        "at": entry.at.astimezone(dt.UTC).isoformat(timespec="microseconds"),
        "principal": entry.principal,
        "tenant_id": entry.tenant_id,
        "action": entry.action,
        "object_type": entry.object_type,
        "object_id": entry.object_id,
        "outcome": entry.outcome,
        "source": entry.source,
        "detail": entry.detail,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def chain_hash(prev_hash: str, entry: AuditEntry) -> str:
    return hashlib.sha256(prev_hash.encode() + canonical(entry)).hexdigest()


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """What happened, before it is chained."""

    action: str
    outcome: str = "success"
    object_type: str = ""
    object_id: str = ""
    detail: str = ""
    source: str = ""


def append(
    session: Session, principal: Principal | str, record: AuditRecord, *, tenant_id: str | None = None
) -> AuditEntry:
    """Append one entry in the caller's transaction (commit it to make it durable)."""
    who = principal.label if isinstance(principal, Principal) else principal
    tenant = tenant_id or (principal.tenant_id if isinstance(principal, Principal) else None)
    # The database serialises appends: FOR UPDATE on PostgreSQL, BEGIN IMMEDIATE on SQLite. (A process
    # lock released before commit deadlocks a transaction that appends twice.) populate_existing: a
    # session that outlives a commit may still hold the anchor with values other writers have moved on.
    anchor = session.scalar(
        select(AuditAnchor).where(AuditAnchor.id == 1).with_for_update().execution_options(populate_existing=True)
    )
    if anchor is None:
        anchor = AuditAnchor(id=1, last_seq=0, last_hash=GENESIS)
        session.add(anchor)
    entry = AuditEntry(
        seq=anchor.last_seq + 1,
        at=utcnow(),
        principal=who[:200],
        tenant_id=tenant,
        action=record.action[:200],
        object_type=record.object_type[:100],
        object_id=record.object_id[:200],
        outcome=record.outcome[:20],
        source=record.source[:100],
        detail=record.detail,
        prev_hash=anchor.last_hash,
    )
    entry.hash = chain_hash(anchor.last_hash, entry)
    session.add(entry)
    anchor.last_seq = entry.seq
    anchor.last_hash = entry.hash
    session.flush()
    return entry


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    checked: int
    problem: str = ""
    seq: int | None = None


def iter_entries(session: Session, batch: int = 1000) -> Iterator[AuditEntry]:
    last = 0
    while True:
        query = select(AuditEntry).where(AuditEntry.seq > last).order_by(AuditEntry.seq).limit(batch)
        rows = list(session.scalars(query))
        if not rows:
            return
        yield from rows
        last = rows[-1].seq


def count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(AuditEntry)) or 0


def verify(session: Session, on_progress: Callable[[int], None] | None = None) -> VerifyResult:
    """Walk the chain; name the first entry that was changed, removed or reordered.

    `on_progress(checked)` is called every 1,000 entries (for progress bars).
    """
    prev_hash = GENESIS
    expected_seq = 1
    checked = 0
    for entry in iter_entries(session):
        if entry.seq != expected_seq:
            problem = f"entry {expected_seq} is missing (next present is {entry.seq})"
            return VerifyResult(False, checked, problem, expected_seq)
        if entry.prev_hash != prev_hash:
            problem = f"entry {entry.seq} does not follow entry {entry.seq - 1} (removed or reordered)"
            return VerifyResult(False, checked, problem, entry.seq)
        if chain_hash(prev_hash, entry) != entry.hash:
            return VerifyResult(False, checked, f"entry {entry.seq} was changed (hash mismatch)", entry.seq)
        prev_hash = entry.hash
        expected_seq += 1
        checked += 1
        if on_progress is not None and checked % 1000 == 0:
            on_progress(checked)
    anchor = session.get(AuditAnchor, 1)
    last_seq, last_hash = (anchor.last_seq, anchor.last_hash) if anchor else (0, GENESIS)
    if last_seq != checked or last_hash != prev_hash:
        if last_seq > checked:
            problem = f"entry {checked + 1} is missing (the log ended early; anchor says {last_seq})"
            return VerifyResult(False, checked, problem, checked + 1)
        return VerifyResult(False, checked, f"the anchor does not match entry {checked} (anchor changed)", checked)
    return VerifyResult(True, checked)
