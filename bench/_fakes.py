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

class CountingShop:
    """What every fake shop shares: a count per listing that its buyers take from, every change of it
    time-stamped, and the read-then-set races of absolute sets counted. Thread-safe (served from its own
    thread, sold from the bench's loop)."""

    platform = ""
    _order_ids = itertools.count(5000)

    def __init__(self, name: str) -> None:
        self.name = name
        self.lock = threading.Lock()
        self.stock: dict[str, int] = {}
        self.sold: dict[str, int] = {}
        self.figures: dict[str, list[tuple[float, int]]] = {}  # product id -> (monotonic, count)
        self._sold_since_read: dict[str, int] = {}
        self.gets = 0
        self.puts = 0
        self.raced_puts = 0  # PUTs that landed after sales made since the service's last read
        self.overwritten_sales = 0  # those sales (units): the PUT's figure did not take them off
        self.deltas = 0  # increments applied (Pinduoduo update_type 2, Douyin incremental)
        self.repeated_keys = 0  # Douyin: increments sent again under an idempotent_id already applied
        self.refused = 0  # updates the platform refused (a negative result, a bad sign)
        self.unauthorised = 0
        self.server: TlsServerThread | None = None

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
            order = self._order(product_id, sku, quantity)
        return moment, order

    def webhook(self, order: dict) -> tuple[str, bytes, dict[str, str]] | None:
        """(platform in the webhook path, body, headers) of the sale's notice; None where sales are polled."""
        return None

    def _set_count(self, product_id: str, quantity: int) -> None:
        """An absolute set (lock held): counts the sales it overwrote since the service last read the count."""
        self.puts += 1
        lost = self._sold_since_read[product_id]
        if lost:
            self.raced_puts += 1
            self.overwritten_sales += lost
        self.stock[product_id] = quantity
        self._sold_since_read[product_id] = 0
        self.figures[product_id].append((time.monotonic(), quantity))

    def _add_count(self, product_id: str, delta: int) -> bool:
        """An increment (lock held): keeps every sale; refused when the result would go below 0."""
        if self.stock[product_id] + delta < 0:
            self.refused += 1
            return False
        self.deltas += 1
        self.stock[product_id] += delta
        self.figures[product_id].append((time.monotonic(), self.stock[product_id]))
        return True

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def serve(self, cert: LocalCertificate) -> None:
        self.server = TlsServerThread(self.app(), cert)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def app(self) -> Starlette:
        raise NotImplementedError

    def first_at_or_below(self, product_id: str, since: float, limit: int) -> float | None:
        """The first moment at or after ``since`` when the shop showed at most ``limit``."""
        with self.lock:
            figures = list(self.figures[product_id])
        before = [value for t, value in figures if t <= since]
        if before and before[-1] <= limit:
            return since
        return next((t for t, value in figures if t > since and value <= limit), None)


class WooShop(CountingShop):
    """One WooCommerce site with simple products."""

    platform = "woocommerce"

    def __init__(self, name: str, webhook_secret: str, consumer_key: str, consumer_secret: str) -> None:
        super().__init__(name)
        self.secret = webhook_secret
        self._auth = "Basic " + base64.b64encode(f"{consumer_key}:{consumer_secret}".encode()).decode()
        self.webhook_id = 7

    def listing_ref(self, product_id: str) -> dict:
        return {"product_id": product_id}

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

    def webhook(self, order: dict) -> tuple[str, bytes, dict[str, str]]:
        """The ``order.created`` delivery WooCommerce sends (WC_Webhook::deliver)."""
        body = json.dumps(order, separators=(",", ":")).encode()
        return "woocommerce", body, {
            "Content-Type": "application/json", "User-Agent": "WooCommerce/9.4.2 Hookshot (WordPress/6.7)",
            "X-WC-Webhook-Source": f"{self.url}/", "X-WC-Webhook-Topic": "order.created",
            "X-WC-Webhook-Resource": "order", "X-WC-Webhook-Event": "created",
            "X-WC-Webhook-Signature": woo_signature(body, self.secret),
            "X-WC-Webhook-ID": str(self.webhook_id), "X-WC-Webhook-Delivery-ID": uuid.uuid4().hex,
        }

    # the REST API the service calls
    def _set(self, product_id: str, changes: dict) -> dict | None:
        with self.lock:
            if product_id not in self.stock:
                return None
            if "stock_quantity" in changes and changes["stock_quantity"] is not None:
                self._set_count(product_id, int(changes["stock_quantity"]))
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


