"""Shop authorisation as adapters see it: what a token grant holds, how each platform hands one out and
renews it, and the error that ends a refresh (the platform refused it, a human must authorise again)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar, Mapping

from pydantic import SecretStr

from adapters.base import CredentialsBase
from adapters.errors import AuthExpiredError


class RefreshRefused(AuthExpiredError, kind="refresh_refused"):
    """The platform will not renew this token (refresh token invalid or expired, authorisation withdrawn).
    ``revoked``: the shop itself withdrew the authorisation."""

    def __init__(self, message: str, *, revoked: bool = False, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.revoked = revoked


@dataclass(frozen=True)
class TokenGrant:
    """What a token endpoint answered, in aware UTC times; ``credentials`` is what to merge into the
    store's stored credentials (the token under the platform's own field name, the refresh token)."""

    credentials: Mapping[str, str]
    expires_at: datetime | None = None
    refresh_expires_at: datetime | None = None
    shop_id: str | None = None
    shop_name: str | None = None
    scope: tuple[str, ...] = ()
    refreshable: bool = True  # False: this app's tokens cannot be renewed (Taobao outside the service market)


@dataclass(frozen=True)
class Authorization:
    """How a platform's shops are authorised. ``mode``: ``oauth`` (a consent page and a code), ``self``
    (a self-use app creates its token directly), ``none`` (a key pair that does not expire).
    ``refresh_margin``: how long before expiry a token is renewed; Douyin's must stay under an hour,
    because earlier refreshes answer the same tokens."""

    mode: str = "none"
    token_field: str = "access_token"
    refresh_margin: timedelta = timedelta(minutes=30)
    scopes: tuple[str, ...] = field(default_factory=tuple)


class TokenCredentials(CredentialsBase):
    """Fields every token-based platform keeps beside its access token. The access token may be missing
    until the shop is authorised; the expiry times may be given for a shop authorised elsewhere."""

    refresh_token: SecretStr | None = None
    expires_at: datetime | None = None
    refresh_expires_at: datetime | None = None


def in_seconds(value: Any, now: datetime) -> datetime | None:
    """``now`` plus a relative lifetime in seconds (``expires_in``); None when absent or not positive."""
    seconds = _number(value)
    return now + timedelta(seconds=seconds) if seconds and seconds > 0 else None


def at_unix(value: Any) -> datetime | None:
    """An absolute unix time in seconds (or milliseconds, which TOP uses) as aware UTC."""
    number = _number(value)
    if not number or number <= 0:
        return None
    if number > 10**11:  # milliseconds
        number /= 1000
    return datetime.fromtimestamp(number, tz=timezone.utc)


def _number(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


class Authorizing:
    """Mixin of the adapters whose shops hold tokens; the defaults say "not supported"."""

    authorization: ClassVar[Authorization] = Authorization()

    def authorize_url(self, redirect_uri: str, state: str) -> str | None:
        """The platform's consent page for this shop; None for a self-use app (no page: ``create_token``)."""
        return None

    def verify_callback(self, params: Mapping[str, str]) -> None:
        """Raise ``SignatureError`` when the platform signs its redirect and this one is not signed by it."""

    async def exchange_code(self, code: str, redirect_uri: str, params: Mapping[str, str]) -> TokenGrant:
        raise NotImplementedError

    async def create_token(self) -> TokenGrant:
        """A self-use app's token, made without a consent page."""
        raise NotImplementedError

    async def refresh_tokens(self) -> TokenGrant:
        raise NotImplementedError
