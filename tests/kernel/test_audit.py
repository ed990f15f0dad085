"""The hash-chained audit log: a valid chain, and every kind of tampering made directly in the database."""

from __future__ import annotations

from itertools import pairwise

import pytest
from sqlalchemy import select, text

from iip.kernel import audit
from iip.kernel.auth import Principal, Role
from iip.kernel.db import Database

ENTRIES = 6


def fill(db: Database, count: int = ENTRIES) -> None:
    for i in range(1, count + 1):
        with db.session() as session:
            audit.append(
                session,
                f"test:user-{i}",
                audit.AuditRecord(action=f"thing.do-{i}", object_type="thing", object_id=str(i), detail=f"detail {i}"),
                tenant_id=f"tenant{i % 2}",
            )


def verify(db: Database) -> audit.VerifyResult:
    with db.session() as session:
        return audit.verify(session)


def execute(db: Database, *statements: str) -> None:
    with db.engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))


def test_empty_log_verifies(migrated_db: Database) -> None:
    assert verify(migrated_db) == audit.VerifyResult(ok=True, checked=0)


def test_append_builds_a_valid_chain(migrated_db: Database) -> None:
    fill(migrated_db)
    with migrated_db.session() as session:
        entries = list(session.scalars(select(audit.AuditEntry).order_by(audit.AuditEntry.seq)))
        anchor = session.get(audit.AuditAnchor, 1)

    assert [e.seq for e in entries] == list(range(1, ENTRIES + 1))
    assert entries[0].prev_hash == audit.GENESIS
    for before, after in pairwise(entries):
        assert after.prev_hash == before.hash
    for entry in entries:
        assert entry.hash == audit.chain_hash(entry.prev_hash, entry)
        assert entry.at.utcoffset() is not None
    assert len({e.hash for e in entries}) == ENTRIES
    assert anchor is not None
    assert (anchor.last_seq, anchor.last_hash) == (ENTRIES, entries[-1].hash)
    assert verify(migrated_db) == audit.VerifyResult(ok=True, checked=ENTRIES)


def test_append_takes_principal_and_tenant_from_a_principal(migrated_db: Database) -> None:
    principal = Principal("apikey", "k1", "ingest", "t-42", Role.OPERATOR)
    with migrated_db.session() as session:
        entry = audit.append(session, principal, audit.AuditRecord(action="device.command", outcome="failure"))
    assert (entry.principal, entry.tenant_id, entry.outcome) == ("apikey:ingest", "t-42", "failure")


def test_uncommitted_append_leaves_no_trace(migrated_db: Database) -> None:
    def append_then_fail() -> None:
        with migrated_db.session() as session:
            audit.append(session, "test:user", audit.AuditRecord(action="rolled.back"))
            raise RuntimeError

    fill(migrated_db, 2)
    with pytest.raises(RuntimeError):
        append_then_fail()
    fill(migrated_db, 1)
    assert verify(migrated_db) == audit.VerifyResult(ok=True, checked=3)


def test_long_lived_session_stays_on_the_chain(migrated_db: Database) -> None:
    # A session that commits and carries on must see appends made elsewhere in between.
    long_lived = migrated_db.sessions()
    try:
        audit.append(long_lived, "test:worker", audit.AuditRecord(action="one"))
        long_lived.commit()
        held = long_lived.get(audit.AuditAnchor, 1)  # keeps the anchor in the session's identity map
        long_lived.commit()
        fill(migrated_db, 1)
        audit.append(long_lived, "test:worker", audit.AuditRecord(action="three"))
        long_lived.commit()
    finally:
        long_lived.close()
    assert held is not None
    assert held.last_seq == 3
    assert verify(migrated_db) == audit.VerifyResult(ok=True, checked=3)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("action", "'thing.undo'"),
        ("principal", "'test:someone-else'"),
        ("outcome", "'failure'"),
        ("detail", "''"),
        ("tenant_id", "NULL"),
        ("object_id", "'999'"),
    ],
)
def test_changed_field_names_the_entry(migrated_db: Database, column: str, value: str) -> None:
    fill(migrated_db)
    execute(migrated_db, f"UPDATE kernel_audit_entry SET {column} = {value} WHERE seq = 3")  # noqa: S608
    result = verify(migrated_db)
    assert not result.ok
    assert result.seq == 3
    assert result.checked == 2
    assert "3" in result.problem


