"""Real peers for notification tests: an SMTP server (aiosmtpd), an HTTP receiver, and a settable clock."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import http.server
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from iip.alarms.notify import webhook
from iip.alarms.notify.dispatcher import NotificationDispatcher
from iip.alarms.notify.service import channel_sealer
from iip.alarms.public import AlarmChange, AlarmState, Priority
from iip.kernel.auth import Principal, Role
from iip.kernel.bus import MemoryBus
from iip.kernel.db import Database
from iip.kernel.sealing import Sealer
from iip.kernel.settings import AlarmNotificationSettings, Settings, SmtpSecurity
from tests.conftest import TenantFixture

START = dt.datetime(2030, 3, 1, 8, 0, 30, tzinfo=dt.UTC)
SMTP_USER, SMTP_PASSWORD = "iip-mailer", "s3cret-pass"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Clock:
    """The time the code under test sees; tests move it."""

    def __init__(self, now: dt.datetime = START) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


# --- SMTP


@dataclass
class ReceivedMail:
    sender: str
    recipients: list[str]
    message: EmailMessage


class MailStore:
    """aiosmtpd handler keeping every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[ReceivedMail] = []
        self.logins: list[str] = []
        self._arrived = threading.Condition()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802 - aiosmtpd's hook name
        content = envelope.original_content or envelope.content or b""
        raw = content if isinstance(content, bytes) else content.encode()
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        with self._arrived:
            self.messages.append(ReceivedMail(envelope.mail_from or "", list(envelope.rcpt_tos), parsed))
            self._arrived.notify_all()
        return "250 Message accepted for delivery"

    def authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
        if isinstance(data, LoginPassword) and (data.login, data.password) == (
            SMTP_USER.encode(),
            SMTP_PASSWORD.encode(),
        ):
            self.logins.append(data.login.decode())
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)


@dataclass
class SmtpServer:
    host: str
    port: int
    store: MailStore

    @property
    def messages(self) -> list[ReceivedMail]:
        return self.store.messages


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    store = MailStore()
    port = free_port()
    controller = Controller(
        store,
        hostname="127.0.0.1",
        port=port,
        authenticator=store.authenticate,
        auth_require_tls=False,
        enable_SMTPUTF8=True,
    )
    controller.start()
    try:
        yield SmtpServer("127.0.0.1", port, store)
    finally:
        controller.stop()


# --- HTTP


@dataclass
class ReceivedHook:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class HookReceiver:
    """A real HTTP server answering webhooks with the statuses queued (then 200), keeping what it got."""

    url: str
    received: list[ReceivedHook] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)

    def verified(self, secret: str, now: dt.datetime) -> list[ReceivedHook]:
        """The requests whose signature checks out for `secret` at `now`."""
        return [
            hook
            for hook in self.received
            if webhook.verify_signature(
                secret,
                hook.body,
                hook.headers.get(webhook.TIMESTAMP_HEADER.lower()),
                hook.headers.get(webhook.SIGNATURE_HEADER.lower()),
                now=now.timestamp(),
            )
        ]


@pytest.fixture
def hook_receiver() -> Iterator[HookReceiver]:
    port = free_port()
    receiver = HookReceiver(url=f"http://127.0.0.1:{port}/hooks/alarms")
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            with lock:
                headers = {key.lower(): value for key, value in self.headers.items()}
                receiver.received.append(ReceivedHook(self.path, headers, body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
            answer = b"ok" if status < 400 else b"receiver is unwell"
            self.send_response(status)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# --- the dispatcher and its inputs


@pytest.fixture
def clock() -> Clock:
    return Clock()


def notification_settings(smtp: SmtpServer | None = None, **overrides: Any) -> AlarmNotificationSettings:
    values: dict[str, Any] = {
        "smtp_security": SmtpSecurity.NONE,
        "smtp_from": "alarms@iip.example.com",
        "webhook_timeout_s": 5.0,
        "smtp_timeout_s": 5.0,
        "rate_limit": 0,
        "console_url": "https://iip.example.com",
    }
    if smtp is not None:
        values.update(smtp_host=smtp.host, smtp_port=smtp.port)
    values.update(overrides)
    return AlarmNotificationSettings(**values)


@pytest.fixture
def sealer(settings: Settings) -> Sealer:
    """The webhook secret sealer of the test's settings (a secret key generated into its data dir)."""
    return channel_sealer(settings)


def make_dispatcher(
    db: Database, clock: Clock, settings: AlarmNotificationSettings, sealer: Sealer
) -> NotificationDispatcher:
    return NotificationDispatcher(db, MemoryBus(), settings, sealer=sealer, clock=clock, periodic=False)


def admin_of(tenant: TenantFixture) -> Principal:
    return Principal(
        kind="user", id=tenant.admin_user_id, name=f"{tenant.name}-admin", tenant_id=tenant.id, role=Role.ADMIN
    )


def alarm_change(tenant_id: str, clock: Clock, **fields: Any) -> AlarmChange:
    values: dict[str, Any] = {
        "tenant_id": tenant_id,
        "alarm_id": uuid.uuid4().hex,
        "rule_key": "boiler.temperature.high",
        "rule_version": 3,
        "device": "boiler-01",
        "site": "plant-a",
        "priority": Priority.HIGH,
        "state": AlarmState.UNACK_ACTIVE,
        "action": "activate",
        "message": "锅炉温度过高 Boiler temperature high",
        "value": 92.5,
        "at": clock.now,
        "sequence": 1,
    }
    values.update(fields)
    return AlarmChange(**values)
