"""The real pyhandle client (EUDAT's Handle library) against IIP served by uvicorn, unchanged.

pyhandle speaks HANDLE.NET's JSON REST API: Basic authentication as `300:0.NA/<prefix>`, PUT with
`overwrite=`, GET then PUT `?index=` to modify, DELETE with `?index=` or for the whole handle.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import requests
from pyhandle.client.resthandleclient import RESTHandleClient
from pyhandle.handleexceptions import HandleAlreadyExistsException, HandleAuthenticationError, HandleNotFoundException

from iip.api.app import create_app
from iip.kernel.runtime import Runtime
from tests.console.test_browser import serve
from tests.identifiers.conftest import HomedPrefix

# pyhandle's dependencies still import pkg_resources-era and deprecated stdlib APIs.
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:pyhandle"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:future"),
]


@pytest.fixture
def server(runtime: Runtime) -> Iterator[str]:
    with serve(create_app(runtime=runtime, configure_logs=False)) as base_url:
        yield base_url


@pytest.fixture
def writer(server: str, homed: HomedPrefix) -> RESTHandleClient:
    return RESTHandleClient.instantiate_with_username_and_password(
        server, homed.identity, homed.secret, HTTPS_verify=False
    )


def test_register_read_modify_list_and_delete(writer: RESTHandleClient, server: str, homed: HomedPrefix) -> None:
    handle = f"{homed.prefix}/JXDY{uuid.uuid4().hex[:8].upper()}"

    assert writer.register_handle(handle, "https://example.com/a", checksum="abc123", SERIAL="SN-1") == handle
    assert writer.get_value_from_handle(handle, "URL") == "https://example.com/a"
    record = writer.retrieve_handle_record(handle)
    assert record is not None
    assert record["CHECKSUM"] == "abc123"
    assert "0.NA/88.118.8" in record["HS_ADMIN"]  # pyhandle's default owner: 200:0.NA/<prefix>

    with pytest.raises(HandleAlreadyExistsException):
        writer.register_handle(handle, "https://example.com/other")

    writer.modify_handle_value(handle, URL="https://example.com/b", COLOUR="red")
    assert writer.get_value_from_handle(handle, "URL") == "https://example.com/b"
    assert writer.get_value_from_handle(handle, "COLOUR") == "red"

    writer.delete_handle_value(handle, "COLOUR")
    assert writer.get_value_from_handle(handle, "COLOUR") is None

    # Listing is not part of pyhandle (its search needs a reverse-lookup servlet); the REST call it would make:
    listed = requests.get(f"{server}/api/handles", params={"prefix": homed.prefix}, headers=homed.auth, timeout=10)
    assert listed.status_code == 200
    assert handle in listed.json()["handles"]

    reader = RESTHandleClient.instantiate_for_read_access(server, HTTPS_verify=False)
    assert reader.get_value_from_handle(handle, "SERIAL") == "SN-1"

    assert writer.delete_handle(handle) == handle
    assert reader.retrieve_handle_record_json(handle) is None
    with pytest.raises(HandleNotFoundException):
        writer.delete_handle(handle)


def test_generate_and_register_and_utf8_suffix(writer: RESTHandleClient, homed: HomedPrefix) -> None:
    minted = writer.generate_and_register_handle(homed.prefix, "https://example.com/minted")
    assert minted.startswith(f"{homed.prefix}/")
    assert writer.get_value_from_handle(minted, "URL") == "https://example.com/minted"

    chinese = f"{homed.prefix}/产品-001"
    assert writer.register_handle(chinese, "https://example.com/产品") == chinese
    assert writer.get_value_from_handle(chinese, "URL") == "https://example.com/产品"


def test_wrong_secret_is_refused(server: str, homed: HomedPrefix) -> None:
    intruder = RESTHandleClient.instantiate_with_username_and_password(
        server, homed.identity, "not-the-secret", HTTPS_verify=False
    )
    with pytest.raises(HandleAuthenticationError):
        intruder.register_handle(f"{homed.prefix}/intruder", "https://example.com/x")
