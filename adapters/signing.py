"""Signing helpers shared by gateway platforms: sorted ``key+value`` strings, wrapped MD5, HMAC.

PDD, Taobao TOP, JD and Douyin all sign a request the same way at heart: sort the parameters by
name, glue ``name+value`` together, then digest (MD5 with the secret at both ends, or an HMAC).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any, Iterable, Literal, Mapping

HmacAlgorithm = Literal["md5", "sha1", "sha256"]


def param_value(value: Any) -> str | None:
    """A request parameter as the gateways sign and send it; None means "leave it out".

    Booleans are ``"true"``/``"false"`` (PDD's PHP SDK, TOP), objects and lists are compact JSON
    (PDD ``setUserParam``), ``None`` and ``""`` are dropped because every gateway skips empty values
    when it signs, so sending them unsigned would only invite a mismatch.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    text = str(value)
    return text if text != "" else None


def prepare_params(params: Mapping[str, Any]) -> dict[str, str]:
    """Stringify ``params`` with :func:`param_value` and drop the empty ones."""
    out: dict[str, str] = {}
    for key, value in params.items():
        text = param_value(value)
        if text is not None:
            out[key] = text
    return out


def sorted_concat(params: Mapping[str, Any], *, exclude: Iterable[str] = ("sign",)) -> str:
    """``k1v1k2v2...`` over ``params`` sorted by key (ASCII), skipping ``exclude`` and empty values.

    Values must already be strings or scalars; lists and dicts are skipped as PDD's ``makeSign``
    does (callers JSON-encode them first with :func:`prepare_params`).
    """
    skip = set(exclude)
    parts: list[str] = []
    for key in sorted(params):
        if key in skip:
            continue
        value = params[key]
        if isinstance(value, (dict, list, tuple)):
            continue
        text = param_value(value)
        if text is None:
            continue
        parts.append(f"{key}{text}")
    return "".join(parts)


def md5_hex(data: str | bytes, *, upper: bool = True) -> str:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    digest = hashlib.md5(raw).hexdigest()
    return digest.upper() if upper else digest


def wrapped_md5(secret: str, payload: str, *, upper: bool = True) -> str:
    """``MD5(secret + payload + secret)`` in hex (PDD, TOP ``sign_method=md5``, JD)."""
    return md5_hex(secret + payload + secret, upper=upper)


def hmac_hex(secret: str, payload: str | bytes, algorithm: HmacAlgorithm = "sha256", *, upper: bool = True) -> str:
    """``HMAC(key=secret, payload)`` in hex (TOP ``hmac`` = HMAC-MD5, ``hmac-sha256``)."""
    raw = payload.encode("utf-8") if isinstance(payload, str) else payload
    digest = hmac.new(secret.encode("utf-8"), raw, getattr(hashlib, algorithm)).hexdigest()
    return digest.upper() if upper else digest


def sign_wrapped_md5(params: Mapping[str, Any], secret: str) -> str:
    """The PDD / TOP-md5 sign of ``params``: ``UPPER(MD5(secret + sorted k+v + secret))``."""
    return wrapped_md5(secret, sorted_concat(params))


def signatures_equal(expected: str, given: str | None, *, case_insensitive: bool = True) -> bool:
    """Constant-time comparison of two hex signatures (timing attacks on verification)."""
    if not given:
        return False
    if case_insensitive:
        expected, given = expected.upper(), given.upper()
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))
