"""Product information on handles: typed attribute templates, search, and bulk registration.

A handle may carry `attributes` checked against a template (`product`, `batch`, `part`,
`equipment`: JSON Schemas shipped in `templates/`). `Handle.search_text` holds the words a search
matches (handle name, URL values, attribute values); it is kept current by a mapper hook, so every
write through the ORM refreshes it, and bulk inserts compute it themselves.

Search uses SQLite FTS5 (`identifiers_handle_fts`) or PostgreSQL's full-text search over
`to_tsvector('simple', search_text)`; words in Chinese (or other scripts written without spaces)
match as substrings of `search_text` instead, since neither tokenizer splits them into words.

Bulk registration is atomic: every row is checked, all errors are reported with their line
numbers, and nothing is written unless every row is good. Rows are written with multi-row inserts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError
from sqlalchemy import (
    JSON,
    Integer,
    String,
    Text,
    cast,
    column,
    event,
    false,
    func,
    insert,
    literal_column,
    select,
    table,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapper, Session
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeDecorator

from iip.identifiers.codec import (
    ADMIN_GROUP_INDEX,
    ADMIN_INDEX,
    DEFAULT_TTL,
    DEFAULT_VALUE_PERMISSIONS,
    HS_ADMIN,
    MAX_VALUE_BYTES,
    NA_PREFIX,
    HandleName,
    parse_handle,
    timestamp,
)
from iip.identifiers.models import Handle, Prefix
from iip.kernel import audit
from iip.kernel.auth import Principal
from iip.kernel.db import utcnow
from iip.kernel.errors import DomainError, Invalid, NotFound

TEMPLATE_NAMES = ("product", "batch", "part", "equipment")
MAX_ATTRIBUTE_BYTES = 64 * 1024
MAX_BATCH_ROWS = 10_000
INSERT_CHUNK = 1000  # rows per multi-row INSERT
MAX_SEARCH_TERMS = 10
ATTRIBUTE_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
VALUE_TYPE_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
WORD_RE = re.compile(r"\w+")
# Scripts written without spaces between words: CJK ideographs, kana, hangul.
UNSPACED_RE = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
# Handles registered in bulk are administered by the prefix's admin group, as `iip id register` does.
OWNER_PERMISSIONS = "011111110011"


# --- templates


@dataclass(frozen=True, slots=True)
class Template:
    name: str
    title: str
    description: str
    schema: dict[str, Any]


@cache
def templates() -> dict[str, Template]:
    folder = resources.files("iip.identifiers") / "templates"
    found: dict[str, Template] = {}
    for name in TEMPLATE_NAMES:
        schema = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
        Draft202012Validator.check_schema(schema)
        found[name] = Template(name, schema.get("title", name), schema.get("description", ""), schema)
    return found


def template(name: str) -> Template:
    found = templates().get(name)
    if found is None:
        raise NotFound(f"template '{name[:50]}' not found", code="template_not_found")
    return found


@cache
def _validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(template(name).schema, format_checker=FormatChecker())


# A quick check for the keywords the shipped templates use, so bulk imports need not walk jsonschema's
# validator for every row: it answers True only when it understood every keyword and found nothing
# wrong; otherwise jsonschema decides (and words the error).
_QUICK_KEYWORDS = frozenset(
    {"$schema", "$id", "title", "description", "type", "required", "additionalProperties", "properties"}
    | {"minLength", "maxLength", "pattern", "format", "minimum", "maxProperties"}
)
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
}


_FORMATS = FormatChecker()


@cache
def _compiled_pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _quick_valid(schema: Mapping[str, Any], instance: Any) -> bool:  # noqa: PLR0911, PLR0912
    if not _QUICK_KEYWORDS.issuperset(schema):
        return False
    kinds = schema.get("type")
    if kinds is not None:
        names = [kinds] if isinstance(kinds, str) else kinds
        if any(n not in _JSON_TYPES for n in names):
            return False
        if isinstance(instance, bool) and "boolean" not in names:
            return False
        if not any(isinstance(instance, _JSON_TYPES[n]) for n in names):
            return False
    if isinstance(instance, str):
        if len(instance) < schema.get("minLength", 0) or len(instance) > schema.get("maxLength", len(instance)):
            return False
        if "pattern" in schema and not _compiled_pattern(schema["pattern"]).search(instance):
            return False
        if "format" in schema and not _FORMATS.conforms(instance, schema["format"]):
            return False
    number = isinstance(instance, int | float) and not isinstance(instance, bool)
    if number and "minimum" in schema and instance < schema["minimum"]:
        return False
    if isinstance(instance, dict):
        if any(name not in instance for name in schema.get("required", ())):
            return False
        if len(instance) > schema.get("maxProperties", len(instance)):
            return False
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for name, item in instance.items():
            sub = properties.get(name)
            if sub is None:
                if extra is False or (isinstance(extra, dict) and not _quick_valid(extra, item)):
                    return False
            elif not _quick_valid(sub, item):
                return False
    return True


def _pointer(error: ValidationError) -> str:
    path = list(error.absolute_path)
    required = error.validator_value
    if error.validator == "required" and isinstance(error.instance, dict) and isinstance(required, list):
        # The error sits on the object; name the member that is missing.
        missing = [m for m in required if m not in error.instance]
        path += missing[:1]
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


def attribute_problem(template_name: str | None, attributes: Any) -> tuple[str, str] | None:  # noqa: PLR0911
    """(JSON pointer, message) of the first thing wrong with `attributes`; None when they are valid."""
    if not isinstance(attributes, dict):
        return "", "attributes must be a JSON object"
    if len(json.dumps(attributes, ensure_ascii=False)) > MAX_ATTRIBUTE_BYTES:
        return "", f"attributes are larger than {MAX_ATTRIBUTE_BYTES // 1024} KiB"
    if template_name is None:
        return None
    if template_name not in templates():
        return "", f"unknown template '{template_name[:50]}'; expected one of {', '.join(TEMPLATE_NAMES)}"
    if _quick_valid(template(template_name).schema, attributes):
        return None
    errors = sorted(_validator(template_name).iter_errors(attributes), key=lambda e: [str(p) for p in e.path])
    if not errors:
        return None
    first = errors[0]
    pointer = _pointer(first)
    return pointer, f"{pointer or '/'}: {first.message}"


def check_attributes(template_name: str | None, attributes: Any) -> None:
    problem = attribute_problem(template_name, attributes)
    if problem is not None:
        pointer, message = problem
        raise Invalid(message, code="invalid_attributes", pointer=pointer, template=template_name)


# --- search text


def _words(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _words(item)
    elif isinstance(value, list):
        for item in value:
            yield from _words(item)
    elif isinstance(value, str | int | float) and not isinstance(value, bool):
        yield str(value)


def search_text(handle: str, values: Iterable[Mapping[str, Any]], attributes: Mapping[str, Any] | None) -> str:
    """What a search matches: the handle name, URL values and attribute values.

    Each part appears as written and split at punctuation, so `88.118.8/JXDY2106023` is found by
    `JXDY2106023` and a URL by its host name whichever way a tokenizer reads them.
    """
    parts = [handle]
    for value in values:
        data = value.get("data")
        if (
            str(value.get("type", "")).upper() == "URL"
            and isinstance(data, dict)
            and isinstance(data.get("value"), str)
        ):
            parts.append(data["value"])
    parts.extend(_words(attributes or {}))
    split = [" ".join(WORD_RE.findall(p)) for p in parts]
    return " ".join(p for p in (*parts, *split) if p)


@event.listens_for(Handle, "before_insert")
@event.listens_for(Handle, "before_update")
def _refresh_search_text(_mapper: Mapper[Handle], _connection: Any, row: Handle) -> None:
    row.search_text = search_text(row.handle, row.values or [], row.attributes)


# --- attributes of one handle


def _visible_handle(session: Session, name: HandleName, actor: Principal) -> Handle:
    row = session.scalar(select(Handle).where(Handle.key == name.key))
    if row is None or (not actor.is_platform and row.tenant_id != actor.tenant_id):
        raise NotFound(f"handle '{name.handle}' not found", code="handle_not_found")
    return row


def get_attributes(session: Session, name: HandleName, actor: Principal) -> Handle:
    actor.require("identifiers.read")
    return _visible_handle(session, name, actor)


def set_attributes(
    session: Session, name: HandleName, template_name: str | None, attributes: Any, actor: Principal
) -> Handle:
    """Replace a handle's template and attributes, checked against the template."""
    actor.require("identifiers.write")
    row = _visible_handle(session, name, actor)
    check_attributes(template_name, attributes)
    row.template = template_name
    row.attributes = attributes
    row.updated_at = utcnow()
    session.flush()
    record = audit.AuditRecord(
        action="identifiers.handle.attributes",
        object_type="handle",
        object_id=row.handle,
        detail=f"template {template_name or '-'}",
    )
    audit.append(session, actor, record, tenant_id=row.tenant_id)
    return row


