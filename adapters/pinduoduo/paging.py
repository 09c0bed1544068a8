"""Backward paging over a fixed time window, for list APIs that say "page from the last page".

Shared by the PDD and Taobao adapters (both documents demand it); one page per ``fetch_*`` call.
"""

from __future__ import annotations

import json
import math

from adapters.errors import PayloadError, PermanentError

# Why backwards: the window is fixed, but an order that is modified while we page gets a new
# modified time outside the window and drops out of the result set. Every row behind it moves up
# one place. Paging forwards (1, 2, 3...), the row that moves from page k+1 onto page k, already
# read, is never seen: a silent miss. Paging backwards (N, N-1, ... 1), rows only move onto pages
# we have not read yet, so the worst case is reading a row twice, which snapshots make harmless.
#
# The first call of a window does not know the page count yet, so it reads page 1 with the real
# page size (learning total_count/total_results) and returns those rows; if there is more than one
# page, the following calls read N, N-1, ... 1. Page 1 is read again last, so a row that moved
# onto it while we paged is still seen. Cost: one extra page per multi-page window.


def first_page(cursor: str | None, platform: str) -> tuple[int, bool]:
    """The page to request now and whether this is the probing first call of the window."""
    if cursor is None:
        return 1, True
    try:
        data = json.loads(cursor)
        page = int(data["page"])
    except (ValueError, TypeError, KeyError) as exc:
        raise PermanentError(f"unreadable cursor {cursor!r}", platform=platform) from exc
    if page < 1:
        raise PermanentError(f"cursor page {page} out of range", platform=platform)
    return page, False


def next_cursor(page: int, probe: bool, total: int | None, page_size: int, rows: int, platform: str) -> str | None:
    """The cursor after reading ``page`` (which held ``rows`` rows); None when the window is done."""
    if probe:
        if total is None:
            if rows < page_size:
                return None  # a short first page is the whole window, count or not
            raise PayloadError("a full first page without a total count: cannot page backwards", platform=platform)
        pages = math.ceil(total / page_size)
        if pages <= 1:
            return None
        return json.dumps({"page": pages}, separators=(",", ":"))
    if page <= 1:
        return None
    return json.dumps({"page": page - 1}, separators=(",", ":"))
