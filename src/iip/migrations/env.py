"""Alembic environment: the metadata of the kernel and of every registered module."""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from sqlalchemy import Engine, create_engine

import iip.kernel.audit
import iip.kernel.auth  # noqa: F401 - registers the kernel tables
from iip.kernel.db import Base, UTCDateTime
from iip.kernel.module import discover_modules
from iip.migrations.schema_filters import include_name

discover_modules()  # importing a module registers its tables
config = context.config
target_metadata = Base.metadata


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
    """Keep migrations free of project imports: UTCDateTime is a timezone-aware DateTime."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def run_migrations() -> None:
    engine = config.attributes.get("engine")
    if not isinstance(engine, Engine):
        engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=True,
            compare_type=True,
            render_item=render_item,
            include_name=include_name,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `iip db upgrade`")
run_migrations()
