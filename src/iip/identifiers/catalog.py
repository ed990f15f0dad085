"""Product information on handles: typed attribute templates, search, and bulk registration.

A handle may carry `attributes` checked against a template (`product`, `batch`, `part`,
`equipment`: JSON Schemas shipped in `templates/`). `Handle.search_text` holds the words a search
matches (handle name, URL values, attribute values); it is kept current by a mapper hook, so every
write through the ORM refreshes it, and bulk inserts compute it themselves.

Search uses SQLite FTS5 (`identifiers_handle_fts`) or PostgreSQL's full-text search over
`to_tsvector('simple', search_text)`; words in Chinese (or other scripts written without spaces)
match as substrings of `search_text` instead, since neither tokenizer splits them into words.

Bulk registration is atomic: every row is checked, all errors are reported with their line
numbers, and nothing is written unless every row is good. Every row is signed by the node key like
a single registration (the per-row work runs in worker processes, see `bulk_workers`), and rows are
written with multi-row inserts by a writer thread while the next chunk is checked.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache, lru_cache
from importlib import resources
from typing import Any, TypeVar

import orjson
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError
from sqlalchemy import Integer, Select, String, cast, column, event, exists, func, literal_column, select, table, text
from sqlalchemy.orm import Mapper, Session
from sqlalchemy.sql.elements import ColumnElement

from iip.identifiers.answers import stored_answer
from iip.identifiers.bulk_workers import Results, in_workers, seed_of
from iip.identifiers.codec import (
    ADMIN_GROUP_INDEX,
    ADMIN_INDEX,
    CONTROL_RE,
    DEFAULT_TTL,
    DEFAULT_VALUE_PERMISSIONS,
    HS_ADMIN,
    MAX_KEY_LENGTH,
    MAX_VALUE_BYTES,
    NA_PREFIX,
    PREFIX_RE,
    HandleName,
    HandleValue,
    parse_handle,
    timestamp,
)
from iip.identifiers.models import Handle, Prefix
from iip.identifiers.signing import node_key_for
from iip.kernel import audit
from iip.kernel.auth import Principal
from iip.kernel.db import utcnow
from iip.kernel.ed25519 import signer
from iip.kernel.errors import DomainError, Invalid, NotFound

_T = TypeVar("_T")

TEMPLATE_NAMES = ("product", "batch", "part", "equipment")
MAX_ATTRIBUTE_BYTES = 64 * 1024
MAX_BATCH_ROWS = 10_000
INSERT_CHUNK = 1000  # rows per multi-row INSERT
MAX_SEARCH_TERMS = 10
COUNT_LIMIT = 1000  # matches counted past a page's start; beyond it the total is "more than"
COMMON_TERM_ROWS = 20_000  # full-text matches above which a page is found by walking key order
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


def _never(_instance: Any) -> bool:
    return False


def _compile_quick(schema: Mapping[str, Any]) -> Callable[[Any], bool]:
    """`_quick_valid` for one schema, with its keywords read once rather than for every instance."""
    if not _QUICK_KEYWORDS.issuperset(schema):
        return _never
    kinds = schema.get("type")
    names = [] if kinds is None else [kinds] if isinstance(kinds, str) else list(kinds)
    if any(n not in _JSON_TYPES for n in names):
        return _never
    types = tuple(t for n in names for t in _JSON_TYPES[n]) if kinds is not None else None
    refuse_bool = kinds is not None and "boolean" not in names
    min_length, max_length = schema.get("minLength", 0), schema.get("maxLength")
    pattern = _compiled_pattern(schema["pattern"]) if "pattern" in schema else None
    fmt = schema.get("format")
    minimum = schema.get("minimum")
    required = tuple(schema.get("required", ()))
    max_properties = schema.get("maxProperties")
    properties = {name: _compile_quick(sub) for name, sub in schema.get("properties", {}).items()}
    extra = schema.get("additionalProperties", True)
    extra_check = _compile_quick(extra) if isinstance(extra, dict) else None
    if names == ["string"] and fmt is None:
        return _string_check(min_length, max_length, pattern)
    required_names = frozenset(required)

    def check(instance: Any) -> bool:  # noqa: PLR0911, PLR0912
        if types is not None and ((refuse_bool and isinstance(instance, bool)) or not isinstance(instance, types)):
            return False
        if isinstance(instance, str):
            size = len(instance)
            if size < min_length or (max_length is not None and size > max_length):
                return False
            if pattern is not None and not pattern.search(instance):
                return False
            if fmt is not None and not _FORMATS.conforms(instance, fmt):
                return False
        elif isinstance(instance, dict):
            if not required_names <= instance.keys():
                return False
            if max_properties is not None and len(instance) > max_properties:
                return False
            for name, item in instance.items():
                sub = properties.get(name)
                if sub is None:
                    if extra is False or (extra_check is not None and not extra_check(item)):
                        return False
                elif not sub(item):
                    return False
        elif minimum is not None and isinstance(instance, int | float) and not isinstance(instance, bool):
            return bool(instance >= minimum)
        return True

    return check


def _string_check(min_length: int, max_length: int | None, pattern: re.Pattern[str] | None) -> Callable[[Any], bool]:
    """The check of a plain string schema (most attributes): the same answers, without the branches."""
    longest = sys.maxsize if max_length is None else max_length

    def check(instance: Any) -> bool:
        return (
            isinstance(instance, str)
            and min_length <= len(instance) <= longest
            and (pattern is None or pattern.search(instance) is not None)
        )

    return check


@cache
def _quick_check(template_name: str) -> Callable[[Any], bool]:
    return _compile_quick(template(template_name).schema)


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
    if len(json.dumps(attributes, ensure_ascii=False, separators=(",", ":"))) > MAX_ATTRIBUTE_BYTES:
        return "", f"attributes are larger than {MAX_ATTRIBUTE_BYTES // 1024} KiB"
    if template_name is None:
        return None
    if template_name not in templates():
        return "", f"unknown template '{template_name[:50]}'; expected one of {', '.join(TEMPLATE_NAMES)}"
    if _quick_check(template_name)(attributes):
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


def search_text(
    handle: str,
    values: Iterable[Mapping[str, Any]],
    attributes: Mapping[str, Any] | None,
    *,
    split_words: bool = True,
) -> str:
    """What a search matches: the handle name, URL values and attribute values.

    Each part appears as written and, with `split_words`, again split at punctuation, so
    `88.118.8/JXDY2106023` is found by `JXDY2106023` and a URL by its host name. PostgreSQL's parser
    keeps a path or a URL whole and needs the split words; SQLite's FTS5 tokenizer (unicode61)
    splits at punctuation itself, so there they would only double the index.
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
    return _joined_search_text(parts, split_words=split_words)


