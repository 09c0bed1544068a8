"""Load generator for bench/webhooks.py, run as its own process so that its CPU is separate and visible:
``python -m bench._load '<json spec>'`` prints one JSON line.

Each request is a signed Shopify ``orders/create`` webhook built from the fixture
tests/fixtures/shopify/orders_create_webhook_activepieces.json with a unique order id and a unique
X-Shopify-Webhook-Id. Modes:
  closed  ``concurrency`` connections each send the next request when the previous answer arrived,
          for ``warmup_s`` (not counted) then ``duration_s`` (counted);
  open    requests are sent at ``rate`` per second on schedule for ``duration_s`` whatever the
          answers do (latency counted from the scheduled moment, so queueing is included);
  count   like closed, but exactly ``count`` requests, then stop.
Clients: ``raw`` (asyncio protocol over uvloop speaking HTTP/1.1 keep-alive; about 10x cheaper per
request than httpx, so it does not become the bottleneck on 2 cores) or ``httpx`` (httpx.AsyncClient).
Every loop is bounded by a deadline and a request count."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import resource
import sys
import time
from pathlib import Path

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "shopify" / "orders_create_webhook_activepieces.json"
ORDER_ID = 5324830114101
MAX_REQUESTS = 2_000_000  # hard bound on any loop


class Webhooks:
    """Unique signed deliveries, cheap to make (one bytes.replace and one HMAC each)."""

    def __init__(self, secret: str, id_base: int, host: str, path: str) -> None:
        payload = json.loads(FIXTURE.read_bytes())
        assert payload["id"] == ORDER_ID
        payload["id"] = "@@ID@@"
        self.template = json.dumps(payload, separators=(",", ":")).encode().replace(b'"@@ID@@"', b"%d")
        self.secret = secret.encode()
        self.next_id = id_base
        self.host = host
        self.path = path

    def make(self) -> tuple[dict[str, str], bytes]:
        self.next_id += 1
        body = self.template % self.next_id
        sig = base64.b64encode(hmac.new(self.secret, body, hashlib.sha256).digest()).decode()
        headers = {"Content-Type": "application/json", "X-Shopify-Topic": "orders/create",
                   "X-Shopify-Hmac-Sha256": sig, "X-Shopify-Webhook-Id": f"bench-{self.next_id}",
                   "X-Shopify-Shop-Domain": "qinba-tea.myshopify.com", "X-Shopify-API-Version": "2026-07"}
        return headers, body

    def raw(self) -> bytes:
        headers, body = self.make()
        head = (f"POST {self.path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Length: {len(body)}\r\n"
                + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n")
        return head.encode() + body


class RawConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; one request at a time; answers need Content-Length."""

    def __init__(self) -> None:
        self.transport = None
        self.buf = bytearray()
        self.waiter: asyncio.Future | None = None
        self.closed = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.waiter is None or self.waiter.done():
            return
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buf[:end]).lower()
        at = head.find(b"content-length:")
        length = 0
        if at >= 0:
            eol = head.find(b"\r\n", at)
            length = int(head[at + 15:eol if eol > 0 else len(head)])
        total = end + 4 + length
        if len(self.buf) < total:
            return
        status = int(head[9:12])
        body = bytes(self.buf[end + 4:total])
        del self.buf[:total]
        self.waiter.set_result((status, body))

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection lost"))

    async def request(self, data: bytes):
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self.waiter


class RawClient:
    def __init__(self, host: str, port: int, hooks: Webhooks) -> None:
        self.host, self.port, self.hooks = host, port, hooks

    async def connect(self) -> RawConnection:
        _, proto = await asyncio.get_running_loop().create_connection(RawConnection, self.host, self.port)
        return proto

    async def send(self, conn: RawConnection) -> tuple[int, bytes]:
        return await conn.request(self.hooks.raw())

    async def close(self, conns) -> None:
        for c in conns:
            if c.transport is not None:
                c.transport.close()


class HttpxClient:
    def __init__(self, host: str, port: int, hooks: Webhooks, concurrency: int) -> None:
        import httpx

        self.hooks = hooks
        self.url = f"http://{host}:{port}{hooks.path}"
        self.client = httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=concurrency,
                                                                        max_keepalive_connections=concurrency))

    async def connect(self):
        return None

    async def send(self, _conn) -> tuple[int, bytes]:
        headers, body = self.hooks.make()
        r = await self.client.post(self.url, content=body, headers=headers)
        return r.status_code, r.content

    async def close(self, _conns) -> None:
        await self.client.aclose()


