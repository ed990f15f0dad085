"""Recursive resolution across identifier nodes: root -> secondary -> enterprise, signatures checked.

Given a handle, the resolver asks the root node (or, from its cache, the deepest node it already
knows for the handle's prefix). A node answers the record, "not found", or a service referral
(responseCode 302) carrying the prefix handle `0.NA/<prefix>` with HS_SITE and HS_PUBKEY values.
Every answer must be signed by the node that gave it: the root's key is pinned in the settings (or
learnt on first use), and each referral, checked against the referring node's key, names the key of
the next node. A record whose signature fails or is missing is refused and never cached.

Answers are cached for their TTL (the shortest TTL of their values, at most `resolver_max_ttl`):
records by handle, referrals by prefix, "not found" for `resolver_negative_ttl`. The cache is
bounded (least recently used entries go first). Each referral must name a prefix that covers the
handle and lies strictly below the one that led to the referring node, so a chain always ends; a
node visited twice and more than `resolver_max_depth` referrals are errors too.

This module holds no I/O: the `Upstream` given to the resolver asks the nodes (see `upstream.py`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from iip.identifiers.codec import (
    NA_PREFIX,
    HandleName,
    HandleNotFound,
    HandleProblem,
    ResponseCode,
    load_values,
    parse_handle,
)
from iip.identifiers.delegation import ancestors, is_under, read_delegation
from iip.identifiers.signing import canonical_record
from iip.kernel.errors import Invalid
from iip.kernel.settings import IdentifierSettings

K = TypeVar("K")
V = TypeVar("V")


# --- errors: the Handle-style answer of the resolver's route carries `code` and the HTTP status


class ResolutionFailed(HandleProblem):
    """An upstream node could not be used; 502 as a gateway answers a bad upstream."""

    code = "resolution_failed"
    http_status = 502


class NodeUnreachable(ResolutionFailed):
    code = "node_unreachable"


class InvalidAnswer(ResolutionFailed):
    code = "invalid_answer"


class SignatureRefused(ResolutionFailed):
    code = "signature_refused"


class ReferralLimit(ResolutionFailed):
    code = "referral_limit"
    response_code = ResponseCode.RECURSION_LIMIT_EXCEEDED


# --- the cache


class TtlCache(Generic[K, V]):
    """A bounded map whose entries expire; least recently used entries are dropped first."""

    def __init__(self, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if self.clock() >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V, ttl: float) -> None:
        if ttl <= 0 or self.max_entries <= 0:
            return
        self._entries[key] = (self.clock() + ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def evict(self, key: K) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


# --- nodes and answers


@dataclass(frozen=True, slots=True)
class Node:
    """A node to ask: its base URL, the key its answers must be signed with, and why we ask it."""

    url: str
    public_key: bytes
    prefix: str = ""  # the delegated prefix that led here; "" for the root
    local: bool = False  # this node itself: asked without HTTP

    @property
    def key_id(self) -> str:
        return hashlib.sha256(self.public_key).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class RecordAnswer:
    handle: str
    values: list[dict[str, Any]]
    signature: str


@dataclass(frozen=True, slots=True)
class ReferralAnswer:
    handle: str  # 0.NA/<prefix>
    values: list[dict[str, Any]]
    signature: str


@dataclass(frozen=True, slots=True)
class NotFoundAnswer:
    message: str


Answer = RecordAnswer | ReferralAnswer | NotFoundAnswer

NOT_FOUND_CODES = frozenset({ResponseCode.HANDLE_NOT_FOUND, ResponseCode.SERVER_NOT_RESPONSIBLE})


def _values(raw: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not all(isinstance(v, dict) for v in raw):
        raise InvalidAnswer(f"{where} answered values that are not a list of objects")
    return raw


def parse_answer(node_url: str, status: int, body: Any) -> Answer:
    """What a node's JSON answer to `GET /api/handles/...?signed=true` means."""
    if not isinstance(body, dict) or not isinstance(body.get("responseCode"), int):
        raise InvalidAnswer(f"{node_url} answered HTTP {status} without a Handle responseCode")
    code = body["responseCode"]
    if code in (ResponseCode.SUCCESS, ResponseCode.VALUES_NOT_FOUND) and status == 200:
        handle = body.get("handle")
        if not isinstance(handle, str):
            raise InvalidAnswer(f"{node_url} answered a record without its handle")
        signature = body.get("signature")
        return RecordAnswer(
            handle, _values(body.get("values"), node_url), signature if isinstance(signature, str) else ""
        )
    if code == ResponseCode.SERVICE_REFERRAL:
        referral = body.get("referral")
        if not isinstance(referral, dict) or not isinstance(referral.get("handle"), str):
            raise InvalidAnswer(f"{node_url} answered a referral without the prefix handle")
        signature = referral.get("signature")
        values = _values(referral.get("values"), node_url)
        return ReferralAnswer(referral["handle"], values, signature if isinstance(signature, str) else "")
    if code in NOT_FOUND_CODES:
        message = body.get("message")
        return NotFoundAnswer(message if isinstance(message, str) else "handle not found")
    message = body.get("message")
    detail = f": {message[:300]}" if isinstance(message, str) else ""
    raise InvalidAnswer(f"{node_url} answered HTTP {status}, responseCode {code}{detail}")


