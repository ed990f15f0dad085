"""Signed product codes without a database: the URI both ways, signatures, offline checks, places."""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import replace

import pytest
import segno
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from iip.traceability.authenticity import geo
from iip.traceability.authenticity.codes import (
    CodeError,
    CodeLink,
    b64url,
    build_uri,
    expiry_date,
    gtin14,
    jwk,
    key_id_of,
    keys_from_jwks,
    new_serials,
    parse_uri,
    sign_codes,
    signed_payload,
    uri_writer,
    verify_offline,
)
from iip.traceability.epcis.identifiers import canonical

RESOLVER = "https://iip.example.com/v"
GTIN = "09506000134352"


def key_pair() -> tuple[bytes, bytes]:
    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return seed, public


def signed_link(seed: bytes, public: bytes, serial: str = "ABCDEFGH23456789", lot: str | None = "L7/2") -> CodeLink:
    kid = key_id_of(public)
    [signature] = sign_codes(seed, kid, GTIN, lot, "261231", [serial])
    return CodeLink(GTIN, serial, lot, "261231", kid, signature)


def test_a_code_round_trips_through_its_uri_and_verifies_offline() -> None:
    seed, public = key_pair()
    link = signed_link(seed, public)
    uri = build_uri(RESOLVER, link)
    # The lot's '/' is escaped inside its path segment; the expiry is a data attribute.
    assert uri.startswith(f"{RESOLVER}/01/{GTIN}/10/L7%2F2/21/ABCDEFGH23456789?17=261231&k={link.key_id}&s=")
    assert parse_uri(uri) == link
    assert verify_offline(uri, {link.key_id: public})
    assert verify_offline(uri, {link.key_id: b64url(public)})  # the base64url text of GET /keys works too
    # The writer used for exports gives the same URI.
    assert uri_writer(RESOLVER, GTIN, "L7/2", "261231", link.key_id)(link.serial, link.signature) == uri


def test_an_altered_code_or_another_key_fails_offline() -> None:
    seed, public = key_pair()
    link = signed_link(seed, public)
    uri = build_uri(RESOLVER, link)
    keys = {link.key_id: public}
    assert not verify_offline(uri.replace("ABCDEFGH23456789", "ABCDEFGH23456788"), keys)  # serial
    assert not verify_offline(uri.replace("L7%2F2", "L7%2F3"), keys)  # lot
    assert not verify_offline(uri.replace("17=261231", "17=271231"), keys)  # expiry
    flipped = link.signature[:10] + ("A" if link.signature[10] != "A" else "B") + link.signature[11:]
    assert not verify_offline(build_uri(RESOLVER, replace(link, signature=flipped)), keys)
    _, other_public = key_pair()
    assert not verify_offline(uri, {link.key_id: other_public})  # a key filed under another key's id
    assert not verify_offline(uri, {})
    # A forger with a key of their own cannot pass it off under the tenant's key id.
    forged_seed, _ = key_pair()
    [forged] = sign_codes(forged_seed, link.key_id, GTIN, "L7/2", "261231", ["ABCDEFGH23456789"])
    assert not verify_offline(build_uri(RESOLVER, replace(link, signature=forged)), keys)


def test_offline_verification_reads_a_json_web_key_set() -> None:
    seed, public = key_pair()
    link = signed_link(seed, public, lot=None)
    other = key_pair()[1]
    document = {"keys": [jwk(other), {**jwk(public), "active": False}, {"kty": "RSA", "n": "x"}, "junk"]}
    keys = keys_from_jwks(document)
    assert keys == {key_id_of(other): other, link.key_id: public}
    assert verify_offline(build_uri(RESOLVER, link), keys)


def test_the_signature_covers_a_fixed_unambiguous_encoding() -> None:
    assert signed_payload(GTIN, "S1", None, None, "kid12345") == b"IIP-CODE-1\n09506000134352\nS1\n\n\nkid12345"
    assert signed_payload(GTIN, "S1", "L", "261231", "kid12345") != signed_payload(
        GTIN, "S1L", None, "261231", "kid12345"
    )


def test_the_item_and_lot_match_the_repository_canonical_forms() -> None:
    link = CodeLink(GTIN, "AB12", "L1", None, "kid12345", "x" * 86)
    assert link.sgtin == canonical("urn:epc:id:sgtin:9506000.013435.AB12")
    assert link.lgtin == canonical("urn:epc:class:lgtin:9506000.013435.L1")


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("https://x.example/21/ABC?k=abcdefgh&s=" + "A" * 86, "no /01/"),
        (f"https://x.example/01/{GTIN}?k=abcdefgh&s=" + "A" * 86, "no serial"),
        ("https://x.example/01/09506000134353/21/ABC?k=abcdefgh&s=" + "A" * 86, "check digit"),
        (f"https://x.example/01/{GTIN}/21/ABC?k=abcdefgh", "no signature"),
        (f"https://x.example/01/{GTIN}/21/ABC?s=" + "A" * 86, "no key"),
        (f"https://x.example/01/{GTIN}/22/V1/21/ABC?k=abcdefgh&s=" + "A" * 86, "unexpected qualifier"),
        (f"https://x.example/01/{GTIN}/21/ABC?k=abcdefgh&k=abcdefgh&s=" + "A" * 86, "given twice"),
        (f"https://x.example/01/{GTIN}/21/ABC?17=261341&k=abcdefgh&s=" + "A" * 86, "bad expiry"),
    ],
)
def test_what_is_not_a_code_is_refused_with_a_reason(uri: str, why: str) -> None:
    with pytest.raises(CodeError):
        parse_uri(uri)
    assert not verify_offline(uri, {"abcdefgh": os.urandom(32)}), why