# -- Pinduoduo ------------------------------------------------------------------------------------------------

def _pdd_error(code: int, message: str, sub_code: str = "") -> dict:
    return {"error_response": {"error_code": code, "error_msg": message, "sub_code": sub_code,
                               "request_id": uuid.uuid4().hex}}


class PddShop(CountingShop):
    """One Pinduoduo shop behind its gateway: every call is a form POST to ``/api/router`` whose MD5
    ``sign`` is checked with the app secret (china.md 1.2). ``pdd.goods.quantity.update`` sets the
    count (``update_type`` 1, >= 0) or adds to it (2; refused when the result would go below 0), with no
    idempotency key. Sales are not pushed: the service finds them with
    ``pdd.order.number.list.increment.get`` (by ``updated_at``, Beijing time, in pages) and reads one with
    ``pdd.order.information.get``. Product ids are PDD sku ids; ``goods_id`` is fixed."""

    platform = "pinduoduo"
    GOODS_ID = "388000000001"

    def __init__(self, name: str, client_id: str, client_secret: str, access_token: str) -> None:
        super().__init__(name)
        self.credentials = {"client_id": client_id, "client_secret": client_secret, "access_token": access_token}
        self.orders: list[dict] = []
        self.by_sn: dict[str, dict] = {}
        self.list_calls = 0
        self.detail_calls = 0

    def _order(self, product_id: str, sku: str, quantity: int) -> dict:
        from adapters.units import BEIJING

        n = next(self._order_ids)
        now = dt.datetime.now(BEIJING).strftime("%Y-%m-%d %H:%M:%S")
        order = {
            "order_sn": f"{dt.datetime.now(BEIJING):%y%m%d}-{900000000000000 + n}", "order_status": 1,
            "refund_status": 1, "confirm_status": 1, "group_status": 1, "after_sales_status": 0,
            "risk_control_status": 0, "trade_type": 0, "pay_type": "WEIXIN", "pay_amount": 39.9 * quantity,
            "goods_amount": 39.9 * quantity, "discount_amount": 0, "platform_discount": 0, "seller_discount": 0,
            "postage": 0, "created_time": now, "confirm_time": now, "pay_time": now, "shipping_time": "",
            "receive_time": "", "updated_at": now, "last_ship_time": "",
            "item_list": [{"goods_id": int(self.GOODS_ID), "sku_id": int(product_id), "outer_goods_id": sku,
                           "outer_id": sku, "goods_count": quantity, "goods_price": 39.9,
                           "goods_name": "绞股蓝茶", "goods_spec": "250g"}],
        }
        self.orders.append(order)
        self.by_sn[order["order_sn"]] = order
        return order

    def listing_ref(self, product_id: str) -> dict:
        return {"goods_id": self.GOODS_ID, "sku_id": product_id}

    def app(self) -> Starlette:
        from urllib.parse import parse_qsl

        from adapters.signing import sign_wrapped_md5, signatures_equal
        from adapters.units import from_beijing

        async def router(request: Request):
            params = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
            if not signatures_equal(sign_wrapped_md5({k: v for k, v in params.items() if k != "sign"},
                                                     self.credentials["client_secret"]), params.get("sign")):
                self.unauthorised += 1
                return JSONResponse(_pdd_error(10016, "签名错误", "sign_error"))
            if params.get("access_token") != self.credentials["access_token"]:
                self.unauthorised += 1
                return JSONResponse(_pdd_error(10019, "access_token已过期", "access_token_invalid"))
            kind = params.get("type")
            if kind == "pdd.order.number.list.increment.get":
                start, end = int(params["start_updated_at"]), int(params["end_updated_at"])
                page, size = int(params.get("page", 1)), int(params.get("page_size", 100))
                with self.lock:
                    self.list_calls += 1
                    hits = [o for o in self.orders if start <= from_beijing(o["updated_at"]).timestamp() <= end]
                rows = hits[(page - 1) * size: page * size]
                return JSONResponse({"order_sn_increment_get_response": {
                    "order_sn_list": rows, "total_count": len(hits), "has_next": page * size < len(hits)}})
            if kind == "pdd.order.information.get":
                with self.lock:
                    self.detail_calls += 1
                    order = self.by_sn.get(params.get("order_sn", ""))
                if order is None:
                    return JSONResponse(_pdd_error(50001, "订单不存在"))
                return JSONResponse({"order_info_get_response": {"order_info": order}})
            if kind == "pdd.refund.list.increment.get":
                return JSONResponse({"refund_increment_get_response": {"refund_list": [], "total_count": 0}})
            if kind == "pdd.goods.quantity.update":
                product_id, quantity = params.get("sku_id", ""), int(params.get("quantity", "0"))
                with self.lock:
                    if params.get("goods_id") != self.GOODS_ID or product_id not in self.stock:
                        return JSONResponse(_pdd_error(50002, "商品不存在"))
                    if params.get("update_type") == "2":
                        ok = self._add_count(product_id, quantity)
                    elif quantity < 0:
                        self.refused += 1
                        ok = False
                    else:
                        self._set_count(product_id, quantity)
                        ok = True
                if not ok:
                    return JSONResponse(_pdd_error(50001, "库存不足，更新失败"))
                return JSONResponse({"goods_quantity_update_response": {"is_success": True}})
            return JSONResponse(_pdd_error(10001, f"no fake for {kind}"))

        return Starlette(routes=[Route("/api/router", router, methods=["POST"])])


