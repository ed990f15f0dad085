"""Request and response bodies of the GS1 link API."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field


class Gs1LinkCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gs1_key: str = Field(
        min_length=3, max_length=300, description="Primary key as `AI/value`, e.g. `01/09506000134352`."
    )
    qualifiers: str = Field(default="", max_length=300, description="Key qualifiers, e.g. `10/ABC` or `21/S1`.")
    link_type: str = Field(min_length=1, max_length=100, description="e.g. `gs1:pip`, `gs1:epil`.")
    href: str = Field(min_length=1, max_length=2000, description="Absolute http(s) URL of the target.")
    title: str = Field(default="", max_length=300)
    language: str = Field(default="", max_length=20, description="BCP 47 tag, e.g. `en`, `zh-CN`.")
    media_type: str = Field(default="", max_length=100, description="e.g. `text/html`.")
    is_default: bool = Field(default=False, description="The target of a plain scan (per language).")
    handle: str | None = Field(default=None, max_length=600, description="Linked IIP identifier, e.g. `88.118.8/ABC`.")


class Gs1LinkOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    gs1_key: str
    qualifiers: str
    link_type: str
    href: str
    title: str
    language: str
    media_type: str
    is_default: bool
    handle: str | None
    created_at: dt.datetime


class ResolverLinkType(BaseModel):
    namespace: str
    prefix: str


class ResolverDescription(BaseModel):
    """The resolver description file served at `/.well-known/gs1resolver`."""

    name: str
    resolverRoot: str  # noqa: N815 - field names are fixed by the GS1 JSON schema
    supportedPrimaryKeys: list[str]  # noqa: N815
    supportedLinkType: list[ResolverLinkType]  # noqa: N815
    linkTypeDefaultCanBeLinkset: bool  # noqa: N815
