"""Bill files: a platform's CSV bill (UTF-8 or GB18030) read through a column mapping into ``BillLine`` rows.

A mapping (``BillColumns``) names the columns of one platform's file; a platform adapter carries its
built-in one (``bill_columns``) and a store's ``settings.bill_columns`` may replace it. Two shapes are read:

- one money movement per row: a signed ``amount`` (or ``amount`` in and ``expense`` out) and a ``type``
  column whose values ``categories`` sorts into sale, refund, fee, subsidy or other (Pinduoduo's daily bill);
- one row per order with its parts: ``gross``, ``refund``, ``fee`` and ``subsidy`` columns (each a list,
  summed), the payout being gross - refund - fee + subsidy unless an ``amount`` column says it.

Amounts in yuan are parsed exactly (``Decimal``, never a float); a malformed file raises
``BillFormatError`` naming the line (1 = the header's line counts from the file's first line) and the
column, and nothing of it is returned.
"""

from __future__ import annotations

import csv
import hashlib
import io
import zipfile
from collections import Counter
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from adapters.base import BillKind, BillLine, TimeWindow
from adapters.errors import PayloadError
from adapters.units import currency_exponent, to_beijing_str

MAX_ROWS = 200_000  # lines of one file; a daily bill of a cooperative's shop holds hundreds
MAX_UNZIPPED_BYTES = 64 * 1024 * 1024  # bytes of a downloaded bill once unzipped
_KIND_OF: dict[str, BillKind] = {k: k for k in ("sale", "refund", "fee", "subsidy", "adjustment", "other")}
ColumnName = str


class BillFormatError(PayloadError):
    """The file cannot be read as the mapping describes it: ``line`` and ``column`` say where."""

    def __init__(self, message: str, *, line: int | None = None, column: str | None = None,
                 platform: str | None = None) -> None:
        where = ", ".join(part for part in (f"line {line}" if line else "", f"column {column!r}" if column else "") if part)
        super().__init__(f"{where}: {message}" if where else message, platform=platform)
        self.line = line
        self.column = column


class BillColumns(BaseModel):
    """Which columns of a bill file hold what. Names are matched after trimming spaces."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    order: ColumnName = Field(max_length=128)  # the order's external id (empty on rows of no order)
    time: ColumnName | None = Field(default=None, max_length=128)
    # Columns whose values identify a row among all of the platform's bills; none: the row's whole content
    # (and how many identical rows came before it in the file), which is stable across re-imports.
    line_id: list[ColumnName] = Field(default_factory=list, max_length=8)
    amount: ColumnName | None = Field(default=None, max_length=128)  # signed, or money in with ``expense``
    expense: ColumnName | None = Field(default=None, max_length=128)  # money out, written positive
    type: ColumnName | None = Field(default=None, max_length=128)
    categories: dict[str, Literal["sale", "refund", "fee", "subsidy", "adjustment", "other"]] = Field(
        default_factory=dict, max_length=200)
    gross: list[ColumnName] = Field(default_factory=list, max_length=16)
    refund: list[ColumnName] = Field(default_factory=list, max_length=16)
    fee: list[ColumnName] = Field(default_factory=list, max_length=32)
    subsidy: list[ColumnName] = Field(default_factory=list, max_length=16)
    unit: Literal["yuan", "fen"] = "yuan"
    currency: str = Field(default="CNY", pattern=r"^[A-Z]{3}$")
    time_format: str = Field(default="%Y-%m-%d %H:%M:%S", max_length=64)
    utc_offset_minutes: int = Field(default=480, ge=-720, le=840)  # the file's times; 480 = Beijing

    @model_validator(mode="after")
    def _money_somewhere(self) -> "BillColumns":
        if self.amount is None and not (self.gross or self.refund or self.fee or self.subsidy):
            raise ValueError("a bill mapping needs an amount column or gross/refund/fee/subsidy columns")
        if self.expense is not None and self.amount is None:
            raise ValueError("expense needs an amount column (the money in)")
        return self

    def columns(self) -> list[str]:
        named = [self.order, self.time, self.amount, self.expense, self.type]
        return [c for c in named if c] + [*self.line_id, *self.gross, *self.refund, *self.fee, *self.subsidy]


def beijing_bounds(window: TimeWindow) -> tuple[str, str]:
    """``yyyy-MM-dd HH:mm:ss`` Beijing-time bounds of a window, the end rounded up to a whole second (a
    fraction is not lost; a line on the edge may come twice, which its ``line_id`` makes harmless)."""
    end = window.end
    if end.microsecond:
        end = end.replace(microsecond=0) + timedelta(seconds=1)
    return to_beijing_str(window.start), to_beijing_str(end)


def decode(content: bytes) -> str:
    """A bill's text: UTF-8 (with or without a BOM), else GB18030 (what Chinese back offices export)."""
    if content.startswith(b"PK\x03\x04"):
        content = _first_csv_in_zip(content)
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return content.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise BillFormatError("the file is neither UTF-8 nor GB18030 text")


def _first_csv_in_zip(content: bytes) -> bytes:
    """Downloaded bills may come zipped: the first .csv inside."""
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            members = [m for m in archive.infolist() if m.filename.lower().endswith(".csv")]
            if not members:
                raise BillFormatError("the zip file holds no .csv")
            if members[0].file_size > MAX_UNZIPPED_BYTES:  # a bomb, or not a day's bill
                raise BillFormatError(f"the zipped bill is larger than {MAX_UNZIPPED_BYTES} bytes")
            return archive.read(members[0])
    except zipfile.BadZipFile as exc:
        raise BillFormatError("the file looks like a zip but cannot be opened") from exc


