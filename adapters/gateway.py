"""The gateway kit shared by the Chinese signed-gateway platforms (PDD, Taobao TOP, Douyin, JD next):
a platform brings a ``GatewayClient`` subclass that signs, an ``ErrorTable`` of its codes and its mapping."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Awaitable, Callable, ClassVar, Literal, Mapping

import httpx

from adapters.base import AdapterBase, Capability, StoreContext, TimeWindow
from adapters.errors import AdapterError, AuthExpiredError, PayloadError, PermanentError, ThrottledError, TransientError
from adapters.http import IN_CALL_ATTEMPTS, error_for_response, send, with_retries
from adapters.tokens import RefreshRefused

ErrorKind = Literal["auth", "throttled", "transient", "permanent"]


# --- errors -------------------------------------------------------------------------------------


def read_error(error: Mapping[str, Any], code_key: str, *text_keys: str) -> tuple[int, str, str]:
    """``(code, sub_code, text)`` of an ``error_response``: -1 for an unreadable code, "error" for no text."""
    try:
        code = int(error.get(code_key, -1))
    except (TypeError, ValueError):
        code = -1
    text = " / ".join(str(error.get(key)) for key in text_keys if error.get(key)) or "error"
    return code, str(error.get("sub_code") or ""), text


@dataclass(frozen=True)
class ErrorTable:
    """What a gateway's numeric body-level codes mean.

    A code in no set is permanent: the gateways mark parameter, signature, permission and business errors
    as not retryable, and an unknown code is treated alike rather than hammer a gateway with a call it
    refused. ``auth_message`` is what an operator reads; ``{message}`` stands for the gateway's text.
    """

    platform: str
    auth: frozenset[int] = frozenset()
    throttled: frozenset[int] = frozenset()
    transient: frozenset[int] = frozenset()
    throttled_retry_after_s: float | None = None  # throttle codes rarely say how long; the platform's guess
    transient_retry_after_s: float | None = None
    auth_message: str = "{message}"

    def kind_of(self, code: int) -> ErrorKind:
        if code in self.auth:
            return "auth"
        if code in self.throttled:
            return "throttled"
        if code in self.transient:
            return "transient"
        return "permanent"

    def error(self, code: int, message: str, *, kind: ErrorKind | None = None,
              retry_after_s: float | None = None) -> AdapterError:
        """The classified error for ``code``; ``kind`` overrides the table where a sub-code decides."""
        kind = kind or self.kind_of(code)
        where = {"platform": self.platform, "code": str(code)}
        if kind == "auth":
            return AuthExpiredError(self.auth_message.format(message=message), **where)
        if kind == "throttled":
            wait = self.throttled_retry_after_s if retry_after_s is None else retry_after_s
            return ThrottledError(message, retry_after_s=wait, **where)
        if kind == "transient":
            wait = self.transient_retry_after_s if retry_after_s is None else retry_after_s
            return TransientError(message, retry_after_s=wait, **where)
        return PermanentError(message, **where)


# --- calls --------------------------------------------------------------------------------------


class GatewayClient:
    """One shop's view of a signed gateway: one method per remote call, errors classified.

    The default is the PDD/TOP/JD style: a form POST to one router URL, ``error_response`` in the body.
    A subclass sets ``platform`` and ``default_url``, signs in ``signed_params`` and classifies in
    ``classify``; a gateway with another envelope (Douyin) overrides ``build_request`` and ``parse``.
    """

    platform: ClassVar[str] = ""
    default_url: ClassVar[str] = ""
    default_clock: ClassVar[Callable[[], Any]] = staticmethod(time.time)

    def __init__(self, http: httpx.AsyncClient, *, app_key: str, app_secret: str, access_token: str | None,
                 base_url: str | None = None, clock: Callable[[], Any] | None = None,
                 sleep: Callable[[float], Awaitable[None]] | None = None) -> None:
        self.http = http
        self.app_key = app_key
        self.app_secret = app_secret
        self.access_token = access_token
        self.url = base_url or self.default_url
        self.clock = clock or self.default_clock
        self.sleep = sleep  # tenacity's sleep; tests swap it for a recorder

    def signed_params(self, method: str, business: Mapping[str, Any]) -> dict[str, str]:
        raise NotImplementedError

    def classify(self, error: Mapping[str, Any]) -> AdapterError:
        raise NotImplementedError

    def build_request(self, method: str, business: Mapping[str, Any]) -> httpx.Request:
        return self.http.build_request("POST", self.url, data=self.signed_params(method, business))

    async def call(self, method: str, business: Mapping[str, Any], *, attempts: int = IN_CALL_ATTEMPTS) -> dict[str, Any]:
        """Send one API call (retrying short transient failures) and return the parsed answer. ``attempts`` 1:
        a write without an idempotency key, which a lost answer must not repeat blind."""

        async def once() -> dict[str, Any]:
            # Built on every attempt: the timestamp is part of the sign and must stay fresh.
            response = await send(self.http, self.build_request(method, business), self.platform)
            return self.parse(response, method)

        return await with_retries(once, attempts=attempts, sleep=self.sleep)

    def parse(self, response: httpx.Response, method: str) -> dict[str, Any]:
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        # The gateway's own verdict comes first: it names the cause, whatever the status says.
        if isinstance(body, dict) and isinstance(body.get("error_response"), dict):
            raise self.classify(body["error_response"])
        http_error = error_for_response(response, self.platform)
        if http_error is not None:
            raise http_error
        if not isinstance(body, dict):
            # A 200 that is not JSON comes from something in front of the gateway, not from the gateway.
            raise TransientError(f"non-JSON answer from the gateway: {response.text[:200]!r}", platform=self.platform)
        return body

    def unwrap(self, body: Mapping[str, Any], key: str) -> dict[str, Any]:
        """The ``<name>_response`` object of a successful answer."""
        inner = body.get(key)
        if isinstance(inner, dict):
            return inner
        raise PayloadError(f"answer has no {key!r}: keys {sorted(body)[:5]}", platform=self.platform)


# --- the adapter -------------------------------------------------------------------------------


class GatewayAdapter(AdapterBase):
    """Base of the signed-gateway adapters: pulls and full stock pushes, ``self.client`` built from the store."""

    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.ORDERS_PULL, Capability.REFUNDS_PULL, Capability.STOCK_PUSH}
    )
    Client: ClassVar[type[GatewayClient]] = GatewayClient
    # Which credential fields hold the app key, its secret and the shop's token: stored credentials
    # use each platform's own names (PDD client_id, TOP session), so the names stay and this maps them.
    key_fields: ClassVar[tuple[str, str, str]] = ("app_key", "app_secret", "access_token")

    def __init__(self, store: StoreContext, http: httpx.AsyncClient) -> None:
        super().__init__(store, http)
        self.client = self.make_client(with_token=True)

    def make_client(self, *, with_token: bool) -> GatewayClient:
        """A client of this shop; without the token for the token endpoints, which a stale one would fail."""
        key, secret, token = (getattr(self.creds, name) for name in self.key_fields)
        return self.Client(self.http, app_key=key, app_secret=secret.get_secret_value(),
                           access_token=token.get_secret_value() if (with_token and token) else None,
                           base_url=self.store.base_url, **self.client_options())

    async def token_call(self, method: str, business: Mapping[str, Any]) -> dict[str, Any]:
        """A call to a token endpoint: what the platform refuses ends the refresh (``RefreshRefused``);
        network failures, 5xx and throttles stay transient and are retried."""
        try:
            return await self.make_client(with_token=False).call(method, business)
        except (PermanentError, AuthExpiredError) as exc:
            if isinstance(exc, RefreshRefused):
                raise
            raise RefreshRefused(f"{method} refused: {exc.message}", platform=self.platform, code=exc.code) from exc

    def client_options(self) -> dict[str, Any]:
        """Further keyword arguments of ``Client``, from the store's settings."""
        return {}

    def checked(self, window: TimeWindow) -> TimeWindow:
        """``window``, unless it is wider than ``max_window``: refused before a call is spent on it."""
        check_window(window, self.max_window, self.platform)
        return window