def test_changed_timestamp_names_the_entry(migrated_db: Database) -> None:
    fill(migrated_db)
    with migrated_db.session() as session:
        entry = session.get(audit.AuditEntry, 4)
        assert entry is not None
        entry.at = entry.at.replace(year=entry.at.year - 1)
    result = verify(migrated_db)
    assert (result.ok, result.seq) == (False, 4)


def test_changed_and_rehashed_entry_is_caught_by_its_successor(migrated_db: Database) -> None:
    fill(migrated_db)
    with migrated_db.session() as session:
        entry = session.get(audit.AuditEntry, 3)
        assert entry is not None
        entry.action = "thing.undo"
        entry.hash = audit.chain_hash(entry.prev_hash, entry)
    result = verify(migrated_db)
    assert (result.ok, result.seq) == (False, 4)


def test_deleted_middle_entry_is_named(migrated_db: Database) -> None:
    fill(migrated_db)
    execute(migrated_db, "DELETE FROM kernel_audit_entry WHERE seq = 3")
    result = verify(migrated_db)
    assert (result.ok, result.seq, result.checked) == (False, 3, 2)
    assert "missing" in result.problem


def test_deleted_first_entry_is_named(migrated_db: Database) -> None:
    fill(migrated_db)
    execute(migrated_db, "DELETE FROM kernel_audit_entry WHERE seq = 1")
    result = verify(migrated_db)
    assert (result.ok, result.seq, result.checked) == (False, 1, 0)


def test_deleted_last_entry_is_detected(migrated_db: Database) -> None:
    fill(migrated_db)
    execute(migrated_db, f"DELETE FROM kernel_audit_entry WHERE seq = {ENTRIES}")  # noqa: S608
    result = verify(migrated_db)
    assert not result.ok
    assert result.seq == ENTRIES
    assert result.checked == ENTRIES - 1


def test_deleted_tail_is_detected(migrated_db: Database) -> None:
    fill(migrated_db)
    execute(migrated_db, "DELETE FROM kernel_audit_entry WHERE seq >= 4")
    result = verify(migrated_db)
    assert (result.ok, result.seq, result.checked) == (False, 4, 3)


def test_swapped_contents_are_detected(migrated_db: Database) -> None:
    # Exchange everything but the sequence numbers of entries 3 and 4: each row is self-consistent,
    # only the order is wrong.
    columns = [
        "at",
        "principal",
        "tenant_id",
        "action",
        "object_type",
        "object_id",
        "outcome",
        "source",
        "detail",
        "prev_hash",
        "hash",
    ]
    fill(migrated_db)
    with migrated_db.engine.begin() as conn:
        rows = {
            row.seq: row._mapping
            for row in conn.execute(
                text(f"SELECT seq, {', '.join(columns)} FROM kernel_audit_entry WHERE seq IN (3, 4)")  # noqa: S608
            )
        }
        assignments = ", ".join(f"{c} = :{c}" for c in columns)
        for seq, other in ((3, 4), (4, 3)):
            params = {c: rows[other][c] for c in columns}
            conn.execute(text(f"UPDATE kernel_audit_entry SET {assignments} WHERE seq = :seq"), {**params, "seq": seq})  # noqa: S608
    result = verify(migrated_db)
    assert (result.ok, result.seq) == (False, 3)


def test_renumbered_entries_are_detected(migrated_db: Database) -> None:
    fill(migrated_db)
    execute(
        migrated_db,
        "UPDATE kernel_audit_entry SET seq = -1 WHERE seq = 3",
        "UPDATE kernel_audit_entry SET seq = 3 WHERE seq = 4",
        "UPDATE kernel_audit_entry SET seq = 4 WHERE seq = -1",
    )
    result = verify(migrated_db)
    assert (result.ok, result.seq) == (False, 3)


def test_changed_anchor_is_detected(migrated_db: Database) -> None:
    fill(migrated_db)
    execute(migrated_db, f"UPDATE kernel_audit_anchor SET last_hash = '{'f' * 64}' WHERE id = 1")  # noqa: S608
    result = verify(migrated_db)
    assert not result.ok
    assert "anchor" in result.problem


def test_verify_walks_past_one_batch(migrated_db: Database) -> None:
    with migrated_db.session() as session:
        for i in range(25):
            audit.append(session, "test:bulk", audit.AuditRecord(action="bulk", object_id=str(i)))
    with migrated_db.session() as session:
        assert [e.seq for e in audit.iter_entries(session, batch=7)] == list(range(1, 26))
    execute(migrated_db, "UPDATE kernel_audit_entry SET detail = 'x' WHERE seq = 17")
    result = verify(migrated_db)
    assert (result.ok, result.seq) == (False, 17)
