"""identifiers: catalog (full-text search over identifiers_handle.search_text)

SQLite: an FTS5 table holding search_text by the handle's rowid, kept current by triggers.
PostgreSQL: a GIN index on to_tsvector('simple', search_text), which searches use as written.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQLITE_UPGRADE = (
    "CREATE VIRTUAL TABLE identifiers_handle_fts USING fts5("
    "search_text, content='identifiers_handle', content_rowid='id', tokenize='unicode61 remove_diacritics 2')",
    "CREATE TRIGGER identifiers_handle_fts_insert AFTER INSERT ON identifiers_handle BEGIN "
    "INSERT INTO identifiers_handle_fts(rowid, search_text) VALUES (new.id, new.search_text); END",
    "CREATE TRIGGER identifiers_handle_fts_delete AFTER DELETE ON identifiers_handle BEGIN "
    "INSERT INTO identifiers_handle_fts(identifiers_handle_fts, rowid, search_text) "
    "VALUES ('delete', old.id, old.search_text); END",
    "CREATE TRIGGER identifiers_handle_fts_update AFTER UPDATE OF search_text ON identifiers_handle BEGIN "
    "INSERT INTO identifiers_handle_fts(identifiers_handle_fts, rowid, search_text) "
    "VALUES ('delete', old.id, old.search_text); "
    "INSERT INTO identifiers_handle_fts(rowid, search_text) VALUES (new.id, new.search_text); END",
    # Handles registered before this revision.
    "INSERT INTO identifiers_handle_fts(identifiers_handle_fts) VALUES ('rebuild')",
)
SQLITE_DOWNGRADE = (
    "DROP TRIGGER IF EXISTS identifiers_handle_fts_update",
    "DROP TRIGGER IF EXISTS identifiers_handle_fts_delete",
    "DROP TRIGGER IF EXISTS identifiers_handle_fts_insert",
    "DROP TABLE IF EXISTS identifiers_handle_fts",
)
POSTGRESQL_UPGRADE = (
    "CREATE INDEX ix_identifiers_handle_search_fts ON identifiers_handle "
    "USING gin (to_tsvector('simple'::regconfig, search_text))",
)
POSTGRESQL_DOWNGRADE = ("DROP INDEX IF EXISTS ix_identifiers_handle_search_fts",)


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    for statement in SQLITE_UPGRADE if dialect == "sqlite" else POSTGRESQL_UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for statement in SQLITE_DOWNGRADE if dialect == "sqlite" else POSTGRESQL_DOWNGRADE:
        op.execute(statement)
