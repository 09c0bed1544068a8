"""A Tmall item behind the fake TOP gateway (top_fakes.FakeTop handler for tmall.item.quantity.update)."""

from __future__ import annotations

import json

import httpx

# TOP's error envelope for a repeated key; the exact words are not in the facts (UNCONFIRMED), these follow
# the style of the platform's other refusals.
REPEATED_KEY = {"error_response": {"code": 15, "msg": "Remote service error", "sub_code": "isv.invalid-parameter",
                                   "sub_msg": "outer_biz_key重复，该库存操作已处理", "request_id": "top-req-1"}}


class TmallItem:
    """One Tmall item's stock behind the fake gateway: applies a type 2 increment once per outer_biz_key;
    a repeat is answered as ``repeat`` says (a refusal naming the repeat, or the same success)."""

    def __init__(self, count: int, repeat: str = "refusal") -> None:
        self.count = count
        self.repeat = repeat
        self.keys: set[str] = set()
        self.applied = 0
        self.lose_answers = 0  # the next N answers are lost (a 503) after the change applied

    def __call__(self, params: dict[str, str]):
        options = json.loads(params["options"])
        if "sku_quantities" in params:
            [entry] = json.loads(params["sku_quantities"])
            quantity = entry["quantity"]
        else:
            quantity = int(params["item_quantity"])
        key = options.get("outer_biz_key")
        answer = {"tmall_item_quantity_update_response": {"quantity_update_result": params["item_id"]}}
        if options["type"] == 2 and key in self.keys:
            if self.repeat == "refusal":
                answer = REPEATED_KEY
        elif options["type"] == 2:
            self.count = max(0, self.count + quantity)
            self.applied += 1
            if key:
                self.keys.add(key)
        else:
            self.count = quantity
        if self.lose_answers:
            self.lose_answers -= 1
            return httpx.Response(503, text="gateway timeout")
        return answer
