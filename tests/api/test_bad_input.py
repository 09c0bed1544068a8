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


# -- ids past int64, allocation bounds, OPTIONS (issue 12) ------------------------------------------

PAST_INT64 = (2**63, 2**64 + 7, 10**30)


@pytest.mark.parametrize("big", PAST_INT64)
@pytest.mark.parametrize("method, path", [
    ("GET", "/v1/stores/{id}"), ("PATCH", "/v1/stores/{id}"), ("GET", "/v1/stores/{id}/listings"),
    ("PUT", "/v1/stores/{id}/listings"), ("GET", "/v1/orders/{id}"), ("GET", "/v1/resyncs/{id}"),
    ("POST", "/v1/resyncs/{id}/cancel"), ("POST", "/v1/inbox/{id}/replay"), ("POST", "/v1/stores/{id}/authorize"),
    ("GET", "/v1/stores/{id}/reconciliation"), ("POST", "/v1/stores/{id}/reconciliation/resync"),
    ("DELETE", "/v1/tokens/{id}"),
])
async def test_a_path_id_past_int64_is_404(client, method, path, big):
    body = {"PATCH": {"name": "x"}, "PUT": [{"external_sku_key": "k", "sku": None}]}.get(method)
    window = {"since": "2026-11-01T00:00:00+08:00", "until": "2026-11-02T00:00:00+08:00"}
    r = await client.request(method, path.format(id=big), headers=ADMIN, json=body,
                             params=window if "reconciliation" in path else None)
    assert_problem(r, 404)


@pytest.mark.parametrize("big", PAST_INT64)
@pytest.mark.parametrize("path, param", [
    ("/v1/orders", "store_id"), ("/v1/resyncs", "store_id"), ("/v1/refunds", "order_id"),
])
async def test_a_query_id_past_int64_is_422(client, path, param, big):
    assert_problem(await client.get(path, params={param: str(big)}, headers=ADMIN), 422)


@pytest.mark.parametrize("big", PAST_INT64)
async def test_a_resync_for_a_store_id_past_int64_is_422(client, big):
    r = await client.post("/v1/resyncs", json={"store_id": big, "resource": "inventory"}, headers=ADMIN)
    assert_problem(r, 422)


@pytest.mark.parametrize("big", PAST_INT64)
@pytest.mark.parametrize("field", ["shares", "caps"])
async def test_an_allocation_store_key_past_int64_is_422(client, field, big):
    await create_sku(client, "TEA-AL")
    body = {"mode": "shares", "shares": {str(big): 1}} if field == "shares" else \
        {"mode": "shared", "caps": {str(big): 1}}
    assert_problem(await client.put("/v1/stock/TEA-AL/allocation", json=body, headers=ADMIN), 422)


@pytest.mark.parametrize("field, value", [
    ("shares", 2**63), ("shares", 10**30), ("shares", 10**6 + 1), ("caps", 2**63), ("caps", 10**7 + 1),
])
async def test_an_allocation_value_past_its_bound_is_422(client, field, value):
    from tests.helpers import create_store

    await create_sku(client, "TEA-AV")
    store = await create_store(client, "sandbox", external_shop_id="shop-av")
    body = {"mode": "shares", "shares": {str(store["id"]): 1}}
    body[field] = {str(store["id"]): value}
    r = await client.put("/v1/stock/TEA-AV/allocation", json=body, headers=ADMIN)
    assert_problem(r, 422)
    assert (await client.get("/v1/stock/TEA-AV", headers=ADMIN)).json()["allocation"] is None


@pytest.mark.parametrize("path, methods", [
    ("/v1/stores", {"GET", "POST"}),
    ("/v1/stores/1", {"GET", "PATCH"}),
    ("/v1/stores/1/listings", {"GET", "PUT"}),
    ("/v1/resyncs", {"GET", "POST"}),
    ("/v1/skus", {"GET", "POST"}),
    ("/v1/tokens", {"GET"}),
    ("/v1/tokens/1", {"DELETE"}),
])
async def test_options_lists_every_method_of_the_route(client, path, methods):
    r = await client.options(path, headers=ADMIN)
    assert r.status_code in (200, 204), r.text
    allowed = {m.strip() for m in r.headers["allow"].split(",")}
    assert methods | {"OPTIONS"} <= allowed, allowed


