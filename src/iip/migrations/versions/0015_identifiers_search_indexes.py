"""identifiers: search pages in key order from (tenant, key) and (tenant, template, key) indexes

Revision ID: 0015
Revises: 0014
"""

from typing import Sequence, Union

from alembic import op

revision: str = "0015"
down_revision: Union[str, Sequence[str], None] = "0014"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    # Plain CREATE/DROP INDEX on both databases: no table rebuild, so nothing cascades.
    op.create_index("ix_identifiers_handle_tenant_key", "identifiers_handle", ["tenant_id", "key"])
    op.create_index("ix_identifiers_handle_tenant_template_key", "identifiers_handle", ["tenant_id", "template", "key"])
    op.drop_index("ix_identifiers_handle_tenant_id", table_name="identifiers_handle")
    op.drop_index("ix_identifiers_handle_template", table_name="identifiers_handle")


def downgrade() -> None:
    op.create_index("ix_identifiers_handle_template", "identifiers_handle", ["template"])
    op.create_index("ix_identifiers_handle_tenant_id", "identifiers_handle", ["tenant_id"])
    op.drop_index("ix_identifiers_handle_tenant_template_key", table_name="identifiers_handle")
    op.drop_index("ix_identifiers_handle_tenant_key", table_name="identifiers_handle")