def _joined_search_text(parts: list[str], *, split_words: bool = True) -> str:
    # One regex pass over the joined parts finds the same words as one per part: a space ends a word.
    text = " ".join(p for p in parts if p)
    if not split_words:
        return text
    words = " ".join(WORD_RE.findall(text))
    return f"{text} {words}" if text and words else text


def splits_words(dialect_name: str) -> bool:
    """Whether search text on this database needs its words split out (see `search_text`)."""
    return dialect_name != "sqlite"


@event.listens_for(Handle, "before_insert")
@event.listens_for(Handle, "before_update")
def _refresh_search_text(_mapper: Mapper[Handle], connection: Any, row: Handle) -> None:
    split = splits_words(connection.dialect.name)
    row.search_text = search_text(row.handle, row.values or [], row.attributes, split_words=split)


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
    """One page of matches. `total` is exact when `total_exact`, else a floor: more match."""

    total: int
    page: int
    page_size: int
    items: list[Handle]
    total_exact: bool = True


@dataclass(slots=True)
class _FullText:
    """The words and substrings a search needs in `search_text`, and how to ask the index for them."""

    words: list[str] = field(default_factory=list)
    substrings: list[str] = field(default_factory=list)
    nothing: bool = False  # text with nothing searchable in it matches nothing


