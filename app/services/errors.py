"""Why a flow refuses a request: the edge answers each with its HTTP status, the CLI prints it."""

from __future__ import annotations


class ServiceError(Exception):
    """A refusal a caller can act on; ``status`` is how the HTTP edge answers it."""

    status = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(ServiceError):
    status = 404


class Invalid(ServiceError):
    status = 422


class Conflict(ServiceError):
    status = 409


class PlatformUnavailable(ServiceError):
    """The marketplace did not answer a call made while the caller waits."""

    status = 502
