"""Alembic migrations, one linear history for every context; the same on SQLite and PostgreSQL."""