# --- search


@dataclass(frozen=True, slots=True)
class SearchQuery:
    text: str = ""
    prefix: str | None = None
    template: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)
    page: int = 1
    page_size: int = 50


@dataclass(frozen=True, slots=True)
class SearchPage:
    total: int
    page: int
    page_size: int
    items: list[Handle]


def _text_conditions(session: Session, query_text: str) -> list[ColumnElement[bool]]:
    terms = query_text.split()[:MAX_SEARCH_TERMS]
    conditions: list[ColumnElement[bool]] = []
    words: list[str] = []
    for term in terms:
        if UNSPACED_RE.search(term):
            conditions.append(Handle.search_text.icontains(term, autoescape=True))
        else:
            words.extend(WORD_RE.findall(term))
    if not words:
        # Text with nothing searchable in it (only punctuation) matches nothing.
        return conditions or [false()]
    if session.get_bind().dialect.name == "postgresql":
        vector = func.to_tsvector(literal_column("'simple'::regconfig"), Handle.search_text)
        query = func.plainto_tsquery(literal_column("'simple'::regconfig"), " ".join(words))
        conditions.append(vector.op("@@")(query))
    else:
        # Each word quoted: FTS5 query syntax (AND, NEAR, column filters) is not offered to callers.
        match = " ".join('"' + w.replace('"', '""') + '"' for w in words)
        matching = text("SELECT rowid FROM identifiers_handle_fts WHERE identifiers_handle_fts MATCH :match")
        conditions.append(Handle.id.in_(matching.bindparams(match=match)))
    return conditions


