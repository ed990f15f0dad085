"""Response and request shapes of the Handle REST API, for OpenAPI (the router answers these shapes)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class HandleDataOut(BaseModel):
    format: str = Field(examples=["string"])
    value: Any = Field(examples=["https://example.com/products/JXDY2106023"])


class HandleValueOut(BaseModel):
    index: int = Field(examples=[1])
    type: str = Field(examples=["URL"])
    data: HandleDataOut
    permissions: str | None = Field(default=None, description="admin read, admin write, public read, public write")
    ttl: int = 86400
    timestamp: str | None = Field(default=None, examples=["2026-01-01T00:00:00Z"])


class HandleRecordOut(BaseModel):
    """A resolution, or any answer with `responseCode` (1 success, 100 not found, 101 exists, ...)."""

    model_config = ConfigDict(populate_by_name=True)

    response_code: int = Field(alias="responseCode", examples=[1])
    handle: str | None = Field(default=None, examples=["88.118.8/JXDY2106023"])
    values: list[HandleValueOut] | None = None
    message: str | None = None
    signature: str | None = Field(default=None, description="with `signed=true`: Ed25519 over the values, base64")
    referral: dict[str, Any] | None = Field(
        default=None, description="responseCode 302: the prefix handle (HS_SITE, HS_PUBKEY) and its signature"
    )


class HandleListOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    response_code: int = Field(alias="responseCode", examples=[1])
    prefix: str
    total_count: str = Field(alias="totalCount", description="a string, as HANDLE.NET sends it")
    page: int
    page_size: int = Field(alias="pageSize")
    handles: list[str]


class PrefixListOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    response_code: int = Field(alias="responseCode", examples=[1])
    prefixes: list[str]


HANDLE_VALUES_BODY: dict[str, Any] = {
    "description": "An array of handle values, an object with `values`, or a single value.",
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["values"],
                "properties": {
                    "values": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["index", "type", "data"],
                            "properties": {
                                "index": {"type": "integer", "minimum": 1},
                                "type": {"type": "string"},
                                "data": {
                                    "type": "object",
                                    "properties": {"format": {"type": "string"}, "value": {}},
                                },
                                "ttl": {"type": "integer"},
                                "permissions": {"type": "string", "pattern": "^[01]{4}$"},
                            },
                        },
                    }
                },
            },
            "example": {
                "values": [
                    {"index": 1, "type": "URL", "data": {"format": "string", "value": "https://example.com/p/1"}},
                ]
            },
        }
    },
}
