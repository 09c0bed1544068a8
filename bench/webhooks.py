"""Webhook intake figures (issue 3): prints ONE JSON document.

For each engine (SQLite file in a temp dir; PostgreSQL: a fresh database on 127.0.0.1:5432 created and
dropped here, skipped with a note when none answers):
  * throughput: acknowledged signed Shopify orders/create webhooks per second, the real service
    as `make run` starts it (uvicorn subprocess, 1 process, the workers inside applying what comes
    in; --workers-off for intake alone), each round starting with no backlog, against the ceiling (bench/_ceiling.py: a bare FastAPI app, same uvicorn flags, HMAC verify +
    orjson parse, no database), closed loop at fixed concurrency, several rounds alternating
    service/ceiling; ratio per round and the median ratio;
  * latency: p50/p99 acknowledgement latency at a fixed offered rate (open loop), service and ceiling;
  * end to end: orders applied per second with COOPSYNC_WORKERS=true (N webhooks posted, time until
    every inbox row is done, read straight from the database);
  * correctness: every acknowledged ("accepted") webhook is an inbox row and has its apply job;
    end to end: N done rows, N orders, N reservations.
The load generator (bench/_load.py) runs in its own process; its CPU use is reported next to the
server's so a saturated client would show. Usage: python bench/webhooks.py [--help]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import ROOT, BenchDatabase, CpuProbe, Uvicorn, median, pg_reachable, scalar  # noqa: E402

SECRET = "bench-webhook-secret"
ADMIN_TOKEN = "bench-admin-token-0123456789"
# Stock pushes go here and are refused at once: no outbound call leaves the machine, and the
# workers spend no time waiting on a resolver for a real shop.
BENCH_SHOPIFY_URL = "http://127.0.0.1:9"
SKU = "sku-hosted-1"  # the fixture's line item sku: lines bind to it and reserve stock


def run_load(port: int, path: str, spec: dict, *, cpu_pids: dict[str, int] | None = None) -> dict:
    spec = {"port": port, "path": path, "secret": SECRET, **spec}
    timeout = spec.get("warmup_s", 0) + spec.get("duration_s", 0) + spec.get("timeout_s", 120) + 60
    proc = subprocess.Popen([sys.executable, "-m", "bench._load", json.dumps(spec)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    probe = None
    if cpu_pids is not None:
        probe = CpuProbe({**cpu_pids, "client": proc.pid})
        # Sample only the counted window: skip connection set-up and warm-up.
        time.sleep(0.3 + spec.get("warmup_s", 0))
        probe.start()
        time.sleep(spec.get("duration_s", 0) * 0.9)
        cpu = probe.stop()
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed: {err.decode()[-2000:]}")
    result = json.loads(out)
    if probe is not None:
        result["cpu"] = cpu
    return result


def service_env(db: BenchDatabase, workers: bool = True) -> dict[str, str]:
    """The ``make run`` defaults (workers inside the process), a database of the run's own."""
    return {"COOPSYNC_DATABASE_URL": db.url, "COOPSYNC_ADMIN_TOKEN": ADMIN_TOKEN, "COOPSYNC_LOG_LEVEL": "WARNING",
            "COOPSYNC_WORKERS": "true" if workers else "false"}


