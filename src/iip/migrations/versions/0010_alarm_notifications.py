"""alarm notifications: channels, contacts, routes, deliveries and escalations

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _tenant_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["tenant_id"], ["kernel_tenant.id"], name=op.f(f"fk_{table}_tenant_id_kernel_tenant"), ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "alarms_notify_channel",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("secret", sa.String(length=200), nullable=False),
        sa.Column("addresses", sa.JSON(), nullable=False),
        sa.Column("rate_limit", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        _tenant_fk("alarms_notify_channel"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alarms_notify_channel")),
        sa.UniqueConstraint("tenant_id", "name", name=op.f("uq_alarms_notify_channel_tenant_id_name")),
    )

    op.create_table(
        "alarms_notify_contact",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("role", sa.String(length=100), nullable=False),
        sa.Column("site", sa.String(length=200), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        _tenant_fk("alarms_notify_contact"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alarms_notify_contact")),
        sa.UniqueConstraint("tenant_id", "name", name=op.f("uq_alarms_notify_contact_tenant_id_name")),
    )
    with op.batch_alter_table("alarms_notify_contact", schema=None) as batch_op:
        batch_op.create_index("ix_alarms_notify_contact_tenant_id_role", ["tenant_id", "role"], unique=False)

    op.create_table(
        "alarms_notify_route",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("priorities", sa.JSON(), nullable=False),
        sa.Column("sites", sa.JSON(), nullable=False),
        sa.Column("actions", sa.JSON(), nullable=False),
        sa.Column("audience_role", sa.String(length=100), nullable=False),
        sa.Column("escalate_after_min", sa.Integer(), nullable=True),
        sa.Column("escalation_role", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        _tenant_fk("alarms_notify_route"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alarms_notify_route")),
        sa.UniqueConstraint("tenant_id", "name", name=op.f("uq_alarms_notify_route_tenant_id_name")),
    )

    op.create_table(
        "alarms_notify_route_channel",
        sa.Column("route_id", sa.String(length=32), nullable=False),
        sa.Column("channel_id", sa.String(length=32), nullable=False),
        sa.Column("escalation", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["route_id"],
            ["alarms_notify_route.id"],
            name=op.f("fk_alarms_notify_route_channel_route_id_alarms_notify_route"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["channel_id"],
            ["alarms_notify_channel.id"],
            name=op.f("fk_alarms_notify_route_channel_channel_id_alarms_notify_channel"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("route_id", "channel_id", "escalation", name=op.f("pk_alarms_notify_route_channel")),
    )
    with op.batch_alter_table("alarms_notify_route_channel", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alarms_notify_route_channel_channel_id"), ["channel_id"], unique=False)

    op.create_table(
        "alarms_notify_delivery",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("channel_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("dedup_key", sa.String(length=200), nullable=False),
        sa.Column("alarm_id", sa.String(length=64), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("recipients", sa.JSON(), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("digest_id", sa.String(length=32), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        _tenant_fk("alarms_notify_delivery"),
        sa.ForeignKeyConstraint(
            ["channel_id"],
            ["alarms_notify_channel.id"],
            name=op.f("fk_alarms_notify_delivery_channel_id_alarms_notify_channel"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alarms_notify_delivery")),
        sa.UniqueConstraint("channel_id", "dedup_key", name=op.f("uq_alarms_notify_delivery_channel_id_dedup_key")),
    )
    with op.batch_alter_table("alarms_notify_delivery", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alarms_notify_delivery_alarm_id"), ["alarm_id"], unique=False)
        batch_op.create_index(
            "ix_alarms_notify_delivery_status_next_attempt_at", ["status", "next_attempt_at"], unique=False
        )
        batch_op.create_index(
            "ix_alarms_notify_delivery_tenant_id_created_at", ["tenant_id", "created_at"], unique=False
        )
        batch_op.create_index(
            "ix_alarms_notify_delivery_channel_id_window_start", ["channel_id", "window_start"], unique=False
        )

    op.create_table(
        "alarms_notify_escalation",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("route_id", sa.String(length=32), nullable=False),
        sa.Column("alarm_id", sa.String(length=64), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("change", sa.JSON(), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("resolution", sa.String(length=300), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        _tenant_fk("alarms_notify_escalation"),
        sa.ForeignKeyConstraint(
            ["route_id"],
            ["alarms_notify_route.id"],
            name=op.f("fk_alarms_notify_escalation_route_id_alarms_notify_route"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alarms_notify_escalation")),
        sa.UniqueConstraint(
            "route_id", "alarm_id", "sequence", name=op.f("uq_alarms_notify_escalation_route_id_alarm_id_sequence")
        ),
    )
    with op.batch_alter_table("alarms_notify_escalation", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alarms_notify_escalation_alarm_id"), ["alarm_id"], unique=False)
        batch_op.create_index("ix_alarms_notify_escalation_status_due_at", ["status", "due_at"], unique=False)


def downgrade() -> None:
    op.drop_table("alarms_notify_escalation")
    op.drop_table("alarms_notify_delivery")
    op.drop_table("alarms_notify_route_channel")
    op.drop_table("alarms_notify_route")
    op.drop_table("alarms_notify_contact")
    op.drop_table("alarms_notify_channel")
