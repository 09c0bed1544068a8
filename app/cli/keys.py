"""``coopsync secrets``: a new key for ``COOPSYNC_SECRET_KEY``, and re-encrypting what is stored with the newest key."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
import typer
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import SQLModel

from app import crypto
from app.cli.base import console, open_database, secrets_cli
from app.config import get_settings
from app.models.base import EncryptedJSON, EncryptedText


def encrypted_columns() -> list[tuple[sa.Table, list[sa.Column]]]:
    """Every table with encrypted columns, and those columns."""
    found = []
    for table in SQLModel.metadata.sorted_tables:
        columns = [c for c in table.columns if isinstance(c.type, (EncryptedText, EncryptedJSON))]
        if columns:
            found.append((table, columns))
    return found


async def rotate_all(session: AsyncSession) -> tuple[int, int]:
    """Re-encrypt every encrypted value with the newest key (``MultiFernet.rotate``), in the caller's
    transaction; (rows rewritten, values rewritten)."""
    if session.bind.dialect.name == "sqlite":
        await session.execute(sa.text("PRAGMA secure_delete=ON"))  # the old tokens' cells are zeroed
    rows = values = 0
    for table, columns in encrypted_columns():
        [key] = table.primary_key.columns
        # type_coerce to Text: the stored tokens themselves, not what they decrypt to.
        query = sa.select(key, *[sa.type_coerce(c, sa.Text).label(c.name) for c in columns]).order_by(key)
        for row in (await session.execute(query.with_for_update())).all():
            new = {c.name: sa.type_coerce(crypto.rotate(row._mapping[c.name]), sa.Text)
                   for c in columns if row._mapping[c.name] is not None}
            if new:
                await session.execute(sa.update(table).where(key == row[0]).values(new))
                rows, values = rows + 1, values + len(new)
    return rows, values


@secrets_cli.command("generate-key")
def generate_key() -> None:
    """Print a new Fernet key. To rotate: put it first in COOPSYNC_SECRET_KEY (new,old), restart, then
    run `coopsync secrets rotate`, then drop the old key."""
    typer.echo(crypto.generate_key())


@secrets_cli.command("rotate")
def rotate() -> None:
    """Encrypt every stored credential and webhook secret again with the newest key (the first of
    COOPSYNC_SECRET_KEY), in one transaction; afterwards the older keys can be dropped."""
    settings = get_settings()

    async def main() -> tuple[int, int]:
        db = open_database(settings)
        try:
            async with db.transaction() as session:
                return await rotate_all(session)
        finally:
            await db.engine.dispose()

    rows, values = asyncio.run(main())
    typer.echo(f"re-encrypted {rows} rows ({values} values) with the newest key")
    console.print("[dim]the older keys can now be removed from COOPSYNC_SECRET_KEY[/dim]")