def search(session: Session, query: SearchQuery, actor: Principal) -> SearchPage:
    """The caller's tenant's handles matching every criterion given, ordered by handle."""
    actor.require("identifiers.read")
    conditions: list[ColumnElement[bool]] = []
    if not actor.is_platform:
        conditions.append(Handle.tenant_id == actor.tenant_id)
    conditions.append(Handle.prefix != NA_PREFIX)
    if query.prefix:
        conditions.append(Handle.prefix == query.prefix.lower())
    if query.template:
        conditions.append(Handle.template == query.template)
    for attribute, wanted in query.attributes.items():
        if not ATTRIBUTE_NAME_RE.match(attribute):
            raise Invalid(f"invalid attribute name '{attribute[:70]}'", code="invalid_attribute_name")
        conditions.append(cast(Handle.attributes[attribute].as_string(), String) == wanted)
    if query.text.strip():
        conditions.extend(_text_conditions(session, query.text))
    total = session.scalar(select(func.count()).select_from(Handle).where(*conditions)) or 0
    rows = session.scalars(
        select(Handle)
        .where(*conditions)
        .order_by(Handle.key)
        .offset((query.page - 1) * query.page_size)
        .limit(query.page_size)
    )
    return SearchPage(total, query.page, query.page_size, list(rows))


def url_of(row: Handle) -> str | None:
    for value in row.values:
        data = value.get("data")
        if value.get("type") == "URL" and isinstance(data, dict) and isinstance(data.get("value"), str):
            return str(data["value"])
    return None


# --- bulk registration


class SerializedJSON(TypeDecorator[str]):
    """A JSON column bound from text already serialized (PostgreSQL still casts it to json)."""

    impl = JSON
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> None:
        return None


