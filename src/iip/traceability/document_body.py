"""Reading an EPCIS document body: a request body (the API), an uploaded file or pasted text (the console).

One place says which media types are JSON or XML (others are refused, a few are told by the first
character), how large a document may be, and what counts as no document: the capture router, the
profile checks and the console capture page all read bodies here, so each refuses the same input
for the same reason. What the body holds is then read by `capture_validation`, the same for all.
"""

from __future__ import annotations

from typing import Annotated, BinaryIO, Literal

from fastapi import Depends, HTTPException, Request

from iip.traceability.capture import CAPTURE_FILE_SIZE_LIMIT, CAPTURE_LIMIT
from iip.traceability.capture_validation import Syntax

LIMITS = {
    "GS1-EPCIS-Capture-Limit": str(CAPTURE_LIMIT),
    "GS1-EPCIS-Capture-File-Size-Limit": str(CAPTURE_FILE_SIZE_LIMIT),
}
JSON_TYPES = frozenset({"application/json", "application/ld+json"})
XML_TYPES = frozenset({"application/xml", "text/xml"})
SNIFFED_TYPES = frozenset({"", "text/plain", "application/octet-stream"})

Refusal = Literal["empty", "too_large", "not_text", "media_type"]


class BodyRefused(ValueError):
    """A body that is no document to read: empty, too large, not text, or of another media type."""

    def __init__(self, reason: Refusal, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def media_type_syntax(content_type: str | None) -> Syntax | None:
    """JSON or XML as a Content-Type says; None to tell from the body; BodyRefused for any other type."""
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type in JSON_TYPES or media_type.endswith("+json"):
        return "json"
    if media_type in XML_TYPES or media_type.endswith("+xml"):
        return "xml"
    if media_type in SNIFFED_TYPES:
        return None
    raise BodyRefused("media_type", f"capture takes JSON or XML, not {media_type}")


def _too_large(size: int | str) -> BodyRefused:
    return BodyRefused("too_large", f"document of {size} bytes; at most {CAPTURE_FILE_SIZE_LIMIT} are taken")


def checked(data: bytes) -> bytes:
    """The body, if it is one to read: neither empty (nor only white space) nor over the size limit."""
    if len(data) > CAPTURE_FILE_SIZE_LIMIT:
        raise _too_large(len(data))
    if not data.strip():
        raise BodyRefused("empty", "the document is empty")
    return data


def read_file(file: BinaryIO) -> bytes:
    """An uploaded file's bytes, reading no more than one byte past the limit."""
    return checked(file.read(CAPTURE_FILE_SIZE_LIMIT + 1))


def pasted(text: str) -> bytes:
    """Pasted text as the bytes a client would send: UTF-8 (what JSON must be, and XML's default)."""
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, which no document can hold
        raise BodyRefused("not_text", "the text holds characters that are not Unicode") from None
    return checked(data)


# --- the API's request bodies


async def capture_body(request: Request) -> bytes:
    """The request body, refused (413) as soon as it is known to pass the size limit."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > CAPTURE_FILE_SIZE_LIMIT:
        raise too_large_response(_too_large(declared))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > CAPTURE_FILE_SIZE_LIMIT:
            raise too_large_response(BodyRefused("too_large", f"document over {CAPTURE_FILE_SIZE_LIMIT} bytes"))
        chunks.append(chunk)
    return b"".join(chunks)


def too_large_response(refused: Exception | str) -> HTTPException:
    """413 with the capture limits in the binding's headers."""
    return HTTPException(413, detail=str(refused), headers=LIMITS)


def declared_syntax(request: Request) -> Syntax | None:
    """The syntax the Content-Type declares (415 for a type neither JSON nor XML)."""
    try:
        return media_type_syntax(request.headers.get("content-type"))
    except BodyRefused as refused:
        raise HTTPException(415, detail=str(refused)) from None


CaptureBody = Annotated[bytes, Depends(capture_body)]
DeclaredSyntax = Annotated[Syntax | None, Depends(declared_syntax)]
