"""Sealed secrets: they open only under the same secret key, purpose and record, and plain values still read."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from iip.kernel.sealing import SEALED_V1, Sealer, SealError, is_sealed, sealed_length
from iip.kernel.settings import Settings

KEY = "k" * 64
SECRET = "whsec_0123456789abcdefghijklmnopqrstuvwxyz-_ABCD"


def test_a_sealed_value_hides_the_secret_and_opens_to_it() -> None:
    sealer = Sealer(KEY, "alarms.notify.channel-secret")
    sealed = sealer.seal(SECRET, bound_to="channel-1")
    assert sealed.startswith(SEALED_V1)
    assert is_sealed(sealed)
    assert SECRET not in sealed
    assert SECRET.encode() not in base64.urlsafe_b64decode(sealed.removeprefix(SEALED_V1))
    assert sealer.open(sealed, bound_to="channel-1") == SECRET
    # A fresh nonce each time: the same secret sealed twice gives two values, both opening to it.
    again = sealer.seal(SECRET, bound_to="channel-1")
    assert again != sealed
    assert sealer.open(again, bound_to="channel-1") == SECRET


def test_a_value_stored_before_sealing_is_read_as_it_is() -> None:
    sealer = Sealer(KEY, "alarms.notify.channel-secret")
    assert not is_sealed(SECRET)
    assert sealer.open(SECRET, bound_to="channel-1") == SECRET
    assert sealer.open("") == ""


def test_what_is_sealed_for_one_purpose_does_not_open_for_another() -> None:
    sealed = Sealer(KEY, "alarms.notify.channel-secret").seal(SECRET)
    with pytest.raises(SealError, match="does not open") as raised:
        Sealer(KEY, "devices.broker-password").open(sealed)
    assert SECRET not in str(raised.value)


def test_another_secret_key_fails_clearly_instead_of_answering_garbage() -> None:
    sealed = Sealer(KEY, "alarms.notify.channel-secret").seal(SECRET)
    with pytest.raises(SealError, match=r"another secret key \(IIP_SECRET_KEY\)"):
        Sealer("another" * 10, "alarms.notify.channel-secret").open(sealed)


def test_a_sealed_value_opens_only_for_the_record_it_was_sealed_for() -> None:
    sealer = Sealer(KEY, "alarms.notify.channel-secret")
    sealed = sealer.seal(SECRET, bound_to="channel-1")
    with pytest.raises(SealError, match="another purpose or record"):
        sealer.open(sealed, bound_to="channel-2")


@pytest.mark.parametrize(
    ("stored", "reason"),
    [
        ("sealed:v9:AAAA", "unknown format"),
        ("sealed:v1:not base64 at all!", "not valid base64"),
        ("sealed:v1:" + base64.urlsafe_b64encode(b"short").decode(), "truncated"),
    ],
)
def test_malformed_sealed_values_are_refused_with_the_reason(stored: str, reason: str) -> None:
    with pytest.raises(SealError, match=reason):
        Sealer(KEY, "alarms.notify.channel-secret").open(stored)


def test_an_altered_sealed_value_does_not_open() -> None:
    sealer = Sealer(KEY, "alarms.notify.channel-secret")
    raw = bytearray(base64.urlsafe_b64decode(sealer.seal(SECRET).removeprefix(SEALED_V1)))
    raw[20] ^= 0x01
    with pytest.raises(SealError, match="altered"):
        sealer.open(SEALED_V1 + base64.urlsafe_b64encode(bytes(raw)).decode())


@pytest.mark.parametrize("length", [0, 1, 16, 49, 100, 200])
def test_sealed_length_is_the_length_of_a_sealed_value(length: int) -> None:
    assert len(Sealer(KEY, "p").seal("x" * length)) == sealed_length(length)


def test_a_key_or_purpose_is_required() -> None:
    with pytest.raises(ValueError, match="secret key"):
        Sealer("", "p")
    with pytest.raises(ValueError, match="purpose"):
        Sealer(KEY, "")


def test_sealers_of_settings_share_the_data_dirs_generated_key_and_no_other(tmp_path: Path) -> None:
    here = Settings(data_dir=tmp_path / "a")
    sealed = Sealer.of(here, "p").seal(SECRET)
    assert Sealer.of(Settings(data_dir=tmp_path / "a"), "p").open(sealed) == SECRET  # a restart
    with pytest.raises(SealError):
        Sealer.of(Settings(data_dir=tmp_path / "b"), "p").open(sealed)
    configured = Settings(data_dir=tmp_path / "a", secret_key=KEY)
    assert Sealer.of(configured, "p").open(Sealer(KEY, "p").seal(SECRET)) == SECRET
