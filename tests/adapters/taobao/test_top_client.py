"""The TOP gateway client: signed requests for each sign_method, error envelope, retries."""

from __future__ import annotations

from datetime import datetime, timezone

import httpx
import pytest

from adapters.errors import AuthExpiredError, PermanentError, ThrottledError, TransientError
from adapters.taobao.client import classify_error, top_sign
from top_fakes import APP_KEY, SECRET, SESSION, error, load, make_adapter

FULLINFO = "taobao.trade.fullinfo.get"


def ok_trade() -> dict:
    return {"trade_fullinfo_get_response": {"trade": load("trade-3300000000000002.json")}}


@pytest.mark.parametrize("body, kind, retry_after", [
    ({"code": 7, "msg": "App Call Limited", "sub_code": "accesscontrol.limited-by-app-access-count",
      "sub_msg": "This ban will last for 3 more seconds"}, ThrottledError, 3.0),
    ({"code": 7, "msg": "App Call Limited, This ban will last for 71 more seconds"}, ThrottledError, 71.0),
    ({"code": 7, "msg": "App Call Limited"}, ThrottledError, 1.0),
    ({"code": 27, "msg": "Invalid session", "sub_code": "invalid-sessionkey"}, AuthExpiredError, None),
    ({"code": 26, "msg": "Missing session"}, AuthExpiredError, None),
    ({"code": 15, "msg": "Remote service error", "sub_code": "isp.top-remote-connection-timeout"}, TransientError, None),
    ({"code": 15, "msg": "Remote service error", "sub_code": "isv.item-not-exist"}, PermanentError, None),
    ({"code": 25, "msg": "Invalid signature"}, PermanentError, None),
    ({"code": 31, "msg": "Invalid timestamp"}, PermanentError, None),
    ({"code": 50, "msg": "Remote service error", "sub_code": "isv.invalid-parameter"}, PermanentError, None),
    ({"code": 11, "msg": "Insufficient isv permissions"}, PermanentError, None),
])
def test_error_envelope_codes_map_onto_the_error_tree(body, kind, retry_after):
    exc = classify_error(body)
    assert type(exc) is kind
    assert getattr(exc, "retry_after_s", None) == retry_after


@pytest.mark.parametrize("sign_method", ["md5", "hmac", "hmac-sha256"])
async def test_every_sign_method_is_accepted_by_the_checking_fake(gateway, fake, sleeps, sign_method):
    fake.script(FULLINFO, ok_trade())
    async with httpx.AsyncClient() as http:
        adapter = make_adapter(sleeps, settings={"sign_method": sign_method}, http=http)
        adapter.client.clock = lambda: datetime(2024, 6, 1, 4, 0, 0, tzinfo=timezone.utc)
        trade = await adapter.fetch_order("3300000000000002")
    assert trade is not None and fake.rejected_signs == 0
    [params] = fake.calls
    assert params["sign_method"] == sign_method
    assert params["timestamp"] == "2024-06-01 12:00:00"  # Beijing time
    assert (params["app_key"], params["session"], params["format"], params["v"]) == (APP_KEY, SESSION, "json", "2.0")
    assert params["tid"] == "3300000000000002"
    unsigned = {k: v for k, v in params.items() if k != "sign"}
    assert params["sign"] == top_sign(unsigned, SECRET, sign_method)


async def test_wrong_secret_gets_top_invalid_signature_as_permanent(gateway, fake, sleeps):
    async with httpx.AsyncClient() as http:
        adapter = make_adapter(sleeps, secret="wrong", http=http)
        with pytest.raises(PermanentError) as info:
            await adapter.fetch_order("3300000000000002")
    assert info.value.code == "25" and fake.rejected_signs == 1 and sleeps == []


def test_unknown_sign_method_is_refused(sleeps):
    with pytest.raises(PermanentError):
        make_adapter(sleeps, settings={"sign_method": "sha1"})


async def test_app_call_limited_waits_the_ban_then_recovers(adapter, fake, sleeps):
    ban = error(7, "App Call Limited", "accesscontrol.limited-by-api-access-count", "This ban will last for 2 more seconds")
    fake.script(FULLINFO, ban, ok_trade())
    trade = await adapter.fetch_order("3300000000000002")
    assert trade is not None and trade.external_id == "3300000000000002"
    assert fake.methods() == [FULLINFO, FULLINFO]
    assert sleeps == [2.0]


async def test_long_ban_is_left_to_the_job_table(adapter, fake, sleeps):
    fake.script(FULLINFO, error(7, "App Call Limited", sub_msg="This ban will last for 600 more seconds"))
    with pytest.raises(ThrottledError) as info:
        await adapter.fetch_order("3300000000000002")
    assert info.value.retry_after_s == 600.0
    assert len(fake.calls) == 1 and sleeps == []


async def test_invalid_session_raises_auth_expired(adapter, fake, sleeps):
    fake.script(FULLINFO, error(27, "Invalid session", "invalid-sessionkey"))
    with pytest.raises(AuthExpiredError):
        await adapter.fetch_order("3300000000000002")
    assert len(fake.calls) == 1 and sleeps == []


async def test_remote_service_error_is_retried(adapter, fake, sleeps):
    fake.script(FULLINFO, error(15, "Remote service error", "isp.top-remote-service-unavailable"), ok_trade())
    assert await adapter.fetch_order("3300000000000002") is not None
    assert len(fake.calls) == 2 and len(sleeps) == 1