def _full_text(query_text: str, attribute_values: Iterable[str]) -> _FullText:
    wanted = _FullText()
    terms = query_text.split()[:MAX_SEARCH_TERMS]
    for term in terms:
        if UNSPACED_RE.search(term):
            # A CJK run is one token to both full-text indexes, so part of one is found by substring.
            wanted.substrings.append(term)
        else:
            wanted.words.extend(WORD_RE.findall(term))
    if terms and not wanted.words and not wanted.substrings:
        wanted.nothing = True
    for value in attribute_values:
        # An attribute value's words are in the search text (`_words`) unless it is a boolean,
        # which JSON comparison reads as 0 or 1: only words that cannot be one narrow the search.
        if value not in ("0", "1"):
            wanted.words.extend(WORD_RE.findall(value))
    return wanted


def _sqlite_match(words: list[str]) -> str:
    # Each word quoted: FTS5 query syntax (AND, NEAR, column filters) is not offered to callers.
    return " ".join('"' + w.replace('"', '""') + '"' for w in words)


_FTS = table("identifiers_handle_fts", column("rowid", Integer))
_FTS_MATCH = literal_column("identifiers_handle_fts").op("MATCH")


def _filters(query: SearchQuery, actor: Principal, *, key_range: bool) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if not actor.is_platform:
        conditions.append(Handle.tenant_id == actor.tenant_id)
    conditions.append(Handle.prefix != NA_PREFIX)
    if query.prefix:
        lowered = query.prefix.lower()
        conditions.append(Handle.prefix == lowered)
        if key_range:
            # A key starts with its prefix and "/": the same rows as a key range the key indexes serve.
            conditions.extend((Handle.key >= lowered + "/", Handle.key < lowered + "0"))
    if query.template:
        conditions.append(Handle.template == query.template)
    conditions.extend(
        cast(Handle.attributes[attribute].as_string(), String) == wanted
        for attribute, wanted in query.attributes.items()
    )
    return conditions


def _by_rowid(conditions: list[ColumnElement[bool]]) -> list[ColumnElement[bool]]:
    # SQLite's planner would walk an index of these columns and test every row against the
    # full-text matches; `likely()` keeps it from using them, so the matches drive by rowid.
    return [func.likely(condition) for condition in conditions]


def _common_words(session: Session, match: str) -> bool:
    found = session.scalar(
        select(func.count()).select_from(
            select(_FTS.c.rowid).where(_FTS_MATCH(match)).limit(COMMON_TERM_ROWS + 1).subquery()
        )
    )
    return (found or 0) > COMMON_TERM_ROWS


def _sqlite_word_search(
    session: Session, query: SearchQuery, actor: Principal, wanted: _FullText
) -> tuple[Select[int], Select[Handle]]:
    """The count and page statements of a search with words, each driven the cheapest way."""
    match = _sqlite_match(wanted.words)
    substrings = [Handle.search_text.icontains(term, autoescape=True) for term in wanted.substrings]
    driven = [*_by_rowid(_filters(query, actor, key_range=False)), *substrings]
    if not _common_words(session, match):
        # Few matches: fetch them by rowid and sort them.
        matching = Handle.id.in_(select(_FTS.c.rowid).where(_FTS_MATCH(match)))
        return select(Handle.id).where(*driven, matching), select(Handle).where(*driven, matching)
    # Words most rows have: sorting every match would read the whole index. The page walks the rows
    # in key order and asks the index about each (a few lookups per row shown); the count streams
    # the matches and stops at its limit.
    probe = exists().where(_FTS_MATCH(match), _FTS.c.rowid == Handle.id)
    count = (
        select(Handle.id).select_from(_FTS.join(Handle, Handle.id == _FTS.c.rowid)).where(_FTS_MATCH(match), *driven)
    )
    page = select(Handle).where(*_filters(query, actor, key_range=True), *substrings, probe)
    return count, page


