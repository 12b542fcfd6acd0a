"""The one exception tree. Each class's docstring is its default message."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Conflict",
    "FieldError",
    "Forbidden",
    "HeadlessOpsError",
    "IdempotencyMismatch",
    "InvalidInput",
    "NotFound",
    "PayloadTooLarge",
    "Unauthorized",
    "UnsupportedMediaType",
]


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with one input field (``field`` is a dotted path, ``""`` for the whole body)."""

    field: str
    message: str


class HeadlessOpsError(Exception):
    """Something went wrong in headless-ops."""

    status_code = 500

    def __init__(self, message: str | None = None, errors: list[FieldError] | None = None) -> None:
        self.message = message or (self.__doc__ or "").strip()
        self.errors = errors or []
        super().__init__(self.message)


class InvalidInput(HeadlessOpsError):
    """The request is invalid."""

    status_code = 400


class Unauthorized(HeadlessOpsError):
    """A valid Bearer token is required."""

    status_code = 401


class Forbidden(HeadlessOpsError):
    """The token lacks the scope this request needs."""

    status_code = 403


class NotFound(HeadlessOpsError):
    """Not found."""

    status_code = 404


class Conflict(HeadlessOpsError):
    """The request conflicts with the current state."""

    status_code = 409


class PayloadTooLarge(HeadlessOpsError):
    """The request body is larger than this server accepts."""

    status_code = 413


class UnsupportedMediaType(HeadlessOpsError):
    """Unsupported Content-Type."""

    status_code = 415


class IdempotencyMismatch(HeadlessOpsError):
    """This Idempotency-Key was already used with a different request body."""

    status_code = 422
