"""Flash-sale figures (issue 7): prints ONE JSON document.

Three sandbox shops (a live-stream shop and two others) sell one cooperative sku of ``--units``
units to ``--buyers`` buyers arriving evenly over ``--seconds`` seconds. Each shop sells only
against its own stock figure, which only coopsync sets, so a figure that is stale when a buyer
arrives can sell a unit twice: that is what "oversold" counts (units sold in all shops beyond the
units there were). Every sale's webhook goes to the real service (uvicorn subprocess, workers on)
over HTTP; ``--dup-rate`` of them are delivered twice. The shops are served over HTTP from a
thread of this process, and every change of a shop's figure is time-stamped, so the time from a
sale to every shop's figure reflecting it can be read off afterwards.

Per engine (SQLite, PostgreSQL) and allocation (on: shares 70/20/10 with compare-and-set pushes;
off: every shop offered the whole available quantity, as most connectors do) it reports units
oversold, sale-to-every-shop-updated latency (p50, p99), and checks that every sale became exactly
one order. Once per engine it also measures acknowledgements per second of signed webhooks
against a bare FastAPI endpoint in the same run (closed loop, bench/_ceiling.py), as a ratio.

Usage: python bench/flash_sale.py [--engines sqlite,postgresql] [--buyers 5000] [--units 500] ...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.routing import Mount  # noqa: E402

from adapters.sandbox.market import SandboxMarket  # noqa: E402
from adapters.sandbox.server import ServerThread, create_app as market_app  # noqa: E402
from app.domain.allocation import ShopDemand, allocate  # noqa: E402
from bench._load import RawConnection  # noqa: E402
from bench._common import BenchDatabase, Uvicorn, median, percentile, pg_reachable, scalar  # noqa: E402

ADMIN_TOKEN = "bench-admin-token-0123456789"
H = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SKU = "GYNO-TEA-250G"
SECRET = "flash-secret"
SHOP_NAMES = ("live", "tmall", "pdd")
BUYER_WEIGHTS = (0.6, 0.25, 0.15)  # where buyers arrive: most watch the live stream
SHARES = (70, 20, 10)  # allocation on: what each shop is offered of the available stock
SETTLE_S = 40.0  # seconds to wait after the sale for webhooks and pushes to settle


def market_thread(markets: list[SandboxMarket]) -> ServerThread:
    """The three shops over HTTP: one server in a thread, one mount per shop."""
    return ServerThread(Starlette(routes=[Mount(f"/{m.name}", app=market_app(m)) for m in markets]))


class Timeline:
    """Every change of each shop's figure, time-stamped (monotonic seconds)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.figures: dict[str, list[tuple[float, int]]] = {}
        self.pushes = 0

    def instrument(self, market: SandboxMarket) -> None:
        self.figures[market.name] = [(time.monotonic(), market.stock("tea"))]
        set_batch, sell = market.set_stock_batch, market.sell

        def recording_set(items):
            errors = set_batch(items)
            if any(e is None for e in errors):
                with self.lock:
                    self.pushes += 1
                    self.figures[market.name].append((time.monotonic(), market.stock("tea")))
            return errors

        def recording_sell(key, quantity=1, **kw):
            order = sell(key, quantity, **kw)
            if order is not None:
                with self.lock:
                    self.figures[market.name].append((time.monotonic(), market.stock("tea")))
            return order

        market.set_stock_batch = recording_set
        market.sell = recording_sell

    def first_at_or_below(self, name: str, since: float, limit: int) -> float | None:
        """The first moment at or after ``since`` when shop ``name`` showed at most ``limit``."""
        with self.lock:
            figures = list(self.figures[name])
        before = [value for t, value in figures if t <= since]
        if before and before[-1] <= limit:
            return since
        return next((t for t, value in figures if t > since and value <= limit), None)


async def setup(service_url: str, market_url: str, markets: list[SandboxMarket], units: int,
                allocation: bool) -> list[int]:
    async with httpx.AsyncClient(base_url=service_url, headers=H, timeout=30) as c:
        assert (await c.post("/v1/skus", json={"sku": SKU, "name": "Gynostemma tea 250 g"})).status_code == 201
        r = await c.post("/v1/stock/receipts", json={"sku": SKU, "quantity": units, "member_id": "m-01"})
        assert r.status_code == 201, r.text
        store_ids = []
        for market in markets:
            r = await c.post("/v1/stores", json={
                "platform": "sandbox", "name": market.name, "external_shop_id": market.name, "webhook_secret": SECRET,
                "settings": {"base_url": f"{market_url}/{market.name}", "poll_interval_s": 0}})
            assert r.status_code == 201, r.text
            store_ids.append(r.json()["id"])
            r = await c.put(f"/v1/stores/{store_ids[-1]}/listings", json=[{"external_sku_key": "tea", "sku": SKU}])
            assert r.status_code == 200, r.text
        if allocation:
            r = await c.put(f"/v1/stock/{SKU}/allocation", json={
                "mode": "shares", "shares": {str(s): w for s, w in zip(store_ids, SHARES)}})
            assert r.status_code == 200, r.text
    return store_ids


