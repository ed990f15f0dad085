"""alarms: versioned rules, alarms, their history and comments

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _tenant_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["tenant_id"], ["kernel_tenant.id"], name=op.f(f"fk_{table}_tenant_id_kernel_tenant"), ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "alarms_rule",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=30), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("priority", sa.String(length=10), nullable=False),
        sa.Column("pack", sa.String(length=100), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        _tenant_fk("alarms_rule"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alarms_rule")),
        sa.UniqueConstraint("tenant_id", "key", name=op.f("uq_alarms_rule_tenant_id_key")),
    )
    op.create_table(
        "alarms_rule_version",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("rule_id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("change", sa.String(length=20), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["rule_id"], ["alarms_rule.id"], name=op.f("fk_alarms_rule_version_rule_id_alarms_rule"), ondelete="CASCADE"
        ),
        _tenant_fk("alarms_rule_version"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alarms_rule_version")),
        sa.UniqueConstraint("rule_id", "version", name=op.f("uq_alarms_rule_version_rule_id_version")),
    )
    with op.batch_alter_table("alarms_rule_version", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alarms_rule_version_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "alarms_alarm",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("rule_key", sa.String(length=100), nullable=False),
        sa.Column("rule_version", sa.Integer(), nullable=False),
        sa.Column("device", sa.String(length=200), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("latched", sa.Boolean(), nullable=False),
        sa.Column("shelved", sa.Boolean(), nullable=False),
        sa.Column("shelved_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("shelved_by", sa.String(length=200), nullable=False),
        sa.Column("suppressed", sa.Boolean(), nullable=False),
        sa.Column("out_of_service", sa.Boolean(), nullable=False),
        sa.Column("priority", sa.String(length=10), nullable=False),
        sa.Column("priority_rank", sa.SmallInteger(), nullable=False),
        sa.Column("position", sa.String(length=100), nullable=False),
        sa.Column("site", sa.String(length=200), nullable=False),
        sa.Column("message", sa.String(length=500), nullable=False),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("condition_ms", sa.BigInteger(), nullable=True),
        sa.Column("suppression_ms", sa.BigInteger(), nullable=True),
        sa.Column("first_activated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_activated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_by", sa.String(length=200), nullable=False),
        sa.Column("activation_count", sa.Integer(), nullable=False),
        sa.Column("acknowledge_count", sa.Integer(), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_change_at", sa.DateTime(timezone=True), nullable=False),
        _tenant_fk("alarms_alarm"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alarms_alarm")),
        sa.UniqueConstraint("tenant_id", "rule_key", "device", name=op.f("uq_alarms_alarm_tenant_id_rule_key_device")),
    )
    with op.batch_alter_table("alarms_alarm", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alarms_alarm_shelved_until"), ["shelved_until"], unique=False)
        batch_op.create_index("ix_alarms_alarm_tenant_id_last_change_at", ["tenant_id", "last_change_at"], unique=False)
        batch_op.create_index(
            "ix_alarms_alarm_tenant_id_state_priority_rank", ["tenant_id", "state", "priority_rank"], unique=False
        )

    op.create_table(
        "alarms_history",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("alarm_id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=20), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("shelved", sa.Boolean(), nullable=False),
        sa.Column("suppressed", sa.Boolean(), nullable=False),
        sa.Column("out_of_service", sa.Boolean(), nullable=False),
        sa.Column("rule_key", sa.String(length=100), nullable=False),
        sa.Column("rule_version", sa.Integer(), nullable=False),
        sa.Column("device", sa.String(length=200), nullable=False),
        sa.Column("position", sa.String(length=100), nullable=False),
        sa.Column("priority", sa.String(length=10), nullable=False),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("message", sa.String(length=500), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["alarm_id"], ["alarms_alarm.id"], name=op.f("fk_alarms_history_alarm_id_alarms_alarm"), ondelete="CASCADE"
        ),
        _tenant_fk("alarms_history"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alarms_history")),
        sa.UniqueConstraint("alarm_id", "sequence", name=op.f("uq_alarms_history_alarm_id_sequence")),
    )
    with op.batch_alter_table("alarms_history", schema=None) as batch_op:
        batch_op.create_index("ix_alarms_history_tenant_id_at", ["tenant_id", "at"], unique=False)

    op.create_table(
        "alarms_comment",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("alarm_id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("author", sa.String(length=200), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["alarm_id"], ["alarms_alarm.id"], name=op.f("fk_alarms_comment_alarm_id_alarms_alarm"), ondelete="CASCADE"
        ),
        _tenant_fk("alarms_comment"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alarms_comment")),
    )
    with op.batch_alter_table("alarms_comment", schema=None) as batch_op:
        batch_op.create_index("ix_alarms_comment_alarm_id_at", ["alarm_id", "at"], unique=False)
        batch_op.create_index(batch_op.f("ix_alarms_comment_tenant_id"), ["tenant_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("alarms_comment", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alarms_comment_tenant_id"))
        batch_op.drop_index("ix_alarms_comment_alarm_id_at")
    op.drop_table("alarms_comment")
    with op.batch_alter_table("alarms_history", schema=None) as batch_op:
        batch_op.drop_index("ix_alarms_history_tenant_id_at")
    op.drop_table("alarms_history")
    with op.batch_alter_table("alarms_alarm", schema=None) as batch_op:
        batch_op.drop_index("ix_alarms_alarm_tenant_id_state_priority_rank")
        batch_op.drop_index("ix_alarms_alarm_tenant_id_last_change_at")
        batch_op.drop_index(batch_op.f("ix_alarms_alarm_shelved_until"))
    op.drop_table("alarms_alarm")
    with op.batch_alter_table("alarms_rule_version", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alarms_rule_version_tenant_id"))
    op.drop_table("alarms_rule_version")
    op.drop_table("alarms_rule")
