"""Domain errors, each with a sentence a person understands; the API maps them to problem+json."""

from __future__ import annotations

from typing import Any


class HwrepoError(Exception):
    title = "Request failed"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class NotFound(HwrepoError):
    title = "Not found"


class Unauthenticated(HwrepoError):
    title = "Authentication required"


class Forbidden(HwrepoError):
    title = "Not allowed"


class Conflict(HwrepoError):
    title = "Conflict"


class Invalid(HwrepoError):
    title = "Invalid request"


class TooLarge(HwrepoError):
    title = "Upload too large"


class ServiceUnavailable(HwrepoError):
    """A backing service (S3, NATS, database) cannot be reached, or answers only with errors.
    `service` names it; `state` says which ("is unreachable", "answered with an error")."""

    title = "Service unavailable"

    def __init__(
        self, service: str, detail: str, *, state: str = "is unreachable", **extra: Any
    ) -> None:
        super().__init__(f"{service} {state}: {detail}", service=service, **extra)
        self.service = service
