"""traceability: EPCIS master data captured in document headers (vocabulary elements per tenant)

Revision ID: 0021
Revises: 0020
"""

from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = "0021"
down_revision: Union[str, Sequence[str], None] = "0020"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "traceability_master_data",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("vocabulary_type", sa.String(length=300), nullable=False),
        sa.Column("element_key", sa.String(length=500), nullable=False),
        sa.Column("element_id", sa.String(length=500), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("children", sa.JSON(), nullable=True),
        sa.Column("context", sa.JSON(), nullable=False),
        sa.Column("capture_job_id", sa.String(length=32), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["kernel_tenant.id"],
            name=op.f("fk_traceability_master_data_tenant_id_kernel_tenant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_traceability_master_data")),
        sa.UniqueConstraint(
            "tenant_id", "vocabulary_type", "element_key", name=op.f("uq_traceability_master_data_element")
        ),
    )
    with op.batch_alter_table("traceability_master_data", schema=None) as batch_op:
        batch_op.create_index(
            "ix_traceability_master_data_tenant_element_key", ["tenant_id", "element_key"], unique=False
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("traceability_master_data", schema=None) as batch_op:
        batch_op.drop_index("ix_traceability_master_data_tenant_element_key")
    op.drop_table("traceability_master_data")
