"""listing unheard sales

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 03:47:00.032209
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel
import app.models.base


revision: str = '0004'
down_revision: Union[str, None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('listing', schema=None) as batch_op:
        batch_op.add_column(sa.Column('unheard_sales', sa.BigInteger(), nullable=False, server_default=sa.text('0')))



def downgrade() -> None:
    with op.batch_alter_table('listing', schema=None) as batch_op:
        batch_op.drop_column('unheard_sales')

