"""How the recursive resolver asks nodes: other nodes over HTTP (httpx), this node from its database.

Transport failures become `NodeUnreachable`, answers that are not JSON `InvalidAnswer`: the resolver
reports them as one clear line and the API as a 502.
"""

from __future__ import annotations

import json
import ssl
from typing import Any
from urllib.parse import quote

import anyio.to_thread
import httpx

from iip.identifiers.codec import HandleName, HandleProblem, ResponseCode
from iip.identifiers.delegation import ServiceReferral, parse_public_key, site_data
from iip.identifiers.resolver import InvalidAnswer, Node, NodeUnreachable, RecursiveResolver
from iip.identifiers.service import HandleService
from iip.identifiers.signing import answer_signature, load_node_key
from iip.kernel.db import Database
from iip.kernel.errors import Invalid
from iip.kernel.settings import Settings

MAX_ANSWER_BYTES = 16 * 1024 * 1024


def local_answer(db: Database, name: HandleName) -> tuple[int, dict[str, Any]]:
    """This node's anonymous answer, as `GET /api/handles/...?signed=true` gives it."""
    with db.session() as session:
        try:
            result = HandleService(session).resolve(name, None)
        except ServiceReferral as ref:
            body = {"responseCode": int(ref.response_code), "handle": name.handle, "referral": ref.referral.to_wire()}
            return ref.http_status, body
        except HandleProblem as err:
            return err.http_status, {"responseCode": int(err.response_code), "message": err.message}
        values = [v.to_wire() for v in result.values]
        code = ResponseCode.SUCCESS if values else ResponseCode.VALUES_NOT_FOUND
        signature = answer_signature(session, result.row, values) if result.row is not None else ""
        return 200, {"responseCode": int(code), "handle": result.handle, "values": values, "signature": signature}


class NodeClient:
    """Asks other nodes over HTTP; this node through its own database."""

    def __init__(self, settings: Settings, db: Database | None) -> None:
        self.timeout = settings.identifiers.resolver_timeout
        self.db = db
        self._tls: ssl.SSLContext | None = None

    def _client(self) -> httpx.AsyncClient:
        if self._tls is None:
            self._tls = ssl.create_default_context()  # once: loading the CA store costs milliseconds
        headers = {"Accept": "application/json", "User-Agent": "iip-resolver"}
        return httpx.AsyncClient(timeout=self.timeout, verify=self._tls, follow_redirects=False, headers=headers)

    async def ask(self, node: Node, name: HandleName) -> tuple[int, Any]:
        if node.local:
            if self.db is None:
                raise NodeUnreachable("this node has no database to answer from")
            return await anyio.to_thread.run_sync(local_answer, self.db, name)
        url = f"{node.url}/api/handles/{quote(name.handle, safe='/')}"
        return await self._get_json(url, {"signed": "true"})

    async def node_key(self, url: str) -> bytes:
        _status, body = await self._get_json(f"{url}/api/node/key", None)
        if not isinstance(body, dict) or not isinstance(body.get("public_key"), str):
            raise InvalidAnswer(f"{url}/api/node/key did not answer a public key")
        try:
            return parse_public_key(body["public_key"])
        except Invalid as err:
            raise InvalidAnswer(f"{url}/api/node/key: {err.message}") from None

    async def _get_json(self, url: str, params: dict[str, str] | None) -> tuple[int, Any]:
        try:
            async with self._client() as client, client.stream("GET", url, params=params) as response:
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_ANSWER_BYTES:
                        raise InvalidAnswer(f"{url} answered more than {MAX_ANSWER_BYTES // 2**20} MiB")
                status = response.status_code
        except httpx.TimeoutException:
            raise NodeUnreachable(f"{url} did not answer within {self.timeout:g} s") from None
        except httpx.HTTPError as err:
            raise NodeUnreachable(f"{url} is unreachable ({type(err).__name__}: {err})") from None
        try:
            return status, json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise InvalidAnswer(f"{url} answered HTTP {status} that is not JSON") from None


def fetch_node_key(url: str, *, timeout: float) -> bytes:
    """A node's published key, for delegating to it (operators' commands: blocking is fine).

    A URL that does not lead to a node's key is a mistake in the request (422), not this node's fault.
    """
    site_data(url, bytes(32))  # the URL's shape first, before anything goes on the network
    try:
        response = httpx.get(f"{url}/api/node/key", timeout=timeout, headers={"Accept": "application/json"})
        body = response.json()
    except httpx.HTTPError as err:
        raise Invalid(f"cannot fetch the node key from {url}: {type(err).__name__}", code="node_unreachable") from None
    except ValueError:
        raise Invalid(f"{url}/api/node/key did not answer JSON", code="node_unreachable") from None
    if response.status_code != 200 or not isinstance(body, dict) or not isinstance(body.get("public_key"), str):
        raise Invalid(f"{url}/api/node/key answered HTTP {response.status_code} without a key", code="node_unreachable")
    return parse_public_key(body["public_key"])


def build_resolver(settings: Settings, db: Database | None) -> RecursiveResolver:
    """A resolver with this node's settings; `db` lets it answer for this node without HTTP."""
    return RecursiveResolver(
        settings.identifiers,
        NodeClient(settings, db),
        own_key=lambda: load_node_key(settings).public_bytes,
    )
