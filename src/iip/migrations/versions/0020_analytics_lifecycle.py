"""analytics: deployment settings (RUL threshold and cycle, fault classifier, hold staleness)

Revision ID: 0020
Revises: 0019
"""

from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = "0020"
down_revision: Union[str, Sequence[str], None] = "0019"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    # A plain ADD COLUMN on both databases: a batch rebuild on SQLite would cascade-delete through foreign keys.
    op.add_column("analytics_deployment", sa.Column("settings", sa.JSON(), nullable=False, server_default="{}"))


def downgrade() -> None:
    op.drop_column("analytics_deployment", "settings")
