"""Real processes for crash tests: the service under uvicorn, workers, and a sandbox market over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from adapters.sandbox.server import ServerThread

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_env(database_url: str, **overrides: str) -> dict[str, str]:
    from tests.conftest import ADMIN_TOKEN

    env = {k: v for k, v in os.environ.items() if not k.startswith("COOPSYNC_") or k == "COOPSYNC_SECRET_KEY"}
    env.update(COOPSYNC_DATABASE_URL=database_url, COOPSYNC_ADMIN_TOKEN=ADMIN_TOKEN, COOPSYNC_LOG_LEVEL="WARNING",
               COOPSYNC_JOB_LEASE_S="2", COOPSYNC_SCHEDULER_TICK_S="3600", COOPSYNC_WORKER_POLL_S="0.05")
    env.update(overrides)
    return env


class _Process:
    """A child process the tests can crash (SIGKILL) or stop (SIGTERM, then SIGKILL)."""

    proc: subprocess.Popen

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no flushing, as a crash would be."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


class Service(_Process):
    """``uvicorn app.main:app_factory`` in a subprocess on a free port."""

    def __init__(self, database_url: str, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # A file, not a pipe: a pipe nobody reads fills up and blocks the service on its next log line.
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app.main:app_factory", "--factory", "--host", "127.0.0.1",
             "--port", str(self.port), "--no-access-log"],
            cwd=ROOT, env=service_env(database_url, **env), stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"service exited: {self.log.read().decode(errors='replace')[-2000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=0.5).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.kill()
        raise RuntimeError("service did not start in 30 s")



class Worker(_Process):
    """``coopsync worker`` in a subprocess."""

    def __init__(self, database_url: str, **env: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "app.cli", "worker"], cwd=ROOT,
                                     env=service_env(database_url, **env), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)


ThreadedServer = ServerThread  # an ASGI app (a sandbox market, a receiver) on a real port, in a thread
