"""Secrets at rest: the process's Fernet keyring, built from ``COOPSYNC_SECRET_KEY`` (comma-separated
keys, newest first), which encrypts store credentials and webhook secrets and decrypts them with any key."""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr

ENV_VAR = "COOPSYNC_SECRET_KEY"
HOW_TO_GET_ONE = ("set COOPSYNC_SECRET_KEY to one or more Fernet keys, comma-separated, newest first "
                  "(`coopsync secrets generate-key` prints a new one; `make run` creates ./var/secret.key "
                  "and uses it)")


class SecretKeyError(RuntimeError):
    """The keyring cannot do its work: no key, a malformed key, or a value no key decrypts."""


class SecretKeyMissing(SecretKeyError):
    def __init__(self, detail: str = "") -> None:
        super().__init__(f"COOPSYNC_SECRET_KEY is not set: store credentials and webhook secrets are encrypted "
                         f"with it{detail}; {HOW_TO_GET_ONE}")


class SecretKeyInvalid(SecretKeyError):
    pass


class SecretUndecryptable(SecretKeyError):
    def __init__(self) -> None:
        super().__init__("a stored secret (store credentials or a webhook secret) cannot be decrypted with any key "
                         "in COOPSYNC_SECRET_KEY: the key it was encrypted with is not among them (keep the old key "
                         "after the new one until `coopsync secrets rotate` has run), or the value was altered")


def generate_key() -> str:
    """A new Fernet key (url-safe base64 of 32 random bytes)."""
    return Fernet.generate_key().decode()


def build_keyring(secret_key: str | SecretStr | None) -> MultiFernet:
    """A keyring from ``COOPSYNC_SECRET_KEY``'s value; the first key encrypts, every key decrypts."""
    value = secret_key.get_secret_value() if isinstance(secret_key, SecretStr) else secret_key
    keys = [part.strip() for part in (value or "").split(",") if part.strip()]
    if not keys:
        raise SecretKeyMissing()
    fernets = []
    for position, key in enumerate(keys, 1):
        try:
            fernets.append(Fernet(key))
        except (ValueError, TypeError):  # binascii.Error is a ValueError
            # The key itself is never part of the message.
            raise SecretKeyInvalid(f"COOPSYNC_SECRET_KEY: key {position} of {len(keys)} is not a Fernet key "
                                   f"(32 url-safe base64-encoded bytes); {HOW_TO_GET_ONE}") from None
    return MultiFernet(fernets)


_keyring: MultiFernet | None = None


def configure_keyring(secret_key: str | SecretStr | None) -> MultiFernet:
    """Build the keyring from this value (``Settings.secret_key``) and use it in this process from now on;
    raise ``SecretKeyMissing`` or ``SecretKeyInvalid`` (and keep the previous keyring) when it is unusable."""
    global _keyring
    _keyring = build_keyring(secret_key)
    return _keyring


def reset_keyring() -> None:
    """Forget the keyring: its next use reads ``COOPSYNC_SECRET_KEY`` again (for tests that change it)."""
    global _keyring
    _keyring = None


def keyring() -> MultiFernet:
    """The process's keyring, read from the settings (the environment) on first use."""
    if _keyring is None:
        from app.config import Settings

        return configure_keyring(Settings().secret_key)
    return _keyring


def encrypt(plaintext: bytes) -> str:
    """A Fernet token (text) of ``plaintext`` under the newest key."""
    return keyring().encrypt(plaintext).decode("ascii")


def decrypt(token: str) -> bytes:
    """What ``encrypt`` was given; ``SecretUndecryptable`` when no key of the keyring opens the token."""
    try:
        return keyring().decrypt(token.encode("ascii") if isinstance(token, str) else token)
    except (InvalidToken, UnicodeEncodeError):
        raise SecretUndecryptable() from None


def rotate(token: str) -> str:
    """The same plaintext, encrypted again under the newest key (``MultiFernet.rotate``)."""
    try:
        return keyring().rotate(token.encode("ascii")).decode("ascii")
    except (InvalidToken, UnicodeEncodeError):
        raise SecretUndecryptable() from None
