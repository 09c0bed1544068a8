"""Readers for the ids, integers and required fields of platform payloads; what cannot be read is a
PayloadError. Each mapping module binds them to its platform once (``functools.partial``)."""

from __future__ import annotations

from typing import Any, Mapping, TypeVar

from adapters.errors import PayloadError

T = TypeVar("T")


def ext_id(value: Any, *, allow_zero: bool = False) -> str | None:
    """A platform id as a string; None and "" mean absent, and so do 0 and "0" unless ``allow_zero``.

    PDD, TOP, Douyin and WooCommerce write 0 where there is no id (a product without a variation);
    Shopify never does, so its mapping passes ``allow_zero=True`` and a 0 travels on as it came.
    """
    if value is None or value == "":
        return None
    if not allow_zero and (value == 0 or value == "0"):
        return None
    return str(value)


def as_int(value: Any, field: str, *, platform: str, message: str = "{field} is not an integer: {value!r}") -> int:
    """``int(value)``, or a PayloadError worded by ``message`` (``{field}``, ``{value!r}``)."""
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise PayloadError(message.format(field=field, value=value), platform=platform) from exc


def required(payload: Mapping[str, Any], key: str, what: str, *, platform: str, name: str) -> Any:
    """``payload[key]``, refusing a missing, None or "" value: "<name> <what> has no '<key>'"."""
    value = payload.get(key)
    if value is None or value == "":
        raise PayloadError(f"{name} {what} has no {key!r}", platform=platform)
    return value


def present(value: T | None, message: str, *, platform: str) -> T:
    """``value``, unless it is None: a payload without it cannot be mapped (``message`` says what lacks)."""
    if value is None:
        raise PayloadError(message, platform=platform)
    return value
