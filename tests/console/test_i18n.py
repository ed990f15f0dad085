"""Languages: the default, the switch, and catalogues that translate every message id."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.pofile import read_po
from fastapi.testclient import TestClient
from sqlalchemy import select

from iip.console.i18n import LANGUAGES, PACKAGE_DIR, Catalogues, extract_msgids, load_catalogues, module_locale_dir
from iip.console.web import ROLE_LABELS
from iip.kernel.auth import User
from iip.kernel.module import discover_modules
from iip.kernel.runtime import Runtime
from tests.conftest import TenantFixture
from tests.console.support import assert_html, csrf_from, heading, login, sign_in

PLACEHOLDER_RE = re.compile(r"%\((\w+)\)s")


def console_catalogues() -> Catalogues:
    """The console's catalogue with every module's own merged over it, as the running console has them."""
    return load_catalogues([d for m in discover_modules() if (d := module_locale_dir(m.template_dir))])


def all_msgids() -> set[str]:
    """Message ids of the console and of every module: templates, Python (N_), titles and page titles."""
    modules = discover_modules()
    package_dirs = [PACKAGE_DIR] + [Path(m.template_dir).parent for m in modules if m.template_dir]
    msgids = extract_msgids(package_dirs)
    for module in modules:
        msgids.add(module.title)
        msgids.update(page.title for page in module.pages)
    return msgids


def test_extraction_finds_templates_python_and_titles() -> None:
    msgids = all_msgids()
    assert "Sign in" in msgids  # console template
    assert "Verify chain" in msgids  # a module's template
    assert "User created." in msgids  # N_() in a module's Python
    assert set(ROLE_LABELS.values()) <= msgids
    assert {"Access", "Users", "API keys", "Audit log"} <= msgids


@pytest.mark.parametrize("language", sorted(LANGUAGES))
def test_every_msgid_is_translated(language: str) -> None:
    catalogues = console_catalogues()
    missing = sorted(m for m in all_msgids() if not catalogues.has(language, m))
    assert not missing, f"untranslated in {language}: {missing}"


@pytest.mark.parametrize("language", sorted(LANGUAGES))
def test_translations_keep_their_placeholders(language: str) -> None:
    entries = console_catalogues().entries[language]
    wrong = {
        msgid: text
        for msgid, text in entries.items()
        if sorted(PLACEHOLDER_RE.findall(msgid)) != sorted(PLACEHOLDER_RE.findall(text))
    }
    assert not wrong


def test_chinese_is_the_default(client: TestClient, tenant_a: TenantFixture) -> None:
    sign_in(client, f"{tenant_a.name}-admin", tenant_a.admin_password)
    home = assert_html(client.get("/"), 200)
    assert '<html lang="zh-CN">' in home
    assert heading(home) == "总览"
    assert "访问控制" in home  # a module title in the navigation


def test_switching_language_changes_the_text_and_is_remembered(
    client: TestClient, runtime: Runtime, tenant_a: TenantFixture
) -> None:
    username = f"{tenant_a.name}-admin"
    token = sign_in(client, username, tenant_a.admin_password)
    response = client.post(
        "/lang", data={"language": "en", "next": "/access/users", "csrf_token": token}, follow_redirects=False
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/access/users"
    assert client.cookies.get("iip_lang") == "en"
    page = assert_html(client.get("/access/users"), 200)
    assert '<html lang="en">' in page
    assert heading(page) == "Users"
    assert "总览" not in page
    assert ">Dashboard<" in page
    with runtime.db.session() as session:
        user = session.scalar(select(User).where(User.username == username))
        assert user is not None
        assert user.language == "en"
    # A browser without the cookie gets the user's saved choice after signing in.
    client.cookies.clear()
    assert heading(client.get("/login").text) == "登录"
    token = sign_in(client, username, tenant_a.admin_password)
    assert heading(client.get("/").text) == "Dashboard"
    # And back to Chinese.
    client.post("/lang", data={"language": "zh_CN", "next": "/", "csrf_token": token})
    assert heading(client.get("/").text) == "总览"


def test_language_switch_before_login(client: TestClient) -> None:
    form = client.get("/login")
    assert heading(form.text) == "登录"
    client.post("/lang", data={"language": "en", "next": "/login", "csrf_token": csrf_from(form.text)})
    page = assert_html(client.get("/login"), 200)
    assert heading(page) == "Sign in"


def test_language_switch_needs_a_csrf_token(client: TestClient, tenant_a: TenantFixture) -> None:
    client.get("/login")
    assert_html(client.post("/lang", data={"language": "en", "next": "/login"}), 403)
    assert "iip_lang" not in client.cookies
    sign_in(client, f"{tenant_a.name}-admin", tenant_a.admin_password)
    assert_html(client.post("/lang", data={"language": "en", "csrf_token": "wrong"}), 403)
    assert heading(client.get("/").text) == "总览"


def test_unknown_language_and_foreign_next_are_ignored(client: TestClient) -> None:
    token = csrf_from(client.get("/login").text)
    response = client.post(
        "/lang", data={"language": "xx", "next": "https://evil.example/", "csrf_token": token}, follow_redirects=False
    )
    assert response.headers["location"] == "/"
    assert "iip_lang" not in client.cookies


def test_login_error_in_english(client: TestClient, tenant_a: TenantFixture) -> None:
    token = csrf_from(client.get("/login").text)
    client.post("/lang", data={"language": "en", "next": "/login", "csrf_token": token})
    page = assert_html(login(client, f"{tenant_a.name}-admin", "wrong-password"), 401)
    assert "Wrong username or password." in page


@pytest.mark.parametrize("language", sorted(LANGUAGES))
def test_a_message_shared_by_modules_reads_the_same_in_each(language: str) -> None:
    # The console merges every module's catalogue into one: a msgid two modules translate differently
    # would show the last module's words on the other's pages. A different meaning needs its own msgid.
    seen: dict[str, tuple[str, str]] = {}
    clashes = []
    for module in discover_modules():
        locale_dir = module_locale_dir(module.template_dir)
        if locale_dir is None:
            continue
        with (locale_dir / language / "LC_MESSAGES" / "messages.po").open("rb") as po:
            for message in read_po(po):
                if not message.id or not message.string:
                    continue
                first = seen.setdefault(str(message.id), (module.name, str(message.string)))
                if first[1] != message.string:
                    clashes.append(f"{message.id!r}: {first[0]} {first[1]!r}, {module.name} {message.string!r}")
    assert not clashes, "\n".join(clashes)
