"""``coopsync token``: API tokens for the cooperative's systems and its operators."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from app.cli.base import console, open_database, token_cli
from app.config import get_settings
from app.models import ApiToken
from app.models.base import utcnow
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
    if not 1 <= len(name) <= 128:
        raise typer.BadParameter("a token's name has 1 to 128 characters", param_hint="--name")

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


def _when(moment) -> str:
    return moment.isoformat(timespec="seconds") if moment else "never"


@token_cli.command("list")
def token_list() -> None:
    """List tokens: id, name, scopes, created, last used, revoked (never the token or its hash)."""
    async def main() -> list[ApiToken]:
        db = open_database(get_settings())
        async with db.read() as session:
            rows = list((await session.execute(select(ApiToken).order_by(ApiToken.id))).scalars().all())
        await db.engine.dispose()
        return rows

    table = Table("id", "name", "scopes", "created", "last used", "revoked")
    for t in asyncio.run(main()):
        table.add_row(str(t.id), t.name, t.scopes, _when(t.created_at), _when(t.last_used_at),
                      _when(t.revoked_at) if t.revoked_at else "-")
    Console(width=200).print(table)  # the list itself goes to stdout


@token_cli.command("revoke")
def token_revoke(token_id: Annotated[int, typer.Argument(help="the token's id (see `coopsync token list`)")]) -> None:
    """Revoke a token: it stops authenticating at once."""
    async def main() -> str | None:
        db = open_database(get_settings())
        try:
            async with db.transaction() as session:
                token = await session.get(ApiToken, token_id, with_for_update=True) if 0 < token_id < 2**63 else None
                if token is None:
                    return None
                if token.revoked_at is None:
                    token.revoked_at = utcnow()
                return token.name
        finally:
            await db.engine.dispose()

    name = asyncio.run(main())
    if name is None:
        console.print(f"[red]no token {token_id}[/red]")
        raise typer.Exit(1)
    console.print(f"token {token_id} ({name!r}) revoked")
