"""Opaque keyset cursors for ``{"items": [...], "next_cursor": ...}`` lists."""

from __future__ import annotations

import base64

import orjson

from app.errors import Problem

MAX_LIMIT = 500


def encode_cursor(value: dict) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(value)).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> dict | None:
    if not cursor:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = orjson.loads(base64.urlsafe_b64decode(padded))
    except Exception as exc:
        raise Problem(400, "the cursor is not one this service issued") from exc
    if not isinstance(value, dict):
        raise Problem(400, "the cursor is not one this service issued")
    return value


def page(items: list, limit: int, key) -> tuple[list, str | None]:
    """``items`` was fetched with ``limit + 1`` rows; trim and build the next cursor."""
    if len(items) > limit:
        items = items[:limit]
        return items, encode_cursor(key(items[-1]))
    return items, None


async def keyset_page(session, stmt, column, *, limit: int, cursor: str | None, newest_first: bool = False,
                      ) -> tuple[list, str | None]:
    """Run ``stmt`` one page at a time over a unique, increasing ``column`` (an id): the opaque
    cursor remembers the last id seen, so pages never shift when rows are added meanwhile."""
    after = decode_cursor(cursor)
    if after is not None:
        try:
            last = int(after["id"])
        except (KeyError, TypeError, ValueError):
            raise Problem(400, "the cursor is not one this service issued") from None
        stmt = stmt.where(column < last if newest_first else column > last)
    stmt = stmt.order_by(column.desc() if newest_first else column).limit(limit + 1)
    rows = list((await session.execute(stmt)).scalars().all())
    return page(rows, limit, lambda row: {"id": getattr(row, column.key)})
