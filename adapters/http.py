"""Shared HTTP plumbing: one client with timeouts, status → error mapping, a bounded tenacity policy."""

from __future__ import annotations

import logging
import random
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Awaitable, Callable, TypeVar

import httpx
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

from adapters.errors import AdapterError, AuthExpiredError, PermanentError, ThrottledError, TransientError

log = logging.getLogger("coopsync.adapters.http")

CONNECT_TIMEOUT_S = 5.0  # seconds
READ_TIMEOUT_S = 30.0  # seconds
IN_CALL_ATTEMPTS = 3  # tenacity attempts inside one call; longer waits go to the job table
IN_CALL_MAX_WAIT_S = 5.0  # seconds; a Retry-After longer than this is left to the job table

T = TypeVar("T")


def new_client(**kwargs) -> httpx.AsyncClient:
    """The shared outbound client: explicit timeouts, no redirects to unknown places."""
    timeout = httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
    return httpx.AsyncClient(timeout=timeout, follow_redirects=False, **kwargs)


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: a number (Shopify sends floats) or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def error_for_response(response: httpx.Response, platform: str) -> AdapterError | None:
    """Map an HTTP status onto the error tree; None for 2xx/3xx."""
    status = response.status_code
    if status < 400:
        return None
    snippet = response.text[:300] if response.content else ""
    message = f"HTTP {status} from {response.request.url.host}{response.request.url.path}: {snippet}"
    if status == 429:
        return ThrottledError(message, platform=platform, code=str(status),
                              retry_after_s=parse_retry_after(response.headers.get("Retry-After")) or 1.0)
    if status in (408, 425) or status >= 500:
        return TransientError(message, platform=platform, code=str(status),
                              retry_after_s=parse_retry_after(response.headers.get("Retry-After")))
    if status == 401:
        return AuthExpiredError(message, platform=platform, code=str(status))
    return PermanentError(message, platform=platform, code=str(status))


def raise_for_status(response: httpx.Response, platform: str) -> None:
    error = error_for_response(response, platform)
    if error is not None:
        raise error


async def send(client: httpx.AsyncClient, request: httpx.Request, platform: str) -> httpx.Response:
    """Send once; network failures become ``TransientError``. Status codes are the caller's."""
    try:
        return await client.send(request)
    except httpx.TimeoutException as exc:
        raise TransientError(f"timeout calling {request.url.host}: {exc!r}", platform=platform) from exc
    except httpx.TransportError as exc:
        raise TransientError(f"network error calling {request.url.host}: {exc!r}", platform=platform) from exc


def _wait(retry_state) -> float:
    exc = retry_state.outcome.exception()
    hinted = getattr(exc, "retry_after_s", None)
    if hinted is not None:
        return hinted
    base = min(IN_CALL_MAX_WAIT_S, 0.2 * (2 ** (retry_state.attempt_number - 1)))
    return random.uniform(0, base)  # full jitter


def _retryable(exc: BaseException) -> bool:
    if not isinstance(exc, TransientError):
        return False
    # A long throttle is the job table's business: do not block a worker for minutes.
    return exc.retry_after_s is None or exc.retry_after_s <= IN_CALL_MAX_WAIT_S


class _RetryTransient(retry_if_exception_type):
    def __init__(self) -> None:
        super().__init__(TransientError)

    def __call__(self, retry_state) -> bool:
        return retry_state.outcome.failed and _retryable(retry_state.outcome.exception())


async def with_retries(call: Callable[[], Awaitable[T]], *, attempts: int = IN_CALL_ATTEMPTS,
                       sleep: Callable[[float], Awaitable[None]] | None = None) -> T:
    """Run ``call`` and retry short transient failures (tier one of two; the job table is tier two)."""
    kwargs = {"sleep": sleep} if sleep is not None else {}
    async for attempt in AsyncRetrying(
        retry=_RetryTransient(), wait=_wait, stop=stop_after_attempt(attempts), reraise=True, **kwargs
    ):
        with attempt:
            return await call()
    raise AssertionError("unreachable")