def optimize_search_index(session: Session) -> bool:
    """Merge SQLite's full-text index into one segment (seconds per million handles).

    Bulk loads leave the index in many segments, and every lookup visits each: after a large import
    word searches are several times faster. PostgreSQL's GIN index needs no such step (False).
    """
    if session.get_bind().dialect.name != "sqlite":
        return False
    session.execute(text("INSERT INTO identifiers_handle_fts(identifiers_handle_fts) VALUES ('optimize')"))
    return True


def search(session: Session, query: SearchQuery, actor: Principal) -> SearchPage:
    """The caller's tenant's handles matching every criterion given, ordered by handle.

    The count stops `COUNT_LIMIT` matches past the page's start (`total_exact` False beyond it):
    counting a million matches would cost a thousand times what finding a page does.
    """
    actor.require("identifiers.read")
    for attribute in query.attributes:
        if not ATTRIBUTE_NAME_RE.match(attribute):
            raise Invalid(f"invalid attribute name '{attribute[:70]}'", code="invalid_attribute_name")
    wanted = _full_text(query.text, query.attributes.values())
    if wanted.nothing:
        return SearchPage(0, query.page, query.page_size, [])
    if wanted.words and session.get_bind().dialect.name == "sqlite":
        count, page = _sqlite_word_search(session, query, actor, wanted)
    else:
        conditions = _filters(query, actor, key_range=True)
        conditions.extend(Handle.search_text.icontains(term, autoescape=True) for term in wanted.substrings)
        if wanted.words:
            vector = func.to_tsvector(literal_column("'simple'::regconfig"), Handle.search_text)
            tsquery = func.plainto_tsquery(literal_column("'simple'::regconfig"), " ".join(wanted.words))
            conditions.append(vector.op("@@")(tsquery))
        count, page = select(Handle.id).where(*conditions), select(Handle).where(*conditions)
    start = (query.page - 1) * query.page_size
    limit = start + COUNT_LIMIT
    total = session.scalar(select(func.count()).select_from(count.limit(limit + 1).subquery())) or 0
    rows = session.scalars(page.order_by(Handle.key).offset(start).limit(query.page_size))
    return SearchPage(min(total, limit), query.page, query.page_size, list(rows), total_exact=total <= limit)


def url_of(row: Handle) -> str | None:
    for value in row.values:
        data = value.get("data")
        if value.get("type") == "URL" and isinstance(data, dict) and isinstance(data.get("value"), str):
            return str(data["value"])
    return None


# --- bulk registration


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


# Bulk rows are encoded from string templates rather than through pydantic and json.dumps of dicts,
# which cost more than everything else per row. Each template gives exactly the text of its
# reference: `json.dumps` of `_string_value` for the stored values, and the value's part of
# `signing.canonical_record` for the signed bytes (tests hold them to it).
_ascii_json = json.encoder.encode_basestring_ascii
_utf8_json = json.encoder.encode_basestring


def _stored_string(index: int, value_type: str, data: str, stamp: str) -> str:
    return (
        f'{{"index": {index}, "type": {_ascii_json(value_type)}, "data": {{"format": "string", "value": '
        f'{_ascii_json(data)}}}, "ttl": {DEFAULT_TTL}, "timestamp": "{stamp}", '
        f'"permissions": "{DEFAULT_VALUE_PERMISSIONS}"}}'
    )


def _signed_string(index: int, value_type: str, data: str, stamp: str) -> str:
    # Keys sorted; no "permissions": to_wire() leaves the default out.
    return (
        f'{{"data":{{"format":"string","value":{_utf8_json(data)}}},"index":{index},'
        f'"timestamp":"{stamp}","ttl":{DEFAULT_TTL},"type":{_utf8_json(value_type)}}}'
    )


def _signed_record(handle: str, values: Iterable[str]) -> bytes:
    return f'{{"handle":{_utf8_json(handle)},"values":[{",".join(values)}]}}'.encode()


