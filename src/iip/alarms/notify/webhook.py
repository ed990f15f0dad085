"""Signed webhooks: the body, its signature, and the POST that delivers it.

Each webhook is a POST of a JSON object (UTF-8, `Content-Type: application/json`) with three
headers:

* `X-IIP-Delivery`: the delivery id, the same on every retry of the same message;
* `X-IIP-Timestamp`: Unix time in seconds when this attempt was signed;
* `X-IIP-Signature`: `sha256=` and the lower-case hex HMAC-SHA256, keyed with the channel's
  secret, of the timestamp, a full stop and the raw body: `f"{timestamp}.".encode() + body`.

A notification's body is the `AlarmChange` (`tenant_id`, `alarm_id`, `rule_key`, `device`,
`priority`, `state`, `action`, `at`, `sequence` ...) plus `delivery_id`, `kind` (`notification`,
`escalation`, `test`) and `link` (the alarm's console path or URL); an escalation adds
`escalation` (`route`, `after_min`). A digest (`kind` `digest`, sent when a channel's rate limit
held messages back) carries `window_start`, `window_end`, `count` and `notifications`, a list of
such bodies.

A receiver verifies a request before it trusts it:

1. recompute the HMAC over `timestamp + "." + body` exactly as received (before parsing the JSON)
   and compare it with the header in constant time (`hmac.compare_digest`);
2. reject a timestamp more than a few minutes (say 5) away from its own clock, so a captured
   request cannot be replayed later;
3. remember the delivery ids it accepted during that tolerance and ignore one seen again: a retry
   after a lost answer, or a replay within the window, is then handled once.

`verify_signature` below does steps 1 and 2. Any 2xx answer means delivered; 408, 425, 429, 5xx
and network errors are retried with backoff; any other answer (3xx, 4xx) fails the delivery at once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from typing import Any

import httpx

SIGNATURE_HEADER = "X-IIP-Signature"
TIMESTAMP_HEADER = "X-IIP-Timestamp"
DELIVERY_HEADER = "X-IIP-Delivery"
SIGNATURE_PREFIX = "sha256="
USER_AGENT = "IIP-Alarm-Notifications/1"
DEFAULT_TOLERANCE_S = 300
RETRYABLE_STATUS = frozenset({408, 425, 429})
URL = re.compile(r"^https?://[^/\s?#@]+(?::\d{1,5})?(?:[/?#]\S*)?$", re.IGNORECASE)
ERROR_TEXT = 300  # of a receiver's answer kept in the delivery log


class DeliveryFailed(Exception):
    """A message was not delivered; `permanent` when trying again cannot help."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent


def encode_body(body: dict[str, Any]) -> bytes:
    """The bytes sent and signed: compact JSON, keys sorted, UTF-8."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The `X-IIP-Signature` value of `body` signed at `timestamp`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return SIGNATURE_PREFIX + digest


def signed_headers(secret: str, delivery_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        DELIVERY_HEADER: delivery_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(secret, timestamp, body),
    }


def verify_signature(
    secret: str,
    body: bytes,
    timestamp_header: str | None,
    signature_header: str | None,
    *,
    now: float,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> bool:
    """Whether a received webhook is signed with `secret` and was signed within `tolerance_s` of `now`."""
    if not timestamp_header or not signature_header or not timestamp_header.isdigit():
        return False
    timestamp = int(timestamp_header)
    if abs(now - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), signature_header.strip())


def check_url(url: str) -> str:
    """An http(s) URL with a host; raises ValueError with a readable message otherwise."""
    url = url.strip()
    if not URL.match(url):
        raise ValueError("must be an http:// or https:// URL with a host, without user:password@")
    return url


async def post(
    url: str,
    secret: str,
    delivery_id: str,
    body: bytes,
    *,
    timestamp: int,
    timeout_s: float,
) -> None:
    """POST one signed webhook; raises `DeliveryFailed` unless the receiver answers 2xx."""
    headers = signed_headers(secret, delivery_id, timestamp, body)
    try:
        async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=False, trust_env=False) as client:
            response = await client.post(url, content=body, headers=headers)
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as err:
        raise DeliveryFailed(f"invalid webhook URL: {err}", permanent=True) from err
    except httpx.TimeoutException as err:
        raise DeliveryFailed(f"no answer within {timeout_s:g} s ({type(err).__name__})") from err
    except httpx.TransportError as err:
        raise DeliveryFailed(f"could not reach the receiver: {type(err).__name__}: {err}") from err
    if response.is_success:
        return
    status = response.status_code
    text = response.text[:ERROR_TEXT].strip()
    message = f"the receiver answered {status} {response.reason_phrase}" + (f": {text}" if text else "")
    raise DeliveryFailed(message, permanent=not (status >= 500 or status in RETRYABLE_STATUS))
