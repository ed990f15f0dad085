"""Documents people write by hand (device registries, alarm rules): YAML or JSON in, YAML or JSON out.

One reader so that every import answers a broken document the same way: what is wrong and where,
as an `Invalid` the API turns into problem+json and the CLI and console show as they are.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import Any

import yaml
from pydantic import ValidationError

from iip.kernel.errors import Invalid

DOCUMENT_FORMATS = ("yaml", "json")
MAX_DOCUMENT_VALUES = 2_000_000  # a bound on the work of checking what a document holds


def read_document(
    data: bytes | str, document_format: str | None = None, *, max_bytes: int, max_values: int = MAX_DOCUMENT_VALUES
) -> Any:
    """A YAML or JSON document (`document_format` "yaml" or "json"; None: JSON if it opens with { or [)."""
    if len(data) > max_bytes:
        raise Invalid(f"the document is larger than {max_bytes // (1024 * 1024)} MiB", code="too_large")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise Invalid(f"the document is not UTF-8 (byte {err.start})", code="invalid_document") from None
    kind = document_format or ("json" if data.lstrip()[:1] in {"{", "["} else "yaml")
    if kind == "json":
        try:
            document = json.loads(data)
        except json.JSONDecodeError as err:
            raise Invalid(
                f"not valid JSON: {err.msg} at line {err.lineno} column {err.colno}", code="invalid_document"
            ) from None
    elif kind == "yaml":
        try:
            document = yaml.safe_load(data)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
            problem = getattr(err, "problem", None) or type(err).__name__
            raise Invalid(f"not valid YAML: {problem}{where}", code="invalid_document") from None
    else:
        raise Invalid(f"unknown document format '{kind}': expected yaml or json", code="invalid_document")
    _check_values(document, max_values)
    return document


def _check_values(document: Any, max_values: int) -> None:
    # YAML anchors let a few bytes stand for millions of values: count them before anyone walks them.
    budget = max_values
    stack = [document]
    while stack:
        node = stack.pop()
        budget -= 1
        if budget < 0:
            raise Invalid(f"the document has more than {max_values} values", code="too_large")
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def render_document(document: Any, document_format: str = "yaml") -> str:
    """YAML (keys in their order, readable Unicode) or indented JSON."""
    if document_format == "json":
        return json.dumps(document, ensure_ascii=False, indent=2) + "\n"
    plain = dict(document) if isinstance(document, Mapping) else document
    return yaml.safe_dump(plain, allow_unicode=True, sort_keys=False, default_flow_style=False)


def validation_messages(err: ValidationError, where: str = "", *, tags: Collection[str] = ()) -> list[str]:
    """Pydantic's errors as `place: message` lines, e.g. `profiles[0].metrics[1].modbus.address: ...`.

    `tags` are a discriminated union's tags: pydantic puts the tag in the location, the document does not.
    """
    lines: list[str] = []
    for error in err.errors():
        place = where
        loc = error["loc"]
        if loc and loc[0] in tags:
            loc = loc[1:]
        for part in loc:
            place += f"[{part}]" if isinstance(part, int) else (f".{part}" if place else str(part))
        message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"{place}: {message}" if place else message)
    return lines