def expected_figures(available: int, store_ids: list[int], allocation: bool) -> list[int]:
    demands = [ShopDemand(i, s) for i, s in enumerate(store_ids)]
    policy = {"mode": "shares", "shares": {str(s): w for s, w in zip(store_ids, SHARES)}} if allocation else None
    offers = allocate(available, demands, policy)
    return [offers[i] for i in range(len(store_ids))]


async def wait_for(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(0.1)
    return False


def sale(engine: str, allocation: bool, args) -> dict:
    import uvloop

    db = BenchDatabase(engine, "flash")  # migrations run their own event loop: before ours starts
    try:
        return uvloop.run(_sale(db, engine, allocation, args))
    finally:
        db.drop()


async def _sale(db: BenchDatabase, engine: str, allocation: bool, args) -> dict:
    rng = random.Random(args.seed)
    tag = uuid.uuid4().hex[:6]
    markets = [SandboxMarket(f"{name}-{tag}", SECRET) for name in SHOP_NAMES]
    for market in markets:
        market.add_listing("tea", price_minor=3990, stock=0, merchant_sku=SKU)
    timeline = Timeline()
    for market in markets:
        timeline.instrument(market)
    shops = market_thread(markets)
    service = None
    try:
        service = Uvicorn("app.main:app_factory", {
            "COOPSYNC_DATABASE_URL": db.url, "COOPSYNC_ADMIN_TOKEN": ADMIN_TOKEN, "COOPSYNC_LOG_LEVEL": "ERROR",
            "COOPSYNC_WORKERS": "true", "COOPSYNC_SCHEDULER_TICK_S": "3600", "COOPSYNC_WORKER_POLL_S": "0.02",
            "COOPSYNC_WORKER_CONCURRENCY": str(args.worker_concurrency)}, factory=True)
        store_ids = await setup(service.url, shops.url, markets, args.units, allocation)
        start_figures = expected_figures(args.units, store_ids, allocation)

        async def pushed_in() -> bool:
            return [m.stock("tea") for m in markets] == start_figures

        if not await wait_for(pushed_in, 30):
            raise RuntimeError(f"initial pushes did not land: {[m.stock('tea') for m in markets]} vs {start_figures}")

        sales: list[tuple[float, int, int]] = []  # (monotonic time, shop index, quantity)
        acks: list[float] = []
        failures: list[str] = []
        # The raw keep-alive client of bench/_load.py: httpx spends about a core on 150 requests per
        # second here, which would make the buyers' side, not the service, the bottleneck.
        pool: asyncio.Queue = asyncio.Queue()
        port = int(service.url.rsplit(":", 1)[1])
        for _ in range(args.connections):
            _, conn = await asyncio.get_running_loop().create_connection(RawConnection, "127.0.0.1", port)
            pool.put_nowait(conn)
        inflight: set[asyncio.Task] = set()

        async def deliver(shop: int, delivery, duplicate: bool) -> None:
            path = f"/webhooks/sandbox/{store_ids[shop]}"
            head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {len(delivery.body)}\r\n"
                    + "".join(f"{k}: {v}\r\n" for k, v in delivery.headers.items()) + "\r\n").encode()
            for _ in range(2 if duplicate else 1):
                # A platform delivers again until it is answered: a keep-alive connection the server
                # closed while it sat idle (uvloop raises RuntimeError writing to it) is replaced and the
                # delivery sent once more; it was never lost, only not yet sent.
                conn = await pool.get()
                for attempt in range(4):
                    sent = time.monotonic()
                    try:
                        status, body = await asyncio.wait_for(conn.request(head + delivery.body), 30)
                    except (ConnectionError, RuntimeError, asyncio.TimeoutError) as exc:
                        conn.transport.close()
                        # Again on a fresh connection (the pool's others may have idled out as well).
                        _, conn = await asyncio.get_running_loop().create_connection(RawConnection, "127.0.0.1", port)
                        if attempt == 3:
                            failures.append(repr(exc))
                            pool.put_nowait(conn)
                        continue
                    pool.put_nowait(conn)
                    if status == 200:
                        acks.append(time.monotonic() - sent)
                    else:
                        failures.append(f"{status} {body[:100]!r}")
                    break

        began = time.monotonic()
        interval = args.seconds / args.buyers
        for buyer in range(args.buyers):
            due = began + buyer * interval
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            shop = rng.choices(range(len(markets)), weights=BUYER_WEIGHTS)[0]
            quantity = 1 if rng.random() < 0.85 else 2
            order = markets[shop].sell("tea", quantity)
            if order is None:
                continue
            sales.append((time.monotonic(), shop, quantity))
            for delivery in markets[shop].take_deliveries():
                task = asyncio.create_task(deliver(shop, delivery, rng.random() < args.dup_rate))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
        sale_wall = time.monotonic() - began
        await asyncio.gather(*inflight)
        while not pool.empty():
            pool.get_nowait().transport.close()

        sold = sum(q for _, _, q in sales)

        final = expected_figures(max(0, args.units - sold), store_ids, allocation)

        async def settled() -> bool:
            done = await scalar(db, "SELECT count(*) FROM inbox WHERE status = 'done'")
            return done >= len(sales) and [m.stock("tea") for m in markets] == final

        await wait_for(settled, SETTLE_S)
        orders = await scalar(db, "SELECT count(*) FROM sales_order")
        inbox = {status: await scalar(db, f"SELECT count(*) FROM inbox WHERE status = '{status}'")
                 for status in ("pending", "done", "failed")}
        reserved = await scalar(db, "SELECT reserved FROM sku")
        oversold_lines = await scalar(db, "SELECT count(*) FROM sales_order WHERE oversold")

        # Sale-to-every-shop-updated: after each sale, the first moment every shop's own figure is at
        # or below what it should offer given the sales known so far.
        latencies = []
        never = 0
        cumulative = 0
        for t, shop, quantity in sales:
            cumulative += quantity
            targets = expected_figures(max(0, args.units - cumulative), store_ids, allocation)
            moments = [timeline.first_at_or_below(m.name, t, targets[i]) for i, m in enumerate(markets)]
            if any(m is None for m in moments):
                never += 1
                continue
            latencies.append(max(moments) - t)
        return {
            "engine": engine, "allocation": "on" if allocation else "off",
            "buyers": args.buyers, "units": args.units, "sale_seconds": round(sale_wall, 2),
            "sales": len(sales), "units_sold": sold, "units_oversold": max(0, sold - args.units),
            "orders_in_service": orders, "each_sale_one_order": orders == len(sales), "inbox": inbox,
            "reserved_in_service": reserved, "orders_flagged_oversold": oversold_lines,
            "webhooks_acknowledged": len(acks), "webhook_failures": len(failures),
            "webhook_failure_samples": sorted(set(failures))[:5],
            "ack_latency_ms": {"p50": _ms(percentile(acks, 50)), "p99": _ms(percentile(acks, 99))},
            "sale_to_all_shops_updated_ms": {"p50": _ms(percentile(latencies, 50)),
                                             "p99": _ms(percentile(latencies, 99)),
                                             "sales_never_reflected": never},
            "successful_pushes": timeline.pushes,
            "final_shop_figures": [m.stock("tea") for m in markets],
        }
    finally:
        if service is not None:
            service.stop()
        shops.stop()


