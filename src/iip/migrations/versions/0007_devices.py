"""devices: profiles, gateways, devices, dead letters

Revision ID: 0007
Revises: 0006
"""

from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = "0007"
down_revision: Union[str, Sequence[str], None] = "0006"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "devices_dead_letter",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=True),
        sa.Column("device", sa.String(length=128), nullable=True),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("topic", sa.String(length=500), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_devices_dead_letter")),
    )
    with op.batch_alter_table("devices_dead_letter", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_devices_dead_letter_device"), ["device"], unique=False)
        batch_op.create_index(batch_op.f("ix_devices_dead_letter_received_at"), ["received_at"], unique=False)
        batch_op.create_index("ix_devices_dead_letter_tenant_id_id", ["tenant_id", "id"], unique=False)

    op.create_table(
        "devices_gateway",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("site", sa.String(length=200), nullable=False),
        sa.Column("token_prefix", sa.String(length=16), nullable=True),
        sa.Column("token_hash", sa.String(length=64), nullable=True),
        sa.Column("token_created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["kernel_tenant.id"],
            name=op.f("fk_devices_gateway_tenant_id_kernel_tenant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_devices_gateway")),
        sa.UniqueConstraint("tenant_id", "key", name=op.f("uq_devices_gateway_tenant_id_key")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_devices_gateway_token_hash")),
    )
    with op.batch_alter_table("devices_gateway", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_devices_gateway_site"), ["site"], unique=False)
        batch_op.create_index(batch_op.f("ix_devices_gateway_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "devices_profile",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("protocol", sa.String(length=20), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["kernel_tenant.id"],
            name=op.f("fk_devices_profile_tenant_id_kernel_tenant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_devices_profile")),
        sa.UniqueConstraint("tenant_id", "name", name=op.f("uq_devices_profile_tenant_id_name")),
    )
    with op.batch_alter_table("devices_profile", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_devices_profile_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "devices_device",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("site", sa.String(length=200), nullable=False),
        sa.Column("profile_id", sa.String(length=32), nullable=False),
        sa.Column("connection", sa.JSON(), nullable=False),
        sa.Column("gateway_id", sa.String(length=32), nullable=True),
        sa.Column("sparkplug_group_id", sa.String(length=128), nullable=True),
        sa.Column("sparkplug_edge_node_id", sa.String(length=128), nullable=True),
        sa.Column("sparkplug_device_id", sa.String(length=128), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("token_prefix", sa.String(length=16), nullable=True),
        sa.Column("token_hash", sa.String(length=64), nullable=True),
        sa.Column("token_created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rejected_count", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["gateway_id"],
            ["devices_gateway.id"],
            name=op.f("fk_devices_device_gateway_id_devices_gateway"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["profile_id"],
            ["devices_profile.id"],
            name=op.f("fk_devices_device_profile_id_devices_profile"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["kernel_tenant.id"],
            name=op.f("fk_devices_device_tenant_id_kernel_tenant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_devices_device")),
        sa.UniqueConstraint(
            "sparkplug_group_id",
            "sparkplug_edge_node_id",
            "sparkplug_device_id",
            name="uq_devices_device_sparkplug_ids",
        ),
        sa.UniqueConstraint("tenant_id", "key", name=op.f("uq_devices_device_tenant_id_key")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_devices_device_token_hash")),
    )
    with op.batch_alter_table("devices_device", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_devices_device_gateway_id"), ["gateway_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_devices_device_profile_id"), ["profile_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_devices_device_site"), ["site"], unique=False)
        batch_op.create_index(batch_op.f("ix_devices_device_tenant_id"), ["tenant_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("devices_device", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_devices_device_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_devices_device_site"))
        batch_op.drop_index(batch_op.f("ix_devices_device_profile_id"))
        batch_op.drop_index(batch_op.f("ix_devices_device_gateway_id"))
    op.drop_table("devices_device")

    with op.batch_alter_table("devices_profile", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_devices_profile_tenant_id"))
    op.drop_table("devices_profile")

    with op.batch_alter_table("devices_gateway", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_devices_gateway_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_devices_gateway_site"))
    op.drop_table("devices_gateway")

    with op.batch_alter_table("devices_dead_letter", schema=None) as batch_op:
        batch_op.drop_index("ix_devices_dead_letter_tenant_id_id")
        batch_op.drop_index(batch_op.f("ix_devices_dead_letter_received_at"))
        batch_op.drop_index(batch_op.f("ix_devices_dead_letter_device"))
    op.drop_table("devices_dead_letter")