_HANDLE_ROWS = table(
    "identifiers_handle",
    *(column(name, Text) for name in ("tenant_id", "key", "handle", "prefix", "template", "search_text", "signature")),
    column("values", SerializedJSON),
    column("attributes", SerializedJSON),
    column("version", Integer),
    column("created_at"),
    column("updated_at"),
)
_HISTORY_ROWS = table(
    "identifiers_handle_history",
    *(column(name, Text) for name in ("tenant_id", "key", "change", "principal")),
    column("values", SerializedJSON),
    column("version", Integer),
    column("at"),
)


@dataclass(frozen=True, slots=True)
class BatchRow:
    """One row to register; `line` is where it stands in its source (array position or file line)."""

    line: int
    fields: Mapping[str, Any]
    problem: str | None = None  # set when the source line could not even be read as a row


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    handle: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "handle": self.handle, "message": self.message}


class BatchRejected(Invalid):
    """Some rows are wrong; nothing of the batch was written."""

    code = "batch_rejected"

    def __init__(self, errors: Sequence[RowError]) -> None:
        lines = ", ".join(str(e.line) for e in errors[:20]) + (" ..." if len(errors) > 20 else "")
        super().__init__(
            f"{len(errors)} rows have errors (lines {lines}); nothing was registered",
            errors=[e.to_dict() for e in errors],
        )
        self.errors = list(errors)


def _string_value(index: int, value_type: str, data: str, now: str) -> dict[str, Any]:
    # The stored shape of a string HandleValue (HandleValue.model_dump()), built without pydantic for speed.
    return {
        "index": index,
        "type": value_type,
        "data": {"format": "string", "value": data},
        "ttl": DEFAULT_TTL,
        "timestamp": now,
        "permissions": DEFAULT_VALUE_PERMISSIONS,
    }


def _admin_value(prefix: str, now: str) -> dict[str, Any]:
    admin = {"handle": f"0.NA/{prefix}", "index": ADMIN_GROUP_INDEX, "permissions": OWNER_PERMISSIONS}
    return {
        "index": ADMIN_INDEX,
        "type": HS_ADMIN,
        "data": {"format": "admin", "value": admin},
        "ttl": DEFAULT_TTL,
        "timestamp": now,
        "permissions": DEFAULT_VALUE_PERMISSIONS,
    }