def signature_problem(public_key: bytes, handle: str, values: list[dict[str, Any]], signature: str) -> str | None:
    """Why the signature does not vouch for these values under this key; None when it does."""
    if not signature:
        return "the answer is not signed"
    try:
        raw = base64.b64decode(signature, validate=True)
        payload = canonical_record(handle, values)
    except (binascii.Error, ValueError):
        return "the signature is not base64"
    except (ValidationError, TypeError, KeyError, AttributeError):
        return "the values are malformed"
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(raw, payload)
    except (InvalidSignature, ValueError):
        return "the signature does not match the values under the key the delegation names"
    return None


def min_ttl(values: list[dict[str, Any]], default: int) -> int:
    ttls = [v.get("ttl") for v in values]
    numbers = [t for t in ttls if isinstance(t, int) and not isinstance(t, bool)]
    return min(numbers) if numbers and len(numbers) == len(ttls) else default


# --- the resolver


class Upstream(Protocol):
    async def ask(self, node: Node, name: HandleName) -> tuple[int, Any]:
        """A node's answer (HTTP status, JSON body) to resolving `name` with its signature."""
        ...

    async def node_key(self, url: str) -> bytes:
        """The raw Ed25519 key a node publishes at `/api/node/key`."""
        ...


@dataclass(frozen=True, slots=True)
class Hop:
    prefix: str
    node: str


@dataclass(frozen=True, slots=True)
class Resolved:
    handle: str
    values: list[dict[str, Any]]
    node: str  # which node answered
    key_id: str  # the key its signature was checked with
    from_cache: bool
    referrals: list[Hop] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _CachedReferral:
    node: Node
    hops: list[Hop]


@dataclass(frozen=True, slots=True)
class _CachedRecord:
    resolved: Resolved


@dataclass(frozen=True, slots=True)
class _CachedMiss:
    message: str


LOCAL_NODE = "(this node)"


