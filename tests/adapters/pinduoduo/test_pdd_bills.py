"""Pinduoduo's daily funds bill: the file read through the built-in mapping (hand-made, the real columns are
unconfirmed), in UTF-8 or GB18030, amounts exact; a malformed file names its line and column; the pull
asks for each day's download URL and reads the file it points to."""

from __future__ import annotations

import io
import zipfile
from datetime import datetime, timezone

import pytest
import respx

from adapters.base import Capability, TimeWindow
from adapters.bills import BillColumns, BillFormatError, parse_bill_csv
from adapters.errors import TransientError
from adapters.pinduoduo.adapter import PinduoduoAdapter
from adapters.pinduoduo.bills import BILL_COLUMNS, bill_dates
from pdd_fakes import FIXTURES

BILL = (FIXTURES / "bill-2024-06-03.csv").read_bytes()  # hand-made, see SOURCES.md
ORDER = "240601-100000000000001"


def test_the_daily_bill_is_read_line_by_line_into_fees_subsidies_and_payouts():
    lines = parse_bill_csv(BILL, BILL_COLUMNS)
    assert [(l.order_external_id, l.kind, l.amount_minor) for l in lines] == [
        (ORDER, "sale", 5990), (ORDER, "fee", -36), (ORDER, "fee", -599), (ORDER, "subsidy", 300),
        ("240699-100000000000009", "sale", 1990), (None, "other", -5000)]
    ours = [l for l in lines if l.order_external_id == ORDER]
    assert sum(l.fee_minor for l in ours) == 635 and sum(l.subsidy_minor for l in ours) == 300
    assert sum(l.gross_minor for l in ours) == 5990 and sum(l.amount_minor for l in ours) == 5655
    assert [l.fee_known for l in ours] == [False, True, True, False]  # only fee rows state the fee
    assert dict(ours[1].fees) == {"技术服务费": 36} and dict(ours[2].fees) == {"多多进宝佣金": 599}
    assert ours[0].occurred_at == datetime(2024, 6, 2, 18, 10, 11, tzinfo=timezone.utc)  # Beijing time
    assert all(l.source == "bill" and l.currency == "CNY" for l in lines)
    assert len({l.line_id for l in lines}) == len(lines)


def test_the_same_bill_in_gb18030_gives_the_same_lines():
    text = BILL.decode("utf-8")
    assert parse_bill_csv(text.encode("gb18030"), BILL_COLUMNS) == parse_bill_csv(BILL, BILL_COLUMNS)
    assert parse_bill_csv(b"\xef\xbb\xbf" + BILL, BILL_COLUMNS) == parse_bill_csv(BILL, BILL_COLUMNS)  # BOM


def test_a_zipped_bill_is_read_from_its_csv():
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w") as archive:
        archive.writestr("readme.txt", "not the bill")
        archive.writestr("bill-2024-06-03.csv", BILL)
    assert parse_bill_csv(packed.getvalue(), BILL_COLUMNS) == parse_bill_csv(BILL, BILL_COLUMNS)


def test_identical_rows_are_two_movements_and_keep_their_keys_across_imports():
    row = f"{ORDER},2024-06-03 02:10:11,0.00,0.36,技术服务费,,技术服务费\n".encode()
    header = "商户订单号,发生时间,收入金额（+元）,支出金额（-元）,账务类型,备注,业务描述\n".encode()
    lines = parse_bill_csv(header + row + row, BILL_COLUMNS)
    assert len({l.line_id for l in lines}) == 2
    assert [l.line_id for l in parse_bill_csv(header + row + row, BILL_COLUMNS)] == [l.line_id for l in lines]


