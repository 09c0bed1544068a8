"""Flash-sale figures against marketplace fakes that behave as the real platforms do (issue 17 point 5).
Prints ONE JSON document.

bench/flash_sale.py sells through the sandbox marketplace, the one adapter with compare-and-set, which
says nothing about the real platforms. Here the three shops are WooCommerce fakes (bench/_fakes.py),
each served over HTTPS on its own 127.0.0.1 port: ``GET products`` reads ``stock_quantity``, ``PUT
products/{id}`` overwrites it (a blind absolute set), the shop sells while its count is above 0, and
each sale is an ``order.created`` webhook signed as WooCommerce signs it, posted to the service at once
(the best case: a real site delivers through Action Scheduler, seconds later).

The service runs as ``make run`` runs it (uvicorn, workers inside, default settings) on SQLite, and on
PostgreSQL when one answers on 127.0.0.1:5432 (a database of its own, dropped after). It gets one sku
with ``--units`` units bound in the three shops; ``--buyers`` buyers arrive evenly over ``--seconds``
seconds, 60/25/15 % across the shops, and each buys 1 unit if the shop shows stock > 0 at that moment.

Per engine and policy (the default ``shared``; ``shares`` 70/20/10 via PUT /v1/stock/{sku}/allocation),
over ``--runs`` runs (medians quoted): units sold, oversold (sold - units), the time from a sale to
every other shop showing at most the units still unsold (p50/p99), the time from the sale's end until
every order is applied, and the read-then-PUT races seen by the shops (a PUT that landed after sales
made since the service read the count, and the units it put back on sale). The ceiling is 0 oversold.

Cases (``--cases``): ``woo-*`` three WooCommerce shops; ``mixed-*`` the live shop on Douyin, the second on
WooCommerce, the third on Pinduoduo (bench/_fakes.py PddShop, DouyinShop); ``*-receipt`` 200 more units
received halfway through the sale, so pushes happen while the shops sell.

Usage: .venv/bin/python bench/flash_sale_fakes.py [--engines sqlite,postgresql] [--cases ...] [--runs 3] ...
Targets 127.0.0.1 only; every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from bench._load import RawConnection  # noqa: E402
from bench._common import BenchDatabase, Uvicorn, median, percentile, pg_reachable, scalar  # noqa: E402
from bench._fakes import DouyinShop, LocalCertificate, PddShop, WooShop  # noqa: E402

ADMIN_TOKEN = "bench-admin-token-0123456789"
H = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SKU = "GYNO-TEA-250G"
SHOP_NAMES = ("live", "second", "third")
# The listing's id on each platform: a Woo product id, a PDD sku id, a Douyin sku id.
PRODUCTS = {"woocommerce": "1001", "pinduoduo": "1200000000001", "douyin": "1760000000000000001"}
# Which platform each of the three shops (live, second, third) is on.
LAYOUTS = {"woo": ("woocommerce",) * 3, "mixed": ("douyin", "woocommerce", "pinduoduo")}
# case -> (layout, policy, units received mid-sale); the receipt lands halfway through the sale, so
# pushes happen during it (under shares, every quota grows and every shop is raised while it sells).
CASES = {
    "woo-shared": ("woo", "shared", 0), "woo-shares": ("woo", "shares", 0),
    "woo-shares-receipt": ("woo", "shares", 200),
    "mixed-shared": ("mixed", "shared", 0), "mixed-shares": ("mixed", "shares", 0),
    "mixed-shares-receipt": ("mixed", "shares", 200),
}
PDD_POLL_INTERVAL_S = 1  # the Pinduoduo shop's poll_interval_s (its sales reach us only by polling)
# Service settings given only when a Pinduoduo shop is in the case (the defaults, 60 s lag and a 5 s
# scheduler tick, would hold every PDD order back a minute): poll windows stop 2 s short of now.
PDD_SERVICE_ENV = {"COOPSYNC_POLL_LAG_S": "2", "COOPSYNC_SCHEDULER_TICK_S": "0.5"}
BUYER_WEIGHTS = (0.60, 0.25, 0.15)
SHARES = (70, 20, 10)
INITIAL_PUSH_S = 30.0  # bound on waiting for the first figures to reach the shops
APPLY_BOUND_S = 60.0  # bound on waiting, after the sale, for every order to be applied
QUIET_S = 3.0  # after every order is applied: how long the shops' figures are watched for settling


async def wait_for(predicate, timeout_s: float, step: float = 0.05) -> float | None:
    """Seconds until ``predicate()`` held, or None when it did not within ``timeout_s``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if await predicate():
            return time.monotonic() - start
        await asyncio.sleep(step)
    return None