class Tally:
    def __init__(self) -> None:
        self.accepted_total = 0  # every 200 "accepted", in or out of the counted window
        self.duplicates = 0
        self.counted = 0  # 200 answers inside the counted window
        self.latencies: list[float] = []
        self.statuses: dict[str, int] = {}
        self.errors = 0

    def record(self, status: int, body: bytes, latency: float, counted: bool) -> None:
        self.statuses[str(status)] = self.statuses.get(str(status), 0) + 1
        if status == 200:
            if b"accepted" in body:
                self.accepted_total += 1
            elif b"duplicate" in body:
                self.duplicates += 1
            if counted:
                self.counted += 1
                self.latencies.append(latency)


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))] * 1000, 2)


async def closed_loop(client, spec: dict, tally: Tally) -> dict:
    concurrency = spec["concurrency"]
    count = spec.get("count")
    conns = [await client.connect() for _ in range(concurrency)]
    t0 = time.perf_counter()
    if count is None:
        start = t0 + spec["warmup_s"]
        end = start + spec["duration_s"]
    else:
        start, end = t0, t0 + spec.get("timeout_s", 600)
    budget = {"left": count if count is not None else MAX_REQUESTS}
    cpu = {}

    async def worker(conn) -> None:
        while budget["left"] > 0:
            now = time.perf_counter()
            if now >= end:
                return
            budget["left"] -= 1
            try:
                status, body = await client.send(conn)
            except Exception:
                tally.errors += 1
                if isinstance(conn, RawConnection):
                    conn = await client.connect()
                continue
            done = time.perf_counter()
            tally.record(status, body, done - now, start <= now and done <= end)

    async def mark_cpu() -> None:
        await asyncio.sleep(max(0.0, start - time.perf_counter()))
        cpu["start"] = resource.getrusage(resource.RUSAGE_SELF)
        await asyncio.sleep(max(0.0, end - time.perf_counter()))
        cpu["end"] = resource.getrusage(resource.RUSAGE_SELF)

    marker = asyncio.create_task(mark_cpu()) if count is None else None
    await asyncio.gather(*(worker(c) for c in conns))
    finished = time.perf_counter()
    if marker is not None:
        await marker
    await client.close(conns)
    result = {"elapsed_s": round(finished - t0, 3)}
    if count is None:
        used = (cpu["end"].ru_utime + cpu["end"].ru_stime) - (cpu["start"].ru_utime + cpu["start"].ru_stime)
        result["client_cores"] = round(used / spec["duration_s"], 2)
        result["rate"] = round(tally.counted / spec["duration_s"], 1)
    return result


async def open_loop(client, spec: dict, tally: Tally) -> dict:
    rate, duration = spec["rate"], spec["duration_s"]
    total = min(MAX_REQUESTS, int(rate * duration))
    idle: list = [await client.connect() for _ in range(min(32, spec.get("max_connections", 256)))]
    opened = {"n": len(idle)}
    late = {"n": 0}
    t0 = time.perf_counter() + 0.05
    deadline = t0 + duration + spec.get("timeout_s", 60)

    async def one(scheduled: float) -> None:
        if idle:
            conn = idle.pop()
        else:
            opened["n"] += 1
            conn = await client.connect()
        try:
            status, body = await client.send(conn)
        except Exception:
            tally.errors += 1
            return
        tally.record(status, body, time.perf_counter() - scheduled, True)
        if not getattr(conn, "closed", False):
            idle.append(conn)

    tasks = []
    for i in range(total):
        scheduled = t0 + i / rate
        wait = scheduled - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        elif wait < -0.005:
            late["n"] += 1
        tasks.append(asyncio.create_task(one(scheduled)))
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=max(1.0, deadline - time.perf_counter()))
    await client.close(idle)
    return {"offered_rate": rate, "sent": total, "connections_opened": opened["n"],
            "sent_late_over_5ms": late["n"], "achieved_rate": round(tally.counted / duration, 1)}


async def main(spec: dict) -> dict:
    hooks = Webhooks(spec["secret"], spec["id_base"], f"127.0.0.1:{spec['port']}", spec["path"])
    if spec.get("client", "raw") == "raw":
        client = RawClient("127.0.0.1", spec["port"], hooks)
    else:
        client = HttpxClient("127.0.0.1", spec["port"], hooks, spec.get("concurrency", 64))
    tally = Tally()
    overall = spec.get("warmup_s", 0) + spec.get("duration_s", 0) + spec.get("timeout_s", 120) + 30
    if spec["mode"] == "open":
        extra = await asyncio.wait_for(open_loop(client, spec, tally), timeout=overall)
    else:
        extra = await asyncio.wait_for(closed_loop(client, spec, tally), timeout=overall)
    return {**extra, "accepted_total": tally.accepted_total, "duplicates": tally.duplicates,
            "counted": tally.counted, "statuses": tally.statuses, "errors": tally.errors,
            "p50_ms": _pct(tally.latencies, 50), "p99_ms": _pct(tally.latencies, 99),
            "max_ms": _pct(tally.latencies, 100)}


if __name__ == "__main__":
    import uvloop

    spec = json.loads(sys.argv[1])
    print(json.dumps(uvloop.run(main(spec))))
