"""SandboxMarket: a small marketplace that keeps its own listings, orders and refunds and sells only
against its own stock figure, so a stale figure pushed by coopsync oversells across shops, as on a
real platform. Every change queues a signed webhook delivery.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, ClassVar, Literal

Restock = Literal["no_restock", "cancel", "return"]
RefundState = Literal["open", "succeeded", "closed"]

TOPIC_HEADER = "X-Sandbox-Topic"
EVENT_ID_HEADER = "X-Sandbox-Event-Id"
SIGNATURE_HEADER = "X-Sandbox-Signature"
DEFAULT_PAGE_SIZE = 50  # rows per list page
MAX_PAGE_SIZE = 250  # rows
_TICK = timedelta(microseconds=1)  # the smallest step that keeps updated_at strictly increasing


class SandboxError(Exception):
    """An operation the market refuses (unknown id, a transition the order cannot make)."""


class UnknownListing(SandboxError, KeyError):
    """No listing with that sku key."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def sign_body(secret: str, body: bytes) -> str:
    """X-Sandbox-Signature: base64 HMAC-SHA256 of the raw body keyed by the webhook secret."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


@dataclass
class Listing:
    sku_key: str
    merchant_sku: str | None
    price_minor: int
    stock: int
    title: str | None = None


@dataclass(frozen=True)
class Delivery:
    """One queued webhook: what would be POSTed to the subscriber."""

    event_id: str
    topic: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class SandboxMarket:
    """An in-process marketplace. All methods are synchronous and hold one lock, so they are atomic
    for callers on one event loop and safe from a server thread."""

    _registry: ClassVar[dict[str, "SandboxMarket"]] = {}
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, name: str, webhook_secret: str, currency: str = "CNY",
                 clock: Callable[[], datetime] | None = None) -> None:
        self.name = name
        self.webhook_secret = webhook_secret
        self.currency = currency
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        self._lock = threading.RLock()
        self._last_time: datetime | None = None
        self._order_seq = 0
        self._refund_seq = 0
        self.listings: dict[str, Listing] = {}
        self._orders: dict[str, dict[str, Any]] = {}
        self._refunds: dict[str, dict[str, Any]] = {}
        self._outbox: list[Delivery] = []

    # --- registry -------------------------------------------------------------------------------

    @classmethod
    def register(cls, market: "SandboxMarket") -> "SandboxMarket":
        with cls._registry_lock:
            cls._registry[market.name] = market
        return market

    @classmethod
    def get(cls, name: str) -> "SandboxMarket":
        with cls._registry_lock:
            try:
                return cls._registry[name]
            except KeyError:
                raise SandboxError(f"no sandbox market registered as {name!r}") from None

    @classmethod
    def unregister(cls, name: str) -> None:
        with cls._registry_lock:
            cls._registry.pop(name, None)

    # --- listings and stock ---------------------------------------------------------------------

    def add_listing(self, sku_key: str, *, price_minor: int, stock: int = 0, merchant_sku: str | None = None,
                    title: str | None = None) -> Listing:
        if stock < 0 or price_minor < 0:
            raise SandboxError("stock and price cannot be negative")
        with self._lock:
            listing = Listing(sku_key, merchant_sku, price_minor, stock, title)
            self.listings[sku_key] = listing
            return listing

    def set_stock(self, sku_key: str, quantity: int) -> None:
        """What coopsync pushes: the absolute sellable quantity of one listing."""
        if quantity < 0:
            raise SandboxError(f"negative stock {quantity} for {sku_key}")
        with self._lock:
            self._listing(sku_key).stock = quantity

    def set_stock_batch(self, items: list[tuple]) -> list[str | None]:
        """Set several listings; one entry per item: None when set, else why not.

        An item ``(sku_key, quantity, expected)`` is a compare-and-set (as Shopify's
        ``changeFromQuantity``): refused with ``conflict: stock is N`` when the listing does not
        hold ``expected``, because a sale happened that the caller has not accounted for."""
        results: list[str | None] = []
        with self._lock:
            for item in items:
                sku_key, quantity = item[0], item[1]
                expected = item[2] if len(item) > 2 else None
                try:
                    current = self._listing(sku_key).stock
                    if expected is not None and current != expected:
                        results.append(f"conflict: stock is {current}, expected {expected}")
                        continue
                    self.set_stock(sku_key, quantity)
                except SandboxError as exc:
                    results.append(str(exc))
                else:
                    results.append(None)
        return results

    def stock(self, sku_key: str) -> int:
        with self._lock:
            return self._listing(sku_key).stock

    def stock_levels(self) -> dict[str, int]:
        with self._lock:
            return {key: listing.stock for key, listing in self.listings.items()}

    def _listing(self, sku_key: str) -> Listing:
        try:
            return self.listings[sku_key]
        except KeyError:
            raise UnknownListing(f"no listing {sku_key!r} in sandbox {self.name!r}") from None

    # --- orders ---------------------------------------------------------------------------------

    def sell(self, sku_key: str, quantity: int = 1, *, paid: bool = True) -> dict[str, Any] | None:
        """A buyer orders ``quantity``; None when this market's own stock is short (nothing changes)."""
        if quantity <= 0:
            raise SandboxError("quantity must be positive")
        with self._lock:
            listing = self._listing(sku_key)
            if listing.stock < quantity:
                return None
            listing.stock -= quantity  # stock is taken when the order is placed, as on Douyin by default
            now = self._now()
            self._order_seq += 1
            order_id = str(100000 + self._order_seq)
            total = listing.price_minor * quantity
            order = {
                "id": order_id, "market": self.name, "status": "paid" if paid else "pending",
                "currency": self.currency, "total_minor": total,
                "lines": [{"id": f"{order_id}-1", "sku_key": sku_key, "merchant_sku": listing.merchant_sku,
                           "title": listing.title, "quantity": quantity, "unit_price_minor": listing.price_minor,
                           "total_minor": total}],
                "refunds": [],
                "created_at": _iso(now), "paid_at": _iso(now) if paid else None, "shipped_at": None,
                "delivered_at": None, "cancelled_at": None, "updated_at": _iso(now),
            }
            self._orders[order_id] = order
            self._emit("order.created", order)
            return copy.deepcopy(order)

    def pay(self, order_id: str) -> dict[str, Any]:
        return self._transition(order_id, {"pending"}, "paid", "paid_at")

    def ship(self, order_id: str) -> dict[str, Any]:
        return self._transition(order_id, {"paid"}, "shipped", "shipped_at")

    def deliver(self, order_id: str) -> dict[str, Any]:
        return self._transition(order_id, {"shipped"}, "delivered", "delivered_at")

    def cancel(self, order_id: str) -> dict[str, Any]:
        """Cancel before shipping; the goods go back to this market's stock."""
        with self._lock:
            order = self._order(order_id)
            if order["status"] in ("pending", "paid"):
                for line in order["lines"]:
                    if line["sku_key"] in self.listings:
                        self.listings[line["sku_key"]].stock += line["quantity"]
            return self._transition(order_id, {"pending", "paid"}, "cancelled", "cancelled_at")

    def _transition(self, order_id: str, allowed: set[str], status: str, stamp: str) -> dict[str, Any]:
        with self._lock:
            order = self._order(order_id)
            if order["status"] not in allowed:
                raise SandboxError(f"order {order_id} is {order['status']}, cannot become {status}")
            now = self._now()
            order["status"] = status
            order[stamp] = _iso(now)
            order["updated_at"] = _iso(now)
            self._emit(f"order.{status}", order)
            return copy.deepcopy(order)

    def upload_shipment(self, order_id: str, tracking_number: str, carrier: str,
                        lines: dict[str, int] | None = None) -> dict[str, Any]:
        """A merchant says a parcel of the order left (``lines``: {line id: quantity}, default all). The same
        tracking number again changes nothing; once parcels cover every line, the order is shipped."""
        with self._lock:
            order = self._order(order_id)
            shipments = order.setdefault("shipments", [])
            if any(s["tracking_number"] == tracking_number for s in shipments):
                return copy.deepcopy(order)
            if order["status"] not in ("paid", "shipped", "delivered"):
                raise SandboxError(f"order {order_id} is {order['status']}: it cannot ship")
            wanted = lines if lines is not None else {line["id"]: line["quantity"] for line in order["lines"]}
            known = {line["id"] for line in order["lines"]}
            if not wanted or set(wanted) - known:
                raise SandboxError(f"order {order_id} has no line {sorted(set(wanted) - known)}")
            shipments.append({"tracking_number": tracking_number, "carrier": carrier, "lines": dict(wanted)})
            covered = {line["id"]: 0 for line in order["lines"]}
            for shipment in shipments:
                for line_id, quantity in shipment["lines"].items():
                    covered[line_id] = covered.get(line_id, 0) + quantity
            if order["status"] == "paid" and all(covered[line["id"]] >= line["quantity"] for line in order["lines"]):
                return self._transition(order_id, {"paid"}, "shipped", "shipped_at")
            self._touch_order(order, self._now())
            return copy.deepcopy(order)

    def _order(self, order_id: str) -> dict[str, Any]:
        try:
            return self._orders[order_id]
        except KeyError:
            raise SandboxError(f"no order {order_id!r} in sandbox {self.name!r}") from None

    # --- refunds --------------------------------------------------------------------------------

    def refund(self, order_id: str, lines: dict[str, int] | None = None, restock: Restock = "no_restock",
               *, status: RefundState = "succeeded") -> dict[str, Any]:
        """Refund ``lines`` ({sku_key: quantity}, default every line in full) of an order.
        ``cancel`` is only possible before shipping; refunded goods that come back (``cancel``,
        ``return``) return to this market's stock once the refund succeeds."""
        with self._lock:
            order = self._order(order_id)
            if order["status"] in ("pending", "cancelled"):
                raise SandboxError(f"order {order_id} is {order['status']}: nothing was paid")
            if restock == "cancel" and order["status"] not in ("paid",):
                raise SandboxError(f"order {order_id} already shipped: a refund cannot be a cancel")
            wanted = lines if lines is not None else {l["sku_key"]: l["quantity"] for l in order["lines"]}
            refund_lines = []
            for sku_key, quantity in wanted.items():
                line = next((l for l in order["lines"] if l["sku_key"] == sku_key), None)
                if line is None:
                    raise SandboxError(f"order {order_id} has no line for {sku_key!r}")
                if quantity <= 0 or quantity > line["quantity"] - self._refunded(order, line["id"]):
                    raise SandboxError(f"cannot refund {quantity} of {sku_key!r} on order {order_id}")
                refund_lines.append({"line_id": line["id"], "sku_key": sku_key,
                                     "merchant_sku": line["merchant_sku"], "quantity": quantity,
                                     "amount_minor": line["unit_price_minor"] * quantity, "restock": restock})
            now = self._now()
            self._refund_seq += 1
            refund = {
                "id": f"R{500000 + self._refund_seq}", "order_id": order_id, "status": status,
                "currency": order["currency"], "amount_minor": sum(l["amount_minor"] for l in refund_lines),
                "lines": refund_lines, "created_at": _iso(now), "updated_at": _iso(now),
            }
            self._refunds[refund["id"]] = refund
            if status == "succeeded":
                self._restock(refund)
            self._emit("refund.created", refund)
            self._touch_order(order, now)
            return copy.deepcopy(refund)

    def set_refund_status(self, refund_id: str, status: RefundState) -> dict[str, Any]:
        """Move an open refund to succeeded or closed."""
        with self._lock:
            refund = self._refunds.get(refund_id)
            if refund is None:
                raise SandboxError(f"no refund {refund_id!r} in sandbox {self.name!r}")
            if refund["status"] != "open":
                raise SandboxError(f"refund {refund_id} is already {refund['status']}")
            now = self._now()
            refund["status"] = status
            refund["updated_at"] = _iso(now)
            if status == "succeeded":
                self._restock(refund)
            self._emit("refund.updated", refund)
            self._touch_order(self._orders[refund["order_id"]], now)
            return copy.deepcopy(refund)

    def _refunded(self, order: dict[str, Any], line_id: str) -> int:
        return sum(l["quantity"] for r in self._refunds.values() if r["order_id"] == order["id"]
                   and r["status"] != "closed" for l in r["lines"] if l["line_id"] == line_id)

    def _restock(self, refund: dict[str, Any]) -> None:
        for line in refund["lines"]:
            if line["restock"] in ("cancel", "return") and line["sku_key"] in self.listings:
                self.listings[line["sku_key"]].stock += line["quantity"]

    def _touch_order(self, order: dict[str, Any], now: datetime) -> None:
        # The order embeds its refunds, so a refund change is an order change too.
        order["refunds"] = [copy.deepcopy(r) for r in self._refunds.values() if r["order_id"] == order["id"]]
        order["updated_at"] = _iso(now)
        self._emit("order.updated", order)

    # --- reads ----------------------------------------------------------------------------------

    def get_order(self, order_id: str) -> dict[str, Any] | None:
        with self._lock:
            order = self._orders.get(order_id)
            return copy.deepcopy(order) if order is not None else None

    def get_refund(self, refund_id: str) -> dict[str, Any] | None:
        with self._lock:
            refund = self._refunds.get(refund_id)
            return copy.deepcopy(refund) if refund is not None else None

    def orders_page(self, updated_min: datetime, updated_max: datetime, cursor: str | None = None,
                    limit: int = DEFAULT_PAGE_SIZE) -> tuple[list[dict[str, Any]], str | None]:
        """Orders with updated_min <= updated_at < updated_max, oldest change first."""
        with self._lock:
            return self._page(self._orders.values(), updated_min, updated_max, cursor, limit)

    def refunds_page(self, updated_min: datetime, updated_max: datetime, cursor: str | None = None,
                     limit: int = DEFAULT_PAGE_SIZE) -> tuple[list[dict[str, Any]], str | None]:
        with self._lock:
            return self._page(self._refunds.values(), updated_min, updated_max, cursor, limit)

    @staticmethod
    def _page(rows, updated_min: datetime, updated_max: datetime, cursor: str | None,
              limit: int) -> tuple[list[dict[str, Any]], str | None]:
        # Keyset paging on (updated_at, id): a row changed while someone pages moves past the cursor
        # and is seen again, never skipped, as offset paging would.
        limit = max(1, min(limit, MAX_PAGE_SIZE))
        after = SandboxMarket._decode_cursor(cursor)
        keyed = sorted(((datetime.fromisoformat(r["updated_at"]), r["id"]), r) for r in rows)
        selected = [(k, r) for k, r in keyed if updated_min <= k[0] < updated_max and (after is None or k > after)]
        page = selected[:limit]
        next_cursor = SandboxMarket._encode_cursor(page[-1][0]) if len(selected) > limit else None
        return [copy.deepcopy(r) for _, r in page], next_cursor

    @staticmethod
    def _encode_cursor(key: tuple[datetime, str]) -> str:
        return base64.urlsafe_b64encode(json.dumps([key[0].isoformat(), key[1]]).encode()).decode()

    @staticmethod
    def _decode_cursor(cursor: str | None) -> tuple[datetime, str] | None:
        if not cursor:
            return None
        try:
            moment, row_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
            return datetime.fromisoformat(moment), str(row_id)
        except (ValueError, TypeError) as exc:
            raise SandboxError(f"not a sandbox cursor: {cursor!r}") from exc

    # --- webhooks -------------------------------------------------------------------------------

    def pending_deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self._outbox)

    def take_deliveries(self) -> list[Delivery]:
        """Remove and return every queued delivery (the caller sends them)."""
        with self._lock:
            taken, self._outbox = self._outbox, []
            return taken

    def requeue(self, deliveries: list[Delivery]) -> None:
        """Put back deliveries that could not be sent, ahead of newer ones."""
        with self._lock:
            self._outbox[:0] = deliveries

    def _emit(self, topic: str, payload: dict[str, Any]) -> None:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        event_id = f"evt_{uuid.uuid4().hex}"
        headers = {
            "Content-Type": "application/json",
            TOPIC_HEADER: topic,
            EVENT_ID_HEADER: event_id,
            SIGNATURE_HEADER: sign_body(self.webhook_secret, body),
        }
        self._outbox.append(Delivery(event_id, topic, body, headers))

    def _now(self) -> datetime:
        """Aware UTC, strictly later than any earlier change, even when the clock stalls or steps back."""
        now = self._clock().astimezone(timezone.utc)
        if self._last_time is not None and now <= self._last_time:
            now = self._last_time + _TICK
        self._last_time = now
        return now
