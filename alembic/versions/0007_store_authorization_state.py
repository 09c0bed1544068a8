"""store authorization state, parked jobs, token last use, oauth state

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 15:30:00
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel
import app.models.base


revision: str = '0007'
down_revision: Union[str, None] = '0006'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('oauth_state',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('store_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('state_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('created_at', app.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', app.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('used_at', app.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['store_id'], ['store.id'], name=op.f('fk_oauth_state_store_id_store'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_oauth_state')),
    sa.UniqueConstraint('state_hash', name=op.f('uq_oauth_state_state_hash'))
    )
    with op.batch_alter_table('oauth_state', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_oauth_state_store_id'), ['store_id'], unique=False)

    with op.batch_alter_table('api_token', schema=None) as batch_op:
        batch_op.add_column(sa.Column('last_used_at', app.models.base.UTCDateTime(timezone=True), nullable=True))

    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('waiting_for', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
        batch_op.create_index(batch_op.f('ix_job_waiting_for'), ['waiting_for'], unique=False)

    with op.batch_alter_table('store', schema=None) as batch_op:
        batch_op.add_column(sa.Column('auth_expires_at', app.models.base.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('refresh_expires_at', app.models.base.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('last_refreshed_at', app.models.base.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('credentials_version', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('refresh_lease_until', app.models.base.UTCDateTime(timezone=True), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('store', schema=None) as batch_op:
        batch_op.drop_column('refresh_lease_until')
        batch_op.drop_column('credentials_version')
        batch_op.drop_column('last_refreshed_at')
        batch_op.drop_column('refresh_expires_at')
        batch_op.drop_column('auth_expires_at')

    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_job_waiting_for'))
        batch_op.drop_column('waiting_for')

    with op.batch_alter_table('api_token', schema=None) as batch_op:
        batch_op.drop_column('last_used_at')

    with op.batch_alter_table('oauth_state', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_oauth_state_store_id'))

    op.drop_table('oauth_state')