# -- Douyin ---------------------------------------------------------------------------------------------------

class DouyinShop(CountingShop):
    """One Douyin shop (抖店) behind its gateway: a POST per method (``/sku/syncStock``,
    ``/order/orderDetail``) whose query carries the HMAC-SHA256 ``sign`` (china.md 3.2), checked here.
    ``sku.syncStock`` sets the count (``incremental`` false) or adds ``stock_num`` to it (``incremental``
    true, ``idempotent_id`` required; an id already applied answers 40004/40010 "重复，操作已执行" and
    changes nothing; a result below 0 is refused). Each sale is a push message ``[{tag 101, msg_id,
    data: {p_id, shop_id}}]`` signed with ``event-sign`` = MD5(app_key + body + app_secret); the service
    fetches the order through ``/order/orderDetail``. Product ids are Douyin sku ids."""

    platform = "douyin"
    PRODUCT_ID = "3600000000000000001"

    def __init__(self, name: str, app_key: str, app_secret: str, access_token: str, shop_id: int) -> None:
        super().__init__(name)
        self.credentials = {"app_key": app_key, "app_secret": app_secret, "access_token": access_token}
        self.shop_id = shop_id
        self.by_id: dict[str, dict] = {}
        self.keys: set[str] = set()
        self.detail_calls = 0

    def listing_ref(self, product_id: str) -> dict:
        return {"product_id": self.PRODUCT_ID, "sku_id": product_id}

    def _order(self, product_id: str, sku: str, quantity: int) -> dict:
        n = next(self._order_ids)
        now = int(time.time())
        order_id = str(6920000000000000000 + n * 10)
        amount = 3990 * quantity
        order = {
            "order_id": order_id, "order_status": 2, "order_status_desc": "待发货", "main_status": 2,
            "order_amount": amount, "pay_amount": amount, "post_amount": 0, "modify_amount": 0,
            "promotion_amount": 0, "shop_cost_amount": 0, "platform_cost_amount": 0, "create_time": now,
            "pay_time": now, "update_time": now, "finish_time": 0, "ship_time": 0, "exp_ship_time": now + 172800,
            "logistics_info": [],
            "sku_order_list": [{
                "order_id": str(int(order_id) + 1), "parent_order_id": order_id, "order_status": 2,
                "product_id": int(self.PRODUCT_ID), "product_id_str": self.PRODUCT_ID, "sku_id": int(product_id),
                "out_product_id": "0", "out_sku_id": sku, "code": sku, "product_name": "绞股蓝茶 250g",
                "item_num": quantity, "origin_amount": 3990, "sum_amount": amount, "promotion_amount": 0,
                "pay_amount": amount, "post_amount": 0,
                "after_sale_info": {"after_sale_status": 0, "after_sale_type": 0, "refund_status": 0},
                "confirm_receipt_time": 0, "logistics_receipt_time": 0, "create_time": now, "pay_time": now,
                "update_time": now}],
        }
        self.by_id[order_id] = order
        return order

    def webhook(self, order: dict) -> tuple[str, bytes, dict[str, str]]:
        """The 101 (paid) push message naming the order, signed as Douyin signs pushes."""
        import hashlib

        body = json.dumps([{"tag": "101", "msg_id": uuid.uuid4().hex, "data": json.dumps(
            {"p_id": int(order["order_id"]), "shop_id": self.shop_id})}], separators=(",", ":")).encode()
        key, secret = self.credentials["app_key"], self.credentials["app_secret"]
        return "douyin", body, {"Content-Type": "application/json", "app-id": key,
                                "event-sign": hashlib.md5(key.encode() + body + secret.encode()).hexdigest()}

    def app(self) -> Starlette:
        from adapters.douyin.client import sign as douyin_sign

        def answer(code: int, msg: str, data=None, sub_code: str = "", sub_msg: str = "") -> JSONResponse:
            return JSONResponse({"code": code, "msg": msg, "sub_code": sub_code, "sub_msg": sub_msg,
                                 "log_id": uuid.uuid4().hex, "data": data if data is not None else {}})

        async def gateway(request: Request):
            q = dict(request.query_params)
            body = (await request.body()).decode()
            key, secret = self.credentials["app_key"], self.credentials["app_secret"]
            if q.get("app_key") != key or q.get("sign") != douyin_sign(key, secret, q.get("method", ""), body,
                                                                       q.get("timestamp", ""), q.get("v", "2")):
                self.unauthorised += 1
                return answer(40003, "签名无效", sub_code="isv.signature-invalid")
            if q.get("access_token") != self.credentials["access_token"]:
                self.unauthorised += 1
                return answer(40003, "access_token无效", sub_code="isv.access-token-no-existed")
            method = q.get("method")
            params = json.loads(body or "{}")
            if method == "sku.syncStock":
                product_id, number = str(params.get("sku_id")), int(params.get("stock_num", 0))
                with self.lock:
                    if str(params.get("product_id")) != self.PRODUCT_ID or product_id not in self.stock:
                        return answer(50002, "业务处理失败", sub_code="isv.business-failed:sku-not-found")
                    if params.get("incremental"):
                        idem = params.get("idempotent_id")
                        if not idem:
                            return answer(40004, "参数错误", sub_code="isv.parameter-invalid",
                                          sub_msg="idempotent_id required")
                        if idem in self.keys:
                            self.repeated_keys += 1
                            return answer(40004, "参数错误", sub_code="isv.parameter-invalid:40010",
                                          sub_msg="[idempotent_id]重复，操作已执行")
                        if not self._add_count(product_id, number):
                            return answer(50002, "库存不足", sub_code="isv.business-failed")
                        self.keys.add(idem)
                    elif number < 0:
                        self.refused += 1
                        return answer(40004, "参数错误", sub_code="isv.parameter-invalid")
                    else:
                        self._set_count(product_id, number)
                return answer(10000, "success")
            if method == "order.orderDetail":
                with self.lock:
                    self.detail_calls += 1
                    order = self.by_id.get(str(params.get("shop_order_id")))
                return answer(10000, "success", {"shop_order_detail": order} if order else {})
            if method in ("afterSale.List", "order.searchList"):
                return answer(10000, "success", {"list": [], "items": [], "total": 0, "page": 0, "size": 100})
            return answer(40004, f"no fake for {method}", sub_code="isv.parameter-invalid")

        return Starlette(routes=[Route("/{path:path}", gateway, methods=["POST"])])
