"""identifiers: filing

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Server defaults fill the rows that exist already (prefixes homed before filing).
    with op.batch_alter_table("identifiers_prefix", schema=None) as batch_op:
        batch_op.add_column(sa.Column("secret_hash", sa.String(length=255), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("applied_by", sa.String(length=200), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("decided_by", sa.String(length=200), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("reason", sa.Text(), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("identifiers_prefix", schema=None) as batch_op:
        batch_op.drop_column("reason")
        batch_op.drop_column("decided_at")
        batch_op.drop_column("decided_by")
        batch_op.drop_column("applied_by")
        batch_op.drop_column("secret_hash")
