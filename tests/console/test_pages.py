"""The console over HTTP (no browser): sign-in, every page with an empty and a seeded database, CSRF,
expired sessions and scopes. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import re
import time

import pytest
from sqlalchemy import select

from app.console import session as sessions
from app.console.i18n import MESSAGES
from app.console.web import HERE
from app.models import InboxItem, Settlement, Store
from tests.conftest import ADMIN_TOKEN
from tests.console.seed import PAYLOAD_SECRET, seed, token


async def sign_in(client, secret: str = ADMIN_TOKEN) -> str:
    """Signs ``client`` in; answers the CSRF token of the session's forms."""
    form = await client.get("/console/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    r = await client.post("/console/login", data={"token": secret, "csrf": csrf, "next": "/console/"})
    assert r.status_code == 303 and r.headers["location"] == "/console/", r.text
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    page = await client.get("/console/stock")
    return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


def pages(s=None) -> list[str]:
    found = ["/console/", "/console/shops", "/console/stock", "/console/orders", "/console/refunds",
             "/console/refunds?awaiting=1", "/console/orders?oversold=1", "/console/shipments",
             "/console/shipments?status=all", "/console/resyncs", "/console/inbox", "/console/settlements",
             "/console/settlements?status=dead"]
    if s is not None:
        found += [f"/console/shops/{s.store_id}", "/console/stock/TEA", f"/console/orders/{s.order_id}",
                  f"/console/refunds/{s.refund_id}", f"/console/resyncs/{s.resync_id}", f"/console/inbox/{s.inbox_id}",
                  f"/console/settlements/{s.settlement_id}"]
    return found


async def test_signing_in_needs_a_valid_token(client):
    r = await client.get("/console/orders")
    assert r.status_code == 303 and r.headers["location"].startswith("/console/login?next=")
    form = await client.get("/console/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    r = await client.post("/console/login", data={"token": "wrong", "csrf": csrf})
    assert r.status_code == 303 and "failed=1" in r.headers["location"]
    assert sessions.COOKIE not in client.cookies


async def test_sign_in_form_without_its_csrf_token_is_403(client):
    r = await client.post("/console/login", data={"token": ADMIN_TOKEN})
    assert r.status_code == 403
    assert sessions.COOKIE not in client.cookies


async def test_every_page_renders_with_an_empty_database(client):
    await sign_in(client)
    for path in pages():
        r = await client.get(path)
        assert r.status_code == 200, (path, r.text[:500])
        assert 'lang="zh-CN"' in r.text


async def test_every_page_renders_with_data_in_both_languages(client, db):
    s = await seed(db)
    await sign_in(client)
    for lang in ("zh", "en"):
        client.cookies.set(sessions.LANG_COOKIE, lang, path="/console")
        for path in pages(s):
            r = await client.get(path)
            assert r.status_code == 200, (path, r.text[:500])
    r = await client.get(f"/console/inbox/{s.inbox_id}")
    assert PAYLOAD_SECRET not in r.text and "sig-abc123" not in r.text  # secrets never shown
    assert "R-404" in r.text and "payload error" in r.text


async def test_overview_counts_link_to_the_lists_that_fix_them(client, db):
    await seed(db)
    await sign_in(client)
    r = await client.get("/console/")
    for link in ('href="/console/inbox"', 'href="/console/shipments?status=failed"',
                 'href="/console/refunds?awaiting=1"', 'href="/console/orders?oversold=1"',
                 'href="/console/settlements?status=dead"'):
        assert link in r.text
    assert re.search(r'id="count-failed-inbox"><b>1</b>', r.text)
    assert re.search(r'id="count-dead-dividends"><b>1</b>', r.text)
    assert "秦巴茶叶沙盒店" in r.text and "总览" in r.text


async def test_a_form_without_csrf_or_with_an_expired_session_is_403_and_changes_nothing(client, db, settings):
    s = await seed(db)
    csrf = await sign_in(client)
    r = await client.post(f"/console/inbox/{s.inbox_id}/replay", data={})
    assert r.status_code == 403
    r = await client.post(f"/console/inbox/{s.inbox_id}/replay", data={"csrf": "forged"})
    assert r.status_code == 403
    # An expired session: a correctly signed cookie whose time is up.
    key = sessions.signing_key(settings)
    payload = sessions.decode(key, client.cookies.get(sessions.COOKIE))
    client.cookies.set(sessions.COOKIE, sessions.encode(key, {**payload, "exp": int(time.time()) - 1}), path="/console")
    r = await client.post(f"/console/inbox/{s.inbox_id}/replay", data={"csrf": csrf})
    assert r.status_code == 403
    r = await client.post(f"/console/settlements/{s.settlement_id}/retry", data={"csrf": csrf})
    assert r.status_code == 403
    async with db.read() as session:
        assert (await session.get(InboxItem, s.inbox_id)).status == "failed"
        assert (await session.get(Settlement, s.settlement_id)).delivery_status == "dead"


async def test_a_stock_read_session_cannot_see_settlements(client, db):
    s = await seed(db)
    csrf = await sign_in(client, await token(db, "stock:read"))
    assert (await client.get("/console/stock")).status_code == 200
    r = await client.get("/console/settlements")
    assert r.status_code == 403
    assert (await client.get(f"/console/settlements/{s.settlement_id}")).status_code == 403
    r = await client.post(f"/console/settlements/{s.settlement_id}/retry", data={"csrf": csrf})
    assert r.status_code == 403
    assert (await client.get("/console/orders")).status_code == 403
    assert 'href="/console/settlements"' not in (await client.get("/console/stock")).text
    async with db.read() as session:
        assert (await session.get(Settlement, s.settlement_id)).delivery_status == "dead"


async def test_a_revoked_token_ends_its_sessions(client, db):
    from app.models import ApiToken
    from app.models.base import utcnow

    secret = await token(db, "operator")
    await sign_in(client, secret)
    async with db.transaction() as session:
        row = (await session.execute(select(ApiToken))).scalar_one()
        row.revoked_at = utcnow()
    assert (await client.get("/console/shops")).status_code == 303


async def test_forms_call_the_services(client, db):
    s = await seed(db)
    csrf = await sign_in(client)
    r = await client.post(f"/console/shops/{s.store_id}/listings",
                          data={"csrf": csrf, "external_sku_key": s.unbound_key, "sku": "TEA-500"})
    assert r.status_code == 303 and "notice=bound_ok" in r.headers["location"]
    r = await client.post(f"/console/refunds/{s.refund_id}/inspection",
                          data={"csrf": csrf, f"good_{s.line_id}": "3", f"defective_{s.line_id}": "1"})
    assert r.status_code == 303 and "notice=inspected_ok" in r.headers["location"], r.headers["location"]
    r = await client.post(f"/console/shipments/{s.shipment_id}/retry", data={"csrf": csrf})
    assert "notice=retried_ok" in r.headers["location"]
    r = await client.post(f"/console/settlements/{s.settlement_id}/retry", data={"csrf": csrf})
    assert "notice=retried_ok" in r.headers["location"]
    r = await client.post(f"/console/inbox/{s.inbox_id}/replay", data={"csrf": csrf})
    assert "notice=replayed_ok" in r.headers["location"]
    r = await client.post(f"/console/shops/{s.store_id}/settings",
                          data={"csrf": csrf, "name": "新名字", "settings": '{"safety_stock": 2}'})
    assert "notice=shop_saved" in r.headers["location"]
    r = await client.post(f"/console/shops/{s.store_id}/webhook-secret", data={"csrf": csrf})
    assert r.status_code == 200 and 'id="new-secret"' in r.text
    r = await client.post("/console/resyncs", data={"csrf": csrf, "store_id": str(s.store_id), "resource": "orders",
                                                    "since": "2026-05-01T00:00", "until": "2026-05-02T00:00"})
    assert r.status_code == 303 and r.headers["location"].startswith("/console/resyncs/")
    r = await client.post(r.headers["location"] + "/cancel", data={"csrf": csrf})
    assert "notice=cancel_requested" in r.headers["location"]
    r = await client.post("/console/shops", data={"csrf": csrf, "platform": "sandbox", "name": "新店",
                                                  "settings": '{"base_url": "inproc://x"}', "credentials": "{}"})
    assert r.status_code == 303 and "notice=shop_created" in r.headers["location"], r.headers["location"]
    r = await client.post("/console/shops", data={"csrf": csrf, "platform": "sandbox", "name": "坏",
                                                  "settings": "{not json", "credentials": "{}"})
    assert "error=" in r.headers["location"]
    async with db.read() as session:
        store = await session.get(Store, s.store_id)
        assert store.name == "新名字" and store.options.safety_stock == 2 and store.webhook_secret_previous == "shh-secret"
        assert (await session.get(InboxItem, s.inbox_id)).status == "pending"
        assert (await session.get(Settlement, s.settlement_id)).delivery_status == "pending"


async def test_sign_out_ends_the_session(client):
    csrf = await sign_in(client)
    r = await client.post("/console/logout", data={"csrf": csrf})
    assert r.status_code == 303
    assert (await client.get("/console/stock")).status_code == 303


async def test_the_language_switch_keeps_the_page_and_refuses_other_sites(client):
    await sign_in(client)
    r = await client.get("/console/lang/en", params={"next": "/console/stock"})
    assert r.status_code == 303 and r.headers["location"] == "/console/stock"
    assert "Available" in (await client.get("/console/stock")).text
    r = await client.get("/console/lang/zh", params={"next": "https://evil.example/"})
    assert r.headers["location"] == "/console/"
    assert "可售" in (await client.get("/console/stock")).text


@pytest.mark.parametrize("lang", [0, 1])
def test_every_catalogue_key_a_template_uses_exists_in_both_languages(lang):
    used = set()
    for template in (HERE / "templates").glob("*.html"):
        used |= set(re.findall(r"\bt\('([a-z_]+)'\s*[,)]", template.read_text(encoding="utf-8")))
    missing = sorted(k for k in used if k not in MESSAGES or not MESSAGES[k][lang])
    assert missing == []


async def test_the_allocation_editor_sets_shares_and_re_plans_every_shop(client, db):
    from app.models import Listing, Sku

    s = await seed(db)
    csrf = await sign_in(client)
    page = await client.get("/console/stock/TEA")
    assert 'id="allocation"' in page.text and f'name="share:{s.store_id}"' in page.text
    r = await client.post("/console/stock/TEA/allocation", data={"csrf": csrf, "mode": "shares",
                                                                   f"share:{s.store_id}": "70", f"cap:{s.store_id}": ""})
    assert r.status_code == 303 and "error" not in r.headers["location"], r.headers["location"]
    async with db.read() as session:
        sku = (await session.execute(select(Sku).where(Sku.sku == "TEA"))).scalar_one()
        listing = (await session.execute(select(Listing).where(Listing.sku_id == sku.id))).scalars().first()
    assert sku.allocation == {"mode": "shares", "shares": {str(s.store_id): 70}, "caps": {}}
    assert listing.quota is not None  # re-planned at once
    # Past the API's bound: refused, nothing changed.
    r = await client.post("/console/stock/TEA/allocation", data={"csrf": csrf, "mode": "shares",
                                                                   f"share:{s.store_id}": "99999999"})
    assert "error" in r.headers["location"]
    async with db.read() as session:
        assert (await session.execute(select(Sku.allocation).where(Sku.sku == "TEA"))).scalar_one()["shares"] == {
            str(s.store_id): 70}


async def test_a_stock_read_session_sees_the_editor_but_cannot_post_it(client, db):
    s = await seed(db)
    csrf = await sign_in(client, await token(db, "stock:read"))
    page = await client.get("/console/stock/TEA")
    assert page.status_code == 200 and "allocation_save" not in page.text
    r = await client.post("/console/stock/TEA/allocation", data={"csrf": csrf, "mode": "shares",
                                                                   f"share:{s.store_id}": "1"})
    assert r.status_code == 403
    async with db.read() as session:
        from app.models import Sku

        assert (await session.execute(select(Sku.allocation).where(Sku.sku == "TEA"))).scalar_one() is None


async def test_a_sku_page_charts_its_last_days_of_stock_and_sales_per_shop(client, db):
    from app.console import queries
    from app.models import Sku

    await seed(db)
    async with db.read() as session:
        sku = (await session.execute(select(Sku).where(Sku.sku == "TEA"))).scalar_one()
        days = await queries.sku_days(session, sku.id)
    assert len(days) == 14
    assert days[-1].on_hand == sku.on_hand  # today's closing figure is the balance now
    await sign_in(client)
    page = await client.get("/console/stock/TEA")
    assert page.status_code == 200 and 'id="sku-days"' in page.text
