"""Scanned payloads, QR labels (decoded back with zxing-cpp), and the `iip id` command functions."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import pytest
import typer
import zxingcpp
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from iip.identifiers import codes
from iip.identifiers.codes import PayloadKind
from iip.identifiers.gs1.cli import label_command, parse_command
from iip.kernel.auth import Role
from iip.kernel.errors import Invalid
from tests.api.support import assert_problem
from tests.conftest import TenantFixture

GTIN = "09506000134352"
GS = "\x1d"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def png_to_grey(data: bytes) -> tuple[int, int, bytes]:
    """Decode a non-interlaced 1- or 8-bit greyscale PNG into 8-bit pixels (enough for segno's output)."""
    assert data.startswith(PNG_SIGNATURE)
    position, idat = 8, b""
    width = height = depth = 0
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        chunk = data[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
            assert (colour, interlace) == (0, 0)
            assert depth in (1, 8)
        elif kind == b"IDAT":
            idat += chunk
        position += 12 + length
    raw = zlib.decompress(idat)
    stride = (width * depth + 7) // 8
    rows: list[bytearray] = []
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - 1] if i else 0
            up, up_left = previous[i], (previous[i - 1] if i else 0)
            predictor = (0, left, up, (left + up) // 2, _paeth(left, up, up_left))[kind]
            line[i] = (line[i] + predictor) & 0xFF
        rows.append(line)
        previous = line
    if depth == 8:
        return width, height, b"".join(bytes(r) for r in rows)
    pixels = bytearray()
    for line in rows:
        pixels += bytes(255 if line[x // 8] >> (7 - x % 8) & 1 else 0 for x in range(width))
    return width, height, bytes(pixels)


def decode_qr(png: bytes) -> str:
    width, height, pixels = png_to_grey(png)
    found = zxingcpp.read_barcodes(memoryview(pixels).cast("B", (height, width)))
    assert len(found) == 1, "no single QR code found in the label"
    assert found[0].format == zxingcpp.BarcodeFormat.QRCode
    return str(found[0].text)


# --- parse_payload ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "qualifiers", "attributes", "symbology"),
    [
        (f"]C101{GTIN}10LOT1{GS}17261231", "10/LOT1", {"17": "261231"}, "]C1"),
        (f"]d201{GTIN}10LOT1{GS}21S1", "10/LOT1/21/S1", {}, "]d2"),
        (f"]Q301{GTIN}21S1", "21/S1", {}, "]Q3"),
        (f"01{GTIN}", "", {}, ""),
        (f"(01){GTIN}(10)LOT1", "10/LOT1", {}, ""),
    ],
)
def test_gs1_element_strings(payload: str, qualifiers: str, attributes: dict[str, str], symbology: str) -> None:
    parsed = codes.parse_payload(payload)
    assert parsed.kind is PayloadKind.GS1_ELEMENT_STRING
    assert parsed.gs1_key == f"01/{GTIN}"
    assert parsed.qualifiers == qualifiers
    assert parsed.attributes == attributes
    assert parsed.symbology == symbology
    assert parsed.digital_link is not None
    assert parsed.digital_link.startswith(f"https://id.gs1.org/01/{GTIN}")
    assert parsed.identifier == parsed.digital_link


def test_digital_link_urls() -> None:
    parsed = codes.parse_payload(f"https://brand.example/dl/01/{GTIN}/10/LOT1?17=261231")
    assert parsed.kind is PayloadKind.GS1_DIGITAL_LINK
    assert (parsed.gs1_key, parsed.qualifiers) == (f"01/{GTIN}", "10/LOT1")
    assert parsed.digital_link == f"https://id.gs1.org/01/{GTIN}/10/LOT1?17=261231"
    assert parsed.element_string == f"01{GTIN}10LOT1{GS}17261231"
    assert parsed.hri == f"(01){GTIN}(10)LOT1(17)261231"
    # A QR scanner may report the GS1 Digital Link symbology with the URL.
    assert codes.parse_payload(f"]Q1https://id.gs1.org/01/{GTIN}").symbology == "]Q1"


@pytest.mark.parametrize(
    ("payload", "identifier"),
    [
        ("88.118.8/ABC-123", "88.118.8/ABC-123"),
        ("hdl:88.118.8/ABC", "88.118.8/ABC"),
        ("https://hdl.handle.net/88.118.8/A%20B", "88.118.8/A B"),
        ("http://hdl.handle.net/20.500.12345/xyz", "20.500.12345/xyz"),
        ("1234/abc", "1234/abc"),
    ],
)
def test_handles(payload: str, identifier: str) -> None:
    parsed = codes.parse_payload(payload)
    assert parsed.kind is PayloadKind.HANDLE
    assert parsed.identifier == identifier
    assert parsed.gs1_key is None
    assert parsed.digital_link is None


@pytest.mark.parametrize("payload", ["", "hello world", "]C10109506000134353", "https://example.com/nothing", "hdl:"])
def test_unrecognised_payloads_are_invalid(payload: str) -> None:
    with pytest.raises(Invalid):
        codes.parse_payload(payload)


# --- labels -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "content"),
    [
        ("88.118.8/ABC", "88.118.8/ABC"),
        (f"]C101{GTIN}10LOT1", f"https://resolver.example/01/{GTIN}/10/LOT1"),
        (f"https://brand.example/01/{GTIN}?17=261231", f"https://resolver.example/01/{GTIN}?17=261231"),
    ],
)
def test_png_labels_decode_to_their_content(target: str, content: str) -> None:
    label = codes.label(target, root="https://resolver.example")
    assert label.media_type == "image/png"
    assert label.data.startswith(PNG_SIGNATURE)
    assert label.content == content
    assert decode_qr(label.data) == content


def test_qr_symbols_are_full_qr_with_error_correction_m_or_better() -> None:
    code = codes.qr_code(f"https://id.gs1.org/01/{GTIN}/10/LOT1")
    assert not code.is_micro
    assert code.error in {"M", "Q", "H"}


def test_svg_labels_with_a_caption() -> None:
    label = codes.label("88.118.8/A<B", label_format=codes.LabelFormat.SVG, caption=True)
    svg = label.data.decode()
    assert label.media_type == "image/svg+xml"
    assert svg.startswith("<svg")
    assert svg.rstrip().endswith("</svg>")
    assert "88.118.8/A&lt;B</text>" in svg
    plain = codes.label("88.118.8/A<B", label_format=codes.LabelFormat.SVG).data.decode()
    assert "<text" not in plain


def test_too_much_content_is_invalid() -> None:
    with pytest.raises(Invalid, match="does not fit"):
        codes.qr_png("x" * 8000)


def test_labels_over_http(client: TestClient, tenant_a: TenantFixture) -> None:
    headers = tenant_a.headers(Role.VIEWER)
    response = client.get("/api/labels", params={"target": f"01{GTIN}"}, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert decode_qr(response.content) == f"http://testserver/01/{GTIN}"
    svg = client.get("/api/labels", params={"target": "88.118.8/X", "format": "svg"}, headers=headers)
    assert svg.headers["content-type"].startswith("image/svg+xml")
    assert_problem(client.get("/api/labels", params={"target": "nonsense"}, headers=headers), 422)
    assert_problem(client.get("/api/labels", params={"target": "88.118.8/X"}), 401)


# --- command functions ----------------------------------------------------------------------------


def cli_app() -> typer.Typer:
    app = typer.Typer()
    app.command("parse")(parse_command)
    app.command("label")(label_command)
    return app


def test_parse_command_prints_json_and_tables() -> None:
    runner = CliRunner()
    result = runner.invoke(cli_app(), ["parse", "--json", f"]C101{GTIN}10LOT1\\x1d17261231"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["digital_link"] == f"https://id.gs1.org/01/{GTIN}/10/LOT1?17=261231"
    table = runner.invoke(cli_app(), ["parse", "88.118.8/ABC"])
    assert table.exit_code == 0
    assert "handle" in table.stdout
    assert "88.118.8/ABC" in table.stdout
    bad = runner.invoke(cli_app(), ["parse", "]C10109506000134353"])
    assert bad.exit_code == 1
    assert "check digit" in bad.output


def test_label_command_writes_files(tmp_path: Path) -> None:
    runner = CliRunner()
    png = tmp_path / "label.png"
    result = runner.invoke(cli_app(), ["label", f"01{GTIN}", "--output", str(png)])
    assert result.exit_code == 0, result.output
    assert decode_qr(png.read_bytes()) == f"https://id.gs1.org/01/{GTIN}"
    svg = tmp_path / "label.svg"
    result = runner.invoke(cli_app(), ["label", "88.118.8/ABC", "--format", "svg", "--caption", "-o", str(svg)])
    assert result.exit_code == 0, result.output
    assert "88.118.8/ABC</text>" in svg.read_text()
