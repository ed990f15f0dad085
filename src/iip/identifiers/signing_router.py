"""The node's public key and verification of a record's signature (public, as resolution is)."""

from __future__ import annotations

import base64
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from iip.api.deps import DbSession, get_settings
from iip.api.problems import problem_responses
from iip.identifiers.codec import parse_handle
from iip.identifiers.signing import ALGORITHM, load_node_key, verify_handle
from iip.kernel.settings import Settings

router = APIRouter(tags=["signatures"])

SettingsDep = Annotated[Settings, Depends(get_settings)]


class NodeKeyOut(BaseModel):
    algorithm: str = Field(examples=[ALGORITHM])
    key_id: str = Field(description="first 16 hex digits of the SHA-256 of the raw public key")
    public_key: str = Field(description="the raw 32-byte Ed25519 public key, base64")
    public_key_pem: str


class VerificationOut(BaseModel):
    handle: str
    ok: bool
    reason: str
    key_id: str
    signature: str = Field(description="the stored signature, base64 (empty when unsigned)")


@router.get("/api/node/key", responses=problem_responses(503))
def node_key(settings: SettingsDep) -> NodeKeyOut:
    """The public key this node signs handle records with."""
    key = load_node_key(settings)
    return NodeKeyOut(
        algorithm=ALGORITHM,
        key_id=key.key_id,
        public_key=base64.b64encode(key.public_bytes).decode(),
        public_key_pem=key.public_pem,
    )


@router.get("/api/verify", responses=problem_responses(404, 422, 503))
def verify_record(
    handle: Annotated[str, Query(min_length=3, max_length=600, examples=["88.118.8/JXDY2106023"])],
    session: DbSession,
    settings: SettingsDep,
) -> VerificationOut:
    """Check a record's signature against its stored values: `ok`, or why it failed."""
    result = verify_handle(session, load_node_key(settings), parse_handle(handle))
    return VerificationOut(
        handle=result.handle, ok=result.ok, reason=result.reason, key_id=result.key_id, signature=result.signature
    )
