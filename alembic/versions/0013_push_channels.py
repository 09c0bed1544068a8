"""push channels: the lease that lets one replica consume a platform's message channel per app

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01 18:00:00
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel
import app.models.base


revision: str = '0013'
down_revision: Union[str, None] = '0012'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        'channel_lease',
        sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column('holder', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.Column('lease_until', app.models.base.UTCDateTime(), nullable=True),
        sa.Column('heartbeat_at', app.models.base.UTCDateTime(), nullable=True),
        sa.Column('last_message_at', app.models.base.UTCDateTime(), nullable=True),
        sa.Column('connected', sa.Boolean(), nullable=False),
        sa.Column('messages', sa.Integer(), nullable=False),
        sa.Column('reconnects', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_channel_lease')),
    )


def downgrade() -> None:
    op.drop_table('channel_lease')
