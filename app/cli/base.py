"""The ``coopsync`` Typer application, its console and the database its commands open."""

from __future__ import annotations

import typer
from rich.console import Console

from app.config import Settings
from app.db import Database

cli = typer.Typer(help="coopsync operator commands", no_args_is_help=True, add_completion=False)
token_cli = typer.Typer(help="API tokens", no_args_is_help=True)
cli.add_typer(token_cli, name="token")
console = Console(stderr=True)  # notes go to stderr; stdout carries only results


def open_database(settings: Settings) -> Database:
    return Database.from_url(settings.database_url)
