"""What a capture's decoding gave up (IP fragments never completed, flows forgotten to make room) is
kept with the uploaded capture: in the API's capture view and on the console's captures page."""

from __future__ import annotations

import io
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from scapy.all import wrpcap

from iip.kernel.auth import Role
from iip.kernel.runtime import Runtime
from iip.security.captures import CaptureSummary, count_evictions, decode_capture
from tests.conftest import TenantFixture
from tests.console.support import assert_html, section, sign_in_as, tenant_with_users, text_of
from tests.security.test_ip_fragments import exchange, fragmented

API = "/api/security"
LOST = "IPv4 datagrams incomplete when the traffic ended"


def lost_fragment_capture(tmp_path: Path) -> bytes:
    """A Modbus/TCP connection whose write's last fragment never comes."""
    frames: list[Any] = exchange()
    pieces = fragmented([frames[3]], 16)
    path = tmp_path / "lost.pcap"
    wrpcap(str(path), [*frames[:3], *pieces[:-1]])
    return path.read_bytes()


def test_decoding_counts_lost_fragments_as_dropped(tmp_path: Path) -> None:
    summary = decode_capture(io.BytesIO(lost_fragment_capture(tmp_path)))
    assert summary.dropped == {LOST: 1}
    assert not summary.malformed


def test_flows_forgotten_to_make_room_count_as_dropped_idle_ones_not() -> None:
    summary = CaptureSummary()
    count_evictions(summary, Counter({"over limit": 3, "idle": 40}))
    assert summary.dropped == {"flows forgotten: over limit": 3}


def upload(client: TestClient, tenant: TenantFixture, content: bytes) -> dict[str, Any]:
    response = client.post(
        f"{API}/captures",
        files={"file": ("lost.pcap", content, "application/vnd.tcpdump.pcap")},
        headers=tenant.headers(Role.ENGINEER),
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def test_the_capture_view_shows_what_was_dropped(client: TestClient, tenant_a: TenantFixture, tmp_path: Path) -> None:
    capture = upload(client, tenant_a, lost_fragment_capture(tmp_path))["capture"]
    assert capture["dropped"] == {LOST: 1}
    shown = client.get(f"{API}/captures/{capture['id']}", headers=tenant_a.headers(Role.VIEWER)).json()
    assert shown["dropped"] == {LOST: 1}
    listed = client.get(f"{API}/captures", headers=tenant_a.headers(Role.VIEWER)).json()
    assert [c["dropped"] for c in listed] == [{LOST: 1}]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("language", "column"), [("en", "Dropped"), ("zh_CN", "丢弃")])
def test_the_captures_page_shows_what_was_dropped(
    client: TestClient, runtime: Runtime, language: str, column: str, tmp_path: Path
) -> None:
    tenant = tenant_with_users(runtime, [Role.ENGINEER])
    token = sign_in_as(client, tenant, Role.ENGINEER, language)
    response = client.post(
        "/security/captures",
        files={"file": ("lost.pcap", lost_fragment_capture(tmp_path), "application/octet-stream")},
        data={"csrf_token": token},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text[:500]
    table = section(assert_html(client.get("/security/captures"), 200), "captures-table")
    text = text_of(table)
    assert column in text
    assert f"{LOST}: 1" in text
