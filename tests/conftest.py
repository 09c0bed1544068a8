"""Test fixtures: every database test runs on SQLite and on PostgreSQL, on a schema built by Alembic."""

from __future__ import annotations

import os
import uuid
from contextlib import asynccontextmanager
from pathlib import Path

# Store secrets are encrypted at rest: the suite's own key, set before anything reads the settings (the
# uvicorn and CLI subprocesses of the tests inherit it through tests/procs.py).
TEST_SECRET_KEY = "Wn6Wbq0Yv1tyr0eZ8bcb0uS4QqSg1Uqk0rN0kTQ7z0A="
os.environ.setdefault("COOPSYNC_SECRET_KEY", TEST_SECRET_KEY)

import httpx
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlmodel import SQLModel

from adapters.sandbox.market import SandboxMarket
from app.config import Settings
from app.db import Database, make_engine, make_sessionmaker
from tests import pg

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
ADMIN_TOKEN = "test-admin-token-0123456789"
ENGINES = ("sqlite", "postgresql")

_pg_server: pg.PgServer | None = None
_pg_checked = False


def alembic_config(url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "alembic"))
    config.attributes["database_url"] = url
    config.attributes["configure_logging"] = False
    return config


def migrate(url: str) -> None:
    command.upgrade(alembic_config(url), "head")


def _postgres() -> pg.PgServer | None:
    global _pg_server, _pg_checked
    if not _pg_checked:
        _pg_checked = True
        try:
            _pg_server = pg.find_server()
        except Exception as exc:  # a broken local cluster is reported below like a missing one
            print(f"PostgreSQL not usable: {exc!r}")
            _pg_server = None
    return _pg_server


def pytest_sessionfinish(session, exitstatus):
    if _pg_server is not None:
        _pg_server.close()


def pytest_report_header(config):
    server = _postgres()
    return f"postgresql: {server.how if server else 'none found'}"


@pytest.fixture(scope="session", params=ENGINES)
def engine_name(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def database_url(engine_name, tmp_path_factory) -> str:
    if engine_name == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('sqlite') / 'coopsync.db'}"
    else:
        server = _postgres()
        if server is None:
            if os.environ.get("CI") == "true":
                pytest.fail("CI=true but no PostgreSQL was found: set COOPSYNC_TEST_DATABASE_URL, start one on "
                            "127.0.0.1:5432, or install initdb/pg_ctl", pytrace=False)
            pytest.skip("no PostgreSQL found (set COOPSYNC_TEST_DATABASE_URL)")
        url = pg.create_database(server)
    migrate(url)
    return url


def test_settings(database_url: str, **overrides) -> Settings:
    values = dict(database_url=database_url, admin_token=ADMIN_TOKEN, workers=False, log_format="console",
                  job_lease_s=30.0, inbox_group_commit_ms=1.0, stock_push_debounce_s=0.0, dividend_url="http://dividends.test/statements",
                  dividend_secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", dividend_backoff_base_s=1.0)
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(database_url) -> Settings:
    return test_settings(database_url)


async def _truncate(db: Database) -> None:
    tables = [t.name for t in reversed(SQLModel.metadata.sorted_tables)]
    async with db.transaction() as session:
        if db.engine.dialect.name == "postgresql":
            await session.execute(text("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                await session.execute(text(f'DELETE FROM "{table}"'))


@pytest.fixture
async def db(database_url):
    engine = make_engine(database_url, pool_size=12)
    database = Database(engine, make_sessionmaker(engine))
    await _truncate(database)
    yield database
    await engine.dispose()


@asynccontextmanager
async def running_app(settings: Settings):
    from app.main import create_app

    application = create_app(settings, configure_logs=False)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def app(db, settings):
    async with running_app(settings) as application:
        yield application


@pytest.fixture
async def client(app):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://coopsync.test") as c:
        yield c


@pytest.fixture
def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
async def runner(app, settings):
    """A job runner over the app's database, driven step by step by the test."""
    from app.workers.flows import default_handlers
    from app.workers.runner import Runner

    return Runner(app.state.db, settings, default_handlers())


def pytest_collection_modifyitems(config, items):
    # Keep each engine's tests together so that one database is set up per engine.
    def engine_of(item):
        callspec = getattr(item, "callspec", None)
        return ENGINES.index(callspec.params["engine_name"]) if callspec and "engine_name" in callspec.params else -1

    items.sort(key=engine_of)



@pytest.fixture
async def shop(client):
    """A sandbox marketplace bound to a fresh store, its sku received (100 units from m-01)."""
    from tests.helpers import create_sku, create_store, receive  # they import this module's constants
    from tests.shops import SECRET, Shop

    name = f"shop-{uuid.uuid4().hex[:8]}"
    market = SandboxMarket.register(SandboxMarket(name, SECRET))
    market.add_listing("tea-250", price_minor=3990, stock=1000, merchant_sku="GYNO-TEA-250G")
    await create_sku(client, "GYNO-TEA-250G")
    await receive(client, "GYNO-TEA-250G", 100, "m-01")
    store = await create_store(client, "sandbox", external_shop_id=name, webhook_secret=SECRET,
                               settings={"base_url": f"inproc://{name}", "return_window_days": 0,
                                         "poll_interval_s": 0})
    yield Shop(client, store, market)
    SandboxMarket.unregister(name)
