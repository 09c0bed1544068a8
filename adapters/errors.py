"""Errors an adapter raises, classified at the boundary so workers know what to do.

Our exception hierarchy::

    AdapterError
    ├── TransientError            retry soon (network, 5xx, throttled); ``retry_after_s`` when known
    │   └── ThrottledError        the platform said "slow down" (429, or a body-level throttle code)
    ├── AuthExpiredError          the token is expired or revoked; the store needs re-authorisation
    ├── PermanentError            retrying will not help (bad request, not found, invalid payload)
    │   ├── SignatureError        a webhook or a signed answer failed verification
    │   └── PayloadError          a payload could not be parsed or mapped
    └── DependencyNotReady        something this depends on is not here yet (a refund before its order)
"""

from __future__ import annotations


class AdapterError(Exception):
    """Base of every error an adapter raises. ``kind`` names the branch for workers and push results."""

    kind = "error"

    def __init_subclass__(cls, kind: str | None = None, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if kind is not None:
            cls.kind = kind

    def __init__(self, message: str, *, platform: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.platform = platform
        self.code = code

    def __str__(self) -> str:
        prefix = f"[{self.platform}] " if self.platform else ""
        suffix = f" (code {self.code})" if self.code else ""
        return f"{prefix}{self.message}{suffix}"


class _RetryLater(AdapterError):
    """An error that may carry ``retry_after_s``: how many seconds to wait before trying again, when known."""

    def __init__(self, message: str, *, retry_after_s: float | None = None, **kw) -> None:
        super().__init__(message, **kw)
        self.retry_after_s = retry_after_s


class TransientError(_RetryLater, kind="transient"):
    """A failure that is expected to pass: retry, after ``retry_after_s`` seconds when given."""


class ThrottledError(TransientError, kind="throttled"):
    """The platform asked us to slow down."""


class AuthExpiredError(AdapterError, kind="auth_expired"):
    """Credentials no longer work. Resolution: re-authorise the store and update its credentials."""


class PermanentError(AdapterError, kind="permanent"):
    """Retrying the same call will fail the same way."""


class SignatureError(PermanentError, kind="signature"):
    """A signature did not verify."""


class PayloadError(PermanentError, kind="payload"):
    """A payload could not be parsed or mapped onto the canonical model."""


class DependencyNotReady(_RetryLater, kind="dependency_not_ready"):
    """What this needs has not arrived yet; retry later without counting it as a failure."""
