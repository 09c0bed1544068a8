"""Find a PostgreSQL for the tests: COOPSYNC_TEST_DATABASE_URL, else 127.0.0.1:5432, else a throwaway
cluster from the local initdb/pg_ctl. Each run gets a database of its own, dropped at the end."""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

from sqlalchemy.engine import make_url


@dataclass
class PgServer:
    admin_url: str  # sqlalchemy URL (asyncpg) to a maintenance database
    how: str
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        for cleanup in reversed(self.cleanups):
            try:
                cleanup()
            except Exception:
                pass


def _asyncpg_url(url: str) -> str:
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    return url


def _dsn(sa_url: str, database: str | None = None) -> str:
    url = make_url(sa_url).set(drivername="postgresql")
    if database is not None:
        url = url.set(database=database)
    return url.render_as_string(hide_password=False)


async def _execute(sa_url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(_dsn(sa_url), timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _binaries() -> tuple[str, str] | None:
    for candidate in [os.path.dirname(shutil.which("initdb") or "")] + sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if candidate and os.path.exists(os.path.join(candidate, "initdb")) and os.path.exists(os.path.join(candidate, "pg_ctl")):
            return os.path.join(candidate, "initdb"), os.path.join(candidate, "pg_ctl")
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _throwaway_cluster() -> PgServer | None:
    found = _binaries()
    if found is None:
        return None
    initdb, pg_ctl = found
    base = tempfile.mkdtemp(prefix="coopsync-pg-")
    data = os.path.join(base, "data")
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return None
        shutil.chown(base, "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    subprocess.run(prefix + [initdb, "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(prefix + [pg_ctl, "-D", data, "-l", os.path.join(base, "log"), "-w", "-o",
                             f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=on", "start"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = PgServer(f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres", how=f"throwaway cluster in {base}")
    server.cleanups.append(lambda: shutil.rmtree(base, ignore_errors=True))
    server.cleanups.append(lambda: subprocess.run(prefix + [pg_ctl, "-D", data, "-m", "fast", "-w", "stop"],
                                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return server


def find_server() -> PgServer | None:
    given = os.environ.get("COOPSYNC_TEST_DATABASE_URL")
    if given:
        return PgServer(_asyncpg_url(given), how="COOPSYNC_TEST_DATABASE_URL")
    if _answers("127.0.0.1", 5432):
        return PgServer("postgresql+asyncpg://postgres@127.0.0.1:5432/postgres", how="server on 127.0.0.1:5432")
    return _throwaway_cluster()


def create_database(server: PgServer) -> str:
    """A database of this run's own; returns its URL and registers its drop."""
    name = f"coopsync_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    asyncio.run(_execute(server.admin_url, f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        for _ in range(3):
            try:
                asyncio.run(_execute(server.admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                return
            except Exception:
                time.sleep(0.5)

    server.cleanups.insert(0, drop)
    return make_url(server.admin_url).set(database=name).render_as_string(hide_password=False)