def test_serials_are_random_distinct_and_fit_gs1() -> None:
    serials = new_serials(20_000)
    assert len(set(serials)) == 20_000
    assert all(re.fullmatch(r"[A-Z2-7]{16}", s) for s in serials)
    assert new_serials(3) != new_serials(3)


def test_gtins_are_checked_and_padded() -> None:
    assert gtin14("9506000134352") == GTIN
    assert gtin14("96385074") == "00000096385074"
    for bad in ("9506000134353", "12345", "abc"):
        with pytest.raises(CodeError):
            gtin14(bad)


def test_expiry_dates_follow_the_gs1_century_window() -> None:
    today = dt.date(2026, 6, 1)
    assert expiry_date("261231", today=today) == dt.date(2026, 12, 31)
    assert expiry_date("991231", today=today) == dt.date(1999, 12, 31)  # 73 years ahead is too far: the past
    assert expiry_date("750101", today=today) == dt.date(2075, 1, 1)  # 49 years ahead
    assert expiry_date("260200", today=today) == dt.date(2026, 2, 28)  # day 00: the month's last day
    assert expiry_date("260231", today=today) is None


def test_a_code_fits_a_version_10_qr_code() -> None:
    seed, public = key_pair()
    uri = build_uri("https://trace.example-brand.com.cn/v", signed_link(seed, public, lot="L2406A-01"))
    assert segno.make(uri, error="m").version <= 10


# --- places


BEIJING = (39.9042, 116.4074)
SHANGHAI = (31.2304, 121.4737)
NEW_YORK = (40.7128, -74.0060)


def test_haversine_distances() -> None:
    assert geo.haversine_km(BEIJING, SHANGHAI) == pytest.approx(1067, abs=5)
    assert geo.haversine_km(BEIJING, BEIJING) == 0


def test_markets_cover_countries_and_subdivisions() -> None:
    china, guangdong = geo.Market.of("cn"), geo.Market.of("CN-GD", 23.13, 113.26)
    assert china.covers("CN-BJ")
    assert china.covers("CN")
    assert guangdong.covers("CN-GD")
    assert guangdong.covers("CN")  # the scan does not say which province
    assert not guangdong.covers("CN-BJ")
    assert not china.covers("US")
    for bad in ("ZZ", "CHN", "CN-", "C1"):
        with pytest.raises(geo.PlaceError):
            geo.Market.of(bad)
    with pytest.raises(geo.PlaceError):
        geo.Market.of("CN", 91, 0)


def test_market_findings() -> None:
    markets = [geo.Market.of("CN-GD", 23.13, 113.26)]
    assert geo.market_findings(markets, geo.Place("CN-GD", (22.54, 114.06)), far_km=500) == []  # Shenzhen
    [outside] = geo.market_findings(markets, geo.Place("US"), far_km=500)
    assert outside.kind == geo.OUTSIDE_MARKET
    kinds = [f.kind for f in geo.market_findings(markets, geo.Place("CN", BEIJING), far_km=500)]
    assert kinds == [geo.FAR_FROM_MARKET]  # in China (province unknown), but ~1900 km from Guangzhou
    assert geo.market_findings([], geo.Place("US", NEW_YORK), far_km=1) == []  # no market, nothing to judge


def test_travel_findings() -> None:
    start = dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.UTC)
    limits = {"max_speed_kmh": 900.0, "tolerance_km": 25.0}
    # Beijing to Shanghai in three hours: a flight, plausible.
    assert geo.travel_finding((BEIJING, start), (SHANGHAI, start + dt.timedelta(hours=3)), **limits) is None
    # Beijing to New York in an hour: no.
    far = geo.travel_finding((BEIJING, start), (NEW_YORK, start + dt.timedelta(hours=1)), **limits)
    assert far is not None
    assert far.kind == geo.IMPOSSIBLE_TRAVEL
    assert far.details["speed_kmh"] > 10_000
    # Two scans a few km apart at once: position noise, not travel.
    near = (BEIJING[0] + 0.05, BEIJING[1])
    assert geo.travel_finding((BEIJING, start), (near, start), **limits) is None
    instant = geo.travel_finding((BEIJING, start), (SHANGHAI, start), **limits)
    assert instant is not None
    assert instant.details["speed_kmh"] is None  # infinitely fast
    assert geo.travel_finding(None, (SHANGHAI, start), **limits) is None
