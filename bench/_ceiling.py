"""The ceiling of bench/webhooks.py: a bare FastAPI app with one POST route that does what any webhook
receiver must do and nothing more: read the raw body, verify the Shopify HMAC-SHA256 (base64) header in
constant time, parse the JSON (orjson), answer {"status": "accepted"}. No database, no middleware.

Run: BENCH_WEBHOOK_SECRET=... python -m uvicorn bench._ceiling:app"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

SECRET = os.environ.get("BENCH_WEBHOOK_SECRET", "bench-secret").encode()
PARSE = os.environ.get("BENCH_CEILING_PARSE", "1") == "1"

app = FastAPI()


@app.get("/healthz")
async def healthz():
    return {"status": "ok"}


@app.post("/webhooks/{platform}/{store_id}")
async def receive(platform: str, store_id: int, request: Request):
    body = await request.body()
    given = (request.headers.get("x-shopify-hmac-sha256") or "").strip().encode("ascii", "replace")
    expected = base64.b64encode(hmac.new(SECRET, body, hashlib.sha256).digest())
    if not body or not hmac.compare_digest(expected, given):
        return JSONResponse({"detail": "signature did not verify"}, status_code=401)
    if PARSE:
        orjson.loads(body)
    return JSONResponse({"status": "accepted"})
