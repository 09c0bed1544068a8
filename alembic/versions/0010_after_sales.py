"""after-sales (售后): a refund's kind (pending while a detail call is due), where a return's goods and an
exchange's replacement stand; refund lines count what came back, what is held for inspection, what went
on hand, the inspection's verdicts and an exchange's other sku; order lines say whether they are a sale
or a replacement

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 15:57:35
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel
import app.models.base


revision: str = '0010'
down_revision: Union[str, None] = '0009'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

_QTY = ('returned_qty', 'held_qty', 'restocked_qty', 'good_qty', 'defective_qty')


def upgrade() -> None:
    with op.batch_alter_table('order_line', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False,
                                      server_default='sale'))
        batch_op.add_column(sa.Column('replacement_of_refund_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True))
        batch_op.add_column(sa.Column('replacement_of_line_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True))
        batch_op.create_index(batch_op.f('ix_order_line_replacement_of_refund_id'), ['replacement_of_refund_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_order_line_replacement_of_line_id_order_line'), 'order_line', ['replacement_of_line_id'], ['id'])
        batch_op.create_foreign_key(batch_op.f('fk_order_line_replacement_of_refund_id_refund'), 'refund', ['replacement_of_refund_id'], ['id'])

    with op.batch_alter_table('refund', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=24), nullable=True))
        batch_op.add_column(sa.Column('kind_pending', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('return_status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True))
        batch_op.add_column(sa.Column('returned_at', app.models.base.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('replacement_status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True))

    with op.batch_alter_table('refund_line', schema=None) as batch_op:
        for column in _QTY:
            batch_op.add_column(sa.Column(column, sa.BigInteger(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('replacement_sku_key', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True))
        batch_op.add_column(sa.Column('replacement_merchant_sku', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True))

    # Refunds taken in before: a line that restocked did so with one movement keyed
    # refund:<refund>:line:<line>:restock, which is what came back and went on hand.
    op.execute("""
        UPDATE refund_line SET
          returned_qty = COALESCE((SELECT m.on_hand_delta FROM stock_movement m
                                   WHERE m.cause_key = 'refund:' || refund_line.refund_id || ':line:' || refund_line.id || ':' || 'restock'), 0),
          restocked_qty = COALESCE((SELECT m.on_hand_delta FROM stock_movement m
                                    WHERE m.cause_key = 'refund:' || refund_line.refund_id || ':line:' || refund_line.id || ':' || 'restock'), 0)
        WHERE restock = 'return'
    """)
    # Their kind as the core reads a refund without one: a line that restocks "return" makes a return.
    op.execute("""
        UPDATE refund SET kind = CASE WHEN EXISTS (SELECT 1 FROM refund_line l WHERE l.refund_id = refund.id
                                                   AND l.restock = 'return') THEN 'return' ELSE 'refund_only' END
    """)
    op.execute("""
        UPDATE refund SET return_status = CASE WHEN EXISTS (SELECT 1 FROM refund_line l WHERE l.refund_id = refund.id
                                                            AND l.returned_qty > 0) THEN 'received' ELSE 'awaiting_goods' END,
                          returned_at = CASE WHEN EXISTS (SELECT 1 FROM refund_line l WHERE l.refund_id = refund.id
                                                          AND l.returned_qty > 0) THEN succeeded_at END
        WHERE kind = 'return'
    """)


def downgrade() -> None:
    with op.batch_alter_table('refund_line', schema=None) as batch_op:
        batch_op.drop_column('replacement_merchant_sku')
        batch_op.drop_column('replacement_sku_key')
        for column in reversed(_QTY):
            batch_op.drop_column(column)

    with op.batch_alter_table('refund', schema=None) as batch_op:
        batch_op.drop_column('replacement_status')
        batch_op.drop_column('returned_at')
        batch_op.drop_column('return_status')
        batch_op.drop_column('kind_pending')
        batch_op.drop_column('kind')

    with op.batch_alter_table('order_line', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_order_line_replacement_of_refund_id_refund'), type_='foreignkey')
        batch_op.drop_constraint(batch_op.f('fk_order_line_replacement_of_line_id_order_line'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_order_line_replacement_of_refund_id'))
        batch_op.drop_column('replacement_of_line_id')
        batch_op.drop_column('replacement_of_refund_id')
        batch_op.drop_column('kind')
