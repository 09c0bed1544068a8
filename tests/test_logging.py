"""No secret reaches a log line: client libraries stay quiet at INFO, and secret query values in any
message or extra field are redacted."""

from __future__ import annotations

import io
import logging

import httpx
import pytest
import respx

from app.logging import configure_logging


@pytest.fixture(autouse=True)
def _keep_root_logger():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def capture(level: str = "INFO") -> io.StringIO:
    configure_logging("json", level)
    stream = io.StringIO()
    logging.getLogger().handlers[0].stream = stream
    return stream


async def test_an_outbound_call_with_a_token_in_its_url_logs_no_token():
    stream = capture()
    with respx.mock:
        respx.get(url__startswith="https://openapi-fxg.jinritemai.com/").respond(200, json={"code": 10000})
        async with httpx.AsyncClient() as client:
            await client.get("https://openapi-fxg.jinritemai.com/order/searchList",
                             params={"app_key": "k", "access_token": "dy-secret-token-1", "sign": "abcdef0123"})
    logging.getLogger("coopsync.test").info("called https://gw.example/api?access_token=dy-secret-token-1&x=1",
                                            extra={"url": "https://gw.example/?sign=abcdef0123&code=oauth-code-9"})
    written = stream.getvalue()
    assert "dy-secret-token-1" not in written and "abcdef0123" not in written and "oauth-code-9" not in written
    assert "access_token=[redacted]" in written and "x=1" in written


async def test_redaction_keeps_what_is_not_secret():
    stream = capture()
    logging.getLogger("coopsync.test").info("GET /v1/orders?status=paid&limit=5 done")
    assert "status=paid&limit=5" in stream.getvalue()