def store_payload(shop, tag: str, secret: str, key: str, key_secret: str) -> dict:
    if shop.platform == "woocommerce":
        return {"platform": "woocommerce", "name": shop.name, "external_shop_id": shop.name,
                "credentials": {"consumer_key": key, "consumer_secret": key_secret}, "webhook_secret": secret,
                "settings": {"base_url": shop.url, "poll_interval_s": 0}}
    if shop.platform == "pinduoduo":
        return {"platform": "pinduoduo", "name": shop.name, "external_shop_id": shop.name,
                "credentials": shop.credentials,
                "settings": {"base_url": shop.url + "/api/router", "poll_interval_s": PDD_POLL_INTERVAL_S,
                             "poll_overlap_s": 5}}
    return {"platform": "douyin", "name": shop.name, "external_shop_id": str(shop.shop_id),
            "credentials": shop.credentials, "webhook_secret": shop.credentials["app_secret"],
            "settings": {"base_url": shop.url, "poll_interval_s": 0}}


def make_shops(layout: str, tag: str, secret: str, key: str, key_secret: str) -> list:
    shops = []
    for i, (name, platform_) in enumerate(zip(SHOP_NAMES, LAYOUTS[layout])):
        if platform_ == "woocommerce":
            shops.append(WooShop(f"{name}-{tag}", secret, key, key_secret))
        elif platform_ == "pinduoduo":
            shops.append(PddShop(f"{name}-{tag}", f"pdd-client-{tag}", f"pdd-secret-{tag}", f"pdd-token-{tag}"))
        else:
            shops.append(DouyinShop(f"{name}-{tag}", f"7{i}{int(tag, 16):017d}"[:19], f"dy-secret-{tag}",
                                    f"dy-token-{tag}", 100000 + i))
    return shops


async def setup(service_url: str, shops: list, units: int, policy: str, secret: str,
                key: str, key_secret: str, tag: str) -> list[int]:
    async with httpx.AsyncClient(base_url=service_url, headers=H, timeout=30) as c:
        r = await c.post("/v1/skus", json={"sku": SKU, "name": "Gynostemma tea 250 g"})
        assert r.status_code == 201, r.text
        r = await c.post("/v1/stock/receipts", json={"sku": SKU, "quantity": units, "member_id": "m-01"})
        assert r.status_code == 201, r.text
        store_ids = []
        for shop in shops:
            r = await c.post("/v1/stores", json=store_payload(shop, tag, secret, key, key_secret))
            assert r.status_code == 201, r.text
            store_ids.append(r.json()["id"])
            product = PRODUCTS[shop.platform]
            r = await c.put(f"/v1/stores/{store_ids[-1]}/listings", json=[
                {"external_sku_key": product, "sku": SKU, "listing_ref": shop.listing_ref(product)}])
            assert r.status_code == 200, r.text
        if policy == "shares":
            r = await c.put(f"/v1/stock/{SKU}/allocation", json={
                "mode": "shares", "shares": {str(s): w for s, w in zip(store_ids, SHARES)}})
            assert r.status_code == 200, r.text
    return store_ids


def expected_start(units: int, policy: str) -> list[int]:
    if policy == "shared":
        return [units] * len(SHOP_NAMES)
    from app.domain.allocation import largest_remainder

    parts = largest_remainder(units, dict(enumerate(SHARES)))
    return [parts[i] for i in range(len(SHOP_NAMES))]


def one_sale(engine: str, case: str, args) -> dict:
    import uvloop

    db = BenchDatabase(engine, "fakesale")  # migrations run their own event loop: before ours starts
    try:
        return uvloop.run(_sale(db, engine, case, args))
    finally:
        db.drop()


