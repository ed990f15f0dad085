"""alarms: the id of who acted beside their label, in history and comments

Revision ID: 0013
Revises: 0012
"""

from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = "0013"
down_revision: Union[str, Sequence[str], None] = "0012"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    # Rows written before keep an empty id: their label is all that was recorded.
    # A plain ADD COLUMN on both databases: a batch rebuild on SQLite would cascade-delete through foreign keys.
    op.add_column("alarms_history", sa.Column("actor_id", sa.String(32), nullable=False, server_default=""))
    op.add_column("alarms_comment", sa.Column("author_id", sa.String(32), nullable=False, server_default=""))


def downgrade() -> None:
    op.drop_column("alarms_comment", "author_id")
    op.drop_column("alarms_history", "actor_id")
