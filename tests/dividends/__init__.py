"""Dividend statements: signing and delivery."""
