"""sales speed: each listing's recent sales rate, how late its sales reach us and how long a push takes
to land (the sales-speed buffer of the allocation)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01 18:30:00
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import app.models.base


revision: str = '0014'
down_revision: Union[str, None] = '0013'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('listing') as batch_op:
        batch_op.add_column(sa.Column('sales_rate', sa.Float(), nullable=False, server_default=sa.text('0')))
        batch_op.add_column(sa.Column('sales_rated_at', app.models.base.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('sales_mark', sa.BigInteger(), nullable=False, server_default=sa.text('0')))
        batch_op.add_column(sa.Column('hear_lag_s', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('push_lag_s', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('listing') as batch_op:
        batch_op.drop_column('push_lag_s')
        batch_op.drop_column('hear_lag_s')
        batch_op.drop_column('sales_mark')
        batch_op.drop_column('sales_rated_at')
        batch_op.drop_column('sales_rate')
