"""telemetry: device twin connection state and reported/desired attributes

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "telemetry_twin_connection",
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("device", sa.String(length=200), nullable=False),
        sa.Column("online", sa.Boolean(), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=True),
        sa.Column("since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["kernel_tenant.id"],
            name=op.f("fk_telemetry_twin_connection_tenant_id_kernel_tenant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "device", name=op.f("pk_telemetry_twin_connection")),
    )
    op.create_table(
        "telemetry_twin_attribute",
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("device", sa.String(length=200), nullable=False),
        sa.Column("side", sa.String(length=8), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["kernel_tenant.id"],
            name=op.f("fk_telemetry_twin_attribute_tenant_id_kernel_tenant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "device", "side", "name", name=op.f("pk_telemetry_twin_attribute")),
    )


def downgrade() -> None:
    op.drop_table("telemetry_twin_attribute")
    op.drop_table("telemetry_twin_connection")
