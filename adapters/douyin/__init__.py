"""Douyin Shop (抖店开放平台) adapter: signed Open API calls, fen-denominated mapping, HTTP push messages."""
