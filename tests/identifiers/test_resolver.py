"""The recursive resolver's pure parts against nodes simulated in memory (no I/O, a fake clock)."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from iip.identifiers.codec import HandleName, HandleNotFound, dump_values, parse_handle, parse_values
from iip.identifiers.delegation import (
    ancestors,
    delegation_values,
    is_under,
    read_delegation,
    site_data,
    site_url,
)
from iip.identifiers.resolver import (
    InvalidAnswer,
    Node,
    NodeUnreachable,
    RecursiveResolver,
    ReferralLimit,
    SignatureRefused,
    TtlCache,
    parse_answer,
)
from iip.identifiers.signing import canonical_record
from iip.kernel.errors import Invalid
from iip.kernel.settings import IdentifierSettings

ROOT, SECONDARY, ENTERPRISE = "https://root.example", "https://secondary.example", "https://ent.example:8443/idis"


def raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def sign(key: Ed25519PrivateKey, handle: str, values: list[dict[str, Any]]) -> str:
    return base64.b64encode(key.sign(canonical_record(handle, values))).decode()


@dataclass
class FakeNode:
    key: Ed25519PrivateKey
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    delegations: dict[str, tuple[str, bytes, int]] = field(default_factory=dict)  # prefix -> url, key, ttl
    tamper: set[str] = field(default_factory=set)

    def answer(self, name: HandleName) -> tuple[int, dict[str, Any]]:
        if name.key in self.records:
            values = self.records[name.key]
            signature = sign(self.key, name.handle, values)
            if name.key in self.tamper:
                signature = sign(Ed25519PrivateKey.generate(), name.handle, values)
            return 200, {"responseCode": 1, "handle": name.handle, "values": values, "signature": signature}
        for prefix in ancestors(name.prefix_key):
            if prefix in self.delegations:
                url, key, ttl = self.delegations[prefix]
                values = [v.to_wire() for v in delegation_values(url, key, ttl)]
                handle = f"0.NA/{prefix}"
                referral = {"handle": handle, "values": values, "signature": sign(self.key, handle, values)}
                return 307, {"responseCode": 302, "handle": name.handle, "referral": referral}
        return 404, {"responseCode": 100, "handle": name.handle, "message": "handle not found"}


@dataclass
class FakeNetwork:
    nodes: dict[str, FakeNode]
    asked: list[str] = field(default_factory=list)
    down: set[str] = field(default_factory=set)

    async def ask(self, node: Node, name: HandleName) -> tuple[int, Any]:
        self.asked.append(node.url)
        if node.url in self.down:
            raise NodeUnreachable(f"{node.url} is unreachable")
        return self.nodes[node.url].answer(name)

    async def node_key(self, url: str) -> bytes:
        return raw(self.nodes[url].key)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(url: str, ttl: int = 60) -> list[dict[str, Any]]:
    values = parse_values([{"index": 1, "type": "URL", "data": url, "ttl": ttl}])
    for v in values:
        v.timestamp = "2026-01-01T00:00:00Z"
    return [v.to_wire() for v in parse_values(dump_values(values))]


@pytest.fixture
def network() -> FakeNetwork:
    root, secondary, enterprise = (FakeNode(Ed25519PrivateKey.generate()) for _ in range(3))
    root.delegations["88.118"] = (SECONDARY, raw(secondary.key), 300)
    secondary.delegations["88.118.8"] = (ENTERPRISE, raw(enterprise.key), 300)
    enterprise.records["88.118.8/p1"] = record("https://example.com/p1", ttl=30)
    return FakeNetwork({ROOT: root, SECONDARY: secondary, ENTERPRISE: enterprise})


def make_resolver(network: FakeNetwork, clock: Clock, **overrides: Any) -> RecursiveResolver:
    settings = IdentifierSettings(
        root_url=ROOT, root_public_key=base64.b64encode(raw(network.nodes[ROOT].key)).decode(), **overrides
    )
    return RecursiveResolver(settings, network, own_key=lambda: b"", clock=clock)


async def test_follows_referrals_then_answers_from_cache_until_the_ttl(network: FakeNetwork) -> None:
    clock = Clock()
    resolver = make_resolver(network, clock)
    name = parse_handle("88.118.8/P1")
    first = await resolver.resolve(name)
    assert (first.node, first.from_cache) == (ENTERPRISE, False)
    assert [(h.prefix, h.node) for h in first.referrals] == [("88.118", SECONDARY), ("88.118.8", ENTERPRISE)]
    assert network.asked == [ROOT, SECONDARY, ENTERPRISE]
    network.down.add(ENTERPRISE)
    clock.now += 29
    again = await resolver.resolve(name)
    assert (again.from_cache, again.values) == (True, first.values)
    clock.now += 2  # the record's TTL (30 s) has passed; the referral's (300 s) has not
    network.down.clear()
    network.asked.clear()
    third = await resolver.resolve(name)
    assert third.from_cache is False
    assert network.asked == [ENTERPRISE]  # straight to the node the cached referral names


async def test_another_handle_under_a_known_prefix_starts_at_its_node(network: FakeNetwork) -> None:
    resolver = make_resolver(network, Clock())
    network.nodes[ENTERPRISE].records["88.118.8/p2"] = record("https://example.com/p2")
    await resolver.resolve(parse_handle("88.118.8/P1"))
    network.asked.clear()
    await resolver.resolve(parse_handle("88.118.8/P2"))
    assert network.asked == [ENTERPRISE]


async def test_not_found_is_cached_briefly(network: FakeNetwork) -> None:
    clock = Clock()
    resolver = make_resolver(network, clock, resolver_negative_ttl=5)
    name = parse_handle("88.118.8/none")
    for _ in range(2):
        with pytest.raises(HandleNotFound, match=re.escape(f"not found at {ENTERPRISE}")):
            await resolver.resolve(name)
    assert network.asked.count(ENTERPRISE) == 1
    clock.now += 6
    with pytest.raises(HandleNotFound):
        await resolver.resolve(name)
    assert network.asked.count(ENTERPRISE) == 2


async def test_a_record_signed_by_another_key_is_refused_and_not_cached(network: FakeNetwork) -> None:
    resolver = make_resolver(network, Clock())
    network.nodes[ENTERPRISE].tamper.add("88.118.8/p1")
    for _ in range(2):
        with pytest.raises(SignatureRefused, match="does not match"):
            await resolver.resolve(parse_handle("88.118.8/P1"))
    network.nodes[ENTERPRISE].tamper.clear()
    assert (await resolver.resolve(parse_handle("88.118.8/P1"))).from_cache is False


async def test_an_unsigned_record_is_refused(network: FakeNetwork) -> None:
    resolver = make_resolver(network, Clock())
    enterprise = network.nodes[ENTERPRISE]
    original = enterprise.answer

    def unsigned(name: HandleName) -> tuple[int, dict[str, Any]]:
        status, body = original(name)
        body.pop("signature", None)
        return status, body

    enterprise.answer = unsigned  # type: ignore[method-assign]
    with pytest.raises(SignatureRefused, match="not signed"):
        await resolver.resolve(parse_handle("88.118.8/P1"))


async def test_a_rekeyed_node_is_trusted_once_delegated_again(network: FakeNetwork) -> None:
    resolver = make_resolver(network, Clock())
    name = parse_handle("88.118.8/P1")
    await resolver.resolve(name)
    enterprise = network.nodes[ENTERPRISE]
    enterprise.key = Ed25519PrivateKey.generate()
    resolver.records.clear()
    with pytest.raises(SignatureRefused):
        await resolver.resolve(name)
    network.nodes[SECONDARY].delegations["88.118.8"] = (ENTERPRISE, raw(enterprise.key), 300)
    # The cached referral names the old key: refused once, dropped, and the chain walked afresh.
    assert (await resolver.resolve(name)).from_cache is False


async def test_a_forged_referral_is_refused(network: FakeNetwork) -> None:
    resolver = make_resolver(network, Clock())
    network.nodes[ROOT].key = Ed25519PrivateKey.generate()  # no longer the pinned root key
    with pytest.raises(SignatureRefused, match=re.escape("referral '0.NA/88.118'")):
        await resolver.resolve(parse_handle("88.118.8/P1"))


async def test_root_key_learnt_on_first_use(network: FakeNetwork) -> None:
    resolver = RecursiveResolver(IdentifierSettings(root_url=ROOT), network, own_key=lambda: b"")
    assert (await resolver.resolve(parse_handle("88.118.8/P1"))).node == ENTERPRISE


async def test_loops_and_referrals_that_do_not_lead_on_are_errors(network: FakeNetwork) -> None:
    resolver = make_resolver(network, Clock())
    root, secondary = network.nodes[ROOT], network.nodes[SECONDARY]
    # The secondary refers 88.118.8 back to the root (signed, so only the loop check stops it).
    secondary.delegations["88.118.8"] = (ROOT, raw(root.key), 300)
    with pytest.raises(ReferralLimit, match="loop"):
        await resolver.resolve(parse_handle("88.118.8/P1"))
    # A referral for a prefix no deeper than the one that led to the node.
    resolver = make_resolver(network, Clock())
    secondary.delegations = {"88.118": (ENTERPRISE, raw(network.nodes[ENTERPRISE].key), 300)}
    with pytest.raises(InvalidAnswer, match="does not lead on"):
        await resolver.resolve(parse_handle("88.118.8/P1"))


async def test_referral_depth_is_bounded(network: FakeNetwork) -> None:
    resolver = make_resolver(network, Clock(), resolver_max_depth=1)
    with pytest.raises(ReferralLimit, match="more than 1 referrals"):
        await resolver.resolve(parse_handle("88.118.8/P1"))


async def test_an_unreachable_node_is_reported(network: FakeNetwork) -> None:
    network.down.add(SECONDARY)
    with pytest.raises(NodeUnreachable, match=re.escape(SECONDARY)):
        await make_resolver(network, Clock()).resolve(parse_handle("88.118.8/P1"))


def test_parse_answer() -> None:
    assert parse_answer(ROOT, 404, {"responseCode": 301, "message": "not homed"}).message == "not homed"  # type: ignore[union-attr]
    with pytest.raises(InvalidAnswer, match="responseCode 2: boom"):
        parse_answer(ROOT, 500, {"responseCode": 2, "message": "boom"})
    with pytest.raises(InvalidAnswer, match="without a Handle responseCode"):
        parse_answer(ROOT, 200, ["not", "an", "object"])
    with pytest.raises(InvalidAnswer, match="not a list"):
        parse_answer(ROOT, 200, {"responseCode": 1, "handle": "88/x", "values": "nope"})


def test_ttl_cache_expires_and_drops_the_least_recently_used() -> None:
    clock = Clock()
    cache: TtlCache[str, int] = TtlCache(2, clock)
    cache.put("a", 1, 10)
    cache.put("b", 2, 10)
    assert cache.get("a") == 1  # now "b" is the least recently used
    cache.put("c", 3, 10)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)
    cache.put("zero", 4, 0)
    assert cache.get("zero") is None
    clock.now += 10
    assert cache.get("a") is None
    assert len(cache) == 1


def test_site_values_round_trip() -> None:
    key = raw(Ed25519PrivateKey.generate())
    for url in (
        "https://idis.example.com",
        "http://127.0.0.1:8001",
        "https://n.example:8443/base/path",
        "http://[::1]:9",
    ):
        assert site_url(site_data(url, key)) == url
        delegation = read_delegation(delegation_values(url, key, ttl=42))
        assert (delegation.node_url, delegation.public_key, delegation.ttl) == (url, key, 42)
    with pytest.raises(Invalid):
        site_data("ftp://example.com", key)
    with pytest.raises(Invalid):
        site_data("https://example.com/?q=1", key)


def test_prefix_ancestry() -> None:
    assert ancestors("88.118.8") == ["88.118.8", "88.118", "88"]
    assert is_under("88.118.8", "88.118")
    assert is_under("88.118", "88.118")
    assert not is_under("88.1180", "88.118")
