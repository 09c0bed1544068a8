"""Bad input gets a clear problem+json answer and changes nothing."""

from __future__ import annotations

import pytest

from tests.helpers import ADMIN, create_sku, ledger_state, receive

PROBLEM_FIELDS = {"type", "title", "status", "detail"}


def assert_problem(r, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert PROBLEM_FIELDS <= set(body) and body["status"] == status
    return body


@pytest.mark.parametrize("quantity", [0, -5, 2.5, "7", None, True])
async def test_receipt_with_bad_quantity_is_422_and_ledger_untouched(client, db, quantity):
    await create_sku(client, "TEA-Q")
    await receive(client, "TEA-Q", 5)
    before = await ledger_state(db, "TEA-Q")
    r = await client.post("/v1/stock/receipts", json={"sku": "TEA-Q", "quantity": quantity, "member_id": "m-01"},
                          headers=ADMIN)
    assert_problem(r, 422)
    assert await ledger_state(db, "TEA-Q") == before


async def test_receipt_for_unknown_sku_is_422_and_writes_nothing(client, db):
    r = await client.post("/v1/stock/receipts", json={"sku": "GHOST", "quantity": 3, "member_id": "m-01"},
                          headers=ADMIN)
    body = assert_problem(r, 422)
    assert "GHOST" in body["detail"]
    assert await ledger_state(db, "GHOST") == (0, 0, 0)


async def test_adjustment_of_zero_is_422(client, db):
    await create_sku(client, "TEA-Z")
    r = await client.post("/v1/stock/adjustments", json={"sku": "TEA-Z", "delta": 0, "reason": "x"}, headers=ADMIN)
    assert_problem(r, 422)
    assert await ledger_state(db, "TEA-Z") == (0, 0, 0)


async def test_body_over_one_mib_is_413_and_writes_nothing(client, db):
    await create_sku(client, "TEA-BIG")
    padding = "x" * (1024 * 1024 + 10)
    r = await client.post("/v1/stock/receipts", headers={**ADMIN, "Content-Type": "application/json"},
                          content=f'{{"sku": "TEA-BIG", "quantity": 1, "member_id": "{padding}"}}')
    assert_problem(r, 413)
    assert await ledger_state(db, "TEA-BIG") == (0, 0, 0)


async def test_body_that_is_not_json_is_400_and_writes_nothing(client, db):
    await create_sku(client, "TEA-NJ")
    r = await client.post("/v1/stock/receipts", headers={**ADMIN, "Content-Type": "application/json"},
                          content=b"sku=TEA-NJ&quantity=3")
    assert_problem(r, 400)
    assert await ledger_state(db, "TEA-NJ") == (0, 0, 0)


async def test_unknown_route_is_404_problem(client):
    assert_problem(await client.get("/v1/nothing-here", headers=ADMIN), 404)


async def test_extra_fields_are_refused(client, db):
    await create_sku(client, "TEA-X")
    r = await client.post("/v1/stock/receipts", json={"sku": "TEA-X", "quantity": 1, "member_id": "m", "qty": 9},
                          headers=ADMIN)
    assert_problem(r, 422)
    assert await ledger_state(db, "TEA-X") == (0, 0, 0)


async def test_a_chunked_body_over_the_limit_is_413_and_writes_nothing(client, db):
    await create_sku(client, "TEA-C")
    before = await ledger_state(db, "TEA-C")

    async def chunks():
        for _ in range(40):
            yield b" " * 32 * 1024  # 1.25 MiB in all, with no Content-Length

    r = await client.post("/v1/stock/receipts", content=chunks(),
                          headers={**ADMIN, "Content-Type": "application/json"})
    assert_problem(r, 413)
    assert await ledger_state(db, "TEA-C") == before


async def test_a_chunked_body_under_the_limit_is_read_whole(client, db):
    await create_sku(client, "TEA-K")

    async def chunks():
        yield b'{"sku": "TEA-K", '
        yield b'"quantity": 3, "member_id": "m-01"}'

    r = await client.post("/v1/stock/receipts", content=chunks(),
                          headers={**ADMIN, "Content-Type": "application/json"})
    assert r.status_code == 201, r.text


async def test_an_unexpected_error_is_one_problem_answer_and_one_log_line(client, monkeypatch, caplog):
    from app.db import Database

    await create_sku(client, "TEA-E")

    def broken(*_args, **_kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(Database, "read", broken)
    with caplog.at_level("ERROR"):
        r = await client.get("/v1/stock/TEA-E", headers=ADMIN)
    assert_problem(r, 500)
    assert "a bug" not in r.text and r.headers.get("x-request-id")
    assert len([rec for rec in caplog.records if rec.exc_info]) == 1


async def test_a_nul_character_is_never_a_server_error(client, db, engine_name):
    r = await client.post("/v1/skus", json={"sku": "TEA-NUL", "name": "tea\u0000leaf"}, headers=ADMIN)
    assert r.status_code in ((422,) if engine_name == "postgresql" else (201, 422)), r.text
    r = await client.get("/v1/stock/TEA%00X", headers=ADMIN)
    assert r.status_code in (404, 422), r.text
    r = await client.get("/v1/orders", params={"status": "paid\u0000"}, headers=ADMIN)
    assert r.status_code in (200, 422), r.text
