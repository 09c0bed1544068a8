"""Credentials and webhook secrets are encrypted at rest with COOPSYNC_SECRET_KEY: never in the database's
bytes or a log line, rotated by ``coopsync secrets rotate``, encrypted in place by migration 0008, and no
start without the key."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
import respx
from alembic import command
from cryptography.fernet import Fernet
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from app import crypto
from app.db import Database, make_engine
from app.logging import QUIET_LOGGERS, configure_logging
from app.models import Store
from tests.conftest import TEST_SECRET_KEY, alembic_config
from tests.conftest import test_settings as settings_for
from tests.helpers import ADMIN, create_store
from tests.procs import ROOT, service_env

PDD_GATEWAY = "https://pdd.test/api/router"


def _file_bytes(database_url: str) -> bytes:
    """The SQLite database as it is on disk: the main file, its write-ahead log and shared memory."""
    path = Path(make_url(database_url).database)
    return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists())


async def _raw_secrets(engine, store_id: int) -> tuple:
    """The three columns as stored, read with plain SQL."""
    async with engine.connect() as connection:
        row = (await connection.execute(text(
            "SELECT credentials, webhook_secret, webhook_secret_previous FROM store WHERE id = :id"),
            {"id": store_id})).one()
    return tuple(row)


def _assert_fernet_tokens(values, *secrets: str, key: str = TEST_SECRET_KEY) -> None:
    for value in values:
        if value is None:
            continue
        assert isinstance(value, str) and value.startswith("gAAAAA"), value[:40]
        assert not any(s in value for s in secrets)
        Fernet(key).decrypt(value.encode())  # a real token under the key


@pytest.fixture
def fresh_keyring():
    """Tests that configure another keyring leave the process's one as the suite's key again."""
    yield
    crypto.reset_keyring()


# -- at rest ------------------------------------------------------------------------------------------


async def test_store_secrets_are_nowhere_in_the_database_after_create_and_patch(client, db, database_url,
                                                                               engine_name):
    tag = uuid.uuid4().hex
    client_secret, token, hook_1 = f"pdd-secret-{tag}", f"pdd-token-{tag}", f"whsec-one-{tag}"
    new_secret, hook_2 = f"pdd-secret-2-{tag}", f"whsec-two-{tag}"
    store = await create_store(client, "pinduoduo", external_shop_id="mall-1", webhook_secret=hook_1,
                               credentials={"client_id": "coop", "client_secret": client_secret, "access_token": token},
                               settings={"base_url": PDD_GATEWAY, "poll_interval_s": 0})
    r = await client.patch(f"/v1/stores/{store['id']}", headers=ADMIN, json={
        "webhook_secret": hook_2, "credentials": {"client_id": "coop", "client_secret": new_secret,
                                                  "access_token": token}})
    assert r.status_code == 200, r.text
    secrets = (client_secret, token, hook_1, new_secret, hook_2)

    raw = await _raw_secrets(db.engine, store["id"])
    _assert_fernet_tokens(raw, *secrets)
    if engine_name == "sqlite":
        on_disk = _file_bytes(database_url)
        assert on_disk  # the file is there
        for secret in secrets:
            assert secret.encode() not in on_disk, secret
    async with db.read() as session:  # and the model reads them back
        row = await session.get(Store, store["id"])
        assert row.credentials == {"client_id": "coop", "client_secret": new_secret, "access_token": token}
        assert (row.webhook_secret, row.webhook_secret_previous) == (hook_2, hook_1)


async def test_a_value_no_key_opens_is_an_error_naming_the_key_never_garbage(db, fresh_keyring):
    async with db.transaction() as session:
        store = Store(platform="sandbox", name="keyed", credentials={"k": "v"}, webhook_secret="s")
        session.add(store)
        await session.flush()
        store_id = store.id
    crypto.configure_keyring(Fernet.generate_key().decode())  # not the key the row was written with
    with pytest.raises(crypto.SecretUndecryptable, match="cannot be decrypted with any key in COOPSYNC_SECRET_KEY"):
        async with db.read() as session:
            await session.get(Store, store_id)


@pytest.fixture
def captured_logs(caplog):
    """Everything logged, at DEBUG, by every logger: pytest's records and the service's own JSON lines."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    quiet = {name: logging.getLogger(name).level for name in (*QUIET_LOGGERS, "sqlalchemy.engine")}
    configure_logging("json", "DEBUG")
    stream = io.StringIO()
    root.handlers[0].stream = stream
    root.addHandler(caplog.handler)
    caplog.set_level(logging.DEBUG)
    for name in QUIET_LOGGERS:  # the client libraries too, which the service keeps at WARNING
        logging.getLogger(name).setLevel(logging.DEBUG)
    # Every statement with its bound values, as the driver gets them. (Its DEBUG adds each result row as
    # the model reads it, decrypted: an echo of the data itself, which the service never turns on.)
    logging.getLogger("sqlalchemy.engine").setLevel(logging.INFO)
    yield lambda: stream.getvalue() + "\n".join(
        f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, previous in quiet.items():
        logging.getLogger(name).setLevel(previous)


async def test_a_store_secret_reaches_no_log_line_no_answer_and_no_database_byte(
        client, db, runner, database_url, engine_name, captured_logs):
    tag = uuid.uuid4().hex
    secret = f"pdd-client-secret-{tag}"
    answers = []
    store = await create_store(client, "pinduoduo", external_shop_id="mall-1", webhook_secret=f"whsec-{tag}",
                               credentials={"client_id": "coop", "client_secret": secret, "access_token": f"t-{tag}"},
                               settings={"base_url": PDD_GATEWAY, "poll_interval_s": 0})
    answers.append(str(store))
    with respx.mock(assert_all_mocked=True) as mock:
        gateway = mock.post(PDD_GATEWAY).mock(return_value=httpx.Response(500, text="gateway down"))
        r = await client.post("/v1/resyncs", headers=ADMIN, json={
            "store_id": store["id"], "resource": "orders", "since": "2024-06-01T00:00:00+08:00",
            "until": "2024-06-01T01:00:00+08:00"})
        assert r.status_code == 202, r.text
        answers.append(r.text)
        await runner.run_until_idle()
    assert gateway.called  # the store's credentials were loaded, decrypted and used
    r = await client.get(f"/v1/resyncs/{r.json()['id']}", headers=ADMIN)
    answers.append(r.text)
    r = await client.post("/v1/stores", headers=ADMIN, json={  # refused by the request schema: empty name
        "platform": "pinduoduo", "name": "", "credentials": {"client_id": "coop", "client_secret": secret}})
    assert r.status_code == 422, r.text
    answers.append(r.text)

    logged = captured_logs()
    assert "gateway down" in logged or "500" in logged  # the failure was logged, so the check means something
    assert secret not in logged
    for answer in answers:
        assert secret not in answer
    if engine_name == "sqlite":
        assert secret.encode() not in _file_bytes(database_url)
    else:
        _assert_fernet_tokens(await _raw_secrets(db.engine, store["id"]), secret)


async def test_a_store_whose_credentials_the_adapter_refuses_is_answered_without_them(client):
    secret = f"pdd-client-secret-{uuid.uuid4().hex}"
    r = await client.post("/v1/stores", headers=ADMIN, json={  # no client_id, a token of the wrong shape: refused
        "platform": "pinduoduo", "name": "x", "credentials": {"client_secret": secret, "refresh_token": {"t": secret}}})
    assert r.status_code == 422, r.text
    assert secret not in r.text


# -- rotation -------------------------------------------------------------------------------------------


async def test_rotate_re_encrypts_everything_so_the_newest_key_alone_reads_it(db, database_url, fresh_keyring):
    key_a, key_b = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    creds = {"client_id": "coop", "client_secret": f"s-{uuid.uuid4().hex}"}
    crypto.configure_keyring(key_a)
    async with db.transaction() as session:
        store = Store(platform="sandbox", name="rotating", credentials=creds, webhook_secret="hook-new",
                      webhook_secret_previous="hook-old")
        session.add(store)
        session.add(Store(platform="sandbox", name="no secrets"))
        await session.flush()
        store_id = store.id

    crypto.configure_keyring(key_b)
    with pytest.raises(crypto.SecretUndecryptable):  # B alone cannot read what A wrote
        async with db.read() as session:
            await session.get(Store, store_id)

    out = subprocess.run([sys.executable, "-m", "app.cli", "secrets", "rotate"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env=service_env(database_url, COOPSYNC_SECRET_KEY=f"{key_b},{key_a}"))
    assert out.returncode == 0, out.stderr
    assert "re-encrypted 2 rows (4 values)" in out.stdout

    crypto.configure_keyring(key_b)
    async with db.read() as session:
        row = await session.get(Store, store_id)
        assert (row.credentials, row.webhook_secret, row.webhook_secret_previous) == (creds, "hook-new", "hook-old")
    _assert_fernet_tokens(await _raw_secrets(db.engine, store_id), creds["client_secret"], key=key_b)


def test_generate_key_prints_a_fernet_key():
    out = subprocess.run([sys.executable, "-m", "app.cli", "secrets", "generate-key"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    Fernet(out.stdout.strip())


# -- no start without a key ---------------------------------------------------------------------------


def test_the_app_factory_refuses_to_start_without_a_key(tmp_path):
    from app.main import create_app

    url = f"sqlite+aiosqlite:///{tmp_path / 'nokey.db'}"
    with pytest.raises(crypto.SecretKeyMissing) as refused:
        create_app(settings_for(url, secret_key=None), configure_logs=False)
    assert "COOPSYNC_SECRET_KEY" in str(refused.value) and "coopsync secrets generate-key" in str(refused.value)
    assert "var/secret.key" in str(refused.value)
    with pytest.raises(crypto.SecretKeyInvalid, match="key 2 of 2 is not a Fernet key") as refused:
        create_app(settings_for(url, secret_key=f"{TEST_SECRET_KEY},not-a-key"), configure_logs=False)
    assert "not-a-key" not in str(refused.value)


def test_a_cli_command_that_opens_the_database_refuses_to_start_without_a_key(tmp_path):
    env = service_env(f"sqlite+aiosqlite:///{tmp_path / 'nokey.db'}")
    env.pop("COOPSYNC_SECRET_KEY", None)
    for args in (["stores"], ["secrets", "rotate"]):
        out = subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 2, out.stderr
        assert out.stderr.startswith("coopsync: COOPSYNC_SECRET_KEY is not set")
        assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr, out.stderr
        assert "coopsync secrets generate-key" in out.stderr


# -- migration 0008 ------------------------------------------------------------------------------------


def _new_database(engine_name: str, tmp_path: Path, name: str) -> str:
    if engine_name == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / name}"
    from tests import pg
    from tests.conftest import _postgres

    server = _postgres()
    if server is None:
        pytest.skip("no PostgreSQL found")
    return pg.create_database(server)


PLAIN = {"client_secret": "plain-client-secret-0007", "webhook_secret": "plain-hook-0007",
         "webhook_secret_previous": "plain-previous-0007"}


async def _seed_plain_rows(url: str) -> None:
    engine = make_engine(url)
    async with engine.begin() as connection:
        await connection.execute(text(
            "INSERT INTO store (id, platform, name, webhook_secret, webhook_secret_previous, credentials, settings, "
            "auth_status, credentials_version, created_at, updated_at) VALUES "
            "(1, 'pinduoduo', 'old shop', :hook, :previous, :creds, '{}', 'ok', 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP), "
            "(2, 'sandbox', 'bare shop', NULL, NULL, '{}', '{}', 'ok', 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"),
            {"hook": PLAIN["webhook_secret"], "previous": PLAIN["webhook_secret_previous"],
             "creds": '{"client_id": "coop", "client_secret": "%s"}' % PLAIN["client_secret"]})
        # Rows that name the store: the table's copy on SQLite must keep them (no cascade, no dangling key).
        await connection.execute(text(
            "INSERT INTO listing (store_id, external_sku_key, listing_ref, sold_since_push, unheard_sales, "
            "created_at, updated_at) VALUES (1, 'sku-1', '{}', 0, 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
        await connection.execute(text(
            "INSERT INTO oauth_state (store_id, state_hash, created_at, expires_at) "
            "VALUES (1, 'h-0007', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
    await engine.dispose()


async def _count(url: str, table: str) -> int:
    engine = make_engine(url)
    async with engine.connect() as connection:
        count = (await connection.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
    await engine.dispose()
    return count


async def _read_stores(url: str) -> dict[int, tuple]:
    db = Database.from_url(url)
    async with db.read() as session:
        rows = (await session.execute(select(Store).order_by(Store.id))).scalars().all()
        stores = {r.id: (r.credentials, r.webhook_secret, r.webhook_secret_previous) for r in rows}
    await db.engine.dispose()
    return stores


def test_migration_encrypts_existing_rows_leaves_no_plain_copy_and_downgrades(engine_name, tmp_path):
    url = _new_database(engine_name, tmp_path, "at-0007.db")
    config = alembic_config(url)
    command.upgrade(config, "0007")
    asyncio.run(_seed_plain_rows(url))
    if engine_name == "sqlite":
        assert PLAIN["client_secret"].encode() in _file_bytes(url)  # so the check below means something

    # Another process has the database open (as a service would, when it is migrated at its start): the
    # -wal file is not deleted when the migration's connection closes, so it is checked as it is left.
    other = sqlite3.connect(make_url(url).database) if engine_name == "sqlite" else None
    if other is not None:
        other.execute("SELECT count(*) FROM store").fetchall()
    try:
        command.upgrade(config, "head")
        if other is not None:
            on_disk = _file_bytes(url)
            for secret in PLAIN.values():
                assert secret.encode() not in on_disk, secret
    finally:
        if other is not None:
            other.close()
    engine = make_engine(url)
    raw = asyncio.run(_raw_secrets(engine, 1))
    asyncio.run(engine.dispose())
    _assert_fernet_tokens(raw, *PLAIN.values())
    assert asyncio.run(_read_stores(url)) == {
        1: ({"client_id": "coop", "client_secret": PLAIN["client_secret"]}, PLAIN["webhook_secret"],
            PLAIN["webhook_secret_previous"]),
        2: ({}, None, None)}
    assert asyncio.run(_count(url, "listing")) == 1 and asyncio.run(_count(url, "oauth_state")) == 1
    if engine_name == "sqlite":
        on_disk = _file_bytes(url)
        for secret in PLAIN.values():
            assert secret.encode() not in on_disk, secret

    command.downgrade(config, "0007")
    engine = make_engine(url)
    raw = asyncio.run(_raw_secrets(engine, 1))
    asyncio.run(engine.dispose())
    assert raw[1:] == (PLAIN["webhook_secret"], PLAIN["webhook_secret_previous"])
    credentials = json.loads(raw[0]) if isinstance(raw[0], str) else raw[0]  # a json column again
    assert credentials == {"client_id": "coop", "client_secret": PLAIN["client_secret"]}
    assert asyncio.run(_count(url, "listing")) == 1 and asyncio.run(_count(url, "oauth_state")) == 1


def test_migration_without_a_key_refuses_rows_and_passes_an_empty_database(engine_name, tmp_path, monkeypatch,
                                                                          fresh_keyring):
    monkeypatch.delenv("COOPSYNC_SECRET_KEY")
    crypto.reset_keyring()
    empty = _new_database(engine_name, tmp_path, "empty.db")
    command.upgrade(alembic_config(empty), "head")  # nothing to encrypt: no key needed

    url = _new_database(engine_name, tmp_path, "rows.db")
    config = alembic_config(url)
    command.upgrade(config, "0007")
    asyncio.run(_seed_plain_rows(url))
    with pytest.raises(crypto.SecretKeyMissing, match=r"COOPSYNC_SECRET_KEY is not set.*\(2 stores to convert\)"):
        command.upgrade(config, "head")
    engine = make_engine(url)
    raw = asyncio.run(_raw_secrets(engine, 1))
    asyncio.run(engine.dispose())
    assert raw[1] == PLAIN["webhook_secret"]  # untouched, still at 0007
