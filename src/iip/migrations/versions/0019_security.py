"""security: assets, alerts, baselines, captures, advisories and matches, honeypot indicators,
early-warning bulletins (recipients, deliveries, contacts), incidents and their timelines

Revision ID: 0019
Revises: 0018
"""

from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = "0019"
down_revision: Union[str, Sequence[str], None] = "0018"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "security_advisory",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tracking_id", sa.String(length=200), nullable=False),
        sa.Column("title", sa.String(length=1000), nullable=False),
        sa.Column("publisher", sa.String(length=200), nullable=False),
        sa.Column("released", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revised", sa.DateTime(timezone=True), nullable=True),
        sa.Column("max_cvss", sa.Float(), nullable=True),
        sa.Column("cves", sa.JSON(), nullable=False),
        sa.Column("products", sa.JSON(), nullable=False),
        sa.Column("vulnerabilities", sa.JSON(), nullable=False),
        sa.Column("remediations", sa.JSON(), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("imported_by", sa.String(length=200), nullable=False),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_security_advisory")),
        sa.UniqueConstraint("tracking_id", name=op.f("uq_security_advisory_tracking_id")),
    )
    op.create_table(
        "security_alert",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("site", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=80), nullable=False),
        sa.Column("techniques", sa.JSON(), nullable=False),
        sa.Column("severity", sa.String(length=10), nullable=False),
        sa.Column("protocol", sa.String(length=20), nullable=False),
        sa.Column("source", sa.String(length=80), nullable=False),
        sa.Column("destination", sa.String(length=80), nullable=False),
        sa.Column("message", sa.String(length=1000), nullable=False),
        sa.Column("first_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("capture_id", sa.String(length=32), nullable=True),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("acknowledged_by", sa.String(length=200), nullable=False),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_by", sa.String(length=200), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("note", sa.String(length=1000), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["kernel_tenant.id"],
            name=op.f("fk_security_alert_tenant_id_kernel_tenant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_security_alert")),
    )
    with op.batch_alter_table("security_alert", schema=None) as batch_op:
        batch_op.create_index("ix_security_alert_tenant_id_status", ["tenant_id", "status"], unique=False)

    op.create_table(
        "security_asset",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("site", sa.String(length=100), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("mac", sa.String(length=17), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=40), nullable=False),
        sa.Column("vendor", sa.String(length=200), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("firmware", sa.String(length=100), nullable=False),
        sa.Column("protocols", sa.JSON(), nullable=False),
        sa.Column("unit_ids", sa.JSON(), nullable=False),
        sa.Column("register_ranges", sa.JSON(), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=True),
        sa.Column("criticality", sa.String(length=10), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.Column("source", sa.String(length=10), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["kernel_tenant.id"],
            name=op.f("fk_security_asset_tenant_id_kernel_tenant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_security_asset")),
        sa.UniqueConstraint("tenant_id", "site", "address", name=op.f("uq_security_asset_tenant_id_site_address")),
    )
    with op.batch_alter_table("security_asset", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_security_asset_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "security_baseline",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("site", sa.String(length=100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("content", sa.JSON(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("capture_id", sa.String(length=32), nullable=True),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["kernel_tenant.id"],
            name=op.f("fk_security_baseline_tenant_id_kernel_tenant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_security_baseline")),
        sa.UniqueConstraint("tenant_id", "site", "version", name=op.f("uq_security_baseline_tenant_id_site_version")),
    )
    with op.batch_alter_table("security_baseline", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_security_baseline_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "security_bulletin",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("body_zh", sa.Text(), nullable=False),
        sa.Column("body_en", sa.Text(), nullable=False),
        sa.Column("severity", sa.String(length=10), nullable=False),
        sa.Column("advisory_id", sa.String(length=32), nullable=True),
        sa.Column("cves", sa.JSON(), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=True),
        sa.Column("targeting", sa.String(length=10), nullable=False),
        sa.Column("published_by", sa.String(length=200), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["advisory_id"],
            ["security_advisory.id"],
            name=op.f("fk_security_bulletin_advisory_id_security_advisory"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_security_bulletin")),
    )
    op.create_table(
        "security_capture",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("site", sa.String(length=100), nullable=False),
        sa.Column("filename", sa.String(length=200), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("packets", sa.Integer(), nullable=False),
        sa.Column("messages", sa.JSON(), nullable=False),
        sa.Column("malformed", sa.JSON(), nullable=False),
        sa.Column("first_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("assets_seen", sa.Integer(), nullable=False),
        sa.Column("checked", sa.Boolean(), nullable=False),
        sa.Column("alerts", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(length=1000), nullable=False),
        sa.Column("uploaded_by", sa.String(length=200), nullable=False),
        sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["kernel_tenant.id"],
            name=op.f("fk_security_capture_tenant_id_kernel_tenant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_security_capture")),
    )
    with op.batch_alter_table("security_capture", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_security_capture_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "security_contact",
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("webhook_url", sa.String(length=1000), nullable=False),
        sa.Column("webhook_secret", sa.String(length=300), nullable=False),
        sa.Column("emails", sa.JSON(), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["kernel_tenant.id"],
            name=op.f("fk_security_contact_tenant_id_kernel_tenant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_security_contact")),
    )
    op.create_table(
        "security_incident",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("severity", sa.String(length=10), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("alert_ids", sa.JSON(), nullable=False),
        sa.Column("asset_ids", sa.JSON(), nullable=False),
        sa.Column("bulletin_id", sa.String(length=32), nullable=True),
        sa.Column("opened_by", sa.String(length=200), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["kernel_tenant.id"],
            name=op.f("fk_security_incident_tenant_id_kernel_tenant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_security_incident")),
    )
    with op.batch_alter_table("security_incident", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_security_incident_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "security_indicator",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sightings", sa.Integer(), nullable=False),
        sa.Column("protocols", sa.JSON(), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("notable", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["kernel_tenant.id"],
            name=op.f("fk_security_indicator_tenant_id_kernel_tenant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_security_indicator")),
        sa.UniqueConstraint("tenant_id", "address", name=op.f("uq_security_indicator_tenant_id_address")),
    )
    op.create_table(
        "security_advisory_match",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("asset_id", sa.String(length=32), nullable=False),
        sa.Column("advisory_id", sa.String(length=32), nullable=False),
        sa.Column("cves", sa.JSON(), nullable=False),
        sa.Column("max_cvss", sa.Float(), nullable=True),
        sa.Column("remediation", sa.String(length=2000), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("resolution", sa.String(length=10), nullable=False),
        sa.Column("resolved_by", sa.String(length=200), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("matched_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["advisory_id"],
            ["security_advisory.id"],
            name=op.f("fk_security_advisory_match_advisory_id_security_advisory"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["asset_id"],
            ["security_asset.id"],
            name=op.f("fk_security_advisory_match_asset_id_security_asset"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["kernel_tenant.id"],
            name=op.f("fk_security_advisory_match_tenant_id_kernel_tenant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_security_advisory_match")),
        sa.UniqueConstraint("asset_id", "advisory_id", name=op.f("uq_security_advisory_match_asset_id_advisory_id")),
    )
    with op.batch_alter_table("security_advisory_match", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_security_advisory_match_advisory_id"), ["advisory_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_security_advisory_match_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "security_bulletin_recipient",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("bulletin_id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("matched_assets", sa.Integer(), nullable=False),
        sa.Column("opened_by", sa.String(length=200), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_by", sa.String(length=200), nullable=False),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("remediation", sa.String(length=20), nullable=False),
        sa.Column("remediation_note", sa.String(length=1000), nullable=False),
        sa.Column("remediation_by", sa.String(length=200), nullable=False),
        sa.Column("remediation_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["bulletin_id"],
            ["security_bulletin.id"],
            name=op.f("fk_security_bulletin_recipient_bulletin_id_security_bulletin"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["kernel_tenant.id"],
            name=op.f("fk_security_bulletin_recipient_tenant_id_kernel_tenant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_security_bulletin_recipient")),
        sa.UniqueConstraint(
            "bulletin_id", "tenant_id", name=op.f("uq_security_bulletin_recipient_bulletin_id_tenant_id")
        ),
    )
    with op.batch_alter_table("security_bulletin_recipient", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_security_bulletin_recipient_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "security_incident_entry",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("incident_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("text", sa.String(length=2000), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["security_incident.id"],
            name=op.f("fk_security_incident_entry_incident_id_security_incident"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_security_incident_entry")),
    )
    with op.batch_alter_table("security_incident_entry", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_security_incident_entry_incident_id"), ["incident_id"], unique=False)

    op.create_table(
        "security_bulletin_delivery",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("recipient_id", sa.String(length=32), nullable=False),
        sa.Column("channel", sa.String(length=10), nullable=False),
        sa.Column("target", sa.String(length=1000), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(length=1000), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["recipient_id"],
            ["security_bulletin_recipient.id"],
            name=op.f("fk_security_bulletin_delivery_recipient_id_security_bulletin_recipient"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_security_bulletin_delivery")),
    )
    with op.batch_alter_table("security_bulletin_delivery", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_security_bulletin_delivery_recipient_id"), ["recipient_id"], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("security_bulletin_delivery", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_security_bulletin_delivery_recipient_id"))

    op.drop_table("security_bulletin_delivery")
    with op.batch_alter_table("security_incident_entry", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_security_incident_entry_incident_id"))

    op.drop_table("security_incident_entry")
    with op.batch_alter_table("security_bulletin_recipient", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_security_bulletin_recipient_tenant_id"))

    op.drop_table("security_bulletin_recipient")
    with op.batch_alter_table("security_advisory_match", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_security_advisory_match_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_security_advisory_match_advisory_id"))

    op.drop_table("security_advisory_match")
    op.drop_table("security_indicator")
    with op.batch_alter_table("security_incident", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_security_incident_tenant_id"))

    op.drop_table("security_incident")
    op.drop_table("security_contact")
    with op.batch_alter_table("security_capture", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_security_capture_tenant_id"))

    op.drop_table("security_capture")
    op.drop_table("security_bulletin")
    with op.batch_alter_table("security_baseline", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_security_baseline_tenant_id"))

    op.drop_table("security_baseline")
    with op.batch_alter_table("security_asset", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_security_asset_tenant_id"))

    op.drop_table("security_asset")
    with op.batch_alter_table("security_alert", schema=None) as batch_op:
        batch_op.drop_index("ix_security_alert_tenant_id_status")

    op.drop_table("security_alert")
    op.drop_table("security_advisory")