async def _sale(db: BenchDatabase, engine: str, case: str, args) -> dict:
    layout, policy, receipt_units = CASES[case]
    rng = random.Random(args.seed)
    tag = uuid.uuid4().hex[:6]
    secret, key, key_secret = f"woo-secret-{tag}", f"ck_{tag}", f"cs_{tag}"
    cert = LocalCertificate()
    shops = make_shops(layout, tag, secret, key, key_secret)
    products = [PRODUCTS[s.platform] for s in shops]
    service = None
    try:
        for shop, product in zip(shops, products):
            shop.add_product(product, 0)
            shop.serve(cert)
        # As `make run` runs it: default workers, poll, debounce; only the database, the admin token and
        # the trust of the fakes' certificate are given (and, with a Pinduoduo shop, a short poll lag).
        env = {"COOPSYNC_DATABASE_URL": db.url, "COOPSYNC_ADMIN_TOKEN": ADMIN_TOKEN, "SSL_CERT_FILE": cert.certfile}
        if any(s.platform == "pinduoduo" for s in shops):
            env.update(PDD_SERVICE_ENV)
        service = Uvicorn("app.main:app_factory", env, factory=True)
        store_ids = await setup(service.url, shops, args.units, policy, secret, key, key_secret, tag)
        start_figures = expected_start(args.units, policy)

        def figures() -> list[int]:
            return [s.count(p) for s, p in zip(shops, products)]

        async def pushed_in() -> bool:
            return figures() == start_figures

        if await wait_for(pushed_in, INITIAL_PUSH_S) is None:
            raise RuntimeError(f"initial pushes did not land: {figures()} vs {start_figures}")
        base_puts = [s.puts for s in shops]
        base_gets = [s.gets for s in shops]

        sales: list[tuple[float, int, int]] = []  # (monotonic, shop index, quantity)
        acks: list[float] = []
        failures: list[str] = []
        inflight: set[asyncio.Task] = set()
        # The raw keep-alive client of bench/_load.py (as bench/flash_sale.py): httpx spends about a core
        # on 150 requests per second, which would make the bench, not the service, the bottleneck.
        port = int(service.url.rsplit(":", 1)[1])
        loop = asyncio.get_running_loop()
        pool: asyncio.Queue = asyncio.Queue()
        for _ in range(args.connections):
            pool.put_nowait((await loop.create_connection(RawConnection, "127.0.0.1", port))[1])

        async def deliver(shop_index: int, order: dict) -> None:
            notice = shops[shop_index].webhook(order)
            if notice is None:
                return  # Pinduoduo: the service finds the order by polling
            platform_, body, headers = notice
            head = (f"POST /webhooks/{platform_}/{store_ids[shop_index]} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                    f"Content-Length: {len(body)}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                    + "\r\n").encode()
            conn = await pool.get()
            if conn.closed:  # uvicorn closes a keep-alive connection idle for 5 s: open another
                conn = (await loop.create_connection(RawConnection, "127.0.0.1", port))[1]
            sent = time.monotonic()
            try:
                status, answer = await asyncio.wait_for(conn.request(head + body), 30)
            except (ConnectionError, RuntimeError, asyncio.TimeoutError) as exc:
                failures.append(repr(exc))
                conn.transport.close()
                pool.put_nowait((await loop.create_connection(RawConnection, "127.0.0.1", port))[1])
                return
            pool.put_nowait(conn)
            if status == 200:
                acks.append(time.monotonic() - sent)
            else:
                failures.append(f"{status} {answer[:120]!r}")

        received: list[float] = []  # the moment the mid-sale receipt was answered

        async def receive_mid_sale() -> None:
            async with httpx.AsyncClient(base_url=service.url, headers=H, timeout=30) as c:
                r = await c.post("/v1/stock/receipts", json={"sku": SKU, "quantity": receipt_units,
                                                             "member_id": "m-02"})
            if r.status_code != 201:
                failures.append(f"receipt {r.status_code} {r.text[:120]}")
            else:
                received.append(time.monotonic())

        began = time.monotonic()
        interval = args.seconds / args.buyers
        receipt_at = args.buyers // 2 if receipt_units else None
        for buyer in range(args.buyers):
            delay = began + buyer * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if buyer == receipt_at:
                task = asyncio.create_task(receive_mid_sale())
                inflight.add(task)
                task.add_done_callback(inflight.discard)
            shop_index = rng.choices(range(len(shops)), weights=BUYER_WEIGHTS)[0]
            bought = shops[shop_index].sell(products[shop_index], SKU, 1)
            if bought is None:
                continue
            moment, order = bought
            sales.append((moment, shop_index, 1))
            task = asyncio.create_task(deliver(shop_index, order))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
        sale_end = time.monotonic()
        sale_wall = sale_end - began
        if inflight:
            await asyncio.wait(list(inflight), timeout=APPLY_BOUND_S)
        while not pool.empty():
            pool.get_nowait().transport.close()

        sold = sum(q for _, _, q in sales)
        units = args.units + (receipt_units if received else 0)

        async def all_applied() -> bool:
            orders = await scalar(db, "SELECT count(*) FROM sales_order")
            pending = await scalar(db, "SELECT count(*) FROM inbox WHERE status = 'pending'")
            return orders >= len(sales) and pending == 0

        waited = await wait_for(all_applied, max(0.0, APPLY_BOUND_S - (time.monotonic() - sale_end)))
        applied_after_s = None if waited is None else round(time.monotonic() - sale_end, 3)
        # Let the last pushes land, then read what the shops and the service ended with.
        await asyncio.sleep(QUIET_S)
        orders = await scalar(db, "SELECT count(*) FROM sales_order")
        reserved = await scalar(db, "SELECT reserved FROM sku")
        on_hand = await scalar(db, "SELECT on_hand FROM sku")
        flagged = await scalar(db, "SELECT count(*) FROM sales_order WHERE oversold")
        failed_inbox = await scalar(db, "SELECT count(*) FROM inbox WHERE status = 'failed'")

        # Sale -> every other shop updated: after each sale, the first moment every other shop shows at
        # most the units still unsold (what it may offer without a second sale of the same unit).
        latencies, never, covered = [], 0, 0
        cumulative = 0
        for t, shop_index, quantity in sales:
            cumulative += quantity
            left = max(0, args.units + (receipt_units if received and t >= received[0] else 0) - cumulative)
            moments = [s.first_at_or_below(products[i], t, left) for i, s in enumerate(shops) if i != shop_index]
            if any(m is None for m in moments):
                never += 1
                continue
            latency = max(moments) - t
            covered += latency == 0
            latencies.append(latency)
        return {
            "engine": engine, "case": case, "shops": [s.platform for s in shops], "policy": policy,
            "sale_seconds": round(sale_wall, 2), "units": units,
            "receipt_mid_sale_s": round(received[0] - began, 2) if received else None,
            "units_sold": sold, "units_oversold": sold - units,
            "sold_per_shop": [s.sold[p] for s, p in zip(shops, products)],
            "orders_in_service": orders, "each_sale_one_order": orders == len(sales),
            "orders_applied_after_sale_end_s": applied_after_s,
            "reserved_in_service": reserved, "on_hand_in_service": on_hand,
            "orders_flagged_oversold": flagged, "inbox_failed": failed_inbox,
            "webhooks_acknowledged": len(acks), "webhook_failures": len(failures),
            "webhook_failure_samples": failures[:3],
            "ack_latency_ms": {"p50": _ms(percentile(acks, 50)), "p99": _ms(percentile(acks, 99))},
            "sale_to_other_shops_at_or_below_unsold_ms": {
                "p50": _ms(percentile(latencies, 50)), "p99": _ms(percentile(latencies, 99)),
                "sales_already_covered": covered, "sales_never_covered": never},
            "shop_reads": sum(s.gets for s in shops) - sum(base_gets),
            "shop_puts": sum(s.puts for s in shops) - sum(base_puts),
            "read_then_put_races": sum(s.raced_puts for s in shops),
            "sales_overwritten_by_put": sum(s.overwritten_sales for s in shops),
            "shop_deltas": sum(s.deltas for s in shops),
            "douyin_repeated_idempotent_ids": sum(s.repeated_keys for s in shops),
            "shop_updates_refused": sum(s.refused for s in shops),
            "final_shop_figures": figures(),
            "available_in_service_at_end": on_hand - reserved,
            # Shops still offering units the service no longer has, QUIET_S after every order was applied,
            # and how often a shop's figure went UP after the sale ended (a raise of a sold-out shop).
            "units_on_offer_beyond_available_at_end": max(0, sum(figures()) - max(0, on_hand - reserved)),
            "shop_raises_after_sale_end": sum(_raises_after(s.figures[p], sale_end) for s, p in zip(shops, products)),
            "unauthorised_calls": sum(s.unauthorised for s in shops),
        }
    finally:
        if service is not None:
            service.stop()
        for shop in shops:
            shop.stop()
        cert.cleanup()


