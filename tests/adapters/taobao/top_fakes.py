"""A fake TOP gateway for respx: checks the sign of every request and answers like TOP."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qsl

import httpx
import pytest
import respx

from adapters.base import StoreContext
from adapters.signing import signatures_equal
from adapters.taobao.adapter import TaobaoAdapter, TaobaoCredentials
from adapters.taobao.client import top_sign

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "taobao"
BASE_URL = "https://top.test"
GATEWAY = f"{BASE_URL}/router/rest"
APP_KEY = "12345678"
SECRET = "top-secret"
SESSION = "session-abc"


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def error(code: int, msg: str, sub_code: str | None = None, sub_msg: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "msg": msg, "request_id": "top-req-1"}
    if sub_code:
        body["sub_code"] = sub_code
    if sub_msg:
        body["sub_msg"] = sub_msg
    return {"error_response": body}


class FakeTop:
    """Routes by ``method``; answers TOP's own code 25 when the sign does not verify."""

    def __init__(self, secret: str = SECRET) -> None:
        self.secret = secret
        self.calls: list[dict[str, str]] = []
        self.handlers: dict[str, Callable[[dict[str, str]], Any]] = {}
        self.rejected_signs = 0

    def on(self, method: str, handler: Callable[[dict[str, str]], Any]) -> None:
        self.handlers[method] = handler

    def script(self, method: str, *bodies: Any) -> None:
        queue = list(bodies)
        self.on(method, lambda _p: queue.pop(0) if len(queue) > 1 else queue[0])

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.method == "POST"
        assert request.headers["content-type"].startswith("application/x-www-form-urlencoded")
        params = dict(parse_qsl(request.content.decode("utf-8"), keep_blank_values=True))
        method = params.get("sign_method", "")
        unsigned = {k: v for k, v in params.items() if k != "sign"}
        if method not in ("md5", "hmac", "hmac-sha256") or not signatures_equal(
            top_sign(unsigned, self.secret, method), params.get("sign")
        ):
            self.rejected_signs += 1
            return httpx.Response(200, json=error(25, "Invalid signature"))
        for name in ("method", "app_key", "timestamp", "format", "v"):
            assert params.get(name), f"missing common parameter {name}"
        # TOP refuses timestamps more than 10 minutes off; ours must be a Beijing-time string.
        datetime.strptime(params["timestamp"], "%Y-%m-%d %H:%M:%S")
        self.calls.append(params)
        handler = self.handlers.get(params["method"])
        if handler is None:
            return httpx.Response(200, json=error(22, f"Invalid method {params['method']}"))
        answer = handler(params)
        return answer if isinstance(answer, httpx.Response) else httpx.Response(200, json=answer)

    def methods(self) -> list[str]:
        return [c["method"] for c in self.calls]


@pytest.fixture
def fake() -> FakeTop:
    return FakeTop()


@pytest.fixture
async def gateway(fake: FakeTop):
    with respx.mock(assert_all_called=True, assert_all_mocked=True, base_url=BASE_URL) as router:
        router.post("/router/rest").mock(side_effect=fake)
        yield router


@pytest.fixture
def sleeps() -> list[float]:
    return []


def make_adapter(sleeps: list[float], *, secret: str = SECRET, settings: dict[str, Any] | None = None,
                 http: httpx.AsyncClient | None = None) -> TaobaoAdapter:
    store = StoreContext(
        store_id="store-tb",
        external_shop_id="qinba-tea",
        credentials=TaobaoCredentials(app_key=APP_KEY, app_secret=secret, session=SESSION),
        settings={"base_url": GATEWAY, **(settings or {})},
    )
    adapter = TaobaoAdapter(store, http or httpx.AsyncClient())

    async def record_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    adapter.client.sleep = record_sleep
    return adapter


@pytest.fixture
async def adapter(gateway, sleeps):
    async with httpx.AsyncClient() as http:
        yield make_adapter(sleeps, http=http)
