"""Signed webhooks against a real HTTP receiver: the signature, verification, and how answers are judged."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from iip.alarms.notify import webhook
from iip.alarms.notify.webhook import DeliveryFailed
from tests.alarms.notify.conftest import START, HookReceiver, free_port

SECRET = "whsec_0123456789abcdef"
NOW = int(START.timestamp())


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = webhook.encode_body({"alarm_id": "a1", "message": "温度过高"})
    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + body, hashlib.sha256).hexdigest()
    assert webhook.signature(SECRET, NOW, body) == f"sha256={expected}"
    assert json.loads(body) == {"alarm_id": "a1", "message": "温度过高"}


def test_verification_refuses_a_changed_body_another_secret_and_an_old_timestamp() -> None:
    body = b'{"alarm_id":"a1"}'
    signed = webhook.signature(SECRET, NOW, body)
    assert webhook.verify_signature(SECRET, body, str(NOW), signed, now=NOW + 10)
    assert not webhook.verify_signature(SECRET, body + b" ", str(NOW), signed, now=NOW)
    assert not webhook.verify_signature("whsec_another-secret-x", body, str(NOW), signed, now=NOW)
    assert not webhook.verify_signature(SECRET, body, str(NOW + 1), signed, now=NOW)  # timestamp is signed too
    assert not webhook.verify_signature(SECRET, body, str(NOW), signed, now=NOW + 301)  # a replay, later
    assert not webhook.verify_signature(SECRET, body, None, signed, now=NOW)
    assert not webhook.verify_signature(SECRET, body, "soon", signed, now=NOW)


async def test_a_post_carries_the_delivery_id_timestamp_and_a_valid_signature(hook_receiver: HookReceiver) -> None:
    body = webhook.encode_body({"alarm_id": "a1"})
    await webhook.post(hook_receiver.url, SECRET, "d" * 32, body, timestamp=NOW, timeout_s=5)
    [hook] = hook_receiver.received
    assert hook.path == "/hooks/alarms"
    assert hook.body == body
    assert hook.headers["x-iip-delivery"] == "d" * 32
    assert hook.headers["x-iip-timestamp"] == str(NOW)
    assert hook.headers["content-type"] == "application/json"
    assert hook_receiver.verified(SECRET, START) == [hook]


@pytest.mark.parametrize(("status", "permanent"), [(500, False), (503, False), (429, False), (404, True), (401, True)])
async def test_answers_other_than_2xx_fail_and_only_some_are_worth_a_retry(
    hook_receiver: HookReceiver, status: int, permanent: bool
) -> None:
    hook_receiver.statuses.append(status)
    with pytest.raises(DeliveryFailed, match=f"answered {status}") as failed:
        await webhook.post(hook_receiver.url, SECRET, "d1", b"{}", timestamp=NOW, timeout_s=5)
    assert failed.value.permanent is permanent


async def test_an_unreachable_receiver_is_worth_a_retry() -> None:
    with pytest.raises(DeliveryFailed, match="could not reach") as failed:
        await webhook.post(f"http://127.0.0.1:{free_port()}/x", SECRET, "d1", b"{}", timestamp=NOW, timeout_s=5)
    assert not failed.value.permanent


@pytest.mark.parametrize("url", ["https://ops.example.com/hook", "http://10.0.0.5:8080/a?b=c", "HTTP://host"])
def test_urls_accepted(url: str) -> None:
    assert webhook.check_url(url) == url


@pytest.mark.parametrize("url", ["ftp://host/x", "https://", "https://user:pw@host/x", "host/x", "https://a b/"])
def test_urls_refused(url: str) -> None:
    with pytest.raises(ValueError, match="http"):
        webhook.check_url(url)
