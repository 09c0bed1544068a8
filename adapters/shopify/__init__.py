"""Shopify adapter: HMAC-signed webhooks, Admin REST resync (orders, refunds) and inventory-level pushes.
Facts and sources: shared/platforms/global.md section 1.
"""
