"""Signing helpers shared by the platforms: sorted ``key+value`` strings, wrapped MD5, HMAC, webhook checks.

PDD, Taobao TOP, JD and Douyin all sign a request the same way at heart: sort the parameters by
name, glue ``name+value`` together, then digest (MD5 with the secret at both ends, or an HMAC).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any, Callable, Iterable, Literal, Mapping

from adapters.errors import SignatureError

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


def signed_by_any(given: bytes, secrets: Iterable[str], expected: Callable[[str], bytes], *,
                  skip_empty: bool = True) -> bool:
    """Whether ``given`` equals ``expected(secret)`` for one of ``secrets`` (current and previous ones
    during a rotation). Every secret is tried, in constant time and without an early exit, so the
    timing tells neither which secret matched nor how much of the digest was right. ``skip_empty``:
    an empty secret signs nothing (Shopify, WooCommerce); where it is off, it is tried like any other.
    """
    matched = False
    for secret in secrets:
        if secret or not skip_empty:
            matched |= hmac.compare_digest(expected(secret), given)
    return matched


def verify_text_signature(given: str | None, body: bytes, secrets: Iterable[str],
                          signature: Callable[[bytes, str], str], *, header: str, platform: str) -> None:
    """Raise ``SignatureError`` unless the ``header`` value ``given`` is ``signature(body, secret)`` for one
    of the non-empty ``secrets`` (Shopify, WooCommerce: base64 text signatures over the raw body)."""
    if not given:
        raise SignatureError(f"missing {header} header", platform=platform)
    if not body:
        # Shopify's own library refuses an empty body before comparing: nothing signed means nothing to trust.
        raise SignatureError("empty webhook body", platform=platform)
    given_bytes = given.strip().encode("ascii", "replace")
    if not signed_by_any(given_bytes, secrets, lambda secret: signature(body, secret).encode("ascii")):
        raise SignatureError(f"{header} does not match the body", platform=platform)
