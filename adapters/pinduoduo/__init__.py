"""Pinduoduo (拼多多开放平台) adapter: signed gateway client, order/refund mapping, full stock push.

Facts and their evidence tags: shared/platforms/china.md section 1.
"""
