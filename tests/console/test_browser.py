"""The console in a real browser: Chromium (Debian's chromium and chromium-driver) driven by Selenium
against the service under uvicorn on 127.0.0.1, with a sandbox market served over HTTP. Screenshots of
each page go to var/screenshots/. Without a browser the tests skip, except under CI=true, where they fail
(`make test` installs the browser when it can)."""

from __future__ import annotations

import asyncio
import os
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from adapters.sandbox.market import SandboxMarket
from adapters.sandbox.server import create_app as sandbox_app
from app.db import Database, make_engine, make_sessionmaker
from app.workers import flows  # noqa: F401  (the stock outbox needs its follower to commit)
from tests.conftest import ADMIN_TOKEN, migrate
from tests.console.seed import PAYLOAD_SECRET, seed
from tests.procs import ROOT, Service, ThreadedServer

CHROMIUM = os.environ.get("COOPSYNC_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("COOPSYNC_CHROMEDRIVER", "/usr/bin/chromedriver")
SHOTS = ROOT / "var" / "screenshots"
WAIT_S = 20  # seconds a page may take to show what a step expects
BEIJING = timezone(timedelta(hours=8))

pytestmark = pytest.mark.slow


def _browser_missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (Path(path).exists() or shutil.which(path)):
            return f"{path} not found (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    missing = _browser_missing()
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but no browser: {missing}", pytrace=False)
        pytest.skip(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('console') / 'coopsync.db'}"
    migrate(url)
    market = SandboxMarket("console-browser", "shh-secret")
    market.add_listing("TEA", price_minor=3990, stock=50, merchant_sku="TEA")
    for _ in range(3):
        market.sell("TEA", 1)
    market_server = ThreadedServer(sandbox_app(market))

    async def prepare():
        engine = make_engine(url)
        try:
            return await seed(Database(engine, make_sessionmaker(engine)), base_url=market_server.url,
                              market=market.name)
        finally:
            await engine.dispose()

    seeded = asyncio.run(prepare())
    service = Service(url)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,900", "--lang=zh-CN"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=DriverService(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield Browser(driver, service.url), seeded
    finally:
        driver.quit()
        service.stop()
        market_server.stop()


class Browser:
    def __init__(self, driver, base: str) -> None:
        self.driver, self.base = driver, base

    def get(self, path: str) -> None:
        self.driver.get(self.base + path)

    def find(self, css: str):
        from selenium.webdriver.common.by import By
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def click(self, css: str) -> None:
        self.find(css).click()

    def wait(self, predicate, message: str) -> None:
        from selenium.webdriver.support.ui import WebDriverWait
        WebDriverWait(self.driver, WAIT_S, poll_frequency=0.2).until(lambda d: predicate(), message)

    def text(self) -> str:
        return self.find("body").text

    def shot(self, name: str) -> None:
        self.driver.save_screenshot(str(SHOTS / f"{name}.png"))


def test_sign_in_and_every_page_renders(console):
    b, s = console
    b.get("/console/orders")
    assert "/console/login" in b.driver.current_url
    b.shot("login")
    b.find("#token").send_keys(ADMIN_TOKEN)
    b.click("#sign-in")
    b.wait(lambda: b.driver.current_url.endswith("/console/orders"), "signed in, back at the page asked for")
    for name, path in [("overview", "/console/"), ("shops", "/console/shops"), ("shop", f"/console/shops/{s.store_id}"),
                       ("stock", "/console/stock"), ("ledger", "/console/stock/TEA"), ("orders", "/console/orders"),
                       ("order", f"/console/orders/{s.order_id}"), ("refunds", "/console/refunds"),
                       ("shipments", "/console/shipments"), ("resyncs", "/console/resyncs"),
                       ("inbox", "/console/inbox"), ("settlements", "/console/settlements"),
                       ("settlement", f"/console/settlements/{s.settlement_id}")]:
        b.get(path)
        assert "错误" not in b.find("h1").text, path
        b.shot(name)


def test_bind_an_unbound_listing(console):
    from selenium.webdriver.support.ui import Select

    b, s = console
    b.get(f"/console/shops/{s.store_id}")
    first = b.find("#listings tbody tr")
    assert "unbound" in first.get_attribute("class")  # the unbound ones come first
    Select(b.find("#listings tr.unbound select[name=sku]")).select_by_value("TEA-500")
    b.click("#listings tr.unbound button")
    b.wait(lambda: "notice=bound_ok" in b.driver.current_url, "bound")
    assert "TEA-500" in b.find("#listings").text
    assert not b.driver.find_elements("css selector", "#listings tr.unbound")
    b.shot("shop-bound")


def test_start_a_resync_and_watch_it_finish(console):
    from selenium.webdriver.support.ui import Select

    b, s = console
    b.get("/console/resyncs")
    Select(b.find("#start-resync select[name=store_id]")).select_by_value(str(s.store_id))
    Select(b.find("#start-resync select[name=resource]")).select_by_value("orders")
    until = (datetime.now(BEIJING) + timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M")
    b.driver.execute_script("document.querySelector('#start-resync input[name=until]').value = arguments[0]", until)
    b.click("#start-resync button")
    b.wait(lambda: "/console/resyncs/" in b.driver.current_url, "the resync's own page")
    b.shot("resync-running")
    # The page refreshes itself (meta refresh) until the resync ends.
    b.wait(lambda: b.find("#resync-status").get_attribute("data-status") in ("succeeded", "failed", "cancelled"),
           "the resync ended")
    assert b.find("#resync-status").get_attribute("data-status") == "succeeded", b.text()
    assert int(b.find("#resync-fetched").text) >= 3
    b.shot("resync-finished")


def test_inspect_a_return(console):
    b, s = console
    b.get("/console/refunds?awaiting=1")
    b.click(f"a[href='/console/refunds/{s.refund_id}']")
    good = b.find(f"input[name=good_{s.line_id}]")
    good.clear()
    good.send_keys("3")
    bad = b.find(f"input[name=defective_{s.line_id}]")
    bad.clear()
    bad.send_keys("1")
    b.shot("refund-inspection")
    b.click("#inspection button[type=submit]")
    b.wait(lambda: "notice=inspected_ok" in b.driver.current_url, "inspected")
    assert b.find("#return-status").text == "inspected"


def test_replay_a_failed_delivery(console):
    b, s = console
    b.get(f"/console/inbox/{s.inbox_id}")
    assert PAYLOAD_SECRET not in b.driver.page_source and "sig-abc123" not in b.driver.page_source
    assert "R-404" in b.find("#payload").text
    b.shot("inbox-item")
    b.click("#replay")
    b.wait(lambda: "notice=replayed_ok" in b.driver.current_url, "replayed")
    assert b.find("#inbox-status").text != "failed" or "replayed_ok" in b.driver.current_url


def test_retry_a_dead_dividend_delivery(console):
    b, s = console
    b.get("/console/settlements?status=dead")
    b.click(f"a[href='/console/settlements/{s.settlement_id}']")
    assert b.find("#delivery-status").text == "dead"
    b.click("#retry-delivery")
    b.wait(lambda: "notice=retried_ok" in b.driver.current_url, "re-queued")
    assert b.find("#delivery-status").text == "pending"
    b.shot("settlement-retried")


def test_switch_to_english_and_back(console):
    b, _ = console
    b.get("/console/stock")
    assert "可售" in b.text()
    b.click("#lang-switch")
    b.wait(lambda: "Available" in b.text(), "English")
    assert b.driver.current_url.endswith("/console/stock")
    b.shot("stock-en")
    b.click("#lang-switch")
    b.wait(lambda: "可售" in b.text(), "Chinese again")


def test_overview_fits_390_px_without_horizontal_scroll(console):
    b, _ = console
    b.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                             {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True})
    try:
        for name, path in [("overview-390", "/console/"), ("shops-390", "/console/shops"),
                           ("stock-390", "/console/stock"), ("settlements-390", "/console/settlements")]:
            b.get(path)
            width = b.driver.execute_script("return document.documentElement.scrollWidth")
            b.shot(name)
            assert width <= 390, (path, width)
    finally:
        b.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_sign_out(console):
    b, _ = console
    b.get("/console/")
    b.click("#sign-out")
    b.wait(lambda: "/console/login" in b.driver.current_url, "signed out")
    b.get("/console/shops")
    assert "/console/login" in b.driver.current_url
