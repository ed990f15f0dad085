"""alarms: webhook signing secrets are stored sealed, in a column long enough for them

Revision ID: 0012
Revises: 0011
"""

import sqlite3
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "alarms_notify_channel"
SEALED = "sealed:%"


def _resize_on_sqlite(length: int) -> None:
    # A batch rebuild drops the table, and with foreign keys on that deletes every route link and
    # delivery of every channel (ON DELETE CASCADE). These ALTERs leave the table in place.
    if sqlite3.sqlite_version_info < (3, 35):
        raise RuntimeError(f"this migration needs SQLite 3.35 or later (DROP COLUMN); this is {sqlite3.sqlite_version}")
    op.add_column(TABLE, sa.Column("secret_resized", sa.String(length=length), nullable=False, server_default=""))
    op.execute("UPDATE alarms_notify_channel SET secret_resized = secret")
    op.execute("ALTER TABLE alarms_notify_channel DROP COLUMN secret")
    op.execute("ALTER TABLE alarms_notify_channel RENAME COLUMN secret_resized TO secret")


def upgrade() -> None:
    # Only the column grows: sealing needs the secret key, which migrations do not have. The
    # dispatcher seals a plain secret when its channel next sends; a new secret is sealed when issued.
    if op.get_bind().dialect.name == "sqlite":
        _resize_on_sqlite(400)
    else:
        op.alter_column(TABLE, "secret", type_=sa.String(length=400), existing_type=sa.String(length=200))


def downgrade() -> None:
    # The previous version would sign with the sealed text itself, and a migration cannot open it:
    # such a channel is disabled with no secret, and is given a new one (rotate) before it is enabled.
    channel = sa.table(TABLE, sa.column("secret", sa.String()), sa.column("enabled", sa.Boolean()))
    op.execute(channel.update().where(channel.c.secret.like(SEALED)).values(secret="", enabled=False))
    if op.get_bind().dialect.name == "sqlite":
        _resize_on_sqlite(200)
    else:
        op.alter_column(TABLE, "secret", type_=sa.String(length=200), existing_type=sa.String(length=400))
