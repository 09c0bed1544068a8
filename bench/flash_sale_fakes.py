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

Usage: .venv/bin/python bench/flash_sale_fakes.py [--engines sqlite,postgresql] [--runs 3] ...
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
from bench._fakes import LocalCertificate, WooShop  # noqa: E402

ADMIN_TOKEN = "bench-admin-token-0123456789"
H = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SKU = "GYNO-TEA-250G"
PRODUCT = "1001"
SHOP_NAMES = ("live", "second", "third")
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


async def setup(service_url: str, shops: list[WooShop], units: int, policy: str, secret: str,
                key: str, key_secret: str) -> list[int]:
    async with httpx.AsyncClient(base_url=service_url, headers=H, timeout=30) as c:
        r = await c.post("/v1/skus", json={"sku": SKU, "name": "Gynostemma tea 250 g"})
        assert r.status_code == 201, r.text
        r = await c.post("/v1/stock/receipts", json={"sku": SKU, "quantity": units, "member_id": "m-01"})
        assert r.status_code == 201, r.text
        store_ids = []
        for shop in shops:
            r = await c.post("/v1/stores", json={
                "platform": "woocommerce", "name": shop.name, "external_shop_id": shop.name,
                "credentials": {"consumer_key": key, "consumer_secret": key_secret}, "webhook_secret": secret,
                "settings": {"base_url": shop.url, "poll_interval_s": 0}})
            assert r.status_code == 201, r.text
            store_ids.append(r.json()["id"])
            r = await c.put(f"/v1/stores/{store_ids[-1]}/listings", json=[
                {"external_sku_key": PRODUCT, "sku": SKU, "listing_ref": {"product_id": PRODUCT}}])
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


def one_sale(engine: str, policy: str, args) -> dict:
    import uvloop

    db = BenchDatabase(engine, "fakesale")  # migrations run their own event loop: before ours starts
    try:
        return uvloop.run(_sale(db, engine, policy, args))
    finally:
        db.drop()


async def _sale(db: BenchDatabase, engine: str, policy: str, args) -> dict:
    rng = random.Random(args.seed)
    tag = uuid.uuid4().hex[:6]
    secret, key, key_secret = f"woo-secret-{tag}", f"ck_{tag}", f"cs_{tag}"
    cert = LocalCertificate()
    shops = [WooShop(f"{name}-{tag}", secret, key, key_secret) for name in SHOP_NAMES]
    service = None
    try:
        for shop in shops:
            shop.add_product(PRODUCT, 0)
            shop.serve(cert)
        # As `make run` runs it: default workers, poll, debounce; only the database, the admin token and
        # the trust of the fakes' certificate are given.
        service = Uvicorn("app.main:app_factory", {
            "COOPSYNC_DATABASE_URL": db.url, "COOPSYNC_ADMIN_TOKEN": ADMIN_TOKEN, "SSL_CERT_FILE": cert.certfile},
            factory=True)
        store_ids = await setup(service.url, shops, args.units, policy, secret, key, key_secret)
        start_figures = expected_start(args.units, policy)

        async def pushed_in() -> bool:
            return [s.count(PRODUCT) for s in shops] == start_figures

        if await wait_for(pushed_in, INITIAL_PUSH_S) is None:
            raise RuntimeError(f"initial pushes did not land: {[s.count(PRODUCT) for s in shops]} vs {start_figures}")
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
            body, headers = shops[shop_index].webhook(order)
            head = (f"POST /webhooks/woocommerce/{store_ids[shop_index]} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
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

        began = time.monotonic()
        interval = args.seconds / args.buyers
        for buyer in range(args.buyers):
            delay = began + buyer * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            shop_index = rng.choices(range(len(shops)), weights=BUYER_WEIGHTS)[0]
            bought = shops[shop_index].sell(PRODUCT, SKU, 1)
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
            left = max(0, args.units - cumulative)
            moments = [s.first_at_or_below(PRODUCT, t, left) for i, s in enumerate(shops) if i != shop_index]
            if any(m is None for m in moments):
                never += 1
                continue
            latency = max(moments) - t
            covered += latency == 0
            latencies.append(latency)
        return {
            "engine": engine, "policy": policy, "sale_seconds": round(sale_wall, 2),
            "units_sold": sold, "units_oversold": sold - args.units,
            "sold_per_shop": [s.sold[PRODUCT] for s in shops],
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
            "final_shop_figures": [s.count(PRODUCT) for s in shops],
            "available_in_service_at_end": on_hand - reserved,
            # Shops still offering units the service no longer has, QUIET_S after every order was applied,
            # and how often a shop's figure went UP after the sale ended (a raise of a sold-out shop).
            "units_on_offer_beyond_available_at_end": max(0, sum(s.count(PRODUCT) for s in shops) - max(0, on_hand - reserved)),
            "shop_raises_after_sale_end": sum(_raises_after(s.figures[PRODUCT], sale_end) for s in shops),
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
        },
        "oversold_per_run": [r["units_oversold"] for r in runs],
        "max_oversold": max(r["units_oversold"] for r in runs),
        "every_sale_one_order_in_every_run": all(r["each_sale_one_order"] for r in runs),
        "each_run": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--policies", default="shared,shares")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--buyers", type=int, default=5000)
    parser.add_argument("--units", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections carrying webhooks")
    parser.add_argument("--seed", type=int, default=20261129)
    args = parser.parse_args()
    notes = ["shops: 3 WooCommerce fakes (blind absolute set; GET then PUT by the service), webhooks sent at "
             "once after each sale (best case; real sites deliver seconds later through Action Scheduler)",
             "sale_to_other_shops: after each sale, first moment every OTHER shop shows <= units still unsold; "
             "0 when they already did (sales_already_covered)",
             "ceiling: 0 units oversold; no throughput ceiling measured here (see bench/flash_sale.py)"]
    cases = []
    started = time.monotonic()
    for engine in [e.strip() for e in args.engines.split(",") if e.strip()]:
        if engine == "postgresql" and not pg_reachable():
            notes.append("postgresql skipped: nothing answers on 127.0.0.1:5432")
            continue
        for policy in [p.strip() for p in args.policies.split(",") if p.strip()]:
            runs = []
            for run in range(args.runs):
                args_run = argparse.Namespace(**{**vars(args), "seed": args.seed + run})
                runs.append(one_sale(engine, policy, args_run))
            cases.append({"engine": engine, "policy": policy, **summarise(runs)})
    print(json.dumps({
        "benchmark": "flash_sale_fakes",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "setup": {"shops": ["woocommerce"] * 3, "buyers": args.buyers, "units": args.units,
                  "seconds": args.seconds, "buyer_split": BUYER_WEIGHTS, "shares": SHARES,
                  "runs_per_case": args.runs, "service": "uvicorn app.main:app_factory, workers inside, defaults"},
        "ceiling": {"units_oversold": 0},
        "cases": cases, "wall_s": round(time.monotonic() - started, 1), "notes": notes,
    }, indent=2))


if __name__ == "__main__":
    main()
