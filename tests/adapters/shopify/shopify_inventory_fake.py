"""A fake Shopify GraphQL inventory for respx: keeps its own ``available`` per item and location and answers
``inventorySetQuantities`` as Shopify does from 2026-04 (compare-and-set on ``changeFromQuantity``, one result
per ``@idempotent`` key), and the ``inventoryItem`` read of the figure. Its buyers can buy between our read
and our write, and it counts what it sold so a test can check that no unit was sold twice."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable

import httpx

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "shopify"


def _load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def _tail(gid: str) -> str:
    return gid.rsplit("/", 1)[-1]


class FakeInventory:
    """``available[(item, location)]``; ``after_read`` runs once a read is answered (a buyer buying in the
    moment between our read and our write); ``answer_first`` queues raw answers (throttles, outages)."""

    def __init__(self, available: dict[tuple[str, str], int] | None = None, *, tracked: bool = True) -> None:
        self.available: dict[tuple[str, str], int] = dict(available or {})
        self.tracked = tracked
        self.sold = 0
        self.reads: list[dict[str, Any]] = []
        self.writes: list[dict[str, Any]] = []  # the variables of every inventorySetQuantities received
        self.after_read: Callable[["FakeInventory"], None] | None = None
        self.answer_first: list[httpx.Response] = []
        self.lose_answer_of_next_write = False  # the write applies; its answer is a 503
        self.user_error: str | None = None  # a code every write is refused with
        self._results: dict[str, dict[str, Any]] = {}  # idempotency key -> the answer given

    def sell(self, item: str, location: str, units: int) -> bool:
        """A buyer takes ``units`` if the shop shows them (Shopify does not sell what it does not show)."""
        if self.available.get((item, location), 0) < units:
            return False
        self.available[(item, location)] -= units
        self.sold += units
        return True

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        query, variables = body["query"], body["variables"]
        if self.answer_first:
            return self.answer_first.pop(0)
        if "inventorySetQuantities" in query:
            return self._write(query, variables)
        if "inventoryItem(" in query:
            return self._read(variables)
        raise AssertionError(f"unexpected GraphQL document: {query}")

    def rest_levels(self, request: httpx.Request) -> httpx.Response:
        """``GET inventory_levels.json`` (the adapter's ``fetch_stock``): the same counts over Admin REST."""
        items = request.url.params.get("inventory_item_ids", "").split(",")
        locations = request.url.params.get("location_ids", "").split(",")
        levels = [{"inventory_item_id": int(item), "location_id": int(location), "available": count}
                  for (item, location), count in self.available.items() if item in items and location in locations]
        return httpx.Response(200, json={"inventory_levels": levels})

    def _read(self, variables: dict[str, Any]) -> httpx.Response:
        self.reads.append(variables)
        answer = _load("inventory_item_available_graphql_constructed.json")
        key = (_tail(variables["item"]), _tail(variables["location"]))
        node = answer["data"]["inventoryItem"]
        node["id"], node["tracked"] = variables["item"], self.tracked
        if key in self.available:
            node["inventoryLevel"]["quantities"][0]["quantity"] = self.available[key]
        else:
            node["inventoryLevel"] = None  # not stocked at that location
        response = httpx.Response(200, json=answer)
        if self.after_read is not None:
            self.after_read(self)
        return response

    def _write(self, query: str, variables: dict[str, Any]) -> httpx.Response:
        assert "@idempotent(key: $idempotencyKey)" in query  # mandatory from 2026-04
        self.writes.append(copy.deepcopy(variables))
        key = variables["idempotencyKey"]
        if key in self._results:
            return httpx.Response(200, json=self._results[key])  # a repeat: the first attempt's result
        entry = variables["input"]["quantities"][0]
        assert "changeFromQuantity" in entry and "compareQuantity" not in entry
        slot = (_tail(entry["inventoryItemId"]), _tail(entry["locationId"]))
        if self.user_error is not None:
            answer = _load("inventory_set_quantities_stale_graphql_constructed.json")
            answer["data"]["inventorySetQuantities"]["userErrors"][0].update(code=self.user_error, message="refused")
        elif entry["changeFromQuantity"] is not None and entry["changeFromQuantity"] != self.available.get(slot):
            answer = _load("inventory_set_quantities_stale_graphql_constructed.json")
        else:
            self.available[slot] = entry["quantity"]
            answer = _load("inventory_set_quantities_graphql_constructed.json")
        self._results[key] = answer
        if self.lose_answer_of_next_write:
            self.lose_answer_of_next_write = False
            return httpx.Response(503, text="upstream timed out")
        return httpx.Response(200, json=answer)
