"""Dividend statements leave the service here: Standard Webhooks signing and exactly-once-effect delivery."""