def _raises_after(figures: list[tuple[float, int]], since: float) -> int:
    return sum(1 for (t0, a), (t1, b) in zip(figures, figures[1:]) if t1 > since and b > a)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def summarise(runs: list[dict]) -> dict:
    def med(path: list[str]):
        values = []
        for run in runs:
            value = run
            for part in path:
                value = value.get(part) if isinstance(value, dict) else None
            values.append(value)
        return median(values)

    return {
        "runs": len(runs),
        "median": {
            "units_sold": med(["units_sold"]), "units_oversold": med(["units_oversold"]),
            "sale_to_other_shops_p50_ms": med(["sale_to_other_shops_at_or_below_unsold_ms", "p50"]),
            "sale_to_other_shops_p99_ms": med(["sale_to_other_shops_at_or_below_unsold_ms", "p99"]),
            "orders_applied_after_sale_end_s": med(["orders_applied_after_sale_end_s"]),
            "read_then_put_races": med(["read_then_put_races"]),
            "sales_overwritten_by_put": med(["sales_overwritten_by_put"]),
            "units_on_offer_beyond_available_at_end": med(["units_on_offer_beyond_available_at_end"]),
            "shop_raises_after_sale_end": med(["shop_raises_after_sale_end"]),
            "shop_puts": med(["shop_puts"]), "shop_deltas": med(["shop_deltas"]),
        },
        "oversold_per_run": [r["units_oversold"] for r in runs],
        "max_oversold": max(r["units_oversold"] for r in runs),
        "every_sale_one_order_in_every_run": all(r["each_sale_one_order"] for r in runs),
        "each_run": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of: {', '.join(CASES)}")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--buyers", type=int, default=5000)
    parser.add_argument("--units", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections carrying webhooks")
    parser.add_argument("--seed", type=int, default=20261129)
    args = parser.parse_args()
    notes = ["woo: 3 WooCommerce fakes (blind absolute set; GET then PUT by the service), webhooks sent at "
             "once after each sale (best case; real sites deliver seconds later through Action Scheduler)",
             "mixed: live = Douyin (sku.syncStock incremental + idempotent_id; a signed 101 push per sale, the "
             "order read through /order/orderDetail), second = WooCommerce, third = Pinduoduo (gateway form "
             "POST with MD5 sign; pdd.goods.quantity.update update_type 1/2; sales found by polling "
             f"pdd.order.number.list.increment.get every {PDD_POLL_INTERVAL_S} s, service run with "
             f"{PDD_SERVICE_ENV})",
             "*-receipt: 200 more units received halfway through the sale (POST /v1/stock/receipts); units and "
             "oversold count them",
             "sale_to_other_shops: after each sale, first moment every OTHER shop shows <= units still unsold; "
             "0 when they already did (sales_already_covered)",
             "ceiling: 0 units oversold; no throughput ceiling measured here (see bench/flash_sale.py)"]
    cases = []
    started = time.monotonic()
    for engine in [e.strip() for e in args.engines.split(",") if e.strip()]:
        if engine == "postgresql" and not pg_reachable():
            notes.append("postgresql skipped: nothing answers on 127.0.0.1:5432")
            continue
        for case in [c.strip() for c in args.cases.split(",") if c.strip()]:
            layout, policy, receipt_units = CASES[case]
            runs = []
            for run in range(args.runs):
                args_run = argparse.Namespace(**{**vars(args), "seed": args.seed + run})
                runs.append(one_sale(engine, case, args_run))
            cases.append({"engine": engine, "case": case, "shops": list(LAYOUTS[layout]), "policy": policy,
                          "receipt_mid_sale": receipt_units, **summarise(runs)})
    print(json.dumps({
        "benchmark": "flash_sale_fakes",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "setup": {"layouts": LAYOUTS, "cases": CASES, "buyers": args.buyers, "units": args.units,
                  "seconds": args.seconds, "buyer_split": BUYER_WEIGHTS, "shares": SHARES,
                  "runs_per_case": args.runs, "service": "uvicorn app.main:app_factory, workers inside, defaults"},
        "ceiling": {"units_oversold": 0},
        "cases": cases, "wall_s": round(time.monotonic() - started, 1), "notes": notes,
    }, indent=2))


if __name__ == "__main__":
    main()