def _money(value: str, unit: str, currency: str, line: int, column: str) -> int:
    text = value.strip().replace(",", "").replace("¥", "").replace("￥", "")
    if text in ("", "-", "--"):
        return 0
    if text.startswith("+"):
        text = text[1:]
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise BillFormatError(f"{value!r} is not an amount", line=line, column=column) from None
    if not amount.is_finite():
        raise BillFormatError(f"{value!r} is not an amount", line=line, column=column)
    if unit == "fen":
        if amount != amount.to_integral_value():
            raise BillFormatError(f"{value!r} is not a whole number of fen", line=line, column=column)
        return int(amount)
    scaled = amount.scaleb(currency_exponent(currency))
    if scaled != scaled.to_integral_value():
        raise BillFormatError(f"{value!r} has more decimals than {currency} allows", line=line, column=column)
    return int(scaled)


def _time(value: str, columns: BillColumns, line: int) -> datetime | None:
    text = value.strip()
    if not text:
        return None
    try:
        naive = datetime.strptime(text, columns.time_format)
    except ValueError:
        raise BillFormatError(f"{value!r} is not a time like {columns.time_format}", line=line,
                              column=columns.time) from None
    zone = timezone(timedelta(minutes=columns.utc_offset_minutes))
    return naive.replace(tzinfo=zone).astimezone(timezone.utc)


def parse_bill_csv(content: bytes, columns: BillColumns, *, source: Literal["platform", "bill"] = "bill",
                   id_prefix: str = "") -> list[BillLine]:
    """Every line of a bill file, or ``BillFormatError`` (nothing is returned from a malformed file).

    Blank lines and lines starting with ``#`` (summaries some exports put above and below the table) are
    skipped; the first other line is the header."""
    text = decode(content)
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    header_line = 0
    index: dict[str, int] = {}
    lines: list[BillLine] = []
    seen: Counter[str] = Counter()
    try:
        for row in reader:
            line = reader.line_num
            if not row or all(not cell.strip() for cell in row) or row[0].lstrip().startswith("#"):
                continue
            if header is None:
                header = [cell.strip().lstrip("\ufeff") for cell in row]
                header_line = line
                index = {name: i for i, name in enumerate(header) if name}
                for name in columns.columns():
                    if name not in index:
                        raise BillFormatError(f"the header has no column {name!r}", line=header_line, column=name)
                continue
            if len(lines) >= MAX_ROWS:
                raise BillFormatError(f"more than {MAX_ROWS} rows", line=line)
            if len(row) < len(header):
                raise BillFormatError(f"the row has {len(row)} cells, the header {len(header)}", line=line,
                                      column=header[len(row)])
            lines.append(_line(row, index, columns, line, source, id_prefix, seen))
    except csv.Error as exc:
        raise BillFormatError(f"not CSV: {exc}", line=reader.line_num) from None
    if header is None:
        raise BillFormatError("the file has no header line", line=1)
    return lines


def _line(row: list[str], index: dict[str, int], columns: BillColumns, line: int, source: Literal["platform", "bill"],
          id_prefix: str, seen: Counter[str]) -> BillLine:
    def cell(name: str) -> str:
        return row[index[name]]

    def money(names: list[str]) -> tuple[int, dict[str, int]]:
        parts = {name: _money(cell(name), columns.unit, columns.currency, line, name) for name in names}
        return sum(parts.values()), parts

    order = cell(columns.order).strip().strip("\t'") or None  # exports guard long ids with a tab or a quote
    occurred = _time(cell(columns.time), columns, line) if columns.time else None
    kind: BillKind = "sale"
    if columns.type:
        value = cell(columns.type).strip()
        kind = _KIND_OF[columns.categories.get(value, "other")]
    amount = None
    if columns.amount:
        amount = _money(cell(columns.amount), columns.unit, columns.currency, line, columns.amount)
        if columns.expense:
            amount -= abs(_money(cell(columns.expense), columns.unit, columns.currency, line, columns.expense))
    gross, _ = money(columns.gross)
    refund, _ = money(columns.refund)
    fee, fee_items = money(columns.fee)
    subsidy, _ = money(columns.subsidy)
    if amount is not None and not (columns.gross or columns.refund or columns.fee or columns.subsidy):
        # One movement per row: its kind says which part of the order's money it is.
        if kind == "sale":
            gross = amount
        elif kind == "refund":
            refund = -amount
        elif kind == "fee":
            fee = -amount
            fee_items = {str(cell(columns.type)).strip() if columns.type else "fee": fee}
        elif kind == "subsidy":
            subsidy = amount
    payout = amount if amount is not None else gross - refund - fee + subsidy
    # A per-order row with fee columns states the fee; in a bill of movements only the fee rows do.
    fee_known = bool(columns.fee) or kind == "fee"
    if columns.line_id:
        key = "|".join(cell(name).strip() for name in columns.line_id)
    else:
        content = "\x1f".join(cell.strip() for cell in row)
        digest = hashlib.sha256(content.encode("utf-8")).hexdigest()[:32]
        seen[digest] += 1  # identical rows are distinct movements: the nth one keeps its own key
        key = f"{digest}:{seen[digest]}"
    raw: dict[str, Any] = {name: row[i] for name, i in index.items() if i < len(row)}
    return BillLine(line_id=f"{id_prefix}{key}", order_external_id=order, currency=columns.currency, kind=kind,
                    amount_minor=payout, occurred_at=occurred, gross_minor=gross, refund_minor=refund, fee_minor=fee,
                    subsidy_minor=subsidy, fees={k: v for k, v in fee_items.items() if v}, source=source, raw=raw,
                    fee_known=fee_known)
