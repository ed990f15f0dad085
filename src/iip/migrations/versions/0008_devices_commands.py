"""devices: commands

Revision ID: 0008
Revises: 0007
"""

from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = "0008"
down_revision: Union[str, Sequence[str], None] = "0007"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "devices_command",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("device", sa.String(length=128), nullable=False),
        sa.Column("metric", sa.String(length=128), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("protocol", sa.String(length=20), nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("timeout_ms", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["kernel_tenant.id"],
            name=op.f("fk_devices_command_tenant_id_kernel_tenant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_devices_command")),
    )
    with op.batch_alter_table("devices_command", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_devices_command_status"), ["status"], unique=False)
        batch_op.create_index(
            "ix_devices_command_tenant_id_device_requested_at", ["tenant_id", "device", "requested_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("devices_command", schema=None) as batch_op:
        batch_op.drop_index("ix_devices_command_tenant_id_device_requested_at")
        batch_op.drop_index(batch_op.f("ix_devices_command_status"))
    op.drop_table("devices_command")
