"""`iip id prefix create|list`, `iip id register`, `iip id resolve` on SQLite and PostgreSQL."""

from __future__ import annotations

import json

from tests.cli.conftest import InProcessIip


def test_prefix_register_and_resolve(iip_in_process: InProcessIip) -> None:
    iip = iip_in_process
    assert iip("db", "upgrade").exit_code == 0
    assert iip("tenant", "create", "acme").exit_code == 0
    created = iip("id", "prefix", "create", "88.118.8", "--tenant", "acme", stdin="prefix-secret-1\n")
    assert created.exit_code == 0, created.output
    assert "300:0.NA/88.118.8" in created.stdout
    assert "88.118.8" in iip("id", "prefix", "list").stdout

    registered = iip(
        "id",
        "register",
        "88.118.8/产品-001",
        "--url",
        "https://example.com/p",
        "--value",
        "SERIAL=SN-1",
        "--tenant",
        "acme",
    )
    assert registered.exit_code == 0, registered.output
    resolved = iip("id", "resolve", "88.118.8/产品-001", "--json")
    assert resolved.exit_code == 0, resolved.output
    body = json.loads(resolved.stdout)
    assert {v["type"]: v["data"]["value"] for v in body["values"] if v["type"] != "HS_ADMIN"} == {
        "URL": "https://example.com/p",
        "SERIAL": "SN-1",
    }
    only_url = iip("id", "resolve", "88.118.8/产品-001", "--type", "URL")
    assert "https://example.com/p" in only_url.stdout
    assert "SN-1" not in only_url.stdout


def test_cli_errors_are_one_line(iip_in_process: InProcessIip) -> None:
    iip = iip_in_process
    assert iip("db", "upgrade").exit_code == 0
    missing = iip("id", "resolve", "88.118.8/none")
    assert missing.exit_code == 1
    assert "not found" in missing.stderr
    malformed = iip("id", "resolve", "no-slash")
    assert malformed.exit_code == 1
    assert "prefix/suffix" in malformed.stderr
    foreign = iip("id", "register", "99.1/x", "--url", "https://a", "--tenant", "nobody")
    assert foreign.exit_code == 1
