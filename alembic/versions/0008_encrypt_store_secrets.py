"""encrypt store secrets: credentials and webhook secrets become Fernet tokens under COOPSYNC_SECRET_KEY

Every store row is rewritten with the newest key (refused, with the message, when there are rows and no
key). No plain copy is left behind: SQLite overwrites what it frees (secure_delete) and alembic/env.py
runs a VACUUM and empties the WAL after the upgrade; PostgreSQL gets a VACUUM FULL of the table.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 10:00:00
"""
from typing import Sequence, Union

import orjson
import sqlalchemy as sa
from alembic import context, op

from app import crypto


revision: str = '0008'
down_revision: Union[str, None] = '0007'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# (column, type before, nullable); credentials is one token of the JSON text, the secrets one each.
COLUMNS = (("credentials", sa.JSON(), False), ("webhook_secret", sa.String(length=512), True),
           ("webhook_secret_previous", sa.String(length=512), True))


def _store_rows(bind) -> list:
    return bind.execute(sa.text("SELECT id, credentials, webhook_secret, webhook_secret_previous "
                                "FROM store ORDER BY id")).all()


def _keyring(rows: list):
    if not rows:
        return None
    try:
        return crypto.keyring()
    except crypto.SecretKeyMissing:
        raise crypto.SecretKeyMissing(f" ({len(rows)} stores to convert)") from None


def _rewrite(bind, rows: list, convert) -> None:
    update = sa.text("UPDATE store SET credentials = :credentials, webhook_secret = :webhook_secret, "
                     "webhook_secret_previous = :webhook_secret_previous WHERE id = :id")
    for row in rows:
        bind.execute(update, {"id": row.id, **{name: None if getattr(row, name) is None else
                                                convert(name, getattr(row, name)) for name, _, _ in COLUMNS}})


def _check_foreign_keys(bind) -> None:
    # alembic/env.py turns enforcement off on SQLite while the store table is copied: the copy keeps
    # every id, and this proves it before the commit.
    if bind.dialect.name == "sqlite":
        broken = bind.exec_driver_sql("PRAGMA foreign_key_check").all()
        if broken:
            raise RuntimeError(f"foreign keys broken by the copy of the store table: {broken[:5]}")


def upgrade() -> None:
    bind = op.get_bind()
    rows = _store_rows(bind)
    keyring = _keyring(rows)  # before any change: no key, nothing touched
    if bind.dialect.name == "sqlite":
        op.execute("PRAGMA secure_delete=ON")  # freed pages and cells are overwritten with zeros
    with op.batch_alter_table('store', schema=None) as batch_op:
        for name, before, nullable in COLUMNS:
            batch_op.alter_column(name, existing_type=before, type_=sa.Text(), existing_nullable=nullable,
                                  postgresql_using=f"{name}::text")
    _check_foreign_keys(bind)

    def encrypt(name: str, value) -> str:
        plain = orjson.dumps(orjson.loads(value) if isinstance(value, (str, bytes)) else value) \
            if name == "credentials" else value.encode("utf-8")
        return keyring.encrypt(plain).decode("ascii")

    _rewrite(bind, rows, encrypt)
    if rows:
        context.config.attributes["compact_tables"] = {"store"}


def downgrade() -> None:
    bind = op.get_bind()
    rows = _store_rows(bind)
    keyring = _keyring(rows)

    def decrypt(name: str, token: str) -> str:
        try:
            return keyring.decrypt(token.encode("ascii")).decode("utf-8")
        except Exception:
            raise crypto.SecretUndecryptable() from None

    _rewrite(bind, rows, decrypt)
    with op.batch_alter_table('store', schema=None) as batch_op:
        for name, before, nullable in COLUMNS:
            batch_op.alter_column(name, existing_type=sa.Text(), type_=before, existing_nullable=nullable,
                                  postgresql_using=f"{name}::json" if name == "credentials" else None)
    _check_foreign_keys(bind)