HANDLE_COLUMNS = (
    "tenant_id",
    "key",
    "handle",
    "prefix",
    "values",
    "template",
    "attributes",
    "search_text",
    "signature",
    "answer",
    "version",
    "created_at",
    "updated_at",
)
HISTORY_COLUMNS = ("tenant_id", "key", "version", "values", "change", "principal", "at")
CHUNK_ROWS = 1000  # rows checked, signed and written together
FIRST_CHUNK_ROWS = 256  # small, so the workers and the writer start early
# One INSERT per chunk and table: SQLite runs the search index trigger's FTS5 work per statement, so
# one statement per row (executemany) costs several times more. 1000 x 12 parameters stays within
# SQLite's (32766 since 3.32) and PostgreSQL's (65535) limits.
ROWS_PER_INSERT = 1000
MAX_EXTRA_VALUES = ADMIN_INDEX - 2  # indexes 2..99: the admin value keeps 100
MAX_CHUNKS_IN_FLIGHT = 4


@dataclass(frozen=True, slots=True)
class RowEncoding:
    """What encoding a batch's rows needs besides the rows; the same for the whole batch."""

    seed: bytes | None  # the node key's; None: not signed
    stamp: str
    split_words: bool


# An admitted row: its handle, its fields, and the HS_ADMIN value of its prefix (stored, signed).
RowItem = tuple[str, Mapping[str, Any], tuple[str, str]]
# The columns a row's encoding gives: values, template, attributes, search text, signature, answer.
EncodedRow = tuple[str, str | None, str, str, str, bytes | None]
NOT_UNICODE = "the row holds text that is not valid Unicode (a lone surrogate)"


def encode_rows(encoding: RowEncoding, items: Sequence[RowItem]) -> list[EncodedRow | str]:
    """Each row's columns and signature, or what is wrong with it: the per-row work of a batch,
    which needs neither the database nor the rest of the batch, and so runs in worker processes."""
    sign = signer(encoding.seed) if encoding.seed is not None else None
    encoded: list[EncodedRow | str] = []
    for handle, fields, admin in items:
        try:
            row = _encode_row(encoding, handle, fields, admin)
        except DomainError as err:
            encoded.append(err.message)
        except UnicodeEncodeError:
            encoded.append(NOT_UNICODE)
        else:
            values, template, attributes, search_text, to_sign, answer = row
            signature = sign(to_sign) if sign is not None else ""
            encoded.append((values, template, attributes, search_text, signature, answer))
    return encoded


def _encode_row(
    encoding: RowEncoding, handle: str, fields: Mapping[str, Any], admin: tuple[str, str]
) -> tuple[str, str | None, str, str, bytes, bytes | None]:
    """(values, template, attributes, search text, the bytes to sign, the stored answer); raises
    DomainError, or UnicodeEncodeError for text that is not valid Unicode."""
    url = fields.get("url")
    if not isinstance(url, str) or not url.strip():
        raise Invalid("url is missing")
    if len(url) * 4 > MAX_VALUE_BYTES and len(url.encode()) > MAX_VALUE_BYTES:
        raise Invalid("url is longer than 64 KiB")
    url = url.strip()
    stamp = encoding.stamp
    stored = [_stored_string(1, "URL", url, stamp)]
    signed = [_signed_string(1, "URL", url, stamp)]
    extra = fields.get("values")
    if extra:
        _extra_values(extra, stored, signed, stamp)
    stored.append(admin[0])
    signed.append(admin[1])
    template_name = fields.get("template") or None
    if template_name is not None and not isinstance(template_name, str):
        raise Invalid("template must be a string")
    attributes = fields.get("attributes")
    if attributes is None or attributes == "":
        attributes = {}
    attributes_json = _checked_attributes(template_name, attributes)
    searchable = _joined_search_text([handle, url, *_attribute_words(attributes)], split_words=encoding.split_words)
    searchable.encode()  # raises UnicodeEncodeError for a lone surrogate
    values = f"[{', '.join(stored)}]"
    answer = stored_answer(handle, orjson.loads(values))
    return values, template_name, attributes_json, searchable, _signed_record(handle, signed), answer


@lru_cache(maxsize=1024)
def _usable_value_type(type_text: str) -> bool:
    return bool(VALUE_TYPE_RE.fullmatch(type_text)) and type_text.upper() not in {"URL", "HS_ADMIN"}


