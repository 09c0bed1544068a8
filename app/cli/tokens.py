"""``coopsync token``: API tokens for the cooperative's systems and its operators."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from app.cli.base import console, open_database, token_cli
from app.config import get_settings
from app.models import ApiToken
from app.security import hash_token, new_token, validate_scopes


@token_cli.command("create")
def token_create(
    scope: Annotated[list[str], typer.Option("--scope", help="stock:read, stock:write, orders:read, operator, admin")],
    name: Annotated[str, typer.Option("--name", help="who or what uses the token")] = "unnamed",
) -> None:
    """Create a token and print it once; only its hash is stored."""
    scopes: list[str] = []
    for item in scope:
        scopes.extend(s for s in item.replace(",", " ").split() if s)
    try:
        scopes = validate_scopes(scopes)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None

    async def main() -> str:
        db = open_database(get_settings())
        token = new_token()
        async with db.transaction() as session:
            session.add(ApiToken(name=name, token_hash=hash_token(token), scopes=" ".join(scopes)))
        await db.engine.dispose()
        return token

    token = asyncio.run(main())
    typer.echo(token)
    console.print(f"[dim]token {name!r} with scopes {' '.join(scopes)}; it is shown only this once[/dim]")
