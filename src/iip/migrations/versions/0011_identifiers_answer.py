"""identifiers: the rendered answer of an unfiltered resolution, stored with the handle

Revision ID: 0011
Revises: 0010
"""

from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = "0011"
down_revision: Union[str, Sequence[str], None] = "0010"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    # Rows written before keep NULL: resolution renders their answer from the values, as it did.
    # A plain ADD COLUMN on both databases: a batch rebuild on SQLite would drop the search index triggers.
    op.add_column("identifiers_handle", sa.Column("answer", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("identifiers_handle") as batch:
        batch.drop_column("answer")
