"""security: what an uploaded capture's decoding gave up (IP fragments, flows), per reason

Revision ID: 0023
Revises: 0022
"""

from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = "0023"
down_revision: Union[str, Sequence[str], None] = "0022"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("security_capture", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dropped", sa.JSON(), nullable=False, server_default="{}"))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("security_capture", schema=None) as batch_op:
        batch_op.drop_column("dropped")