def _extra_values(extra: Any, stored: list[str], signed: list[str], stamp: str) -> None:
    """`{"TYPE": "value"}` as string values from index 2."""
    if not isinstance(extra, Mapping):
        raise Invalid("values must be an object of TYPE: value")
    if len(extra) > MAX_EXTRA_VALUES:
        raise Invalid(f"at most {MAX_EXTRA_VALUES} values besides the URL")
    for index, (value_type, data) in enumerate(extra.items(), start=2):
        type_text = str(value_type)
        if not _usable_value_type(type_text):
            raise Invalid(f"invalid value type '{type_text[:70]}'")
        text = data if type(data) is str else str(data) if isinstance(data, int | float) else None
        if text is None or (len(text) * 4 > MAX_VALUE_BYTES and len(text.encode()) > MAX_VALUE_BYTES):
            raise Invalid(f"value {type_text} must be a string of at most 64 KiB")
        stored.append(_stored_string(index, type_text, text, stamp))
        signed.append(_signed_string(index, type_text, text, stamp))


class BulkRegistration:
    """Registers many new handles in one transaction: `add` rows (in chunks), then `finish`.

    Rows are checked, signed (by the node key, as single registrations are) and inserted in
    chunks, in a pipeline: this thread admits a chunk's rows (`_admit`: the checks that need the
    database or the rest of the batch), worker processes check, encode and sign them (`encode_rows`)
    and a writer thread inserts the chunks before (the database driver releases the GIL while it
    works). The session is only used by the writer thread until `finish`.

    After the first bad row nothing more is written, the rest are only checked, and `finish`
    raises `BatchRejected` listing every bad row. The caller then rolls the transaction back.
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
        self._prefix_syntax: dict[str, bool] = {}
        self._admin_values: dict[str, tuple[str, str]] = {}
        self._tenants: set[str] = set()
        self._now = utcnow()
        self._stamp = timestamp(self._now)
        key = node_key_for(session)  # None: unsigned, as sign_row does for such a database
        connection = session.connection()
        dialect = connection.dialect
        processor = Handle.__table__.c.created_at.type.dialect_impl(dialect).bind_processor(dialect)
        self._bound_now = processor(self._now) if processor else self._now
        self._mark = "?" if dialect.paramstyle == "qmark" else "%s"
        split_words = splits_words(dialect.name)
        self._encoding = RowEncoding(None if key is None else seed_of(key), self._stamp, split_words)
        self._checking = RowEncoding(None, self._stamp, split_words)  # after a bad row: nothing to sign
        self._statements: dict[tuple[str, int], str] = {}
        self._writer: ThreadPoolExecutor | None = None
        self._in_flight: deque[Future[list[RowError]]] = deque()
        self._refused = False  # set by the writer thread once a chunk held a taken handle
        self._chunk_rows = FIRST_CHUNK_ROWS

    def _writer_thread(self) -> ThreadPoolExecutor:
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="iip-bulk-write")
        return self._writer

    def _on_writer(self, work: Callable[[], _T]) -> _T:
        """Run database work on the writer thread, after what was queued before it."""
        return self._writer_thread().submit(work).result()

    def _prefix(self, key: str) -> Prefix | None:
        if key not in self._prefixes:
            query = select(Prefix).where(Prefix.prefix == key)
            prefix = self._on_writer(lambda: self.session.scalar(query))
            usable = (
                prefix is not None
                and not prefix.node_url
                and prefix.status == "approved"
                and (self.actor.is_platform or prefix.tenant_id == self.actor.tenant_id)
            )
            self._prefixes[key] = prefix if usable else None
        return self._prefixes[key]

    def _well_formed_prefix(self, prefix: str) -> bool:
        known = self._prefix_syntax.get(prefix)
        if known is None:
            known = self._prefix_syntax[prefix] = PREFIX_RE.match(prefix) is not None
        return known

    def _admin(self, prefix: str) -> tuple[str, str]:
        """The HS_ADMIN value of a handle under `prefix`: (stored JSON, signed JSON)."""
        found = self._admin_values.get(prefix)
        if found is None:
            value = _admin_value(prefix, self._stamp)
            wire = HandleValue.model_validate(value).to_wire()
            signed = json.dumps(wire, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            found = self._admin_values[prefix] = (json.dumps(value), signed)
        return found

    def _admit(self, row: BatchRow) -> tuple[tuple[str, str, str, str], RowItem]:
        """The row's (tenant, key, handle, prefix) and what its encoding needs, if this node may
        register it: the checks that need the batch or the database. Raises DomainError."""
        fields = row.fields
        if row.problem is not None:
            raise Invalid(row.problem)
        handle = fields.get("handle")
        if not isinstance(handle, str) or not handle:
            raise Invalid("handle is missing")
        handle = handle.strip()
        prefix_text, slash, suffix = handle.partition("/")
        key = handle.lower()
        if not (
            slash
            and suffix
            and self._well_formed_prefix(prefix_text)
            and not CONTROL_RE.search(suffix)
            and len(key) <= MAX_KEY_LENGTH
        ):
            parse_handle(handle)  # raises, saying what is wrong
        prefix_key = prefix_text.lower()
        if prefix_key == NA_PREFIX:
            raise Invalid("naming authority handles (0.NA/...) cannot be registered in bulk")
        prefix = self._prefix(prefix_key)
        if prefix is None:
            raise Invalid(f"prefix '{prefix_text}' is not homed on this server")
        if key in self._seen:
            raise Invalid(f"handle '{handle}' appears twice in the batch")
        self._seen.add(key)
        return (prefix.tenant_id, key, handle, prefix_key), (handle, fields, self._admin(prefix_text))

    def add(self, rows: Iterable[BatchRow]) -> None:
        try:
            chunk: list[BatchRow] = []
            for row in rows:
                chunk.append(row)
                if len(chunk) >= self._chunk_rows:
                    self._prepare(chunk)
                    chunk = []
                    # Small chunks first, so the workers and the writer start early.
                    self._chunk_rows = min(self._chunk_rows * 2, CHUNK_ROWS)
            if chunk:
                self._prepare(chunk)
        except BaseException:
            self._stop()
            raise

    def _prepare(self, rows: list[BatchRow]) -> None:
        """Admit a chunk's rows here; encode and sign them in the workers; queue them for the writer thread."""
        lines: list[int] = []
        heads: list[tuple[str, str, str, str]] = []
        items: list[RowItem] = []
        for row in rows:
            try:
                head, item = self._admit(row)
            except DomainError as err:
                self.errors.append(RowError(row.line, str(row.fields.get("handle") or "")[:200], err.message))
            else:
                lines.append(row.line)
                heads.append(head)
                items.append(item)
        if not items:
            return
        writing = not self.errors  # after a bad row the rest are only checked
        encoding = self._encoding if writing else self._checking
        encoded = in_workers(encode_rows, encoding, items)
        self._in_flight.append(self._writer_thread().submit(self._store, lines, heads, encoded, writing=writing))
        while len(self._in_flight) > MAX_CHUNKS_IN_FLIGHT or (self._in_flight and self._in_flight[0].done()):
            self.errors.extend(self._in_flight.popleft().result())

    def _store(
        self,
        lines: list[int],
        heads: list[tuple[str, str, str, str]],
        encoded: Results[EncodedRow | str],
        *,
        writing: bool,
    ) -> list[RowError]:
        """On the writer thread: the chunk's wrong rows and taken handles, or else the chunk inserted."""
        keys = [head[1] for head in heads]
        # The driver's own statement, cached by its size: compiling 1000 bound keys each time is not free.
        found = self.session.connection().exec_driver_sql(self._taken_statement(len(keys)), tuple(keys))
        taken = {row[0] for row in found}
        results = encoded.result()
        errors = [
            RowError(line, head[2], result if type(result) is str else f"handle '{head[2]}' already exists")
            for line, head, result in zip(lines, heads, results, strict=True)
            if type(result) is str or head[1] in taken
        ]
        if errors:
            self._refused = True
            return errors
        if writing and not self._refused:
            now = self._bound_now
            self._insert([(*head, *result, 1, now, now) for head, result in zip(heads, results, strict=True)])
        return []

    def _taken_statement(self, rows: int) -> str:
        statement = self._statements.get(("taken", rows))
        if statement is None:
            marks = ", ".join([self._mark] * rows)
            statement = f"SELECT key FROM identifiers_handle WHERE key IN ({marks})"  # noqa: S608 - constants
            self._statements[("taken", rows)] = statement
        return statement

    def _statement(self, table_name: str, columns: Sequence[str], rows: int) -> str:
        statement = self._statements.get((table_name, rows))
        if statement is None:
            one = f"({', '.join([self._mark] * len(columns))})"
            names = ", ".join(f'"{c}"' for c in columns)
            statement = f"INSERT INTO {table_name} ({names}) VALUES {', '.join([one] * rows)}"  # noqa: S608 - constants
            self._statements[(table_name, rows)] = statement
        return statement

    def _insert(self, records: list[tuple[Any, ...]]) -> None:
        connection = self.session.connection()
        label = self.actor.label[:200]
        for start in range(0, len(records), ROWS_PER_INSERT):
            part = records[start : start + ROWS_PER_INSERT]
            sql = self._statement("identifiers_handle", HANDLE_COLUMNS, len(part))
            connection.exec_driver_sql(sql, tuple(itertools.chain.from_iterable(part)))
            history = [(r[0], r[1], 1, r[4], "create", label, self._bound_now) for r in part]
            sql = self._statement("identifiers_handle_history", HISTORY_COLUMNS, len(part))
            connection.exec_driver_sql(sql, tuple(itertools.chain.from_iterable(history)))
        self.count += len(records)
        self._tenants.update(r[0] for r in records)

    def _drain(self) -> None:
        """Wait for the writer thread's queue; then the session is this thread's again."""
        try:
            while self._in_flight:
                self.errors.extend(self._in_flight[0].result())
                self._in_flight.popleft()
        except BaseException:
            self._stop()
            raise
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None

    def close(self) -> None:
        """Stop the writer thread (what is queued is dropped); for callers that stop before `finish`."""
        self._stop()

    def _stop(self) -> None:
        """After a failure: let the writer thread finish what it is doing and drop the rest."""
        for pending in self._in_flight:
            pending.cancel()
        self._in_flight.clear()
        if self._writer is not None:
            self._writer.shutdown(wait=True, cancel_futures=True)
            self._writer = None

    def finish(self) -> int:
        """The number of handles registered; raises BatchRejected when any row was wrong."""
        self._drain()
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


