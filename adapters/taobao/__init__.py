"""Taobao / Tmall TOP adapter: signed gateway client, trade/refund mapping, full stock push.

Facts and their evidence tags: shared/platforms/china.md section 2.
"""
