"""The REST kit: what the HTTP/JSON storefront adapters (Shopify, WooCommerce) share."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from functools import cached_property
from typing import Any, Awaitable, Callable, ClassVar, Mapping

import httpx

from adapters.base import AdapterBase, Capability, StoreContext
from adapters.errors import AdapterError, PayloadError
from adapters.http import IN_CALL_ATTEMPTS, error_for_response, send, with_retries

Sleep = Callable[[float], Awaitable[None]]


class RestAdapter(AdapterBase):
    """Base of the REST adapters: webhooks in, pulls, and stock pushed and read back.

    The client is built on first use, not in ``__init__``: a store whose settings are incomplete can
    still be constructed (to verify a webhook, say), and its error names the missing setting when a
    call needs it. ``sleep`` waits between in-call retries; tests swap it before the first call.
    """

    capabilities: ClassVar[frozenset[Capability]] = frozenset({
        Capability.ORDERS_PULL, Capability.REFUNDS_PULL, Capability.STOCK_PUSH, Capability.STOCK_READ,
        Capability.WEBHOOKS,
    })
    # Their list APIs take any updated range and page by cursor or page number, so the window only
    # bounds one resync step.
    max_window: ClassVar[timedelta] = timedelta(days=30)

    def __init__(self, store: StoreContext, http: httpx.AsyncClient) -> None:
        super().__init__(store, http)
        self.sleep: Sleep = asyncio.sleep

    def make_client(self) -> Any:
        raise NotImplementedError

    @cached_property
    def client(self) -> Any:
        return self.make_client()


class RestClient:
    """JSON calls under one API root with fixed auth headers; subclasses add one method per endpoint.

    Each call is retried in-call for short transient failures. The hooks carry what differs: pacing
    before a call (``_before_send``) and learning from every answer (``_received``), which 404 means
    "no such resource" (``_missing``), a remedy added to a refused call (``_refused``) and a failure
    reported inside a 2xx body (``_checked``).
    """

    platform: ClassVar[str] = ""

    def __init__(self, http: httpx.AsyncClient, api_root: str, headers: Mapping[str, str], sleep: Sleep) -> None:
        self.http = http
        self.api_root = api_root
        self._headers = {**headers, "Accept": "application/json"}
        self._sleep = sleep

    async def _before_send(self) -> None:
        return None

    def _received(self, response: httpx.Response) -> None:
        return None

    def _missing(self, request: httpx.Request, response: httpx.Response, none_on_404: bool) -> bool:
        return none_on_404 and response.status_code == 404

    def _refused(self, error: AdapterError, response: httpx.Response) -> AdapterError:
        return error

    def _checked(self, request: httpx.Request, data: Any) -> Any:
        return data

    async def _call(self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None,
                    none_on_404: bool = False, root: str | None = None,
                    attempts: int = IN_CALL_ATTEMPTS) -> tuple[Any, httpx.Response]:
        """Send with in-call retries; ``(None, response)`` when ``none_on_404`` and the resource is unknown.
        ``root``: another API root than the client's (a plug-in's REST namespace). ``attempts`` 1: a write
        without an idempotency key, which a lost answer must not repeat blind."""

        async def once() -> tuple[Any, httpx.Response]:
            await self._before_send()
            request = self.http.build_request(method, (root or self.api_root) + path, params=params, json=body,
                                              headers=self._headers)
            response = await send(self.http, request, self.platform)
            self._received(response)
            if self._missing(request, response, none_on_404):
                return None, response
            error = error_for_response(response, self.platform)
            if error is not None:
                raise self._refused(error, response)
            try:
                data = response.json()
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                # A 200 HTML page: a security plug-in, a maintenance page or the wrong base URL.
                raise PayloadError(f"non-JSON answer from {request.url.path}", platform=self.platform) from exc
            return self._checked(request, data), response

        return await with_retries(once, attempts=attempts, sleep=self._sleep)
