"""Bulletin webhooks tried again by the platform's retrier: a real local HTTP receiver that fails
first and then answers, one that never recovers (given up after the last attempt, with the
reason), and the backoff between tries."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from iip.alarms.public import verify_webhook
from iip.kernel.auth import Role
from iip.kernel.runtime import Runtime
from iip.kernel.settings import SecuritySettings, Settings
from iip.security.delivery import RETRIER_SERVICE, DeliveryRetrier, retry_wait
from tests.alarms.notify.conftest import (  # real peers, shared with the alarm notification tests
    HookReceiver,
    hook_receiver,  # noqa: F401 - fixture
)
from tests.conftest import TenantFixture
from tests.security.support import API, hook_contact, publish_until, retrying_settings, wait_for_webhook
from tests.security.test_bulletins import SECRET

ATTEMPTS = 3


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    """Retries a tenth of a second apart, three attempts in all."""
    retry = SecuritySettings(
        delivery_max_attempts=ATTEMPTS, delivery_retry_base_s=0.1, delivery_retry_max_s=0.4, delivery_check_s=0.05
    )
    return retrying_settings(tmp_path, db_url, retry)


def test_a_receiver_that_fails_first_gets_it_on_a_later_try(
    client: TestClient,
    runtime: Runtime,
    tenant_a: TenantFixture,
    tenant_b: TenantFixture,
    hook_receiver: HookReceiver,  # noqa: F811 - fixture use
) -> None:
    hook_contact(client, tenant_b, hook_receiver, [503, 502])  # unwell twice, then 200
    _, delivery = publish_until(client, tenant_a, tenant_b, "sent")
    assert delivery["attempts"] == 3
    assert delivery["error"] == ""
    assert delivery["sent_at"]
    assert len(hook_receiver.received) == 3
    # Every try is the same delivery, signed with the tenant's secret.
    assert {h.headers["x-iip-delivery"] for h in hook_receiver.received} == {delivery["id"]}
    now = dt.datetime.now(dt.UTC).timestamp()
    for hook in hook_receiver.received:
        assert verify_webhook(
            SECRET, hook.body, hook.headers.get("x-iip-timestamp"), hook.headers.get("x-iip-signature"), now=now
        )
    assert runtime.services[RETRIER_SERVICE].sent == 2  # the first try was the publication's


def test_a_receiver_that_never_recovers_is_given_up_with_the_reason(
    client: TestClient,
    tenant_a: TenantFixture,
    tenant_b: TenantFixture,
    hook_receiver: HookReceiver,  # noqa: F811 - fixture use
) -> None:
    hook_contact(client, tenant_b, hook_receiver, [503] * 10)
    bulletin_id, delivery = publish_until(client, tenant_a, tenant_b, "failed")
    assert delivery["attempts"] == ATTEMPTS
    assert delivery["error"].startswith(f"gave up after {ATTEMPTS} attempts")
    assert "503" in delivery["error"]
    assert len(hook_receiver.received) == ATTEMPTS
    # The operator may still send it again by hand, once the receiver is well.
    hook_receiver.statuses = []
    operator = tenant_a.headers(Role.PLATFORM_OPERATOR)
    assert client.post(f"{API}/bulletins/{bulletin_id}/redeliver", headers=operator).status_code == 200
    assert wait_for_webhook(client, tenant_a, bulletin_id, "sent")["attempts"] == ATTEMPTS + 1


def test_a_refusal_is_not_retried(
    client: TestClient,
    runtime: Runtime,
    tenant_a: TenantFixture,
    tenant_b: TenantFixture,
    hook_receiver: HookReceiver,  # noqa: F811 - fixture use
) -> None:
    hook_contact(client, tenant_b, hook_receiver, [410])
    _, delivery = publish_until(client, tenant_a, tenant_b, "failed")
    assert delivery["attempts"] == 1
    assert client.portal is not None
    assert client.portal.call(DeliveryRetrier(runtime).check) == 0  # nothing is waiting for a retry
    assert len(hook_receiver.received) == 1


@given(attempts=st.integers(min_value=1, max_value=60), base=st.floats(0.01, 100), cap=st.floats(0.01, 5000))
def test_the_backoff_doubles_and_is_capped(attempts: int, base: float, cap: float) -> None:
    settings = SecuritySettings(delivery_retry_base_s=base, delivery_retry_max_s=cap)
    wait = retry_wait(attempts, settings)
    assert wait <= cap
    assert wait == pytest.approx(min(base * 2 ** (attempts - 1), cap))
    assert retry_wait(attempts + 1, settings) >= wait
