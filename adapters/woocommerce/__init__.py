"""WooCommerce adapter: signed order webhooks, REST v3 resync (orders, refunds) and product stock updates.
Facts and sources: shared/platforms/global.md section 2.
"""
