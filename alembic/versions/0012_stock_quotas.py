"""stock quotas: a listing's quota under a share policy, and the delta whose answer was lost with its
idempotency key

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 17:00:00
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision: str = '0012'
down_revision: Union[str, None] = '0011'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('listing') as batch_op:
        batch_op.add_column(sa.Column('quota', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('pending_delta', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('pending_delta_key', sqlmodel.sql.sqltypes.AutoString(length=64),
                                      nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('listing') as batch_op:
        batch_op.drop_column('pending_delta_key')
        batch_op.drop_column('pending_delta')
        batch_op.drop_column('quota')