# --- windows and backward paging ----------------------------------------------------------------


def check_window(window: TimeWindow, max_window: timedelta, platform: str) -> None:
    """Refuse a window the increment lists would refuse, before spending a call on it."""
    if window.end - window.start > max_window:
        raise PermanentError(f"window {window.start}..{window.end} is wider than {max_window}", platform=platform)


def unix_bounds(window: TimeWindow) -> tuple[int, int]:
    """Whole unix seconds covering the window; the end is rounded up so a fractional end second is not
    lost (an order on the edge second may come twice, which snapshots make harmless, never not at all)."""
    return math.floor(window.start.timestamp()), math.ceil(window.end.timestamp())


# Why backwards: the window is fixed, but an order that is modified while we page gets a new
# modified time outside the window and drops out of the result set. Every row behind it moves up
# one place. Paging forwards (1, 2, 3...), the row that moves from page k+1 onto page k, already
# read, is never seen: a silent miss. Paging backwards (N, N-1, ... 1), rows only move onto pages
# we have not read yet, so the worst case is reading a row twice, which snapshots make harmless.
#
# The first call of a window does not know the page count yet, so it reads page 1 with the real
# page size (learning total_count/total_results) and returns those rows; if there is more than one
# page, the following calls read N, N-1, ... 1. Page 1 is read again last, so a row that moved
# onto it while we paged is still seen. Cost: one extra page per multi-page window.


def first_page(cursor: str | None, platform: str) -> tuple[int, bool]:
    """The page to request now and whether this is the probing first call of the window."""
    if cursor is None:
        return 1, True
    try:
        data = json.loads(cursor)
        page = int(data["page"])
    except (ValueError, TypeError, KeyError) as exc:
        raise PermanentError(f"unreadable cursor {cursor!r}", platform=platform) from exc
    if page < 1:
        raise PermanentError(f"cursor page {page} out of range", platform=platform)
    return page, False


def next_cursor(page: int, probe: bool, total: int | None, page_size: int, rows: int, platform: str) -> str | None:
    """The cursor after reading ``page`` (which held ``rows`` rows); None when the window is done."""
    if probe:
        if total is None:
            if rows < page_size:
                return None  # a short first page is the whole window, count or not
            raise PayloadError("a full first page without a total count: cannot page backwards", platform=platform)
        pages = math.ceil(total / page_size)
        if pages <= 1:
            return None
        return json.dumps({"page": pages}, separators=(",", ":"))
    if page <= 1:
        return None
    return json.dumps({"page": page - 1}, separators=(",", ":"))


@dataclass(frozen=True)
class BackwardPaging:
    """One platform's backward paging: its page size and the answer field holding the total row count."""

    platform: str
    page_size: int
    total_key: str

    async def read(self, cursor: str | None, fetch: Callable[[int, int], Awaitable[Mapping[str, Any]]],
                   rows: Callable[[Mapping[str, Any]], list[Any]]) -> tuple[list[Any], str | None]:
        """One page of the window: ``fetch(page, page_size)`` answers, ``rows`` reads its rows."""
        page, probe = first_page(cursor, self.platform)
        result = await fetch(page, self.page_size)
        found = rows(result)
        total = result.get(self.total_key)
        count = int(total) if total not in (None, "") else None
        return found, next_cursor(page, probe, count, self.page_size, len(found), self.platform)
