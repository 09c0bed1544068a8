"""listing sold since push

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 02:00:19.141530
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel
import app.models.base


revision: str = '0002'
down_revision: Union[str, None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    # server_default 0: existing rows get a value; the models set it on insert.
    with op.batch_alter_table('listing', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sold_since_push', sa.BigInteger(), nullable=False, server_default=sa.text('0')))

    with op.batch_alter_table('order_line', schema=None) as batch_op:
        batch_op.add_column(sa.Column('platform_held', sa.BigInteger(), nullable=False, server_default=sa.text('0')))



def downgrade() -> None:
    with op.batch_alter_table('order_line', schema=None) as batch_op:
        batch_op.drop_column('platform_held')

    with op.batch_alter_table('listing', schema=None) as batch_op:
        batch_op.drop_column('sold_since_push')