async def test_options_on_a_path_shared_with_a_parameter_lists_only_its_own_methods(client):
    """Found by fuzzing: /v1/stock/receipts also matches /v1/stock/{sku}, but it is not a sku's stock."""
    for path, methods in (("/v1/stock/receipts", {"POST", "OPTIONS"}), ("/v1/settlements/run", {"POST", "OPTIONS"}),
                          ("/v1/stock/TEA-1", {"GET", "OPTIONS"})):
        r = await client.options(path)
        assert r.status_code == 204, r.text
        assert {m.strip() for m in r.headers["allow"].split(",")} == methods


async def test_options_on_an_unknown_path_is_404(client):
    assert_problem(await client.options("/v1/nothing-here"), 404)


@pytest.mark.parametrize("method, path, methods", [
    ("DELETE", "/v1/stores", {"GET", "POST", "OPTIONS"}),
    ("PUT", "/v1/stores/1", {"GET", "PATCH", "OPTIONS"}),
    ("DELETE", "/v1/stock/receipts", {"POST", "OPTIONS"}),
    ("GET", "/v1/tokens/1", {"DELETE", "OPTIONS"}),
])
async def test_a_method_the_route_does_not_serve_is_405_with_the_whole_allow_list(client, method, path, methods):
    r = await client.request(method, path, headers=ADMIN)
    assert_problem(r, 405)
    assert {m.strip() for m in r.headers["allow"].split(",")} == methods


@pytest.mark.parametrize("route, body", [
    ("/v1/stock/receipts", {"sku": "TEA-IK", "quantity": 1, "member_id": "m-01"}),
    ("/v1/stock/adjustments", {"sku": "TEA-IK", "delta": 1, "reason": "count"}),
])
async def test_the_longest_idempotency_key_is_taken_and_replayed(client, db, route, body):
    """Found by fuzzing: a 255-character key made a ledger cause longer than its column (a 500 on
    PostgreSQL); the cause is a digest of such a key now, still one per key."""
    await create_sku(client, "TEA-IK")
    headers = {**ADMIN, "Idempotency-Key": "k" * 255}
    first = await client.post(route, json=body, headers=headers)
    assert first.status_code == 201, first.text
    again = await client.post(route, json=body, headers=headers)
    assert again.status_code == 201 and again.json() == first.json()
    assert again.headers.get("idempotent-replayed") == "true"
    other = await client.post(route, json=body, headers={**ADMIN, "Idempotency-Key": "k" * 254 + "j"})
    assert other.status_code == 201, other.text
    assert (await ledger_state(db, "TEA-IK"))[0] == 2
    assert_problem(await client.post(route, json=body, headers={**ADMIN, "Idempotency-Key": "k" * 256}), 400)


async def test_a_token_with_the_longest_name_can_write_with_an_idempotency_key(client, db):
    """A token's principal ("token:<id>:<name>") must fit where idempotency records keep it."""
    from app.models import ApiToken
    from app.security import hash_token, new_token

    token = new_token()
    async with db.transaction() as session:
        session.add(ApiToken(name="n" * 128, token_hash=hash_token(token), scopes="stock:write"))
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": "i" * 255}
    r = await client.post("/v1/skus", json={"sku": "TEA-LONG", "name": "long"}, headers=headers)
    assert r.status_code == 201, r.text
    again = await client.post("/v1/skus", json={"sku": "TEA-LONG", "name": "long"}, headers=headers)
    assert again.status_code == 201 and again.headers.get("idempotent-replayed") == "true"
    await receive(client, "TEA-LONG", 1)
    r = await client.post("/v1/stock/receipts", json={"sku": "TEA-LONG", "quantity": 1, "member_id": "m"},
                          headers=headers | {"Idempotency-Key": "r" * 255})
    assert r.status_code == 201, r.text
