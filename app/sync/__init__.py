"""Sync flows between the shops and the core: webhook intake, pull, push, windows."""
