"""What a scanned code names, and QR labels for identifiers (segno).

`parse_payload` accepts what a scanner or a camera app hands over: a GS1 element string (with a
symbology identifier such as `]C1`, `]d2`, `]Q3` and GS separators), a GS1 Digital Link URL, an
`88.`-style Handle/IDIS identifier, an `hdl:` URI or an `https://hdl.handle.net/...` URL.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import unquote, urlsplit
from xml.sax.saxutils import escape

import segno

from iip.identifiers.gs1 import codec
from iip.kernel.errors import Invalid


class PayloadKind(StrEnum):
    GS1_ELEMENT_STRING = "gs1_element_string"
    GS1_DIGITAL_LINK = "gs1_digital_link"
    HANDLE = "handle"


HANDLE_PROXIES = frozenset({"hdl.handle.net", "handle.net"})
# `prefix/suffix`, the prefix made of dot-separated segments the first of which is numeric (`88.118.8`).
HANDLE = re.compile(r"^(?P<prefix>\d+(?:\.[^\s/.]+)*)/(?P<suffix>[^\x00-\x1f\x7f]+)$")


@dataclass(frozen=True)
class ParsedPayload:
    """What a scanned payload names."""

    kind: PayloadKind
    identifier: str  # the handle, or the canonical Digital Link of a GS1 payload
    symbology: str = ""  # e.g. "]d2" when the scanner sent one
    gs1_key: str | None = None  # e.g. "01/09506000134352"
    qualifiers: str | None = None  # e.g. "10/ABC"
    attributes: dict[str, str] = field(default_factory=dict)  # data attributes by AI
    digital_link: str | None = None  # canonical (id.gs1.org) Digital Link URI
    element_string: str | None = None  # with GS separators, no symbology identifier
    hri: str | None = None  # "(01)09506000134352(10)ABC"

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind.value,
            "identifier": self.identifier,
            "symbology": self.symbology,
            "gs1_key": self.gs1_key,
            "qualifiers": self.qualifiers,
            "attributes": dict(self.attributes),
            "digital_link": self.digital_link,
            "element_string": self.element_string,
            "hri": self.hri,
        }


def _gs1(kind: PayloadKind, link: codec.DigitalLink, symbology: str = "") -> ParsedPayload:
    canonical = link.uri()
    return ParsedPayload(
        kind=kind,
        identifier=canonical,
        symbology=symbology,
        gs1_key=link.key,
        qualifiers=link.qualifier_path,
        attributes={a.ai: a.value for a in link.attributes},
        digital_link=canonical,
        element_string=link.element_string(),
        hri=link.hri(),
    )


def _handle(identifier: str) -> ParsedPayload:
    identifier = identifier.strip()
    if not HANDLE.match(identifier):
        raise Invalid(f"'{identifier}' is not a handle of the form 'prefix/suffix'", code="bad_handle")
    return ParsedPayload(kind=PayloadKind.HANDLE, identifier=identifier)


def parse_payload(text: str) -> ParsedPayload:
    """Say what a scanned payload names; `Invalid` when it is none of the supported kinds."""
    text = text.strip().strip("\r\n")
    if not text:
        raise Invalid("empty payload")
    symbology, data = codec.split_symbology(text)
    if data.lower().startswith(("http://", "https://")):
        url = urlsplit(data)
        if (url.hostname or "").lower() in HANDLE_PROXIES:
            return _handle(unquote(url.path.lstrip("/")))
        return _gs1(PayloadKind.GS1_DIGITAL_LINK, codec.parse_digital_link(data), symbology)
    if data.lower().startswith("hdl:"):
        return _handle(unquote(data[4:]))
    match = HANDLE.match(data)
    if not symbology and match and "." in match.group("prefix"):
        return _handle(data)
    try:
        return _gs1(PayloadKind.GS1_ELEMENT_STRING, codec.parse_element_string(text), symbology)
    except Invalid:
        if not symbology and match:  # a handle with a dotless prefix, e.g. `1234/abc`
            return _handle(data)
        raise


# --- labels -----------------------------------------------------------------------------------


class LabelFormat(StrEnum):
    PNG = "png"
    SVG = "svg"


MEDIA_TYPES = {LabelFormat.PNG: "image/png", LabelFormat.SVG: "image/svg+xml"}


@dataclass(frozen=True, slots=True)
class Label:
    data: bytes
    media_type: str
    content: str  # what the QR code encodes


def label_content(target: str, root: str = codec.GS1_ROOT) -> str:
    """What to encode for a target: GS1 payloads as a Digital Link under `root`, handles as they are."""
    parsed = parse_payload(target)
    if parsed.kind is PayloadKind.HANDLE:
        return parsed.identifier
    if parsed.kind is PayloadKind.GS1_DIGITAL_LINK:
        return codec.parse_digital_link(codec.split_symbology(target.strip())[1]).uri(root)
    return codec.parse_element_string(target).uri(root)


def qr_code(content: str) -> segno.QRCode:
    """A QR code (never Micro QR, which phones do not read) with error correction M or better."""
    try:
        return segno.make(content, error="m", micro=False, boost_error=True)
    except segno.DataOverflowError as err:
        raise Invalid(f"content of {len(content)} characters does not fit in a QR code", code="too_long") from err


def qr_png(content: str, *, scale: int = 4, border: int = 4) -> bytes:
    buffer = io.BytesIO()
    qr_code(content).save(buffer, kind="png", scale=scale, border=border)
    return buffer.getvalue()


def qr_svg(content: str, *, scale: int = 4, border: int = 4, caption: str | None = None) -> bytes:
    """An SVG label; with `caption`, the text is printed centred under the symbol."""
    buffer = io.BytesIO()
    code = qr_code(content)
    code.save(buffer, kind="svg", scale=scale, border=border, omitsize=True, xmldecl=False, title=caption)
    svg = buffer.getvalue().decode()
    if not caption:
        return svg.encode()
    width, height = code.symbol_size(scale=scale, border=border)
    font_size = max(8, 2 * scale)
    extra = font_size * 2
    svg = svg.replace(f'viewBox="0 0 {width} {height}"', f'viewBox="0 0 {width} {height + extra}"', 1)
    text = (
        f'<rect y="{height}" width="{width}" height="{extra}" fill="#fff"/>'
        f'<text x="{width / 2:g}" y="{height + font_size:g}" font-family="monospace" font-size="{font_size}" '
        f'text-anchor="middle" textLength="{width - 2 * scale}" lengthAdjust="spacingAndGlyphs">'
        f"{escape(caption)}</text>"
    )
    return svg.replace("</svg>", text + "</svg>").encode()


def label(
    target: str,
    *,
    label_format: LabelFormat = LabelFormat.PNG,
    scale: int = 4,
    caption: bool = False,
    root: str = codec.GS1_ROOT,
) -> Label:
    """A QR label for an identifier or GS1 payload. Captions are drawn on SVG labels only (PNG has none)."""
    content = label_content(target, root)
    if label_format is LabelFormat.SVG:
        data = qr_svg(content, scale=scale, caption=content if caption else None)
    else:
        data = qr_png(content, scale=scale)
    return Label(data, MEDIA_TYPES[label_format], content)
