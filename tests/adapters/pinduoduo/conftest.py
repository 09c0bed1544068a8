"""Fixtures for the PDD adapter tests; the fake gateway lives in pdd_fakes.py."""

from pdd_fakes import adapter, fake, gateway, sleeps  # noqa: F401
