"""The ``coopsync`` Typer application, its console and the database its commands open."""

from __future__ import annotations

import typer
from rich.console import Console

from app.config import Settings
from app.crypto import configure_keyring
from app.db import Database

cli = typer.Typer(help="coopsync operator commands", no_args_is_help=True, add_completion=False)
token_cli = typer.Typer(help="API tokens", no_args_is_help=True)
cli.add_typer(token_cli, name="token")
secrets_cli = typer.Typer(help="the keys that encrypt store credentials and webhook secrets", no_args_is_help=True)
cli.add_typer(secrets_cli, name="secrets")
console = Console(stderr=True)  # notes go to stderr; stdout carries only results


def open_database(settings: Settings) -> Database:
    """The database, once the secret key is known: without it no command may read or write a store
    (``SecretKeyMissing``, printed on one line by ``app.cli.main``)."""
    configure_keyring(settings.secret_key)
    return Database.from_url(settings.database_url)
