"""A fake Douyin Open API gateway that checks the sign of every request, and test helpers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import httpx

from adapters.base import StoreContext
from adapters.douyin.adapter import DouyinCredentials
from adapters.douyin.client import path_for, sign

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "douyin"
BASE_URL = "https://douyin-gateway.test"
APP_KEY = "1234567890123456789"
APP_SECRET = "testsecret"
ACCESS_TOKEN = "token-abc"

Responder = Callable[[dict[str, Any]], dict[str, Any]]


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def ok(data: dict[str, Any]) -> dict[str, Any]:
    return {"code": 10000, "msg": "success", "sub_code": "", "sub_msg": "", "log_id": "test", "data": data}


def fail(code: int, sub_code: str = "", msg: str = "error") -> dict[str, Any]:
    return {"code": code, "msg": msg, "sub_code": sub_code, "sub_msg": msg, "log_id": "test", "data": {}}


class FakeGateway:
    """Answers like the Douyin gateway: a wrong sign gets 40003 isv.signature-invalid, as the real one does."""

    def __init__(self, app_key: str = APP_KEY, app_secret: str = APP_SECRET, access_token: str = ACCESS_TOKEN):
        self.app_key, self.app_secret, self.access_token = app_key, app_secret, access_token
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.rejected = 0
        self.responders: dict[str, list[Responder] | Responder] = {}

    def on(self, method: str, *responders: Responder) -> None:
        """One responder answers every call; several answer one call each, in order."""
        self.responders[method] = responders[0] if len(responders) == 1 else list(responders)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        query = dict(request.url.params)
        body = request.content.decode()
        method = query.get("method", "")
        expected = sign(self.app_key, self.app_secret, method, body, query.get("timestamp", ""), query.get("v", ""))
        if (request.url.path != path_for(method) or query.get("app_key") != self.app_key
                or query.get("sign_method") != "hmac-sha256" or query.get("v") != "2"
                or query.get("sign") != expected):
            self.rejected += 1
            return httpx.Response(200, json=fail(40003, "isv.signature-invalid", "签名无效"))
        if query.get("access_token") != self.access_token:
            return httpx.Response(200, json=fail(40003, "isv.access-token-no-existed", "access_token不存在"))
        params = json.loads(body)
        self.calls.append((method, params))
        responder = self.responders[method]
        if isinstance(responder, list):
            responder = responder.pop(0)
        return httpx.Response(200, json=responder(params))

    def methods(self) -> list[str]:
        return [m for m, _ in self.calls]


def make_store(base_url: str | None = BASE_URL, **creds: str) -> StoreContext:
    credentials = DouyinCredentials(app_key=creds.get("app_key", APP_KEY),
                                    app_secret=creds.get("app_secret", APP_SECRET),
                                    access_token=creds.get("access_token", ACCESS_TOKEN))
    return StoreContext(store_id="store-dy", external_shop_id="12345", credentials=credentials,
                        settings={"base_url": base_url} if base_url else {})
