"""telemetry: time-series store (series, recent and closed points, latest, 1-minute and 1-hour rollups, retention)

PostgreSQL: `telemetry_point` is range-partitioned by `ts`; the store creates one partition per UTC
day on demand in the `telemetry_partitions` schema (kept out of the default schema so that schema
comparisons see only the parent).

Revision ID: 0005
Revises: 0004
"""

from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = "0005"
down_revision: Union[str, Sequence[str], None] = "0004"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

PARTITION_SCHEMA = "telemetry_partitions"


def _rollup_table(name: str) -> None:
    op.create_table(
        name,
        sa.Column("series_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("bucket", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("total", sa.Double(), nullable=False),
        sa.Column("minimum", sa.Double(), nullable=False),
        sa.Column("maximum", sa.Double(), nullable=False),
        sa.Column("first_ts", sa.BigInteger(), nullable=False),
        sa.Column("first_value", sa.Double(), nullable=False),
        sa.Column("last_ts", sa.BigInteger(), nullable=False),
        sa.Column("last_value", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("series_id", "bucket", name=op.f(f"pk_{name}")),
        sqlite_with_rowid=False,
    )


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "telemetry_series",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("device", sa.String(length=200), nullable=False),
        sa.Column("metric", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_telemetry_series")),
        sa.UniqueConstraint("tenant_id", "device", "metric", name=op.f("uq_telemetry_series_tenant_id_device_metric")),
    )
    with op.batch_alter_table("telemetry_series", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_telemetry_series_device"), ["device"], unique=False)

    op.create_table(
        "telemetry_point",
        sa.Column("series_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("ts", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.Column("quality", sa.SmallInteger(), nullable=False),
        sa.PrimaryKeyConstraint("series_id", "ts", name=op.f("pk_telemetry_point")),
        sqlite_with_rowid=False,
        postgresql_partition_by="RANGE (ts)",
    )
    op.create_table(
        "telemetry_point_recent",
        sa.Column("ts", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("series_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.Column("quality", sa.SmallInteger(), nullable=False),
        sa.PrimaryKeyConstraint("ts", "series_id", name=op.f("pk_telemetry_point_recent")),
        sqlite_with_rowid=False,
    )
    _rollup_table("telemetry_rollup_1m")
    _rollup_table("telemetry_rollup_1h")
    op.create_table(
        "telemetry_latest",
        sa.Column("series_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.Column("quality", sa.SmallInteger(), nullable=False),
        sa.PrimaryKeyConstraint("series_id", name=op.f("pk_telemetry_latest")),
    )
    state = op.create_table(
        "telemetry_store_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("closed_until_ms", sa.BigInteger(), nullable=True),
        sa.Column("rollups_from_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_telemetry_store_state")),
    )
    op.bulk_insert(state, [{"id": 1, "closed_until_ms": None, "rollups_from_ms": None}])
    op.create_table(
        "telemetry_retention",
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("days", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_telemetry_retention")),
    )
    if postgresql:
        op.execute(f"CREATE SCHEMA IF NOT EXISTS {PARTITION_SCHEMA}")
        # A queue table (rows live for minutes): vacuum and analyse it after a fixed number of changes.
        op.execute(
            "ALTER TABLE telemetry_point_recent SET (autovacuum_vacuum_scale_factor = 0, "
            "autovacuum_vacuum_threshold = 50000, autovacuum_analyze_scale_factor = 0, "
            "autovacuum_analyze_threshold = 50000)"
        )


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    op.drop_table("telemetry_retention")
    op.drop_table("telemetry_store_state")
    op.drop_table("telemetry_latest")
    op.drop_table("telemetry_rollup_1h")
    op.drop_table("telemetry_rollup_1m")
    op.drop_table("telemetry_point_recent")
    op.drop_table("telemetry_point")  # its partitions go with it
    with op.batch_alter_table("telemetry_series", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_telemetry_series_device"))
    op.drop_table("telemetry_series")
    if postgresql:
        op.execute(f"DROP SCHEMA IF EXISTS {PARTITION_SCHEMA} CASCADE")
