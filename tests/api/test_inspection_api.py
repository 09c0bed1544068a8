"""POST /v1/refunds/{id}/inspection: the warehouse's inspection of returned goods, under the
``fulfillment`` scope and an Idempotency-Key; refunds answer with their kind and return status."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from adapters.base import OrderLineSnapshot, OrderSnapshot, OrderStatus, RefundLineSnapshot, RefundSnapshot
from adapters.base import RefundStatus
from app.domain.reconcile import upsert_order, upsert_refund
from app.models import ApiToken, OrderLine, Refund, StockMovement, Store
from app.security import hash_token, new_token
from tests.domain.test_settlement import T0, make_sku
from tests.helpers import ADMIN
from tests.shops import stock_of


async def _returned(db, mode: str = "after_inspection") -> tuple[int, int]:
    """A delivered order of 4 TEA and its return of all 4, received; (refund id, order line id)."""
    async with db.transaction() as session:
        store = Store(platform="sandbox", name="shop", credentials={},
                      settings={"return_window_days": 30, "restock_returns": mode})
        session.add(store)
        await session.flush()
        await upsert_order(session, store, OrderSnapshot(
            platform="sandbox", external_id="R-1", status=OrderStatus.DELIVERED, currency="CNY", total_minor=12000,
            lines=[OrderLineSnapshot(external_line_id="R-1-0", merchant_sku="TEA", quantity=4, unit_price_minor=3000,
                                     total_minor=12000)],
            created_at=T0, paid_at=T0, shipped_at=T0, delivered_at=T0, updated_at=T0))
    async with db.transaction() as session:
        store = (await session.execute(select(Store))).scalar_one()
        result = await upsert_refund(session, store, RefundSnapshot(
            platform="sandbox", external_id="RF-1", order_external_id="R-1", status=RefundStatus.SUCCEEDED,
            currency="CNY", amount_minor=12000, kind="return", return_status="received",
            lines=[RefundLineSnapshot(external_line_id="R-1-0", quantity=4, amount_minor=12000, restock="return")],
            updated_at=T0 + timedelta(days=2)))
        line_id = (await session.execute(select(OrderLine.id))).scalar_one()
    return result.refund_id, line_id


async def _token(db, scope: str) -> dict[str, str]:
    token = new_token()
    async with db.transaction() as session:
        session.add(ApiToken(name=f"t-{scope}", token_hash=hash_token(token), scopes=scope))
    return {"Authorization": f"Bearer {token}"}


async def test_three_good_one_defective_puts_three_on_hand_and_writes_one_off_once(client, db):
    await make_sku(db, "TEA", [("m-01", 10)])
    refund_id, line_id = await _returned(db)
    assert await stock_of(client, "TEA") == (6, 0)  # held apart until inspected
    warehouse = await _token(db, "fulfillment") | {"Idempotency-Key": "inspect-rf-1"}
    body = {"lines": [{"line_id": line_id, "good": 3, "defective": 1}]}
    first = await client.post(f"/v1/refunds/{refund_id}/inspection", json=body, headers=warehouse)
    assert first.status_code == 200, first.text
    answer = first.json()
    assert (answer["kind"], answer["return_status"]) == ("return", "inspected")
    [line] = answer["lines"]
    assert (line["line_id"], line["returned"], line["good"], line["defective"], line["held"]) == (line_id, 4, 3, 1, 0)
    assert await stock_of(client, "TEA") == (9, 0)
    # The same request again (a retry): the same answer, nothing applied twice.
    again = await client.post(f"/v1/refunds/{refund_id}/inspection", json=body, headers=warehouse)
    assert again.status_code == 200 and again.json() == answer
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert await stock_of(client, "TEA") == (9, 0)
    async with db.read() as session:
        kinds = (await session.execute(select(StockMovement.kind).where(
            StockMovement.kind.in_(("restock", "write_off"))))).scalars().all()
    assert sorted(kinds) == ["restock", "write_off"]
    r = await client.get("/v1/refunds", headers=ADMIN)
    assert r.json()["items"][0]["return_status"] == "inspected"


async def test_inspecting_more_than_came_back_is_422_and_changes_nothing(client, db):
    await make_sku(db, "TEA", [("m-01", 10)])
    refund_id, line_id = await _returned(db, mode="on_receipt")
    assert await stock_of(client, "TEA") == (10, 0)
    r = await client.post(f"/v1/refunds/{refund_id}/inspection", headers=ADMIN | {"Idempotency-Key": "k1"},
                          json={"lines": [{"line_id": line_id, "good": 4, "defective": 1}]})
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert "4 came back" in r.json()["detail"]
    r = await client.post(f"/v1/refunds/{refund_id}/inspection", headers=ADMIN | {"Idempotency-Key": "k2"},
                          json={"lines": [{"line_id": line_id + 1000, "good": 1, "defective": 0}]})
    assert r.status_code == 422
    assert await stock_of(client, "TEA") == (10, 0)
    async with db.read() as session:
        refund = await session.get(Refund, refund_id)
    assert refund.return_status == "received"


async def test_inspection_needs_the_fulfillment_scope_and_a_known_refund(client, db):
    await make_sku(db, "TEA", [("m-01", 10)])
    refund_id, line_id = await _returned(db)
    body = {"lines": [{"line_id": line_id, "good": 1, "defective": 0}]}
    reader = await _token(db, "orders:read")
    r = await client.post(f"/v1/refunds/{refund_id}/inspection", json=body, headers=reader)
    assert r.status_code == 403
    operator = await _token(db, "operator")  # operator includes fulfillment
    r = await client.post(f"/v1/refunds/{refund_id}/inspection", json=body, headers=operator)
    assert r.status_code == 200
    r = await client.post("/v1/refunds/999999/inspection", json=body, headers=ADMIN)
    assert r.status_code == 404
    r = await client.post(f"/v1/refunds/{refund_id}/inspection", json={"lines": []}, headers=ADMIN)
    assert r.status_code == 422
    r = await client.post(f"/v1/refunds/{refund_id}/inspection", headers=ADMIN,
                          json={"lines": [{"line_id": line_id, "good": -1, "defective": 0}]})
    assert r.status_code == 422
