"""Fixtures for the Taobao adapter tests; the fake gateway lives in top_fakes.py."""

from top_fakes import adapter, fake, gateway, sleeps  # noqa: F401
