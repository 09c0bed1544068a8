"""The OpenAPI document describes every /v1 answer, and the answers are what it describes."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from app.api.schemas import StockPublic, StorePublic
from tests import conftest
from tests.helpers import ADMIN, create_sku, create_store, receive

SUCCESS = ("200", "201", "202", "203", "204", "206")


@pytest.fixture(scope="module")
def openapi(tmp_path_factory) -> dict:
    """The document as the app builds it; the app is not started, so no database is opened."""
    from app.main import create_app

    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('openapi') / 'unused.db'}"
    return create_app(conftest.test_settings(url), configure_logs=False).openapi()


def _v1_operations(doc: dict) -> list[tuple[str, str, dict]]:
    return [(method.upper(), path, operation) for path, operations in doc["paths"].items()
            if path.startswith("/v1/") or path == "/v1" for method, operation in operations.items()]


def _undescribed(schema: dict | None, components: dict) -> bool:
    """True for no schema, ``{}``, or a ``$ref`` to a component that is missing or says nothing."""
    if not schema:
        return True
    if "$ref" in schema:
        return not components.get(schema["$ref"].rsplit("/", 1)[-1])
    return not ({"type", "anyOf", "oneOf", "allOf"} & schema.keys())


def test_every_v1_success_answer_has_a_json_schema(openapi):
    operations = _v1_operations(openapi)
    assert len(operations) >= 31, "the /v1 routes were not found in the document"
    components = openapi.get("components", {}).get("schemas", {})
    undescribed = []
    for method, path, operation in operations:
        successes = {code: answer for code, answer in operation["responses"].items() if code in SUCCESS}
        if not successes:
            undescribed.append(f"{method} {path}: no success answer declared")
        for code, answer in successes.items():
            schema = answer.get("content", {}).get("application/json", {}).get("schema")
            if _undescribed(schema, components):
                undescribed.append(f"{method} {path} {code}")
    assert not undescribed, "success answers without a JSON schema:\n" + "\n".join(undescribed)


def _declared(openapi: dict, method: str, path: str, code: str = "200") -> str:
    schema = openapi["paths"][path][method.lower()]["responses"][code]["content"]["application/json"]["schema"]
    return schema["$ref"].rsplit("/", 1)[-1]


def _same_after_round_trip(model: type[BaseModel], body: dict) -> None:
    """The body validates against the model, and the model writes it back unchanged: no key is
    missing from the schema, none is left undeclared, and no value is reshaped."""
    assert model.model_validate(body).model_dump(mode="json") == body


async def test_store_and_stock_answers_match_their_declared_models(client, openapi):
    assert _declared(openapi, "GET", "/v1/stores/{store_id}") == StorePublic.__name__
    assert _declared(openapi, "GET", "/v1/stock/{sku}") == StockPublic.__name__

    await create_sku(client, "TEA-OPENAPI")
    await receive(client, "TEA-OPENAPI", 5, "m-01")
    store = await create_store(client, "sandbox", external_shop_id="shop-openapi")
    r = await client.put(f"/v1/stores/{store['id']}/listings", headers=ADMIN,
                         json=[{"external_sku_key": "sku-key-1", "sku": "TEA-OPENAPI"}])
    assert r.status_code == 200, r.text
    r = await client.put("/v1/stock/TEA-OPENAPI/allocation", headers=ADMIN,
                         json={"mode": "shares", "shares": {str(store["id"]): 1}})
    assert r.status_code == 200, r.text

    r = await client.get(f"/v1/stores/{store['id']}", headers=ADMIN)
    assert r.status_code == 200, r.text
    _same_after_round_trip(StorePublic, r.json())

    r = await client.get("/v1/stock/TEA-OPENAPI", headers=ADMIN)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["listings"] and body["allocation"], "the answer should exercise its nested models"
    _same_after_round_trip(StockPublic, body)
