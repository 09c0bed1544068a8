"""job priority

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 02:25:43.943197
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel
import app.models.base


revision: str = '0003'
down_revision: Union[str, None] = '0002'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    # server_default 100: jobs queued before this migration keep the ordinary priority.
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('priority', sa.Integer(), nullable=False, server_default=sa.text('100')))
        batch_op.drop_index(batch_op.f('ix_job_due'))
        batch_op.create_index('ix_job_due', ['status', 'priority', 'run_after'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_index('ix_job_due')
        batch_op.create_index(batch_op.f('ix_job_due'), ['status', 'run_after'], unique=False)
        batch_op.drop_column('priority')