def ack_ratio(engine: str, args) -> dict:
    """Signed-webhook acknowledgements per second, service against the bare endpoint, same run."""
    from bench.webhooks import IdBase, run_load, service_env, setup_store

    ids = IdBase()
    db = BenchDatabase(engine, "flashack")
    service = ceiling = None
    try:
        service = Uvicorn("app.main:app_factory", service_env(db, workers=True), factory=True)
        from bench.webhooks import SECRET as WEBHOOK_SECRET

        ceiling = Uvicorn("bench._ceiling:app", {"BENCH_WEBHOOK_SECRET": WEBHOOK_SECRET})
        store_id = setup_store(service.url)
        path = f"/webhooks/shopify/{store_id}"
        rounds = []
        for r in range(args.ack_rounds):
            pair = {}
            for name, server in (("service", service), ("ceiling", ceiling)) if r % 2 == 0 else \
                    (("ceiling", ceiling), ("service", service)):
                pair[name] = run_load(server.port, path, {"mode": "closed", "client": "raw", "concurrency": 64,
                                                          "warmup_s": 0.5, "duration_s": args.ack_seconds,
                                                          "id_base": ids.take()})["rate"]
            rounds.append({"service_acks_per_s": pair["service"], "ceiling_acks_per_s": pair["ceiling"],
                           "ratio": round(pair["service"] / pair["ceiling"], 3)})
        return {"rounds": rounds, "median_ratio": median([r["ratio"] for r in rounds]),
                "median_service_acks_per_s": median([r["service_acks_per_s"] for r in rounds]),
                "median_ceiling_acks_per_s": median([r["ceiling_acks_per_s"] for r in rounds]),
                "note": "workers on, as in the sale; closed loop, 64 connections, raw HTTP client process"}
    finally:
        for server in (service, ceiling):
            if server is not None:
                server.stop()
        db.drop()


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--buyers", type=int, default=5000)
    parser.add_argument("--units", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--dup-rate", type=float, default=0.05, help="share of webhooks delivered twice")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--worker-concurrency", type=int, default=2)
    parser.add_argument("--ack-rounds", type=int, default=3)
    parser.add_argument("--ack-seconds", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=20261129)
    args = parser.parse_args()
    results = []
    acks = {}
    notes = []
    for engine in [e.strip() for e in args.engines.split(",") if e.strip()]:
        if engine == "postgresql" and not pg_reachable():
            notes.append("postgresql skipped: nothing answers on 127.0.0.1:5432")
            continue
        for allocation in (True, False):
            results.append(sale(engine, allocation, args))
        acks[engine] = ack_ratio(engine, args)
    print(json.dumps({
        "benchmark": "flash_sale", "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "goal": {"units_oversold_with_allocation": 0},
        "sales": results, "acknowledgements": acks, "notes": notes,
    }, indent=2))


if __name__ == "__main__":
    main()