@pytest.mark.parametrize(("change", "line", "column"), [
    (("5.99,多多进宝佣金", "5.9x,多多进宝佣金"), 5, "支出金额（-元）"),  # not an amount
    (("0.36,技术服务费", "0.365,技术服务费"), 4, "支出金额（-元）"),  # a tenth of a fen
    (("2024-06-03 05:00:00", "2024/06/03 05:00"), 7, "发生时间"),
    (("账务类型,备注", "类型,备注"), 2, "账务类型"),  # the header lacks a mapped column
    (("平台优惠券结算", "平台优惠券结算\n240601-1"), 7, "发生时间"),  # a short row
])
def test_a_malformed_bill_names_the_line_and_the_column(change, line, column):
    bad = BILL.decode("utf-8").replace(*change, 1).encode("utf-8")
    with pytest.raises(BillFormatError) as info:
        parse_bill_csv(bad, BILL_COLUMNS)
    assert (info.value.line, info.value.column) == (line, column)
    assert f"line {line}" in str(info.value) and column in str(info.value)


def test_a_file_that_is_not_text_is_refused():
    with pytest.raises(BillFormatError, match="neither UTF-8 nor GB18030"):
        parse_bill_csv(b"\x81\x30\xff\xfe" * 8, BILL_COLUMNS)
    with pytest.raises(BillFormatError, match="no header"):
        parse_bill_csv(b"", BILL_COLUMNS)


def test_a_mapping_needs_money_columns():
    with pytest.raises(ValueError):
        BillColumns(order="订单号")
    per_order = BillColumns(order="订单号", gross=["实收"], fee=["佣金", "服务费"], subsidy=["补贴"])
    [line] = parse_bill_csv("订单号,实收,佣金,服务费,补贴\nA-1,100.00,5.00,1.50,2.00\n".encode(), per_order)
    assert (line.gross_minor, line.fee_minor, line.subsidy_minor, line.amount_minor) == (10000, 650, 200, 9550)
    assert line.fee_known and dict(line.fees) == {"佣金": 500, "服务费": 150}


def test_bill_days_are_the_beijing_days_that_begin_in_the_window():
    beijing_midnight = datetime(2024, 6, 2, 16, tzinfo=timezone.utc)
    window = TimeWindow(beijing_midnight, datetime(2024, 6, 4, 16, tzinfo=timezone.utc))
    assert [d.isoformat() for d in bill_dates(window)] == ["2024-06-03", "2024-06-04"]
    half = TimeWindow(datetime(2024, 6, 3, tzinfo=timezone.utc), datetime(2024, 6, 3, 12, tzinfo=timezone.utc))
    assert [d.isoformat() for d in bill_dates(half)] == []  # no Beijing midnight inside


async def test_fetch_bills_downloads_each_days_bill_through_its_url(adapter: PinduoduoAdapter, fake, gateway):
    assert {Capability.FEES, Capability.BILLS} <= PinduoduoAdapter.capabilities
    fake.on("pdd.finance.balance.daily.bill.url.get", lambda p: {"finance_balance_daily_bill_url_get_response": {
        "download_url": f"https://files.pdd.test/bill/{p['bill_date']}.csv"}})
    window = TimeWindow(datetime(2024, 6, 2, 16, tzinfo=timezone.utc), datetime(2024, 6, 3, 16, tzinfo=timezone.utc))
    with respx.mock(assert_all_called=True) as files:
        files.get("https://files.pdd.test/bill/2024-06-03.csv").respond(200, content=BILL.decode().encode("gb18030"))
        page = await adapter.fetch_bills(window, None)
    assert page.next_cursor is None and len(page.items) == 6
    assert [c["bill_date"] for c in fake.calls] == ["2024-06-03"]


async def test_a_day_whose_bill_is_not_ready_is_retried_later(adapter: PinduoduoAdapter, fake, gateway):
    fake.on("pdd.finance.balance.daily.bill.url.get", lambda p: {"finance_balance_daily_bill_url_get_response": {}})
    window = TimeWindow(datetime(2024, 6, 2, 16, tzinfo=timezone.utc), datetime(2024, 6, 3, 16, tzinfo=timezone.utc))
    with pytest.raises(TransientError, match="not ready"):
        await adapter.fetch_bills(window, None)
