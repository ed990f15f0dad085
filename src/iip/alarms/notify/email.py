"""Alarm e-mail: the message in Chinese and English, and sending it over SMTP.

Each message carries both languages, Chinese first: the subject names the priority, the action,
the device and the alarm's text; the body adds the state, the site, the value, the time (Beijing
time in the Chinese part, UTC in the English one) and the link to the alarm. Headers
`X-IIP-Delivery`, `X-IIP-Alarm` and `X-IIP-Priority` let mail rules sort and deduplicate.

Sending uses the standard library's `smtplib` in a worker thread (one connection per message,
none kept open between alarms); STARTTLS or TLS verify the server's certificate.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from iip.alarms.notify.webhook import DeliveryFailed
from iip.alarms.public import AlarmChange
from iip.kernel.settings import AlarmNotificationSettings, SmtpSecurity

BEIJING = dt.timezone(dt.timedelta(hours=8), "CST")
ADDRESS = re.compile(r"^[^@\s<>(),;:\"\[\]\\]{1,64}@[^@\s<>(),;:\"\[\]\\]{1,253}$")
SUBJECT_TEXT = 80  # of the alarm's message in the subject
CONTROL = re.compile(r"[\x00-\x1f\x7f]+")

PRIORITY_ZH = {"critical": "紧急", "high": "高", "medium": "中", "low": "低"}
PRIORITY_EN = {"critical": "Critical", "high": "High", "medium": "Medium", "low": "Low"}
STATE_ZH = {
    "normal": "正常",
    "unack_active": "报警中，未确认",
    "ack_active": "报警中，已确认",
    "unack_rtn": "已恢复，未确认",
    "latched": "已闭锁，待复位",
}
STATE_EN = {
    "normal": "normal",
    "unack_active": "active, unacknowledged",
    "ack_active": "active, acknowledged",
    "unack_rtn": "returned to normal, unacknowledged",
    "latched": "latched, waiting for reset",
}
ACTION_ZH = {
    "activate": "报警触发",
    "clear": "报警恢复",
    "acknowledge": "报警已确认",
    "reset": "报警已复位",
    "unshelve": "解除搁置",
    "unsuppress": "解除抑制",
    "return_to_service": "恢复投用",
    "shelve": "搁置",
    "suppress": "抑制",
    "out_of_service": "停用",
}
ACTION_EN = {
    "activate": "alarm raised",
    "clear": "alarm cleared",
    "acknowledge": "alarm acknowledged",
    "reset": "alarm reset",
    "unshelve": "unshelved",
    "unsuppress": "no longer suppressed",
    "return_to_service": "returned to service",
    "shelve": "shelved",
    "suppress": "suppressed",
    "out_of_service": "removed from service",
}
KIND_ZH = {"notification": "告警通知", "escalation": "告警升级：超时未确认", "test": "测试通知"}
KIND_EN = {"notification": "Alarm notification", "escalation": "Escalation: not acknowledged in time", "test": "Test"}


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    host: str
    port: int
    security: SmtpSecurity
    username: str
    password: str
    sender: str
    timeout_s: float

    @classmethod
    def of(cls, settings: AlarmNotificationSettings) -> SmtpConfig:
        password = settings.smtp_password.get_secret_value() if settings.smtp_password is not None else ""
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            security=settings.smtp_security,
            username=settings.smtp_username,
            password=password,
            sender=settings.smtp_from,
            timeout_s=settings.smtp_timeout_s,
        )


def check_address(value: str) -> str:
    """An e-mail address (no display name); raises ValueError with a readable message otherwise."""
    value = value.strip()
    if not ADDRESS.match(value):
        raise ValueError(f"{value[:100]!r} is not an e-mail address such as ops@example.com")
    return value


def _one_line(text: str, limit: int | None = None) -> str:
    text = CONTROL.sub(" ", text).strip()
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def _times(at: dt.datetime) -> tuple[str, str]:
    return (
        at.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S") + "（北京时间）",
        at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
    )


def _value(change: AlarmChange) -> str:
    return "" if change.value is None else f"{change.value:g}"


def render_change(
    change: AlarmChange, *, kind: str, link: str, delivery_id: str, escalation: str = ""
) -> tuple[str, str]:
    """Subject and text body of one alarm change (`kind`: notification, escalation, test)."""
    priority = change.priority.value
    action = change.action
    text = _one_line(change.message, SUBJECT_TEXT)
    prefix = {"escalation": "[IIP 升级 Escalation]", "test": "[IIP 测试 Test]"}.get(kind, "[IIP]")
    subject = _one_line(
        f"{prefix} {PRIORITY_ZH.get(priority, priority)}/{PRIORITY_EN.get(priority, priority)} "
        f"{ACTION_ZH.get(action, action)} / {ACTION_EN.get(action, action)}: {change.device}"
        + (f" - {text}" if text else "")
    )
    zh_time, en_time = _times(change.at)
    value = _value(change)
    zh = [
        f"{KIND_ZH.get(kind, kind)}（{ACTION_ZH.get(action, action)}）",
        "",
        f"优先级：{PRIORITY_ZH.get(priority, priority)}",
        f"设备：{change.device}",
        *([f"站点：{change.site}"] if change.site else []),
        f"消息：{change.message or '—'}",
        f"状态：{STATE_ZH.get(change.state.value, change.state.value)}",
        *([f"数值：{value}"] if value else []),
        f"时间：{zh_time}",
        f"规则：{change.rule_key}（第 {change.rule_version} 版）",
        *([f"升级：{escalation}"] if escalation else []),
        f"链接：{link}",
    ]
    en = [
        f"{KIND_EN.get(kind, kind)} ({ACTION_EN.get(action, action)})",
        "",
        f"Priority: {PRIORITY_EN.get(priority, priority)}",
        f"Device: {change.device}",
        *([f"Site: {change.site}"] if change.site else []),
        f"Message: {change.message or '-'}",
        f"State: {STATE_EN.get(change.state.value, change.state.value)}",
        *([f"Value: {value}"] if value else []),
        f"Time: {en_time}",
        f"Rule: {change.rule_key} (version {change.rule_version})",
        *([f"Escalation: {escalation}"] if escalation else []),
        f"Link: {link}",
    ]
    footer = f"投递编号 / Delivery: {delivery_id}"
    return subject, "\n".join([*zh, "", "-" * 40, "", *en, "", footer, ""])


@dataclass(frozen=True, slots=True)
class DigestItem:
    change: AlarmChange
    kind: str
    link: str


def render_digest(
    items: Sequence[DigestItem], *, window_start: dt.datetime, window_end: dt.datetime, delivery_id: str
) -> tuple[str, str]:
    """Subject and text body of a digest: the messages a rate limit held back during one window."""
    count = len(items)
    zh_start, en_start = _times(window_start)
    zh_end, en_end = _times(window_end)
    subject = f"[IIP 摘要 Digest] {count} 条告警通知 / {count} alarm notifications"
    lines = [
        f"以下 {count} 条通知超出了本通道的发送频率限制，在 {zh_start} 至 {zh_end} 之间合并发送。",
        f"These {count} notifications exceeded this channel's rate limit between {en_start} and {en_end}.",
        "",
    ]
    for item in items:
        change = item.change
        priority = change.priority.value
        action = change.action
        _, en_time = _times(change.at)
        head = (
            f"- {en_time} {PRIORITY_ZH.get(priority, priority)}/{PRIORITY_EN.get(priority, priority)} "
            f"{ACTION_ZH.get(action, action)} / {ACTION_EN.get(action, action)}: {change.device}"
        )
        lines.append(head + (" [升级 escalation]" if item.kind == "escalation" else ""))
        if change.message:
            lines.append(f"  {_one_line(change.message)}")
        lines.append(f"  {item.link}")
    lines += ["", f"投递编号 / Delivery: {delivery_id}", ""]
    return subject, "\n".join(lines)


def build_message(
    sender: str,
    recipients: Sequence[str],
    subject: str,
    body: str,
    *,
    delivery_id: str,
    alarm_id: str = "",
    priority: str = "",
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = _one_line(subject)
    message["Date"] = formatdate(localtime=False, usegmt=True)
    domain = sender.rpartition("@")[2] or "localhost"
    message["Message-ID"] = make_msgid(idstring=delivery_id, domain=domain)
    message["X-IIP-Delivery"] = delivery_id
    if alarm_id:
        message["X-IIP-Alarm"] = alarm_id
    if priority:
        message["X-IIP-Priority"] = priority
    message.set_content(body, subtype="plain", charset="utf-8")
    return message


def send_message(config: SmtpConfig, message: EmailMessage, recipients: Sequence[str]) -> str:
    """Send over SMTP (blocking); raises `DeliveryFailed`, answers a note on recipients refused, if any."""
    if not config.host:
        raise DeliveryFailed("no SMTP server is configured (IIP_ALARMS__NOTIFICATIONS__SMTP_HOST)", permanent=True)
    if not recipients:
        raise DeliveryFailed("the message has no recipients", permanent=True)
    context = ssl.create_default_context()
    try:
        smtp: smtplib.SMTP
        if config.security is SmtpSecurity.TLS:
            smtp = smtplib.SMTP_SSL(config.host, config.port, timeout=config.timeout_s, context=context)
        else:
            smtp = smtplib.SMTP(config.host, config.port, timeout=config.timeout_s)
        with smtp:
            if config.security is SmtpSecurity.STARTTLS:
                smtp.starttls(context=context)
            if config.username:
                smtp.login(config.username, config.password)
            refused = smtp.send_message(message, from_addr=config.sender, to_addrs=list(recipients))
    except smtplib.SMTPRecipientsRefused as err:
        raise DeliveryFailed(
            f"the SMTP server refused every recipient: {_refusals(err.recipients)}", permanent=True
        ) from err
    except smtplib.SMTPAuthenticationError as err:
        raise DeliveryFailed(f"SMTP login refused: {err.smtp_code} {_text(err.smtp_error)}", permanent=True) from err
    except smtplib.SMTPNotSupportedError as err:
        raise DeliveryFailed(f"the SMTP server does not offer it: {err}", permanent=True) from err
    except smtplib.SMTPResponseException as err:
        raise DeliveryFailed(
            f"the SMTP server answered {err.smtp_code} {_text(err.smtp_error)}", permanent=err.smtp_code >= 500
        ) from err
    except (smtplib.SMTPException, OSError) as err:
        raise DeliveryFailed(
            f"could not send through {config.host}:{config.port}: {type(err).__name__}: {err}"
        ) from err
    # Delivered to the others (a retry would send them a second copy): sent, with a note.
    return f"the SMTP server refused some recipients: {_refusals(refused)}" if refused else ""


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _refusals(refused: dict[str, tuple[int, bytes]]) -> str:
    return "; ".join(f"{address} ({code} {_text(reply)})" for address, (code, reply) in refused.items())


async def send(config: SmtpConfig, message: EmailMessage, recipients: Sequence[str]) -> str:
    return await asyncio.to_thread(send_message, config, message, recipients)
