"""Shared pieces of the benchmarks: databases (a SQLite file or a throwaway PostgreSQL database),
migrations, uvicorn subprocesses, CPU sampling and small statistics. Benchmark code only."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
# Store secrets are encrypted at rest: the benchmarks' throwaway databases get a throwaway key, which
# this process and its uvicorn children share.
SECRET_KEY = os.environ.setdefault("COOPSYNC_SECRET_KEY", Fernet.generate_key().decode())


# -- statistics -------------------------------------------------------------------------------------

def median(values):
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 4) if values else None


def percentile(values, q: float):
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(q / 100 * (len(ordered) - 1)))))
    return ordered[index]


# -- databases ----------------------------------------------------------------------------------------

def pg_reachable(host: str = "127.0.0.1", port: int = 5432) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


async def _pg_exec(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


class BenchDatabase:
    """A database of the benchmark's own: ``url`` (SQLAlchemy, async driver); ``drop()`` removes it."""

    def __init__(self, engine: str, tag: str) -> None:
        self.engine = engine
        self._tmp = None
        if engine == "sqlite":
            self._tmp = tempfile.TemporaryDirectory(prefix=f"coopsync-bench-{tag}-")
            self.path = os.path.join(self._tmp.name, "coopsync.db")
            self.url = f"sqlite+aiosqlite:///{self.path}"
        else:
            self.name = f"coopsync_bench_{tag}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
            asyncio.run(_pg_exec(f'CREATE DATABASE "{self.name}"'))
            self.url = PG_ADMIN.replace("postgresql://", "postgresql+asyncpg://").rsplit("/", 1)[0] + "/" + self.name
        migrate(self.url)

    @property
    def plain_url(self) -> str:
        """The URL for asyncpg / sqlite3 (no SQLAlchemy driver part)."""
        return self.url.replace("postgresql+asyncpg://", "postgresql://")

    def drop(self) -> None:
        if self.engine == "sqlite":
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp = None
            return
        for _ in range(3):
            try:
                asyncio.run(_pg_exec(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
                return
            except Exception:
                time.sleep(0.5)


def migrate(url: str) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "alembic"))
    config.attributes["database_url"] = url
    config.attributes["configure_logging"] = False
    command.upgrade(config, "head")


async def scalar(db: BenchDatabase, sql: str):
    """One value straight from the database (no SQLAlchemy, so it costs the service almost nothing)."""
    if db.engine == "sqlite":
        import sqlite3

        def run():
            conn = sqlite3.connect(db.path, timeout=30)
            try:
                return conn.execute(sql).fetchone()[0]
            finally:
                conn.close()
        return await asyncio.to_thread(run)
    import asyncpg

    conn = await asyncpg.connect(db.plain_url, timeout=5)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


# -- processes ----------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Uvicorn:
    """``python -m uvicorn <target>`` in a subprocess, 1 worker process, on a free 127.0.0.1 port."""

    def __init__(self, target: str, env: dict[str, str], *, factory: bool = False, health: str = "/healthz") -> None:
        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(self.port),
                "--no-access-log", "--log-level", "warning", "--loop", "uvloop", "--http", "httptools"]
        if factory:
            args.append("--factory")
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("COOPSYNC_")}
        full_env.update({"COOPSYNC_SECRET_KEY": SECRET_KEY}, **env)
        # A file, not a pipe: nobody reads a pipe during the run, and a full one blocks the server on
        # its next log line (an oversold flash sale logs one per order).
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(args, cwd=ROOT, env=full_env, stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"{target} exited: {self.log.read().decode(errors='replace')[-2000:]}")
            try:
                if httpx.get(self.url + health, timeout=0.5).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{target} did not start in 30 s")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


class CpuProbe:
    """CPU seconds used by given processes and by the whole machine between start() and stop()."""

    def __init__(self, pids: dict[str, int]) -> None:
        import psutil

        self._procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self._psutil = psutil

    def _sample(self):
        own = {}
        for name, proc in self._procs.items():
            try:
                t = proc.cpu_times()
                own[name] = t.user + t.system
            except self._psutil.Error:
                own[name] = 0.0
        total = self._psutil.cpu_times()
        busy = sum(getattr(total, f) for f in total._fields if f not in ("idle", "iowait", "guest", "guest_nice"))
        return time.monotonic(), own, busy

    def start(self) -> None:
        self._start = self._sample()

    def stop(self) -> dict:
        t1, own1, busy1 = self._sample()
        t0, own0, busy0 = self._start
        wall = max(1e-9, t1 - t0)
        result = {f"{name}_cores": round((own1[name] - own0[name]) / wall, 2) for name in own1}
        result["machine_busy_cores"] = round((busy1 - busy0) / wall, 2)
        return result