class RecursiveResolver:
    def __init__(
        self,
        settings: IdentifierSettings,
        upstream: Upstream,
        *,
        own_key: Callable[[], bytes],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.upstream = upstream
        self.own_key = own_key
        self.records: TtlCache[str, _CachedRecord | _CachedMiss] = TtlCache(settings.resolver_cache_size, clock)
        self.referrals: TtlCache[str, _CachedReferral] = TtlCache(settings.resolver_cache_size, clock)
        self._root_key: bytes | None = None

    @property
    def own_url(self) -> str:
        return self.settings.base_url or LOCAL_NODE

    def is_local(self, url: str) -> bool:
        return url == LOCAL_NODE or (bool(self.settings.base_url) and url == self.settings.base_url)

    async def root(self) -> Node:
        root_url = self.settings.root_url
        if not root_url or self.is_local(root_url):
            return Node(self.own_url, self.own_key(), local=True)
        if self._root_key is None:
            if self.settings.root_public_key:
                self._root_key = base64.b64decode(self.settings.root_public_key)
            else:
                self._root_key = await self.upstream.node_key(root_url)  # trust on first use
        return Node(root_url, self._root_key)

    async def resolve(self, name: HandleName) -> Resolved:
        cached = self.records.get(name.key)
        if isinstance(cached, _CachedRecord):
            r = cached.resolved
            return Resolved(r.handle, r.values, r.node, r.key_id, True, r.referrals)
        if isinstance(cached, _CachedMiss):
            raise HandleNotFound(cached.message)
        try:
            return await self._walk(name, use_cache=True)
        except _StaleStart as stale:
            # Learnt from a cached referral: the node may have been re-keyed and re-delegated since.
            for prefix in stale.prefixes:
                self.referrals.evict(prefix)
            return await self._walk(name, use_cache=False)

    def _cached_start(self, name: HandleName) -> _CachedReferral | None:
        for prefix in ancestors(name.prefix_key):
            hit = self.referrals.get(prefix)
            if hit is not None:
                return hit
        return None

    async def _walk(self, name: HandleName, *, use_cache: bool) -> Resolved:
        start = self._cached_start(name) if use_cache and not name.is_prefix_handle else None
        node = start.node if start is not None else await self.root()
        hops = list(start.hops) if start is not None else []
        visited = {node.url}
        try:
            for _ in range(self.settings.resolver_max_depth + 1):
                answer = parse_answer(node.url, *await self.upstream.ask(node, name))
                if isinstance(answer, RecordAnswer):
                    return self._accept_record(name, node, hops, answer)
                if isinstance(answer, NotFoundAnswer):
                    message = f"handle '{name.handle}' not found at {node.url}: {answer.message}"
                    brief = min(self.settings.resolver_negative_ttl, self.settings.resolver_max_ttl)
                    self.records.put(name.key, _CachedMiss(message), brief)
                    raise HandleNotFound(message)
                node, ttl = self._follow(name, node, answer)
                hops.append(Hop(node.prefix, node.url))
                if node.url in visited:
                    raise ReferralLimit(f"referral loop: {node.url} was asked already for '{name.handle}'")
                visited.add(node.url)
                self.referrals.put(node.prefix, _CachedReferral(node, list(hops)), ttl)
        except (SignatureRefused, InvalidAnswer) as err:
            if start is not None:
                raise _StaleStart([h.prefix for h in hops]) from err
            raise
        raise ReferralLimit(f"more than {self.settings.resolver_max_depth} referrals for '{name.handle}'")

    def _accept_record(self, name: HandleName, node: Node, hops: list[Hop], answer: RecordAnswer) -> Resolved:
        if answer.handle.lower() != name.key:
            raise InvalidAnswer(f"{node.url} answered '{answer.handle[:100]}' for '{name.handle}'")
        problem = signature_problem(node.public_key, answer.handle, answer.values, answer.signature)
        if problem is not None:
            raise SignatureRefused(f"record '{answer.handle}' from {node.url} refused: {problem}")
        resolved = Resolved(answer.handle, answer.values, node.url, node.key_id, False, hops)
        default = self.settings.resolver_negative_ttl
        ttl = min(min_ttl(answer.values, default) if answer.values else default, self.settings.resolver_max_ttl)
        self.records.put(name.key, _CachedRecord(resolved), ttl)
        return resolved

    def _follow(self, name: HandleName, node: Node, answer: ReferralAnswer) -> tuple[Node, float]:
        """The node a referral names (and how long to trust that), once its signature and place hold."""
        try:
            referred = parse_handle(answer.handle)
        except Invalid:
            raise InvalidAnswer(f"{node.url} referred to an invalid prefix handle") from None
        prefix = referred.suffix.lower()
        covers = referred.prefix_key == NA_PREFIX and is_under(name.prefix_key, prefix)
        deeper = not node.prefix or (prefix != node.prefix and is_under(prefix, node.prefix))
        if not covers or not deeper:
            raise InvalidAnswer(
                f"{node.url} referred '{name.handle}' to '{answer.handle[:100]}', which does not lead on"
            )
        problem = signature_problem(node.public_key, answer.handle, answer.values, answer.signature)
        if problem is not None:
            raise SignatureRefused(f"referral '{answer.handle}' from {node.url} refused: {problem}")
        try:
            delegation = read_delegation(load_values(answer.values))
        except (Invalid, ValidationError) as err:
            message = err.message if isinstance(err, Invalid) else "malformed values"
            raise InvalidAnswer(f"referral '{answer.handle}' from {node.url}: {message}") from None
        ttl = min(delegation.ttl, self.settings.resolver_max_ttl)
        local = self.is_local(delegation.node_url)
        url = self.own_url if local else delegation.node_url
        return Node(url, delegation.public_key, prefix, local=local), ttl


class _StaleStart(Exception):
    def __init__(self, prefixes: list[str]) -> None:
        super().__init__("a cached referral led to a refused answer")
        self.prefixes = prefixes