def drain(db: BenchDatabase, timeout_s: float) -> float | None:
    """Wait until no inbox row is pending; seconds it took, None on timeout."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if asyncio.run(scalar(db, "SELECT count(*) FROM inbox WHERE status = 'pending'")) == 0:
            return round(time.monotonic() - started, 2)
        time.sleep(0.2)
    return None


def setup_store(url: str) -> int:
    import httpx

    h = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with httpx.Client(base_url=url, headers=h, timeout=30) as c:
        r = c.post("/v1/skus", json={"sku": SKU, "name": "bench sku"})
        assert r.status_code == 201, r.text
        r = c.post("/v1/stock/receipts", json={"sku": SKU, "quantity": 10_000_000, "member_id": "m-01"})
        assert r.status_code == 201, r.text
        r = c.post("/v1/stores", json={"platform": "shopify", "name": "bench shop",
                                        "external_shop_id": "qinba-tea.myshopify.com", "webhook_secret": SECRET,
                                        "credentials": {"access_token": "shpat_bench"},
                                        "settings": {"poll_interval_s": 0, "base_url": BENCH_SHOPIFY_URL}})
        assert r.status_code == 201, r.text
        return r.json()["id"]


class IdBase:
    """Order ids and webhook ids never repeat within a run."""

    def __init__(self) -> None:
        self.next = 7_000_000_000_000

    def take(self, n: int = 10_000_000) -> int:
        value = self.next
        self.next += n
        return value


def bench_engine(engine: str, args, ids: IdBase) -> dict:
    out: dict = {"engine": engine}
    db = BenchDatabase(engine, "wh")
    service = ceiling = None
    try:
        service = Uvicorn("app.main:app_factory", service_env(db, workers=args.workers), factory=True)
        ceiling = Uvicorn("bench._ceiling:app", {"BENCH_WEBHOOK_SECRET": SECRET,
                                                 "BENCH_CEILING_PARSE": "1" if args.ceiling_parse else "0"})
        store_id = setup_store(service.url)
        path = f"/webhooks/shopify/{store_id}"
        acked = 0
        targets = {"service": service, "ceiling": ceiling}

        drains: list[float | None] = []

        def closed(name: str, client: str = "raw", duration: float | None = None) -> dict:
            nonlocal acked
            server = targets[name]
            if args.workers:
                # The ceiling is measured on an idle machine, and each service round starts without a
                # backlog and builds one while it is measured (the workers apply as the acks come in).
                drains.append(drain(db, args.e2e_timeout))
            result = run_load(server.port, path, {
                "mode": "closed", "client": client, "concurrency": args.concurrency, "warmup_s": args.warmup,
                "duration_s": duration or args.duration, "id_base": ids.take()}, cpu_pids={"server": server.pid})
            if name == "service":
                acked += result["accepted_total"]
            return result

        # 0. Is the client fast enough? Both clients against the ceiling, short.
        if args.client_check:
            raw = closed("ceiling", "raw", 3)
            hx = closed("ceiling", "httpx", 3)
            out["client_check"] = {
                "raw_asyncio_acks_per_s": raw["rate"], "raw_client_cores": raw["cpu"]["client_cores"],
                "raw_server_cores": raw["cpu"]["server_cores"],
                "httpx_acks_per_s": hx["rate"], "httpx_client_cores": hx["cpu"]["client_cores"],
                "httpx_server_cores": hx["cpu"]["server_cores"],
                "verdict": ("raw client used; httpx saturates its own core far below the ceiling"
                            if hx["rate"] < 0.8 * raw["rate"] else "httpx would do as well"),
            }

        # 1. Throughput rounds, alternating which goes first.
        rounds = []
        for r in range(args.rounds):
            order = ("service", "ceiling") if r % 2 == 0 else ("ceiling", "service")
            res = {name: closed(name) for name in order}
            s, c = res["service"], res["ceiling"]
            rounds.append({
                "round": r + 1, "service_acks_per_s": s["rate"], "ceiling_acks_per_s": c["rate"],
                "ratio": round(s["rate"] / c["rate"], 3) if c["rate"] else None,
                "service_p50_ms": s["p50_ms"], "service_p99_ms": s["p99_ms"],
                "ceiling_p50_ms": c["p50_ms"], "ceiling_p99_ms": c["p99_ms"],
                "service_non_200": {k: v for k, v in s["statuses"].items() if k != "200"},
                "service_errors": s["errors"], "service_cpu": s["cpu"], "ceiling_cpu": c["cpu"],
            })
        out["throughput"] = {
            "concurrency": args.concurrency, "warmup_s": args.warmup, "duration_s": args.duration,
            "rounds": rounds,
            "median_service_acks_per_s": median([r["service_acks_per_s"] for r in rounds]),
            "median_ceiling_acks_per_s": median([r["ceiling_acks_per_s"] for r in rounds]),
            "median_ratio": median([r["ratio"] for r in rounds]),
            "goal": 0.8 if engine == "sqlite" else 0.7,
            "workers": args.workers,
            "backlog_drained_s_before_each_run": drains,
        }
        out["throughput"]["meets_goal"] = (out["throughput"]["median_ratio"] or 0) >= out["throughput"]["goal"]

        # 2. Latency at a fixed offered rate (open loop).
        lat = {"service": [], "ceiling": []}
        for r in range(args.latency_rounds):
            for name in (("service", "ceiling") if r % 2 == 0 else ("ceiling", "service")):
                server = targets[name]
                res = run_load(server.port, path, {"mode": "open", "rate": args.rate, "duration_s": args.latency_duration,
                                                   "id_base": ids.take()}, cpu_pids={"server": server.pid})
                if name == "service":
                    acked += res["accepted_total"]
                lat[name].append(res)
        out["latency"] = {"offered_rate": args.rate, "duration_s": args.latency_duration}
        for name, results in lat.items():
            out["latency"][name] = {
                "p50_ms_median": median([x["p50_ms"] for x in results]),
                "p99_ms_median": median([x["p99_ms"] for x in results]),
                "achieved_rate_median": median([x["achieved_rate"] for x in results]),
                "server_cores_median": median([x["cpu"]["server_cores"] for x in results]),
                "rounds": [{k: x[k] for k in ("p50_ms", "p99_ms", "max_ms", "achieved_rate", "connections_opened",
                                              "sent_late_over_5ms", "errors")} for x in results],
            }

        # 3. Correctness: every acknowledgement is a stored row with its apply job.
        rows = asyncio.run(scalar(db, "SELECT count(*) FROM inbox"))
        jobs = asyncio.run(scalar(db, "SELECT count(*) FROM job WHERE name = 'inbox.apply'"))
        out["correctness"] = {"acknowledged": acked, "inbox_rows": rows, "apply_jobs": jobs,
                              "ok": acked == rows == jobs}
    finally:
        for server in (service, ceiling):
            if server is not None:
                server.stop()
        db.drop()

    # 4. End to end, on a fresh database, workers on.
    if args.e2e_orders > 0:
        out["end_to_end"] = end_to_end(engine, args, ids)
        ceiling_rate = out["throughput"]["median_ceiling_acks_per_s"]
        out["end_to_end"]["ratio_to_ceiling_acks"] = (
            round(out["end_to_end"]["orders_applied_per_s"] / ceiling_rate, 3) if ceiling_rate else None)
        out["end_to_end"]["goal"] = 0.2
    return out


def end_to_end(engine: str, args, ids: IdBase) -> dict:
    db = BenchDatabase(engine, "e2e")
    service = None
    try:
        service = Uvicorn("app.main:app_factory", service_env(db), factory=True)
        store_id = setup_store(service.url)
        n = args.e2e_orders
        t0 = time.monotonic()
        load = run_load(service.port, f"/webhooks/shopify/{store_id}", {
            "mode": "count", "count": n, "concurrency": args.concurrency, "id_base": ids.take(), "timeout_s": 300})
        t_acked = time.monotonic()
        deadline = t0 + args.e2e_timeout
        pending = None
        while time.monotonic() < deadline:
            pending = asyncio.run(scalar(db, "SELECT count(*) FROM inbox WHERE status = 'pending'"))
            if pending == 0:
                break
            time.sleep(0.1)
        t_done = time.monotonic()
        done = asyncio.run(scalar(db, "SELECT count(*) FROM inbox WHERE status = 'done'"))
        failed = asyncio.run(scalar(db, "SELECT count(*) FROM inbox WHERE status = 'failed'"))
        orders = asyncio.run(scalar(db, "SELECT count(*) FROM sales_order"))
        reserves = asyncio.run(scalar(db, "SELECT count(*) FROM stock_movement WHERE kind = 'reserve'"))
        reserved = asyncio.run(scalar(db, f"SELECT reserved FROM sku WHERE sku = '{SKU}'"))
        return {
            "webhooks": n, "accepted": load["accepted_total"], "ack_phase_s": round(t_acked - t0, 2),
            "acks_per_s_while_applying": round(n / max(1e-9, load["elapsed_s"]), 1),
            "all_applied_s": round(t_done - t0, 2) if pending == 0 else None,
            "orders_applied_per_s": round(done / (t_done - t0), 1),
            "apply_backlog_after_acks": "drained in %.2f s" % (t_done - t_acked) if pending == 0 else f"{pending} left",
            "inbox_done": done, "inbox_failed": failed, "orders": orders, "reserve_movements": reserves,
            "sku_reserved": reserved,
            "ok": pending == 0 and done == orders == reserves == reserved == n and failed == 0,
        }
    finally:
        if service is not None:
            service.stop()
        db.drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--rounds", type=int, default=5, help="throughput rounds (service and ceiling each)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before counting, each round")
    parser.add_argument("--duration", type=float, default=5.0, help="counted seconds, each round")
    parser.add_argument("--rate", type=float, default=300.0, help="offered rate of the latency test, req/s")
    parser.add_argument("--latency-duration", type=float, default=5.0)
    parser.add_argument("--latency-rounds", type=int, default=3)
    parser.add_argument("--e2e-orders", type=int, default=3000, help="webhooks for the end-to-end test (0: skip)")
    parser.add_argument("--e2e-timeout", type=float, default=300.0)
    parser.add_argument("--no-client-check", dest="client_check", action="store_false")
    parser.add_argument("--workers-off", dest="workers", action="store_false",
                        help="measure intake with COOPSYNC_WORKERS=false (not what `make run` runs)")
    parser.add_argument("--no-ceiling-parse", dest="ceiling_parse", action="store_false",
                        help="the ceiling skips orjson.loads (the service does not parse at intake)")
    args = parser.parse_args()

    started = time.monotonic()
    doc: dict = {
        "benchmark": "webhooks", "command": "python " + " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "settings": vars(args), "engines": {}, "notes": [
            "Figures are ratios to the ceiling measured in the same run on the same machine; absolute rates "
            "move with whatever else the shared machine runs.",
            "Ceiling: bare FastAPI, one POST route, raw body + constant-time Shopify HMAC-SHA256 (base64) + "
            "orjson.loads, JSONResponse {'status': 'accepted'}; no middleware, no database. The service does not "
            "parse JSON at intake (it verifies and stores the raw bytes); the ceiling parses to match the "
            "reference measurement in /work/shared/style/reliability.md 3.3 (--no-ceiling-parse to drop it).",
            "Both servers: python -m uvicorn, 1 process, uvloop + httptools, --no-access-log, on 127.0.0.1.",
            "Load: bench/_load.py in its own process (raw asyncio HTTP/1.1 keep-alive client on uvloop); "
            "'client_check' compares it with httpx.AsyncClient on the ceiling; *_cores fields are CPU seconds per "
            "second of the server, client and whole machine during the counted window.",
            "Each webhook: tests/fixtures/shopify/orders_create_webhook_activepieces.json (5.4 KB compact) with a "
            "unique order id and X-Shopify-Webhook-Id, signed with the store's secret.",
            "End to end runs on a fresh database with COOPSYNC_WORKERS=true; orders_applied_per_s = inbox rows "
            "done / seconds from the first POST until no row is pending (polled from the database every 0.1 s).",
        ]}
    for engine in [e.strip() for e in args.engines.split(",") if e.strip()]:
        if engine == "postgresql" and not pg_reachable():
            doc["engines"][engine] = {"skipped": "no PostgreSQL answers on 127.0.0.1:5432"}
            continue
        try:
            doc["engines"][engine] = bench_engine(engine, args, IdBase())
        except Exception as exc:  # report and go on with the next engine
            doc["engines"][engine] = {"error": repr(exc)[:2000]}
    doc["summary"] = {e: {"median_ratio": r.get("throughput", {}).get("median_ratio"),
                          "goal": r.get("throughput", {}).get("goal"),
                          "median_service_acks_per_s": r.get("throughput", {}).get("median_service_acks_per_s"),
                          "median_ceiling_acks_per_s": r.get("throughput", {}).get("median_ceiling_acks_per_s"),
                          "latency_p50_p99_ms_service": [r.get("latency", {}).get("service", {}).get("p50_ms_median"),
                                                         r.get("latency", {}).get("service", {}).get("p99_ms_median")],
                          "latency_p50_p99_ms_ceiling": [r.get("latency", {}).get("ceiling", {}).get("p50_ms_median"),
                                                         r.get("latency", {}).get("ceiling", {}).get("p99_ms_median")],
                          "orders_applied_per_s": r.get("end_to_end", {}).get("orders_applied_per_s"),
                          "applied_ratio_to_ceiling_acks": r.get("end_to_end", {}).get("ratio_to_ceiling_acks"),
                          "correct": r.get("correctness", {}).get("ok") and r.get("end_to_end", {}).get("ok", True)}
                      for e, r in doc["engines"].items()}
    doc["elapsed_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
