"""A database with something on every console page: a sandbox shop with an unbound listing, a sku with
a member lot, a delivered order and its return (goods back, awaiting inspection), a failed webhook
delivery whose payload holds a secret, a failed shipment, a resync, and a dead dividend delivery."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from adapters.base import (OrderLineSnapshot, OrderSnapshot, OrderStatus, RefundLineSnapshot, RefundSnapshot,
                           RefundStatus)
from app.domain import ledger
from app.domain.reconcile import upsert_order, upsert_refund
from app.models import (ApiToken, Carrier, DeliveryAttempt, InboxItem, Listing, MemberShare, Order, OrderLine,
                        Resync, Settlement, Shipment, Sku, Store)
from app.security import hash_token, new_token

T0 = datetime(2026, 5, 1, 8, 0, tzinfo=timezone.utc)
PAYLOAD_SECRET = "do-not-show-me-7f3a"


@dataclass
class Seeded:
    store_id: int
    order_id: int
    refund_id: int
    line_id: int
    inbox_id: int
    shipment_id: int
    settlement_id: str
    resync_id: int
    unbound_key: str = "tea-500-key"


async def token(db, scopes: str) -> str:
    value = new_token()
    async with db.transaction() as session:
        session.add(ApiToken(name=f"console-{scopes}", token_hash=hash_token(value), scopes=scopes))
    return value


async def seed(db, *, base_url: str | None = None, market: str = "console-shop") -> Seeded:
    async with db.transaction() as session:
        for code in ("TEA", "TEA-500"):
            sku = Sku(sku=code, name=f"绞股蓝茶 {code}")
            session.add(sku)
            await session.flush()
            await ledger.receive(session, sku_id=sku.id, quantity=10, member_id="m-01", lot_ref=None,
                                 cause_key=f"console-seed:{code}")
        store = Store(platform="sandbox", name="秦巴茶叶沙盒店", external_shop_id=market, credentials={},
                      webhook_secret="shh-secret",
                      settings={"return_window_days": 30, "restock_returns": "after_inspection",
                                "poll_interval_s": 0, "base_url": base_url or f"inproc://{market}"})
        session.add(store)
        await session.flush()
        store_id = store.id
        session.add(Listing(store_id=store_id, external_sku_key="tea-500-key", merchant_sku="UNKNOWN-500",
                            listing_ref={}))
        await upsert_order(session, store, OrderSnapshot(
            platform="sandbox", external_id="R-1", status=OrderStatus.DELIVERED, currency="CNY", total_minor=12000,
            lines=[OrderLineSnapshot(external_line_id="R-1-0", merchant_sku="TEA", quantity=4, unit_price_minor=3000,
                                     total_minor=12000)],
            created_at=T0, paid_at=T0, shipped_at=T0, delivered_at=T0, updated_at=T0))
    async with db.transaction() as session:
        store = await session.get(Store, store_id)
        result = await upsert_refund(session, store, RefundSnapshot(
            platform="sandbox", external_id="RF-1", order_external_id="R-1", status=RefundStatus.SUCCEEDED,
            currency="CNY", amount_minor=12000, kind="return", return_status="received",
            lines=[RefundLineSnapshot(external_line_id="R-1-0", quantity=4, amount_minor=12000, restock="return")],
            updated_at=T0 + timedelta(days=2)))
        order_id, line_id = (await session.execute(select(Order.id, OrderLine.id).join(
            OrderLine, OrderLine.order_id == Order.id))).one()
        inbox = InboxItem(store_id=store_id, platform="sandbox", dedupe_key=f"d-{uuid.uuid4().hex}",
                          topic="orders/updated",
                          headers={"content-type": "application/json", "x-sandbox-signature": "sig-abc123"},
                          body=('{"id": "R-404", "access_token": "%s", "note": "ok"}' % PAYLOAD_SECRET).encode(),
                          status="failed", attempts=3, error="payload error: order R-404 is malformed")
        session.add(inbox)
        carrier = (await session.execute(select(Carrier).limit(1))).scalar_one_or_none()
        if carrier is None:
            carrier = Carrier(code="SF", name="顺丰速运")
            session.add(carrier)
            await session.flush()
        parcel = Shipment(order_id=order_id, store_id=store_id, carrier_id=carrier.id, carrier=carrier.code,
                          tracking_number="SF1234567890", shipped_at=T0, status="failed", attempts=2,
                          error="the platform refused the tracking number")
        session.add(parcel)
        resync = Resync(store_id=store_id, resource="orders", since=T0, until=T0 + timedelta(days=1),
                        status="succeeded", position={"window": 1, "windows": 1}, fetched=3, created=1)
        session.add(resync)
        statement_id = str(uuid.uuid4())
        session.add(Settlement(id=statement_id, run_id=str(uuid.uuid4()), currency="CNY", gross_minor=12000,
                               refunds_minor=0, platform_fees_minor=600, net_minor=11400,
                               platform_fees_actual_minor=600, platform_fees_estimated_minor=0, subsidies_minor=0,
                               body={"id": statement_id}, delivery_status="dead", delivery_attempts=3))
        await session.flush()
        session.add(MemberShare(settlement_id=statement_id, member_id="m-01", net_minor=11400))
        session.add(DeliveryAttempt(settlement_id=statement_id, attempt_no=1, outcome="dead", status_code=500,
                                    response_excerpt="internal error"))
        await session.flush()
        return Seeded(store_id, order_id, result.refund_id, line_id, inbox.id, parcel.id, statement_id, resync.id)
