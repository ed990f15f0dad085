"""Domain errors, modelled once. No HTTP here: `iip.api.problems` maps them to RFC 9457."""

from __future__ import annotations

from typing import Any, ClassVar


class DomainError(Exception):
    """Base of every error a service raises on purpose.

    `code` is stable and machine-readable (clients branch on it); `message` is for people.
    """

    code: ClassVar[str] = "error"
    title: ClassVar[str] = "Error"

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.instance_code = code or type(self).code
        self.details = details


class NotFound(DomainError):
    code = "not_found"
    title = "Not found"


class Conflict(DomainError):
    code = "conflict"
    title = "Conflict"


class Invalid(DomainError):
    code = "invalid"
    title = "Invalid input"


class Unauthenticated(DomainError):
    code = "unauthenticated"
    title = "Authentication required"


class Forbidden(DomainError):
    code = "forbidden"
    title = "Forbidden"


class Unavailable(DomainError):
    code = "unavailable"
    title = "Service unavailable"


class TooManyRequests(DomainError):
    code = "too_many_requests"
    title = "Too many requests"