def _attribute_words(attributes: Mapping[str, Any]) -> Iterator[str]:
    # `_words`, with the common case (a flat object of strings) taken without recursion.
    for item in attributes.values():
        if type(item) is str:
            yield item
        else:
            yield from _words(item)


def _checked_attributes(template_name: str | None, attributes: Any) -> str:
    """`attributes` as JSON text, once they pass the template; raises Invalid saying what is wrong."""
    if isinstance(attributes, dict):
        encoded = _attributes_json(attributes)
        # Within the limit here is within it as `attribute_problem` measures it (compact JSON
        # characters): this text is compact too, and UTF-8 or ASCII escapes only lengthen it.
        if len(encoded) <= MAX_ATTRIBUTE_BYTES and (
            template_name is None or (template_name in templates() and _quick_check(template_name)(attributes))
        ):
            return encoded
    problem = attribute_problem(template_name, attributes)
    if problem is not None:
        raise Invalid(f"attributes {problem[1]}")
    return json.dumps(attributes)


def _attributes_json(attributes: dict[str, Any]) -> str:
    # orjson for the common flat object of strings (several times faster than json); anything else
    # through json, which keeps what orjson would change (NaN) or refuse (keys that are not strings).
    if all(type(v) is str for v in attributes.values()):
        try:
            return orjson.dumps(attributes).decode()
        except TypeError:
            pass
    return json.dumps(attributes, separators=(",", ":"))


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
