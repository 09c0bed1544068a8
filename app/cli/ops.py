"""Operator commands: ``coopsync resync`` (with a live progress bar), ``coopsync stores`` and
``coopsync worker``."""

from __future__ import annotations

import asyncio
from datetime import datetime
import signal
from typing import Annotated, Optional

import typer
from sqlalchemy import select
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from app.cli.base import cli, console, open_database
from app.config import get_settings
from app.logging import configure_logging
from app.models import Resync, Store
from app.services import push
from app.services.channels import Channels
from app.services.connections import auth_state
from app.services.errors import ServiceError
from app.services.pull import create_resync
from app.workers.flows import default_handlers
from app.workers.runner import Runner
from app.workers.schedule import Scheduler


def _aware(text: str | None) -> datetime | None:
    if text is None:
        return None
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise typer.BadParameter(f"{text!r} needs an offset, e.g. 2026-11-28T00:00:00+08:00")
    return value


@cli.command()
def resync(
    store: Annotated[int, typer.Option("--store", help="store id")],
    resource: Annotated[str, typer.Option("--resource", help="orders, refunds, inventory or bills")] = "orders",
    since: Annotated[str | None, typer.Option(help="ISO time with offset")] = None,
    until: Annotated[str | None, typer.Option(help="ISO time with offset")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="run it here and show progress until it ends")] = False,
) -> None:
    """Queue a resync of a store; with --wait, run it in this process and show its progress."""
    settings = get_settings()

    async def main() -> None:
        db = open_database(settings)
        try:
            async with db.transaction() as session:
                row = await create_resync(session, store, resource, _aware(since), _aware(until))
                resync_id = row.id
        except ServiceError as exc:
            console.print(f"[red]{exc.detail}[/red]")
            raise typer.Exit(2) from None
        console.print(f"resync {resync_id} queued")
        if not wait:
            typer.echo(resync_id)
            await db.engine.dispose()
            return
        runner = Runner(db, settings, default_handlers(), names=["resync.run"])
        worker = asyncio.create_task(runner.run_until_idle())
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} windows"),
                      TextColumn("{task.fields[counts]}"), TimeElapsedColumn(), console=console) as progress:
            task = progress.add_task(f"{resource} of store {store}", total=None, counts="")
            while True:
                async with db.read() as session:
                    r = await session.get(Resync, resync_id)
                counts = f"fetched {r.fetched} created {r.created} updated {r.updated} unchanged {r.unchanged} failed {r.failed}"
                progress.update(task, total=(r.position or {}).get("windows"),
                                completed=(r.position or {}).get("window", 0), counts=counts)
                if r.status in ("succeeded", "failed", "cancelled"):
                    break
                if worker.done() and r.status == "queued":
                    worker = asyncio.create_task(runner.run_until_idle())
                await asyncio.sleep(0.3)
        await asyncio.gather(worker, return_exceptions=True)
        console.print(f"resync {resync_id} {r.status}: {counts}" + (f" — {r.error}" if r.error else ""))
        typer.echo(f"{r.status} pages={r.pages} fetched={r.fetched} created={r.created} updated={r.updated} "
                   f"unchanged={r.unchanged} failed={r.failed}")
        await db.engine.dispose()
        if r.status != "succeeded":
            raise typer.Exit(1)

    asyncio.run(main())


@cli.command()
def stores() -> None:
    """List stores with their last poll, last webhook and auth status."""
    async def main() -> list:
        db = open_database(get_settings())
        async with db.read() as session:
            rows = (await session.execute(select(Store).order_by(Store.id))).scalars().all()
        await db.engine.dispose()
        return rows

    table = Table("id", "platform", "name", "auth", "token ends", "last poll", "last webhook")
    for s in asyncio.run(main()):
        auth = auth_state(s)
        table.add_row(str(s.id), s.platform, s.name, auth.status,
                      auth.expires_at.isoformat(timespec="minutes") if auth.expires_at else "-",
                      s.last_poll_at.isoformat(timespec="seconds") if s.last_poll_at else "never",
                      s.last_webhook_at.isoformat(timespec="seconds") if s.last_webhook_at else "never")
    Console().print(table)  # the list itself goes to stdout


@cli.command()
def worker(
    concurrency: Annotated[Optional[int], typer.Option(help="handlers at once (PostgreSQL)")] = None,
) -> None:
    """Run the job workers and the scheduler alone, without the API."""
    settings = get_settings()
    push.configure(settings.stock_push_debounce_s)
    if concurrency:
        settings = settings.model_copy(update={"worker_concurrency": concurrency})
    configure_logging(settings.log_format, settings.log_level)

    async def main() -> None:
        db = open_database(settings)
        runner = Runner(db, settings, default_handlers())
        scheduler = Scheduler(db, settings)
        channels = Channels(db, settings)  # push channels, where configured; one replica per app consumes
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await runner.start()
        await scheduler.start()
        channels.start()
        console.print(f"[green]worker {runner.worker_id} running[/green]")
        await stop.wait()
        await channels.stop()
        await scheduler.stop()
        await runner.stop()
        await db.engine.dispose()

    asyncio.run(main())
