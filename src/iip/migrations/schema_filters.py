"""Database objects the ORM metadata does not describe, left out of schema comparisons.

Full-text search objects are created by migrations with dialect-specific SQL: SQLite FTS5 tables
(and the shadow tables FTS5 keeps beside them) and PostgreSQL expression indexes, all named with
`_fts`. Autogenerate would otherwise propose dropping them.
"""

from __future__ import annotations

import re
from typing import Any

FTS_NAME = re.compile(r"_fts(_(data|idx|content|docsize|config))?$")


def include_name(name: str | None, type_: str, _parent_names: Any) -> bool:
    return not (type_ in {"table", "index"} and name is not None and FTS_NAME.search(name))
