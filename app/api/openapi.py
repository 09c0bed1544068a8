"""The OpenAPI document: FastAPI's, with every error answer documented as what it is, an RFC 9457
problem (``application/problem+json``), on the routes that can give it."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.errors import PROBLEM_MEDIA_TYPE

HTTP_METHODS = {"GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE"}

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details; validation problems list every error in `errors`.",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {"type": "array", "items": {
            "type": "object", "required": ["loc", "msg", "type"],
            "properties": {"loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
                           "msg": {"type": "string"}, "type": {"type": "string"}}}},
    },
    "additionalProperties": True,
}

DESCRIPTIONS = {
    400: "Bad request: the body is not JSON, the cursor or a header is not one this service takes",
    401: "No bearer token, or one that is unknown or revoked",
    403: "The token lacks the scope this route needs",
    404: "No such resource",
    409: "Conflicts with the current state, or a request with this Idempotency-Key is still in flight",
    413: "The request body is larger than COOPSYNC_MAX_BODY_BYTES",
    422: "The request is well-formed but its values are refused",
    502: "The marketplace did not answer",
    503: "The service cannot take the request now; retry later",
}

# Routes behind ``run_idempotent`` (an ``Idempotency-Key`` may be 400, 409 in flight, 422 reused).
IDEMPOTENT = {("POST", "/v1/skus"), ("POST", "/v1/stock/receipts"), ("POST", "/v1/stock/adjustments"),
              ("POST", "/v1/stores"), ("POST", "/v1/resyncs"), ("POST", "/v1/settlements/run")}
IDEMPOTENT.add(("POST", "/v1/orders/{order_id}/shipments"))
IDEMPOTENT.add(("POST", "/v1/refunds/{refund_id}/inspection"))

# What a route can answer beyond what its parameters, body and security imply.
EXTRA: dict[tuple[str, str], set[int]] = {
    ("POST", "/v1/skus"): {409},  # the sku exists
    ("POST", "/v1/stock/receipts"): {409},
    ("POST", "/v1/stock/adjustments"): {409},  # not enough stock
    ("POST", "/v1/resyncs"): {404},  # no such store
    ("POST", "/v1/resyncs/{resync_id}/cancel"): {409},  # finished already
    ("POST", "/v1/inbox/{inbox_id}/replay"): {409},  # applied already
    ("POST", "/v1/settlements/run"): {409},
    ("POST", "/v1/dividend-deliveries/{settlement_id}/retry"): {409},  # delivered already
    ("GET", "/v1/dividend-deliveries"): {400},  # unknown status
    ("GET", "/v1/stores/{store_id}/reconciliation"): {502},
    ("POST", "/webhooks/{platform}/{store_id}"): {401, 404, 413, 503},
}


def problem_statuses(method: str, path: str, operation: dict) -> set[int]:
    """The error statuses an operation can answer, from its parameters, body and security."""
    statuses = set(EXTRA.get((method, path), set()))
    parameters = operation.get("parameters", [])
    if operation.get("security"):
        statuses |= {401, 403}
    if any(p["in"] == "path" for p in parameters):
        statuses.add(404)
    if parameters or "requestBody" in operation:
        statuses.add(422)  # a value the schema refuses
    if "requestBody" in operation:
        statuses |= {400, 413}  # not JSON; too large
    if any(p["in"] == "query" and p["name"] == "cursor" for p in parameters):
        statuses.add(400)
    if (method, path) in IDEMPOTENT:
        statuses |= {400, 409, 422}
    return statuses


IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "description": "Makes a retry harmless: the same key and body get the first answer again and write "
                   "nothing; the same key with another body is 422, and 409 while the first is in flight.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}


def _own_content(answer: dict) -> bool:
    """Whether a declared answer names a body of its own, rather than FastAPI's defaults (no content,
    an empty JSON schema, or its validation error shape)."""
    schemas = [media.get("schema") or {} for media in answer.get("content", {}).values()]
    return any(schema and schema.get("$ref") != "#/components/schemas/HTTPValidationError" for schema in schemas)


def document_problems(document: dict) -> dict:
    components = document.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = PROBLEM_SCHEMA
    for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's shape, which no answer has
        components.pop(name, None)
    problem = {"content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            if method.upper() not in HTTP_METHODS:
                continue
            if (method.upper(), path) in IDEMPOTENT:
                operation.setdefault("parameters", []).append(IDEMPOTENCY_KEY)
            responses = operation.setdefault("responses", {})
            declared = {int(code) for code in responses if code.isdigit() and int(code) >= 400}
            for status in sorted(problem_statuses(method.upper(), path, operation) | declared):
                answer = responses.get(str(status), {})
                if _own_content(answer):
                    continue  # a route that answers this status otherwise says so itself (/readyz)
                said = answer.get("description")
                if not said or said == "Validation Error":  # FastAPI's own words for its 422
                    said = DESCRIPTIONS.get(status, "Error")
                responses[str(status)] = {"description": said, **problem}
    return document


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, description=app.description,
                                   routes=app.routes, tags=app.openapi_tags, servers=app.servers)
            app.openapi_schema = document_problems(document)
        return app.openapi_schema

    app.openapi = openapi