class BulkRegistration:
    """Registers many new handles in one transaction: `add` rows (in chunks), then `finish`.

    Rows are inserted as they arrive while all are good; after the first bad row nothing more is
    written, the rest are only checked, and `finish` raises `BatchRejected` listing every bad row.
    The caller then rolls the transaction back.
    """

    def __init__(self, session: Session, actor: Principal, *, source: str = "api") -> None:
        actor.require("identifiers.write")
        self.session = session
        self.actor = actor
        self.source = source
        self.errors: list[RowError] = []
        self.count = 0
        self._seen: set[str] = set()
        self._prefixes: dict[str, Prefix | None] = {}
        self._tenants: set[str] = set()
        self._now = utcnow()
        self._stamp = timestamp(self._now)
        self._bound_now: Any = None

    def _prefix(self, key: str) -> Prefix | None:
        if key not in self._prefixes:
            prefix = self.session.scalar(select(Prefix).where(Prefix.prefix == key))
            usable = (
                prefix is not None
                and not prefix.node_url
                and prefix.status == "approved"
                and (self.actor.is_platform or prefix.tenant_id == self.actor.tenant_id)
            )
            self._prefixes[key] = prefix if usable else None
        return self._prefixes[key]

    def _row(self, row: BatchRow) -> dict[str, Any]:
        """The `identifiers_handle` row to insert; raises DomainError saying what is wrong."""
        fields = row.fields
        if row.problem is not None:
            raise Invalid(row.problem)
        handle_text, url = fields.get("handle"), fields.get("url")
        if not isinstance(handle_text, str) or not handle_text:
            raise Invalid("handle is missing")
        name = parse_handle(handle_text.strip())
        if name.is_prefix_handle:
            raise Invalid("naming authority handles (0.NA/...) cannot be registered in bulk")
        prefix = self._prefix(name.prefix_key)
        if prefix is None:
            raise Invalid(f"prefix '{name.prefix}' is not homed on this server")
        if not isinstance(url, str) or not url.strip():
            raise Invalid("url is missing")
        if len(url.encode()) > MAX_VALUE_BYTES:
            raise Invalid("url is longer than 64 KiB")
        if name.key in self._seen:
            raise Invalid(f"handle '{name.handle}' appears twice in the batch")
        values = [
            _string_value(1, "URL", url.strip(), self._stamp),
            *self._extra_values(fields.get("values")),
            _admin_value(name.prefix, self._stamp),
        ]
        template_name = fields.get("template") or None
        if template_name is not None and not isinstance(template_name, str):
            raise Invalid("template must be a string")
        attributes = fields.get("attributes")
        if attributes in (None, ""):
            attributes = {}
        problem = attribute_problem(template_name, attributes)
        if problem is not None:
            raise Invalid(f"attributes {problem[1]}")
        self._seen.add(name.key)
        return {
            "tenant_id": prefix.tenant_id,
            "key": name.key,
            "handle": name.handle,
            "prefix": name.prefix_key,
            "values": values,
            "template": template_name,
            "attributes": attributes,
            "search_text": search_text(name.handle, values, attributes),
            "signature": "",
            "version": 1,
            "created_at": self._now,
            "updated_at": self._now,
        }

    def _extra_values(self, extra: Any) -> list[dict[str, Any]]:
        """`{"TYPE": "value"}` as string values from index 2."""
        if not extra:
            return []
        if not isinstance(extra, Mapping):
            raise Invalid("values must be an object of TYPE: value")
        values = []
        for index, (value_type, data) in enumerate(extra.items(), start=2):
            if not VALUE_TYPE_RE.match(str(value_type)) or str(value_type).upper() in {"URL", "HS_ADMIN"}:
                raise Invalid(f"invalid value type '{str(value_type)[:70]}'")
            if not isinstance(data, str | int | float) or len(str(data).encode()) > MAX_VALUE_BYTES:
                raise Invalid(f"value {value_type} must be a string of at most 64 KiB")
            values.append(_string_value(index, str(value_type), str(data), self._stamp))
        return values

    def add(self, rows: Iterable[BatchRow]) -> None:
        good: list[tuple[int, dict[str, Any]]] = []
        for row in rows:
            try:
                good.append((row.line, self._row(row)))
            except DomainError as err:
                handle = row.fields.get("handle")
                self.errors.append(RowError(row.line, str(handle or "")[:200], err.message))
        for start in range(0, len(good), INSERT_CHUNK):
            chunk = good[start : start + INSERT_CHUNK]
            keys = [record["key"] for _, record in chunk]
            taken = set(self.session.scalars(select(Handle.key).where(Handle.key.in_(keys))))
            for line, record in chunk:
                if record["key"] in taken:
                    self.errors.append(RowError(line, record["handle"], f"handle '{record['handle']}' already exists"))
            if not self.errors:
                self._insert([record for _, record in chunk])

    def _insert(self, records: list[dict[str, Any]]) -> None:
        # Rows go to lightweight tables whose JSON columns take text serialized here (once for the
        # handle and its history row) and whose timestamps are bound once per batch: per-row type
        # processing was most of the cost of ORM bulk inserts.
        connection = self.session.connection()
        if self._bound_now is None:
            processor = Handle.__table__.c.created_at.type.bind_processor(connection.dialect)
            self._bound_now = processor(self._now) if processor else self._now
        for record in records:
            record["values"] = json.dumps(record["values"])
            record["attributes"] = json.dumps(record["attributes"])
            record["created_at"] = record["updated_at"] = self._bound_now
        connection.execute(insert(_HANDLE_ROWS), records)
        label = self.actor.label[:200]
        history = [
            {
                "tenant_id": r["tenant_id"],
                "key": r["key"],
                "version": 1,
                "values": r["values"],
                "change": "create",
                "principal": label,
                "at": self._bound_now,
            }
            for r in records
        ]
        connection.execute(insert(_HISTORY_ROWS), history)
        self.count += len(records)
        self._tenants.update(r["tenant_id"] for r in records)

    def finish(self) -> int:
        """The number of handles registered; raises BatchRejected when any row was wrong."""
        if self.errors:
            self.errors.sort(key=lambda e: e.line)
            raise BatchRejected(self.errors)
        if self.count == 0:
            raise Invalid("the batch holds no rows", code="empty_batch")
        tenant_id = next(iter(self._tenants)) if len(self._tenants) == 1 else self.actor.tenant_id
        record = audit.AuditRecord(
            action="identifiers.handle.batch",
            object_type="handle",
            object_id=f"{self.count} handles",
            detail=f"registered {self.count} handles ({self.source})",
            source=self.source,
        )
        audit.append(self.session, self.actor, record, tenant_id=tenant_id)
        return self.count


