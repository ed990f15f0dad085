"""Named queries over the wire, in the EPCIS REST binding's shapes (`QueryDefinition`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from iip.traceability.models import NamedQuery

QUERY_NAME = r"^[^/\x00-\x1f\x7f]+$"  # a path segment: no slash, no control character


class QueryDefinitionIn(BaseModel):
    """A named query to create: its name and its standard query parameters (query-schema.json)."""

    name: str = Field(min_length=1, max_length=200, pattern=QUERY_NAME, examples=["shippedToday"])
    query: dict[str, Any] = Field(examples=[{"eventType": ["ObjectEvent"], "EQ_bizStep": ["shipping", "receiving"]}])
    description: str = Field(default="", max_length=2000)


class QueryDefinitionOut(BaseModel):
    name: str
    query: dict[str, Any]
    description: str = ""
    id: str = Field(description="the query's id: another name for it in this API")

    @classmethod
    def of(cls, row: NamedQuery) -> QueryDefinitionOut:
        return cls(name=row.name, query=row.parameters, description=row.description, id=row.id)
