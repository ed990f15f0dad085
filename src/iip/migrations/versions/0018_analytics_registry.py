"""analytics: model registry (models, versions with their state as .npz bytes, deployments)

Revision ID: 0018
Revises: 0017
"""

from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = "0018"
down_revision: Union[str, Sequence[str], None] = "0017"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "analytics_model",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("latest_version", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["kernel_tenant.id"],
            name=op.f("fk_analytics_model_tenant_id_kernel_tenant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_analytics_model")),
        sa.UniqueConstraint("tenant_id", "name", name=op.f("uq_analytics_model_tenant_id_name")),
    )
    op.create_table(
        "analytics_model_version",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("model_id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("variables", sa.JSON(), nullable=False),
        sa.Column("sources", sa.JSON(), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("limits", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("data_source", sa.JSON(), nullable=False),
        sa.Column("state", sa.LargeBinary(), nullable=False),
        sa.Column("state_sha256", sa.String(length=64), nullable=False),
        sa.Column("trained_by", sa.String(length=200), nullable=False),
        sa.Column("trained_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_by", sa.String(length=200), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["analytics_model.id"],
            name=op.f("fk_analytics_model_version_model_id_analytics_model"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["kernel_tenant.id"],
            name=op.f("fk_analytics_model_version_tenant_id_kernel_tenant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_analytics_model_version")),
        sa.UniqueConstraint("model_id", "version", name=op.f("uq_analytics_model_version_model_id_version")),
    )
    with op.batch_alter_table("analytics_model_version", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_analytics_model_version_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "analytics_deployment",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("model_id", sa.String(length=32), nullable=False),
        sa.Column("version_id", sa.String(length=32), nullable=False),
        sa.Column("device", sa.String(length=200), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("deployed_by", sa.String(length=200), nullable=False),
        sa.Column("deployed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_by", sa.String(length=200), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["analytics_model.id"],
            name=op.f("fk_analytics_deployment_model_id_analytics_model"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["kernel_tenant.id"],
            name=op.f("fk_analytics_deployment_tenant_id_kernel_tenant"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["analytics_model_version.id"],
            name=op.f("fk_analytics_deployment_version_id_analytics_model_version"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_analytics_deployment")),
    )
    with op.batch_alter_table("analytics_deployment", schema=None) as batch_op:
        batch_op.create_index("ix_analytics_deployment_model_id_device", ["model_id", "device"], unique=False)
        batch_op.create_index("ix_analytics_deployment_tenant_id_device", ["tenant_id", "device"], unique=False)
        batch_op.create_index(batch_op.f("ix_analytics_deployment_version_id"), ["version_id"], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("analytics_deployment", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_analytics_deployment_version_id"))
        batch_op.drop_index("ix_analytics_deployment_tenant_id_device")
        batch_op.drop_index("ix_analytics_deployment_model_id_device")

    op.drop_table("analytics_deployment")
    with op.batch_alter_table("analytics_model_version", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_analytics_model_version_tenant_id"))

    op.drop_table("analytics_model_version")
    op.drop_table("analytics_model")
