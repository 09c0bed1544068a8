"""Marketplace adapters: one package per platform, speaking only canonical snapshots.

Nothing in this package imports ``app``; an adapter knows its platform and ``adapters.base``.
"""
