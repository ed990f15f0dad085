"""security: when a bulletin delivery is next tried, counted from the failed try

Revision ID: 0022
Revises: 0021
"""

from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = "0022"
down_revision: Union[str, Sequence[str], None] = "0021"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("security_bulletin_delivery", schema=None) as batch_op:
        batch_op.add_column(sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_security_bulletin_delivery_next_attempt_at"), ["next_attempt_at"], unique=False
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("security_bulletin_delivery", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_security_bulletin_delivery_next_attempt_at"))
        batch_op.drop_column("next_attempt_at")
