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
            if code == "204":  # No Content: nothing to describe, and nothing may be declared
                assert "content" not in answer, f"{method} {path} 204 declares a body"
                continue
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


def test_every_v1_operation_declares_the_bearer_scheme(openapi):
    scheme = openapi["components"]["securitySchemes"]["bearer"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    missing = [f"{method} {path}" for method, path, operation in _v1_operations(openapi)
               if operation.get("security") != [{"bearer": []}]]
    assert not missing, "operations without the bearer security requirement:\n" + "\n".join(missing)


def test_error_answers_are_documented_as_problems(openapi):
    assert "HTTPValidationError" not in openapi["components"]["schemas"]
    problem = openapi["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail"} <= set(problem["required"])
    wrong = []
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            for code, answer in operation["responses"].items():
                if int(code) >= 400 and (path, code) != ("/readyz", "503") and answer.get("content") != {
                        "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}:
                    wrong.append(f"{method.upper()} {path} {code}")
    assert not wrong, "error answers not documented as problem+json:\n" + "\n".join(wrong)


def _codes(openapi: dict, method: str, path: str) -> set[int]:
    return {int(code) for code in openapi["paths"][path][method.lower()]["responses"]}


@pytest.mark.parametrize("method, path, codes", [
    ("GET", "/v1/stores/{store_id}", {200, 401, 403, 404, 422}),
    ("PATCH", "/v1/stores/{store_id}", {200, 400, 401, 403, 404, 413, 422}),
    ("POST", "/v1/skus", {201, 400, 401, 403, 409, 413, 422}),
    ("GET", "/v1/skus", {200, 400, 401, 403, 422}),  # 400: a cursor this service did not issue
    ("GET", "/v1/stock/{sku}", {200, 401, 403, 404, 422}),
    ("POST", "/v1/resyncs", {202, 400, 401, 403, 404, 409, 413, 422}),
    ("POST", "/v1/inbox/{inbox_id}/replay", {202, 401, 403, 404, 409, 422}),
    ("GET", "/v1/dividend-deliveries", {200, 400, 401, 403, 422}),
    ("GET", "/v1/stores/{store_id}/reconciliation", {200, 401, 403, 404, 422, 502}),
    ("GET", "/v1/tokens", {200, 400, 401, 403, 422}),
    ("DELETE", "/v1/tokens/{token_id}", {204, 401, 403, 404, 422}),
    ("POST", "/webhooks/{platform}/{store_id}", {200, 401, 404, 413, 422, 503}),
])
def test_each_route_documents_the_errors_it_can_answer(openapi, method, path, codes):
    assert _codes(openapi, method, path) == codes


def test_path_ids_are_documented_as_int64(openapi):
    parameter = next(p for p in openapi["paths"]["/v1/orders/{order_id}"]["get"]["parameters"]
                     if p["name"] == "order_id")
    assert parameter["schema"] | {"title": None} == {"type": "integer", "format": "int64", "minimum": 1,
                                                     "maximum": 2**63 - 1, "title": None}


def test_metrics_are_documented_as_text(openapi):
    assert set(openapi["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}


def test_delivery_status_filter_is_documented_as_its_values(openapi):
    """Found by fuzzing: any string was documented, and all but three were refused (400)."""
    parameter = next(p for p in openapi["paths"]["/v1/dividend-deliveries"]["get"]["parameters"]
                     if p["name"] == "status")
    assert parameter["schema"]["enum"] == ["pending", "delivered", "dead"]


def test_readiness_documents_its_503(openapi):
    """Found by fuzzing: /readyz answers 503 while migrations are behind, which was undocumented."""
    answer = openapi["paths"]["/readyz"]["get"]["responses"]["503"]
    assert answer["content"]["application/json"]["schema"]["required"] == ["status", "detail"]
