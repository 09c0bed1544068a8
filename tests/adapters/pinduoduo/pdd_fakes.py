"""A fake PDD gateway for respx: checks the sign of every request and answers like PDD."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qsl

import httpx
import pytest
import respx

from adapters.base import StoreContext
from adapters.pinduoduo.adapter import PddCredentials, PinduoduoAdapter
from adapters.signing import sign_wrapped_md5, signatures_equal

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "pinduoduo"
BASE_URL = "https://pdd.test"
GATEWAY = f"{BASE_URL}/api/router"
CLIENT_ID = "coop-client"
SECRET = "coop-secret"
TOKEN = "token-123"
# The PDD doc code for a bad sign was not found in the sources (china.md 1.8 lists none); any code
# in 10000-39999 is "not retryable" for lywzx, which is what the adapter relies on.
SIGN_ERROR_CODE = 10016


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def error(code: int, msg: str, sub_code: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error_code": code, "error_msg": msg, "request_id": "req-1"}
    if sub_code:
        body["sub_code"] = sub_code
        body["sub_msg"] = msg
    return {"error_response": body}


class FakePdd:
    """Routes by ``type``; each handler gets the form params and returns a JSON body."""

    def __init__(self, secret: str = SECRET) -> None:
        self.secret = secret
        self.calls: list[dict[str, str]] = []
        self.handlers: dict[str, Callable[[dict[str, str]], Any]] = {}
        self.rejected_signs = 0

    def on(self, api_type: str, handler: Callable[[dict[str, str]], Any]) -> None:
        self.handlers[api_type] = handler

    def script(self, api_type: str, *bodies: Any) -> None:
        """Answer successive calls with ``bodies`` in order (the last one repeats)."""
        queue = list(bodies)

        def handler(_params: dict[str, str]) -> Any:
            return queue.pop(0) if len(queue) > 1 else queue[0]

        self.on(api_type, handler)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.method == "POST"
        assert request.headers["content-type"].startswith("application/x-www-form-urlencoded")
        params = dict(parse_qsl(request.content.decode("utf-8"), keep_blank_values=True))
        expected = sign_wrapped_md5({k: v for k, v in params.items() if k != "sign"}, self.secret)
        if not signatures_equal(expected, params.get("sign")):
            self.rejected_signs += 1
            return httpx.Response(200, json=error(SIGN_ERROR_CODE, "签名错误", "sign_error"))
        for name in ("type", "client_id", "timestamp", "data_type", "version"):
            assert params.get(name), f"missing common parameter {name}"
        self.calls.append(params)
        handler = self.handlers.get(params["type"])
        if handler is None:
            return httpx.Response(200, json=error(10001, f"no fake for {params['type']}"))
        answer = handler(params)
        return answer if isinstance(answer, httpx.Response) else httpx.Response(200, json=answer)

    def types(self) -> list[str]:
        return [c["type"] for c in self.calls]


@pytest.fixture
def fake() -> FakePdd:
    return FakePdd()


@pytest.fixture
async def gateway(fake: FakePdd):
    with respx.mock(assert_all_called=True, assert_all_mocked=True, base_url=BASE_URL) as router:
        router.post("/api/router").mock(side_effect=fake)
        yield router


@pytest.fixture
def sleeps() -> list[float]:
    return []


def make_adapter(sleeps: list[float], *, secret: str = SECRET, settings: dict[str, Any] | None = None,
                 http: httpx.AsyncClient | None = None) -> PinduoduoAdapter:
    store = StoreContext(
        store_id="store-pdd",
        external_shop_id="mall-1",
        credentials=PddCredentials(client_id=CLIENT_ID, client_secret=secret, access_token=TOKEN),
        settings={"base_url": GATEWAY, **(settings or {})},
    )
    adapter = PinduoduoAdapter(store, http or httpx.AsyncClient())

    async def record_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    adapter.client.sleep = record_sleep  # retries stay instant; the waits are asserted
    return adapter


@pytest.fixture
async def adapter(gateway, sleeps):
    async with httpx.AsyncClient() as http:
        yield make_adapter(sleeps, http=http)
