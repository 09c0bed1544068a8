"""Bearer tokens: generation, hashing, scopes, and the principal a request acts as."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

SCOPES = ("stock:read", "stock:write", "orders:read", "fulfillment", "operator", "admin")

# A scope grants the scopes listed beside it as well.
_IMPLIES = {
    "admin": set(SCOPES),
    "operator": {"operator", "fulfillment", "orders:read", "stock:read"},
    # The warehouse: shipments and return inspections, and the orders they concern.
    "fulfillment": {"fulfillment", "orders:read"},
    "stock:write": {"stock:write", "stock:read"},
}

TOKEN_PREFIX = "cs_"


@dataclass(frozen=True)
class Principal:
    name: str
    scopes: frozenset[str]

    def has(self, scope: str) -> bool:
        return scope in self.scopes


def expand_scopes(scopes: list[str] | set[str] | tuple[str, ...]) -> frozenset[str]:
    granted: set[str] = set()
    for scope in scopes:
        granted |= _IMPLIES.get(scope, {scope})
    return frozenset(granted)


def validate_scopes(scopes: list[str]) -> list[str]:
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scopes {unknown}; known: {', '.join(SCOPES)}")
    return sorted(set(scopes))


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    # Tokens carry 256 bits of entropy, so a plain digest is enough; a slow KDF would only add latency.
    return hashlib.sha256(token.encode()).hexdigest()


def same_secret(a: str, b: str) -> bool:
    """Constant-time comparison (timing-attack defence)."""
    return hmac.compare_digest(a.encode(), b.encode())
