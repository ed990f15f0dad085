"""traceability: subscription schedules (cron-like `schedule`, `initialRecordTime`, `lastNotifiedAt`), handles as EPCs

Subscriptions gain the binding's `schedule` (its fields as given), the `initialRecordTime` asked for
and when a delivery was last answered 2xx; `signature_token`, never written (the token is the
signing key, kept sealed in `secret`), goes.

Handles in the lookup tables take their canonical form, `hdl:` and the handle in lower case, so
events captured before this revision are found by any spelling of their handles. The event bodies
keep what was captured. Going down keeps the lower-case form (the earlier code matched a handle
only as written).

Revision ID: 0017
Revises: 0016
"""

import re
from typing import Sequence, Union
from urllib.parse import unquote, urlsplit

from alembic import op
import sqlalchemy as sa


revision: str = "0017"
down_revision: Union[str, Sequence[str], None] = "0016"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# Where the repository keeps canonical identifiers: (table, column).
IDENTIFIER_COLUMNS = (
    ("traceability_event_epc", "epc"),
    ("traceability_event_link", "value"),
    ("traceability_event", "read_point"),
    ("traceability_event", "biz_location"),
    ("traceability_sensor_report", "device_id"),
)
IDENTIFIER_LENGTH = 500
# The handle forms and prefix syntax of this revision, kept here so the step does not change with the code.
_PREFIX = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]{0,254}")


def _handle_uri(value: str) -> str | None:
    text = value.strip()
    head = text[:8].lower()
    if head.startswith("hdl:"):
        name = text[4:].split("?", 1)[0].split("#", 1)[0]
    elif head.startswith(("http://", "https://")):
        parts = urlsplit(text)
        if (parts.hostname or "").lower() == "hdl.handle.net":
            name = parts.path[1:]
        elif parts.path.startswith("/api/handles/"):
            name = parts.path[len("/api/handles/") :]
        else:
            return None
    else:
        return None
    prefix, slash, suffix = unquote(name).partition("/")
    if not slash or not suffix or not _PREFIX.fullmatch(prefix):
        return None
    return f"hdl:{prefix}/{suffix}".lower()


def _canonical_handles() -> None:
    connection = op.get_bind()
    for table_name, column_name in IDENTIFIER_COLUMNS:
        table = sa.table(table_name, sa.column("id"), sa.column(column_name))
        column = table.c[column_name]
        lowered = sa.func.lower(column)
        candidates = sa.select(table.c.id, column).where(
            sa.or_(lowered.like("hdl:%"), lowered.like("http%://hdl.handle.net/%"), column.like("http%/api/handles/%"))
        )
        changes = []
        for row_id, value in connection.execute(candidates):
            handle = _handle_uri(value)
            if handle is not None and handle != value and len(handle) <= IDENTIFIER_LENGTH:
                changes.append({"row_id": row_id, "handle": handle})
        if changes:
            connection.execute(
                sa.update(table)
                .where(table.c.id == sa.bindparam("row_id"))
                .values({column_name: sa.bindparam("handle")}),
                changes,
            )


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("traceability_subscription", schema=None) as batch_op:
        batch_op.add_column(sa.Column("schedule", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("initial_record_time", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("last_notified_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.drop_column("signature_token")
    _canonical_handles()


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("traceability_subscription", schema=None) as batch_op:
        batch_op.add_column(sa.Column("signature_token", sa.String(length=200), nullable=True))
        batch_op.drop_column("last_notified_at")
        batch_op.drop_column("initial_record_time")
        batch_op.drop_column("schedule")
