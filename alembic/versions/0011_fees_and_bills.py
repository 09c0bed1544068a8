"""fees and bills: imported bill files and every settlement or bill line (matched to its order or not);
an order's fee source, subsidy and what statements counted of its fee and subsidy; statements and their
lines keep actual and estimated fees apart, and subsidies

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 16:08:47
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel
import app.models.base


revision: str = '0011'
down_revision: Union[str, None] = '0010'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('bill_import',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('store_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
    sa.Column('digest', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('lines', sa.Integer(), nullable=False),
    sa.Column('new_lines', sa.Integer(), nullable=False),
    sa.Column('matched', sa.Integer(), nullable=False),
    sa.Column('created_at', app.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['store_id'], ['store.id'], name=op.f('fk_bill_import_store_id_store')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_bill_import')),
    sa.UniqueConstraint('store_id', 'digest', name=op.f('uq_bill_import_store_id_digest'))
    )
    op.create_table('bill_line',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('store_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('bill_import_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('line_key', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('order_external_id', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
    sa.Column('order_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('source', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('currency', sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
    sa.Column('amount_minor', sa.BigInteger(), nullable=False),
    sa.Column('gross_minor', sa.BigInteger(), nullable=False),
    sa.Column('refund_minor', sa.BigInteger(), nullable=False),
    sa.Column('fee_minor', sa.BigInteger(), nullable=False),
    sa.Column('subsidy_minor', sa.BigInteger(), nullable=False),
    sa.Column('fees', sa.JSON(), nullable=False),
    sa.Column('fee_known', sa.Boolean(), nullable=False),
    sa.Column('occurred_at', app.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('raw', sa.JSON(), nullable=True),
    sa.Column('created_at', app.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['bill_import_id'], ['bill_import.id'], name=op.f('fk_bill_line_bill_import_id_bill_import')),
    sa.ForeignKeyConstraint(['order_id'], ['sales_order.id'], name=op.f('fk_bill_line_order_id_sales_order')),
    sa.ForeignKeyConstraint(['store_id'], ['store.id'], name=op.f('fk_bill_line_store_id_store')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_bill_line')),
    sa.UniqueConstraint('store_id', 'line_key', name=op.f('uq_bill_line_store_id_line_key'))
    )
    with op.batch_alter_table('bill_line', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_bill_line_bill_import_id'), ['bill_import_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_bill_line_order_id'), ['order_id'], unique=False)
        batch_op.create_index('ix_bill_line_store_order', ['store_id', 'order_external_id'], unique=False)
        batch_op.create_index('ix_bill_line_store_time', ['store_id', 'occurred_at'], unique=False)

    with op.batch_alter_table('sales_order', schema=None) as batch_op:
        batch_op.add_column(sa.Column('fee_source', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True))
        batch_op.add_column(sa.Column('subsidy_minor', sa.BigInteger(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('fee_settled_minor', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('subsidy_settled_minor', sa.BigInteger(), nullable=True))

    with op.batch_alter_table('settlement', schema=None) as batch_op:
        batch_op.add_column(sa.Column('platform_fees_actual_minor', sa.BigInteger(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('platform_fees_estimated_minor', sa.BigInteger(), nullable=False,
                                      server_default='0'))
        batch_op.add_column(sa.Column('subsidies_minor', sa.BigInteger(), nullable=False, server_default='0'))

    with op.batch_alter_table('settlement_line', schema=None) as batch_op:
        batch_op.add_column(sa.Column('subsidy_minor', sa.BigInteger(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('fee_source', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True))

    # Fees taken in before came from the orders' own payloads.
    op.execute("UPDATE sales_order SET fee_source = 'order' WHERE platform_fee_minor IS NOT NULL")
    # What earlier statements counted for their orders (no subsidies then), so that an actual fee arriving
    # now for an order settled on an estimate becomes a fee adjustment of the next statement.
    op.execute("""
        UPDATE sales_order SET
          fee_settled_minor = (SELECT sl.fees_minor FROM settlement_line sl
                               WHERE sl.order_id = sales_order.id AND sl.kind = 'order'),
          subsidy_settled_minor = 0
        WHERE settlement_id IS NOT NULL
    """)
    # Their lines' fees were the order's own (actual) or the store's rate (estimate); the frozen bodies stay.
    op.execute("""
        UPDATE settlement_line SET fee_source = CASE WHEN EXISTS (
            SELECT 1 FROM sales_order o WHERE o.id = settlement_line.order_id AND o.platform_fee_minor IS NOT NULL)
          THEN 'platform' ELSE 'estimate' END
        WHERE kind = 'order'
    """)
    op.execute("""
        UPDATE settlement SET
          platform_fees_estimated_minor = COALESCE((SELECT SUM(sl.fees_minor) FROM settlement_line sl
                                                    WHERE sl.settlement_id = settlement.id
                                                      AND sl.fee_source = 'estimate'), 0),
          platform_fees_actual_minor = platform_fees_minor - COALESCE((SELECT SUM(sl.fees_minor) FROM settlement_line sl
                                                    WHERE sl.settlement_id = settlement.id
                                                      AND sl.fee_source = 'estimate'), 0)
    """)


def downgrade() -> None:
    with op.batch_alter_table('settlement_line', schema=None) as batch_op:
        batch_op.drop_column('fee_source')
        batch_op.drop_column('subsidy_minor')

    with op.batch_alter_table('settlement', schema=None) as batch_op:
        batch_op.drop_column('subsidies_minor')
        batch_op.drop_column('platform_fees_estimated_minor')
        batch_op.drop_column('platform_fees_actual_minor')

    with op.batch_alter_table('sales_order', schema=None) as batch_op:
        batch_op.drop_column('subsidy_settled_minor')
        batch_op.drop_column('fee_settled_minor')
        batch_op.drop_column('subsidy_minor')
        batch_op.drop_column('fee_source')

    with op.batch_alter_table('bill_line', schema=None) as batch_op:
        batch_op.drop_index('ix_bill_line_store_time')
        batch_op.drop_index('ix_bill_line_store_order')
        batch_op.drop_index(batch_op.f('ix_bill_line_order_id'))
        batch_op.drop_index(batch_op.f('ix_bill_line_bill_import_id'))

    op.drop_table('bill_line')
    op.drop_table('bill_import')
