"""The operator CLI: a resync with --wait runs to the end and prints its counts; stores are listed."""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone

from adapters.sandbox.market import SandboxMarket
from adapters.sandbox.server import create_app as sandbox_app
from app.models import Store
from tests.procs import ROOT, ThreadedServer, service_env


async def test_resync_wait_shows_progress_and_ends_with_counts(db, database_url):
    market = SandboxMarket(f"cli-{uuid.uuid4().hex[:6]}", "s")
    market.add_listing("tea-250", price_minor=3990, stock=100)
    for _ in range(7):
        market.sell("tea-250", 1)
    server = ThreadedServer(sandbox_app(market))
    try:
        async with db.transaction() as session:
            store = Store(platform="sandbox", name="cli shop", external_shop_id=market.name,
                          settings={"base_url": server.url, "page_size": 3, "poll_interval_s": 0})
            session.add(store)
            await session.flush()
            store_id = store.id
        now = datetime.now(timezone.utc)
        out = subprocess.run(
            [sys.executable, "-m", "app.cli", "resync", "--store", str(store_id), "--resource", "orders",
             "--since", (now - timedelta(hours=1)).isoformat(), "--until", (now + timedelta(minutes=1)).isoformat(),
             "--wait"], cwd=ROOT, env=service_env(database_url), capture_output=True, text=True, timeout=120)
    finally:
        server.stop()
    assert out.returncode == 0, out.stderr
    assert "succeeded pages=3 fetched=7 created=7 updated=0 unchanged=0 failed=0" in out.stdout
    listing = subprocess.run([sys.executable, "-m", "app.cli", "stores"], cwd=ROOT, env=service_env(database_url),
                             capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0, listing.stderr
    assert "cli shop" in listing.stdout and "sandbox" in listing.stdout


def test_resync_refuses_a_naive_time(database_url):
    out = subprocess.run([sys.executable, "-m", "app.cli", "resync", "--store", "1", "--since", "2026-11-01T00:00:00",
                          "--until", "2026-11-02T00:00:00+08:00"], cwd=ROOT, env=service_env(database_url),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "offset" in out.stderr + out.stdout
