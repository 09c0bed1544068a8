"""bigint foreign keys: resync.store_id and settlement_line's ids match the bigint ids they name

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 15:20:00
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0005'
down_revision: Union[str, None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

COLUMNS = (("resync", "store_id"), ("settlement_line", "order_id"), ("settlement_line", "refund_id"),
           ("settlement_line", "store_id"))


def upgrade() -> None:
    # SQLite's INTEGER is 64 bits already (and its ids stay INTEGER to autoincrement).
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column in COLUMNS:
        op.alter_column(table, column, type_=sa.BigInteger(), existing_type=sa.Integer())


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column in COLUMNS:
        op.alter_column(table, column, type_=sa.Integer(), existing_type=sa.BigInteger())
