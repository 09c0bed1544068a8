"""shipments (发货回传): shipment, its lines and upload attempts, carriers with each platform's code for them;
order lines count what our shipments cover, orders keep the platform's ship-by deadline

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 15:55:08
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel
import app.models.base


revision: str = '0009'
down_revision: Union[str, None] = '0008'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('carrier',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('code', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('tracking_url', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True),
    sa.Column('builtin', sa.Boolean(), nullable=False),
    sa.Column('created_at', app.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', app.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_carrier')),
    sa.UniqueConstraint('code', name=op.f('uq_carrier_code'))
    )
    op.create_table('carrier_code',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('carrier_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('platform', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('company', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('company_name', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
    sa.Column('source', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('updated_at', app.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['carrier_id'], ['carrier.id'], name=op.f('fk_carrier_code_carrier_id_carrier'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_carrier_code')),
    sa.UniqueConstraint('carrier_id', 'platform', name=op.f('uq_carrier_code_carrier_id_platform'))
    )
    op.create_table('shipment',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('order_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('store_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('carrier_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('carrier', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('tracking_number', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('shipped_at', app.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('platform_ref', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
    sa.Column('error', sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=True),
    sa.Column('uploaded_at', app.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', app.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', app.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['carrier_id'], ['carrier.id'], name=op.f('fk_shipment_carrier_id_carrier')),
    sa.ForeignKeyConstraint(['order_id'], ['sales_order.id'], name=op.f('fk_shipment_order_id_sales_order')),
    sa.ForeignKeyConstraint(['store_id'], ['store.id'], name=op.f('fk_shipment_store_id_store')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_shipment')),
    sa.UniqueConstraint('order_id', 'tracking_number', name=op.f('uq_shipment_order_id_tracking_number'))
    )
    with op.batch_alter_table('shipment', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_shipment_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_shipment_store_id'), ['store_id'], unique=False)

    op.create_table('shipment_attempt',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('shipment_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('attempt_no', sa.Integer(), nullable=False),
    sa.Column('started_at', app.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('duration_ms', sa.Integer(), nullable=True),
    sa.Column('outcome', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('error_kind', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
    sa.Column('detail', sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=True),
    sa.ForeignKeyConstraint(['shipment_id'], ['shipment.id'], name=op.f('fk_shipment_attempt_shipment_id_shipment')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_shipment_attempt')),
    sa.UniqueConstraint('shipment_id', 'attempt_no', name=op.f('uq_shipment_attempt_shipment_id_attempt_no'))
    )
    op.create_table('shipment_line',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('shipment_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('order_line_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('quantity', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['order_line_id'], ['order_line.id'], name=op.f('fk_shipment_line_order_line_id_order_line')),
    sa.ForeignKeyConstraint(['shipment_id'], ['shipment.id'], name=op.f('fk_shipment_line_shipment_id_shipment')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_shipment_line')),
    sa.UniqueConstraint('shipment_id', 'order_line_id', name=op.f('uq_shipment_line_shipment_id_order_line_id'))
    )
    with op.batch_alter_table('shipment_line', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_shipment_line_order_line_id'), ['order_line_id'], unique=False)

    with op.batch_alter_table('order_line', schema=None) as batch_op:
        batch_op.add_column(sa.Column('shipment_qty', sa.BigInteger(), nullable=False, server_default='0'))

    with op.batch_alter_table('sales_order', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ship_by', app.models.base.UTCDateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f('ix_sales_order_ship_by'), ['ship_by'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('sales_order', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sales_order_ship_by'))
        batch_op.drop_column('ship_by')

    with op.batch_alter_table('order_line', schema=None) as batch_op:
        batch_op.drop_column('shipment_qty')

    with op.batch_alter_table('shipment_line', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_shipment_line_order_line_id'))

    op.drop_table('shipment_line')
    op.drop_table('shipment_attempt')
    with op.batch_alter_table('shipment', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_shipment_store_id'))
        batch_op.drop_index(batch_op.f('ix_shipment_status'))

    op.drop_table('shipment')
    op.drop_table('carrier_code')
    op.drop_table('carrier')
