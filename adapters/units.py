"""Units at the platform boundary: money strings to integer minor units, platform times to aware UTC."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from adapters.errors import PayloadError

BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")

# ISO 4217 minor-unit exponents that are not 2.
_EXPONENTS = {
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0, "PYG": 0,
    "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
    "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
}


def currency_exponent(currency: str) -> int:
    """Number of decimal places of ``currency``'s minor unit (ISO 4217)."""
    return _EXPONENTS.get(currency.upper(), 2)


def to_minor(amount: str | int | float | Decimal | None, currency: str = "CNY") -> int:
    """Turn a major-unit amount (``"199.00"``, ``199``, ``195.66``) into integer minor units.

    Floats are read through ``str`` so that ``195.66`` is the decimal the platform wrote, never a
    binary approximation. Amounts with more decimals than the currency has are refused rather than
    silently rounded, except that trailing zeros are fine.
    """
    if amount is None or amount == "":
        return 0
    if isinstance(amount, bool):
        raise PayloadError(f"money amount is a boolean: {amount!r}")
    try:
        value = Decimal(str(amount)) if not isinstance(amount, Decimal) else amount
    except InvalidOperation as exc:
        raise PayloadError(f"not a money amount: {amount!r}") from exc
    if not value.is_finite():
        raise PayloadError(f"not a finite money amount: {amount!r}")
    scaled = value.scaleb(currency_exponent(currency))
    integral = scaled.to_integral_value(rounding=ROUND_HALF_EVEN)
    if integral != scaled:
        raise PayloadError(f"amount {amount!r} has more decimals than {currency} allows")
    return int(integral)


def minor_to_str(amount_minor: int, currency: str = "CNY") -> str:
    """Format integer minor units as a major-unit decimal string (``19900`` -> ``"199.00"``)."""
    exp = currency_exponent(currency)
    return str(Decimal(amount_minor).scaleb(-exp).quantize(Decimal(1).scaleb(-exp)))


def from_unix(seconds: int | float | str | None) -> datetime | None:
    """Unix seconds to aware UTC; ``None``, ``0`` and ``""`` mean absent."""
    if seconds in (None, "", 0, "0"):
        return None
    try:
        return datetime.fromtimestamp(int(Decimal(str(seconds))), tz=timezone.utc)
    except (InvalidOperation, ValueError, OverflowError) as exc:
        raise PayloadError(f"not a unix time: {seconds!r}") from exc


def from_unix_ms(ms: int | str | None) -> datetime | None:
    """Unix milliseconds to aware UTC."""
    if ms in (None, "", 0, "0"):
        return None
    return datetime.fromtimestamp(int(ms) / 1000, tz=timezone.utc)


def from_beijing(text: str | None) -> datetime | None:
    """A ``yyyy-MM-dd HH:mm:ss`` string in Beijing time (GMT+8) to aware UTC."""
    if not text:
        return None
    try:
        naive = datetime.strptime(text.strip(), "%Y-%m-%d %H:%M:%S")
    except ValueError as exc:
        raise PayloadError(f"not a Beijing time string: {text!r}") from exc
    return naive.replace(tzinfo=BEIJING).astimezone(timezone.utc)


def to_beijing_str(moment: datetime) -> str:
    """Aware datetime to a ``yyyy-MM-dd HH:mm:ss`` string in Beijing time."""
    return ensure_utc(moment).astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S")


def from_iso(text: str | None) -> datetime | None:
    """An ISO 8601 string with an offset (or ``Z``) to aware UTC. A naive string is refused."""
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise PayloadError(f"not an ISO 8601 time: {text!r}") from exc
    if parsed.tzinfo is None:
        raise PayloadError(f"time without an offset: {text!r}")
    return parsed.astimezone(timezone.utc)


def from_naive_utc(text: str | None) -> datetime | None:
    """An ISO 8601 string known to be UTC but written without an offset (WooCommerce ``*_gmt``)."""
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise PayloadError(f"not an ISO 8601 time: {text!r}") from exc
    return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)


def ensure_utc(moment: datetime) -> datetime:
    """Refuse naive datetimes; return the same instant in UTC."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime")
    return moment.astimezone(timezone.utc)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
