"""Marketplace fakes for the benchmarks that behave as the real platforms do (issue 17 point 5).

``WooShop``: a WooCommerce site's REST v3 (``/wp-json/wc/v3``) for simple products, served over HTTPS
(Woo takes its REST key pair only over HTTPS, and the adapter refuses plain HTTP) from a thread of this
process on its own 127.0.0.1 port:

- ``GET products?include=…`` answers ``stock_quantity``;
- ``PUT products/{id}`` and ``POST products/batch`` overwrite ``stock_quantity``: a blind absolute set,
  with no compare-and-set and no increment, exactly as Woo does;
- the shop sells while ``stock_quantity`` > 0 (``sell``), and each sale yields an ``order.created``
  webhook signed as ``WC_Webhook`` signs it (base64 HMAC-SHA256 of the raw body).

Every change of a shop's count is time-stamped, and a PUT that lands after sales made since the
service last read the count (the read-then-PUT race) is counted, with the sales it overwrote.
Benchmark code only.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import itertools
import json
import tempfile
import threading
import time
import uuid
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from adapters.woocommerce.webhooks import signature as woo_signature


# -- a self-signed certificate for 127.0.0.1 ------------------------------------------------------------

class LocalCertificate:
    """A throwaway self-signed CA certificate for IP 127.0.0.1: ``certfile``/``keyfile`` for the fakes'
    servers; the service trusts it through ``SSL_CERT_FILE`` (httpx reads it)."""

    def __init__(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self._dir = tempfile.TemporaryDirectory(prefix="coopsync-bench-tls-")
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "coopsync bench fakes")])
        now = dt.datetime.now(dt.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                               critical=False)
                .sign(key, hashes.SHA256()))
        self.certfile = str(Path(self._dir.name) / "cert.pem")
        self.keyfile = str(Path(self._dir.name) / "key.pem")
        Path(self.certfile).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        Path(self.keyfile).write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))

    def cleanup(self) -> None:
        self._dir.cleanup()


class TlsServerThread:
    """An ASGI app over HTTPS on a free 127.0.0.1 port, served from a thread of this process."""

    def __init__(self, app, cert: LocalCertificate) -> None:
        import socket

        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off", access_log=False,
            ssl_certfile=cert.certfile, ssl_keyfile=cert.keyfile))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self.server.started:
            raise RuntimeError("fake shop server did not start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


# -- WooCommerce --------------------------------------------------------------------------------------------

class WooShop:
    """One WooCommerce site with simple products; thread-safe (served from its own thread, sold from
    the bench's loop)."""

    _order_ids = itertools.count(5000)

    def __init__(self, name: str, webhook_secret: str, consumer_key: str, consumer_secret: str) -> None:
        self.name = name
        self.secret = webhook_secret
        self._auth = "Basic " + base64.b64encode(f"{consumer_key}:{consumer_secret}".encode()).decode()
        self.lock = threading.Lock()
        self.stock: dict[str, int] = {}
        self.sold: dict[str, int] = {}
        self.figures: dict[str, list[tuple[float, int]]] = {}  # product id -> (monotonic, count)
        self._sold_since_read: dict[str, int] = {}
        self.gets = 0
        self.puts = 0
        self.raced_puts = 0  # PUTs that landed after sales made since the service's last read
        self.overwritten_sales = 0  # those sales (units): the PUT's figure did not take them off
        self.unauthorised = 0
        self.server: TlsServerThread | None = None
        self.webhook_id = 7

    # the buyers' side
    def add_product(self, product_id: str, stock: int = 0) -> None:
        with self.lock:
            self.stock[product_id] = stock
            self.sold[product_id] = 0
            self._sold_since_read[product_id] = 0
            self.figures[product_id] = [(time.monotonic(), stock)]

    def count(self, product_id: str) -> int:
        with self.lock:
            return self.stock[product_id]

    def sell(self, product_id: str, sku: str, quantity: int = 1) -> tuple[float, dict] | None:
        """A buyer checks out if the shop shows enough stock; returns (moment, order) or None."""
        with self.lock:
            if self.stock[product_id] < quantity:
                return None
            self.stock[product_id] -= quantity
            self.sold[product_id] += quantity
            self._sold_since_read[product_id] += quantity
            moment = time.monotonic()
            self.figures[product_id].append((moment, self.stock[product_id]))
        return moment, self._order(product_id, sku, quantity)

    def _order(self, product_id: str, sku: str, quantity: int) -> dict:
        order_id = next(self._order_ids)
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0).isoformat()
        price = "39.90"
        total = f"{39.90 * quantity:.2f}"
        return {
            "id": order_id, "parent_id": 0, "number": str(order_id), "order_key": f"wc_order_{uuid.uuid4().hex[:13]}",
            "created_via": "checkout", "version": "9.4.2", "status": "processing", "currency": "CNY",
            "date_created": now, "date_created_gmt": now, "date_modified": now, "date_modified_gmt": now,
            "discount_total": "0.00", "shipping_total": "0.00", "total": total, "total_tax": "0.00",
            "prices_include_tax": False, "customer_id": 0, "payment_method": "bacs",
            "date_paid": now, "date_paid_gmt": now, "date_completed": None, "date_completed_gmt": None,
            "billing": {"first_name": "Buyer", "country": "CN"}, "shipping": {"country": "CN"},
            "line_items": [{"id": order_id * 10 + 1, "name": "Gynostemma tea 250 g", "product_id": int(product_id),
                            "variation_id": 0, "quantity": quantity, "tax_class": "", "subtotal": total,
                            "subtotal_tax": "0.00", "total": total, "total_tax": "0.00", "taxes": [],
                            "meta_data": [], "sku": sku, "price": float(price)}],
            "refunds": [], "meta_data": [],
        }

    def webhook(self, order: dict) -> tuple[bytes, dict[str, str]]:
        """The ``order.created`` delivery WooCommerce sends (WC_Webhook::deliver)."""
        body = json.dumps(order, separators=(",", ":")).encode()
        return body, {
            "Content-Type": "application/json", "User-Agent": "WooCommerce/9.4.2 Hookshot (WordPress/6.7)",
            "X-WC-Webhook-Source": f"{self.url}/", "X-WC-Webhook-Topic": "order.created",
            "X-WC-Webhook-Resource": "order", "X-WC-Webhook-Event": "created",
            "X-WC-Webhook-Signature": woo_signature(body, self.secret),
            "X-WC-Webhook-ID": str(self.webhook_id), "X-WC-Webhook-Delivery-ID": uuid.uuid4().hex,
        }

    # the REST API the service calls
    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def serve(self, cert: LocalCertificate) -> None:
        self.server = TlsServerThread(self.app(), cert)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def _set(self, product_id: str, changes: dict) -> dict | None:
        with self.lock:
            if product_id not in self.stock:
                return None
            if "stock_quantity" in changes and changes["stock_quantity"] is not None:
                self.puts += 1
                lost = self._sold_since_read[product_id]
                if lost:
                    self.raced_puts += 1
                    self.overwritten_sales += lost
                self.stock[product_id] = int(changes["stock_quantity"])
                self._sold_since_read[product_id] = 0
                self.figures[product_id].append((time.monotonic(), self.stock[product_id]))
            return self._product(product_id)

    def _product(self, product_id: str) -> dict:
        quantity = self.stock[product_id]
        return {"id": int(product_id), "type": "simple", "status": "publish", "manage_stock": True,
                "stock_quantity": quantity, "stock_status": "instock" if quantity > 0 else "outofstock"}

    def app(self) -> Starlette:
        def denied(request: Request) -> JSONResponse | None:
            if request.headers.get("authorization") != self._auth:
                self.unauthorised += 1
                return JSONResponse({"code": "woocommerce_rest_cannot_view", "message": "Sorry, you cannot list "
                                     "resources.", "data": {"status": 401}}, status_code=401)
            return None

        def no_product(product_id: str) -> JSONResponse:
            return JSONResponse({"code": "woocommerce_rest_product_invalid_id", "message": "Invalid ID.",
                                 "data": {"status": 404}}, status_code=404)

        async def list_products(request: Request):
            if (refusal := denied(request)) is not None:
                return refusal
            ids = [i for i in request.query_params.get("include", "").split(",") if i]
            with self.lock:
                self.gets += 1
                found = [self._product(i) for i in ids if i in self.stock]
                for i in ids:
                    if i in self._sold_since_read:
                        self._sold_since_read[i] = 0
            fields = request.query_params.get("_fields")
            if fields:
                keep = fields.split(",")
                found = [{k: v for k, v in p.items() if k in keep} for p in found]
            return JSONResponse(found, headers={"X-WP-Total": str(len(found)), "X-WP-TotalPages": "1"})

        async def update_product(request: Request):
            if (refusal := denied(request)) is not None:
                return refusal
            product_id = request.path_params["product_id"]
            product = self._set(product_id, await request.json())
            return JSONResponse(product) if product is not None else no_product(product_id)

        async def batch(request: Request):
            if (refusal := denied(request)) is not None:
                return refusal
            updates = (await request.json()).get("update") or []
            answered = []
            for update in updates:
                product = self._set(str(update.get("id")), update)
                answered.append(product if product is not None else {"id": update.get("id"), "error": {
                    "code": "woocommerce_rest_product_invalid_id", "message": "Invalid ID.", "data": {"status": 400}}})
            return JSONResponse({"update": answered})

        root = "/wp-json/wc/v3"
        return Starlette(routes=[
            Route(f"{root}/products", list_products, methods=["GET"]),
            Route(f"{root}/products/batch", batch, methods=["POST"]),
            Route(f"{root}/products/{{product_id}}", update_product, methods=["PUT", "POST", "PATCH"]),
        ])

    def first_at_or_below(self, product_id: str, since: float, limit: int) -> float | None:
        """The first moment at or after ``since`` when the shop showed at most ``limit``."""
        with self.lock:
            figures = list(self.figures[product_id])
        before = [value for t, value in figures if t <= since]
        if before and before[-1] <= limit:
            return since
        return next((t for t, value in figures if t > since and value <= limit), None)
