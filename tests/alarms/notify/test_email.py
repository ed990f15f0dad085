"""Alarm e-mail through a real SMTP server (aiosmtpd): headers, both languages, login, refusals."""

from __future__ import annotations

import pytest

from iip.alarms.notify import email
from iip.alarms.notify.webhook import DeliveryFailed
from iip.alarms.public import Priority
from tests.alarms.notify.conftest import (
    SMTP_PASSWORD,
    SMTP_USER,
    Clock,
    SmtpServer,
    alarm_change,
    notification_settings,
)


def config(smtp: SmtpServer, **overrides: object) -> email.SmtpConfig:
    return email.SmtpConfig.of(notification_settings(smtp, **overrides))


async def test_the_message_names_priority_device_state_time_and_link_in_chinese_and_english(
    smtp_server: SmtpServer,
) -> None:
    change = alarm_change("t1", Clock(), priority=Priority.CRITICAL, alarm_id="a" * 32)
    link = "https://iip.example.com/alarms/" + "a" * 32
    subject, body = email.render_change(change, kind="notification", link=link, delivery_id="d" * 32)
    recipients = ["wang@example.com", "chen@example.com"]
    message = email.build_message(
        "alarms@iip.example.com",
        recipients,
        subject,
        body,
        delivery_id="d" * 32,
        alarm_id=change.alarm_id,
        priority="critical",
    )

    assert await email.send(config(smtp_server), message, recipients) == ""

    [mail] = smtp_server.messages
    assert mail.sender == "alarms@iip.example.com"
    assert sorted(mail.recipients) == sorted(recipients)
    received = mail.message
    assert received["Subject"] == (
        "[IIP] 紧急/Critical 报警触发 / alarm raised: boiler-01 - 锅炉温度过高 Boiler temperature high"
    )
    assert received["X-IIP-Delivery"] == "d" * 32
    assert received["X-IIP-Alarm"] == "a" * 32
    assert received["X-IIP-Priority"] == "critical"
    assert received["Message-ID"].endswith("@iip.example.com>")
    text = received.get_content()
    for line in (
        "优先级：紧急",
        "设备：boiler-01",
        "站点：plant-a",
        "状态：报警中，未确认",
        "时间：2030-03-01 16:00:30（北京时间）",  # START is 08:00:30 UTC
        f"链接：{link}",
        "Priority: Critical",
        "Device: boiler-01",
        "Message: 锅炉温度过高 Boiler temperature high",
        "State: active, unacknowledged",
        "Time: 2030-03-01 08:00:30 UTC",
        "Value: 92.5",
        f"Link: {link}",
    ):
        assert line in text
    assert text.index("优先级") < text.index("Priority:")  # Chinese first


async def test_login_is_used_when_a_username_is_set(smtp_server: SmtpServer) -> None:
    change = alarm_change("t1", Clock())
    subject, body = email.render_change(change, kind="test", link="/alarms/x", delivery_id="d1")
    message = email.build_message("alarms@iip.example.com", ["a@example.com"], subject, body, delivery_id="d1")
    await email.send(
        config(smtp_server, smtp_username=SMTP_USER, smtp_password=SMTP_PASSWORD), message, ["a@example.com"]
    )
    assert smtp_server.store.logins == [SMTP_USER]
    assert smtp_server.messages[0].message["Subject"].startswith("[IIP 测试 Test]")


async def test_a_wrong_password_fails_for_good(smtp_server: SmtpServer) -> None:
    message = email.build_message("alarms@iip.example.com", ["a@example.com"], "s", "b", delivery_id="d1")
    with pytest.raises(DeliveryFailed, match="SMTP login refused") as failed:
        await email.send(
            config(smtp_server, smtp_username=SMTP_USER, smtp_password="wrong"), message, ["a@example.com"]
        )
    assert failed.value.permanent
    assert smtp_server.messages == []


async def test_no_smtp_server_configured_fails_with_the_setting_named() -> None:
    message = email.build_message("alarms@iip.example.com", ["a@example.com"], "s", "b", delivery_id="d1")
    with pytest.raises(DeliveryFailed, match="IIP_ALARMS__NOTIFICATIONS__SMTP_HOST") as failed:
        await email.send(email.SmtpConfig.of(notification_settings()), message, ["a@example.com"])
    assert failed.value.permanent


async def test_a_server_that_is_not_there_is_worth_a_retry() -> None:
    from tests.alarms.notify.conftest import free_port

    settings = notification_settings(smtp_host="127.0.0.1", smtp_port=free_port())
    message = email.build_message("alarms@iip.example.com", ["a@example.com"], "s", "b", delivery_id="d1")
    with pytest.raises(DeliveryFailed, match="could not send") as failed:
        await email.send(email.SmtpConfig.of(settings), message, ["a@example.com"])
    assert not failed.value.permanent


def test_header_injection_through_the_alarm_text_is_flattened() -> None:
    change = alarm_change("t1", Clock(), message="hot\r\nBcc: victim@example.com")
    subject, _ = email.render_change(change, kind="notification", link="/alarms/x", delivery_id="d1")
    message = email.build_message("alarms@iip.example.com", ["a@example.com"], subject, "b", delivery_id="d1")
    assert "\n" not in message["Subject"]
    assert message["Bcc"] is None


@pytest.mark.parametrize("address", ["ops@example.com", "值班@示例.中国", "a.b+alarms@sub.example.org"])
def test_addresses_accepted(address: str) -> None:
    assert email.check_address(address) == address


@pytest.mark.parametrize(
    "address", ["", "ops", "ops@", "@example.com", "a b@example.com", "Ops <ops@example.com>", "a@b\n.com"]
)
def test_addresses_refused(address: str) -> None:
    with pytest.raises(ValueError, match="not an e-mail address"):
        email.check_address(address)
