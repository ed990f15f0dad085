"""Query parameters and document bodies that many routers share: the tenant a platform operator acts
in, text filters, and YAML/JSON documents imported and exported whole."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Query, Request
from fastapi.responses import JSONResponse, Response

from iip.kernel.documents import render_document

NO_NUL = r"^[^\x00]*$"  # NUL is refused by PostgreSQL text and is never meant
YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"})

TenantParam = Annotated[
    str | None,
    Query(max_length=32, pattern=NO_NUL, description="Platform operators: the tenant to act in (default: yours)."),
]
Filter = Annotated[str | None, Query(max_length=200, pattern=NO_NUL)]
DocumentFormat = Annotated[Literal["json", "yaml"], Query(alias="format")]


def declared_format(request: Request) -> str | None:
    """The document format the request's Content-Type names: "json", "yaml", or None to guess."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "application/json":
        return "json"
    return "yaml" if media_type in YAML_TYPES else None


def document_response(document: Any, document_format: str) -> Response:
    if document_format == "yaml":
        return Response(render_document(document, "yaml"), media_type="application/yaml")
    return JSONResponse(document)