def register_batch(session: Session, rows: Iterable[BatchRow], actor: Principal, *, source: str = "api") -> int:
    """Register all rows or none; the count registered."""
    registration = BulkRegistration(session, actor, source=source)
    registration.add(rows)
    return registration.finish()


# --- reading rows


def parse_json_rows(body: bytes) -> list[BatchRow]:
    """A JSON array of row objects (line = position from 1) or JSON lines (line = line number)."""
    try:
        content = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise Invalid("the body is not UTF-8") from None
    stripped = content.lstrip()
    if stripped.startswith("["):
        try:
            items = json.loads(stripped)
        except json.JSONDecodeError as err:
            raise Invalid(f"the body is not a JSON array: {err.msg} at line {err.lineno}") from None
        if not isinstance(items, list):
            raise Invalid("the body must be a JSON array of rows or JSON lines")
        return [
            BatchRow(i, item) if isinstance(item, dict) else BatchRow(i, {}, "a row must be a JSON object")
            for i, item in enumerate(items, start=1)
        ]
    return list(json_line_rows(content.splitlines()))


def csv_rows(lines: Iterable[str]) -> Iterator[BatchRow]:
    """Rows of a CSV file with a header: `handle`, `url`, `template`, `attributes` (a JSON object),
    `attr.<name>` (one attribute each) and `value.<TYPE>` (more string values) columns."""
    import csv

    reader = csv.DictReader(lines)
    for cells in reader:
        fields: dict[str, Any] = {"handle": cells.get("handle"), "url": cells.get("url")}
        template_name = (cells.get("template") or "").strip() or None
        fields["template"] = template_name
        attributes: Any = {}
        raw = (cells.get("attributes") or "").strip()
        if raw:
            try:
                attributes = json.loads(raw)
            except json.JSONDecodeError:
                attributes = raw  # reported as not an object
        values: dict[str, str] = {}
        for heading, cell in cells.items():
            if heading is None or cell is None or cell == "":
                continue
            if heading.startswith("attr.") and isinstance(attributes, dict):
                attributes[heading[5:]] = _cell_value(template_name, heading[5:], cell)
            elif heading.startswith("value."):
                values[heading[6:]] = cell
        fields["attributes"] = attributes
        fields["values"] = values
        yield BatchRow(reader.line_num, fields)


def _cell_value(template_name: str | None, attribute: str, cell: str) -> Any:
    """A CSV cell as the template types the attribute (numbers stay text unless it says otherwise)."""
    found = templates().get(template_name or "")
    kind = found.schema.get("properties", {}).get(attribute, {}).get("type") if found else None
    try:
        if kind == "integer":
            return int(cell)
        if kind == "number":
            return float(cell)
    except ValueError:
        return cell
    if kind == "boolean" and cell.lower() in {"true", "false"}:
        return cell.lower() == "true"
    return cell


def json_line_rows(lines: Iterable[str]) -> Iterator[BatchRow]:
    """Rows of a JSON lines file; a line that is not a JSON object becomes a row that fails."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            yield BatchRow(number, {}, f"not JSON: {err.msg}")
            continue
        yield BatchRow(number, item) if isinstance(item, dict) else BatchRow(number, {}, "a row must be a JSON object")
