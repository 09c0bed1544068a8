"""The ``coopsync`` command: tokens, workers, resyncs and a look at the stores."""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated, Optional

import typer
from rich.console import Console

from app.config import Settings, get_settings

cli = typer.Typer(help="coopsync operator commands", no_args_is_help=True, add_completion=False)
token_cli = typer.Typer(help="API tokens", no_args_is_help=True)
cli.add_typer(token_cli, name="token")
console = Console(stderr=True)  # notes go to stderr; stdout carries only results


def _database(settings: Settings):
    from app.api.deps import Database
    from app.db import make_engine, make_sessionmaker

    engine = make_engine(settings.database_url)
    return Database(engine, make_sessionmaker(engine))


@token_cli.command("create")
def token_create(
    scope: Annotated[list[str], typer.Option("--scope", help="stock:read, stock:write, orders:read, operator, admin")],
    name: Annotated[str, typer.Option("--name", help="who or what uses the token")] = "unnamed",
) -> None:
    """Create a token and print it once; only its hash is stored."""
    from app.models import ApiToken
    from app.security import hash_token, new_token, validate_scopes

    scopes: list[str] = []
    for item in scope:
        scopes.extend(s for s in item.replace(",", " ").split() if s)
    try:
        scopes = validate_scopes(scopes)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None

    async def main() -> str:
        db = _database(get_settings())
        token = new_token()
        async with db.transaction() as session:
            session.add(ApiToken(name=name, token_hash=hash_token(token), scopes=" ".join(scopes)))
        await db.engine.dispose()
        return token

    token = asyncio.run(main())
    typer.echo(token)
    console.print(f"[dim]token {name!r} with scopes {' '.join(scopes)}; it is shown only this once[/dim]")


@cli.command()
def worker(
    concurrency: Annotated[Optional[int], typer.Option(help="handlers at once (PostgreSQL)")] = None,
) -> None:
    """Run the job workers and the scheduler alone, without the API."""
    from app.logging import configure_logging
    from app.workers.handlers import default_handlers
    from app.workers.runner import Runner
    from app.workers.schedule import Scheduler

    from app.sync import push

    settings = get_settings()
    push.configure(settings.stock_push_debounce_s)
    if concurrency:
        settings = settings.model_copy(update={"worker_concurrency": concurrency})
    configure_logging(settings.log_format, settings.log_level)

    async def main() -> None:
        db = _database(settings)
        runner = Runner(db, settings, default_handlers())
        scheduler = Scheduler(db, settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await runner.start()
        await scheduler.start()
        console.print(f"[green]worker {runner.worker_id} running[/green]")
        await stop.wait()
        await scheduler.stop()
        await runner.stop()
        await db.engine.dispose()

    asyncio.run(main())


def main() -> None:  # console script entry point
    import app.cli_ops  # noqa: F401  (registers resync and stores on the same Typer app)
    from app.cli import cli as registered  # not __main__'s copy when run with ``python -m app.cli``

    registered()


if __name__ == "__main__":
    main()
