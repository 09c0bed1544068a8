"""webhook secret rotated at: the previous secret verifies only during a grace period

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 16:45:00
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import app.models.base


revision: str = '0006'
down_revision: Union[str, None] = '0005'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('store', schema=None) as batch_op:
        batch_op.add_column(sa.Column('webhook_secret_rotated_at', app.models.base.UTCDateTime(), nullable=True))
    # A secret rotated before this version has no start for its grace: it gets one from now.
    op.execute(sa.text("UPDATE store SET webhook_secret_rotated_at = CURRENT_TIMESTAMP "
                       "WHERE webhook_secret_previous IS NOT NULL"))


def downgrade() -> None:
    with op.batch_alter_table('store', schema=None) as batch_op:
        batch_op.drop_column('webhook_secret_rotated_at')
