"""Pinduoduo's daily funds bill (商家货款日账单): the only finance API is a download URL per day
(``pdd.finance.balance.daily.bill.url.get``, operations.md 5.1); the file it points to, and the one an
operator downloads from the merchant back office, go through the same parser and mapping.

The file's columns are UNCONFIRMED in every source read (operations.md 5.1, 7.1). ``BILL_COLUMNS`` is
therefore a hand-made mapping, one money movement per row with its 账务类型 (type), named the way the back
office's funds-detail export names them; a store whose file differs sets ``settings.bill_columns``.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from adapters.base import TimeWindow
from adapters.bills import BillColumns
from adapters.units import BEIJING

# Hand-made (see the module docstring): the shape and names are an assumption a store can override.
BILL_COLUMNS = BillColumns(
    order="商户订单号",
    time="发生时间",
    amount="收入金额（+元）",
    expense="支出金额（-元）",
    type="账务类型",
    categories={
        "交易收入": "sale",
        "退款": "refund",
        "优惠券结算": "subsidy",
        "平台补贴": "subsidy",
        "技术服务费": "fee",
        "多多进宝佣金": "fee",
        "推广服务费": "fee",
        "提现": "other",
        "其他": "other",
    },
    unit="yuan",
    currency="CNY",
    time_format="%Y-%m-%d %H:%M:%S",
    utc_offset_minutes=480,
)


def bill_dates(window: TimeWindow) -> list[date]:
    """The bill days (Beijing) that begin inside the window: consecutive windows cover each day once."""
    start = window.start.astimezone(BEIJING)
    day = start.date() if start.time() == time(0) else start.date() + timedelta(days=1)
    days = []
    while True:
        midnight = datetime.combine(day, time(0), BEIJING)
        if midnight >= window.end:
            return days
        days.append(day)
        day += timedelta(days=1)
