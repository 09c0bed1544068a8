"""Shopify stock over GraphQL (operations.md 4.4): the compare-and-set ``inventorySetQuantities`` and the read of
the ``available`` figure it compares against. Pure: documents, variables and answer readers; no I/O.

From API version 2026-04 every quantity must carry ``changeFromQuantity`` (the figure Shopify must still show
for the write to apply, else ``CHANGE_FROM_QUANTITY_STALE``) and the mutation must carry ``@idempotent(key:)``.
ref: https://shopify.dev/docs/api/admin-graphql/2026-07/mutations/inventorySetQuantities
"""

from __future__ import annotations

from typing import Any, Mapping

from adapters.errors import PayloadError, PermanentError

PLATFORM = "shopify"
STALE = "CHANGE_FROM_QUANTITY_STALE"
# Codes that say "try again": a request under the same key is still running, or the key's earlier attempt
# failed (a new key is needed, which the next push makes).
RETRY_CODES = frozenset({"IDEMPOTENCY_CONCURRENT_REQUEST", "IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED"})
# What an operator does about a refusal that will not pass by itself.
_REMEDY = {
    "ITEM_NOT_STOCKED_AT_LOCATION": "activate the item at that location in Shopify, or bind the listing to the "
                                    "location that stocks it (listing_ref.location_id)",
    "INVALID_LOCATION": "check the store's settings.location_id (or listing_ref.location_id)",
    "INVALID_INVENTORY_ITEM": "the listing's inventory item is gone: bind the listing again",
    "NON_MUTABLE_INVENTORY_ITEM": "the item's stock is managed by another app or a bundle: unbind the listing",
}

SET_AVAILABLE = """
mutation CoopsyncSetAvailable($input: InventorySetQuantitiesInput!, $idempotencyKey: String!) {
  inventorySetQuantities(input: $input) @idempotent(key: $idempotencyKey) {
    inventoryAdjustmentGroup { id }
    userErrors { code field message }
  }
}
"""

AVAILABLE_QUERY = """
query CoopsyncAvailable($item: ID!, $location: ID!) {
  inventoryItem(id: $item) {
    id
    tracked
    inventoryLevel(locationId: $location) {
      quantities(names: ["available"]) { name quantity }
    }
  }
}
"""


def gid(kind: str, value: str) -> str:
    """A Shopify global id (``gid://shopify/InventoryItem/808950810``) from a REST numeric id or a gid."""
    text = str(value).strip()
    return text if text.startswith("gid://") else f"gid://shopify/{kind}/{text}"


def set_available_variables(item: str, location: str, quantity: int, change_from: int, key: str) -> dict[str, Any]:
    """Variables of ``SET_AVAILABLE``: set ``available`` of one item at one location to ``quantity`` only if it
    still is ``change_from``. ``key`` is the idempotency key, fresh for every distinct write; an in-call retry
    of the same write repeats it, so Shopify answers the first attempt's result instead of applying twice."""
    return {
        "idempotencyKey": key,
        "input": {
            "name": "available",
            "reason": "correction",
            # Shown in the shop's inventory history as the source of the change.
            "referenceDocumentUri": f"gid://coopsync/StockPush/{key}",
            "quantities": [{"inventoryItemId": gid("InventoryItem", item), "locationId": gid("Location", location),
                            "quantity": quantity, "changeFromQuantity": change_from}],
        },
    }


def user_errors(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ``userErrors`` of an ``inventorySetQuantities`` answer; a payload missing altogether is an error."""
    payload = data.get("inventorySetQuantities")
    if not isinstance(payload, Mapping):
        raise PayloadError("inventorySetQuantities answered without its payload", platform=PLATFORM)
    return [e for e in payload.get("userErrors") or [] if isinstance(e, Mapping)]


def codes(errors: list[dict[str, Any]]) -> set[str]:
    return {str(e.get("code")) for e in errors if e.get("code")}


def refusal(errors: list[dict[str, Any]]) -> str:
    """An operator's reading of the user errors: code, Shopify's words and what to do."""
    parts = []
    for error in errors:
        code = str(error.get("code") or "")
        remedy = _REMEDY.get(code)
        parts.append(f"{code or 'error'}: {error.get('message') or ''}" + (f" ({remedy})" if remedy else ""))
    return "Shopify refused inventorySetQuantities: " + "; ".join(parts)


def available_of(data: Mapping[str, Any], item: str, location: str) -> int:
    """The ``available`` figure of an ``AVAILABLE_QUERY`` answer. An item Shopify does not know, does not
    track, or does not stock at the location has no figure to compare against: a permanent refusal that
    says what to change."""
    node = data.get("inventoryItem")
    if not isinstance(node, Mapping):
        raise PermanentError(f"Shopify has no inventory item {item}: bind the listing again", platform=PLATFORM)
    if node.get("tracked") is False:
        raise PermanentError(f"inventory item {item} does not have inventory tracking on: turn tracking on in "
                             "Shopify for coopsync to set its stock", platform=PLATFORM)
    level = node.get("inventoryLevel")
    if not isinstance(level, Mapping):
        raise PermanentError(f"inventory item {item} is not stocked at location {location}: "
                             f"{_REMEDY['ITEM_NOT_STOCKED_AT_LOCATION']}", platform=PLATFORM)
    for quantity in level.get("quantities") or []:
        if isinstance(quantity, Mapping) and quantity.get("name") == "available" and quantity.get("quantity") is not None:
            return int(quantity["quantity"])
    raise PayloadError(f"inventory level of item {item} at {location} without an available quantity",
                       platform=PLATFORM)
