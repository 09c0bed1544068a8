"""Window arithmetic (pure): split a range by the platform's widest window; poll windows that overlap
backwards, stop short of now and respect that width; when an order's return window closes."""

from __future__ import annotations

from datetime import datetime, timedelta

from adapters.base import TimeWindow


def split_windows(since: datetime, until: datetime, max_window: timedelta) -> list[TimeWindow]:
    """[since, until) as consecutive windows no wider than ``max_window`` (a day of 30-minute
    windows is 48 of them). Adjacent windows share their boundary so nothing falls between."""
    if since.tzinfo is None or until.tzinfo is None:
        raise ValueError("windows need aware datetimes")
    if until <= since:
        return []
    if max_window <= timedelta(0):
        raise ValueError("max_window must be positive")
    windows = []
    start = since
    while start < until:
        end = min(start + max_window, until)
        windows.append(TimeWindow(start, end))
        start = end
    return windows


def poll_window(high_water: datetime | None, now: datetime, *, overlap: timedelta, lag: timedelta,
                max_window: timedelta, first_lookback: timedelta) -> TimeWindow | None:
    """The next window of a scheduled poll, or None when it would be empty.

    Start: the last high water minus ``overlap`` (a record updated right at the boundary, or
    committed late on the platform, is fetched again rather than missed; stale-skip makes the
    repeat harmless). End: no later than ``now - lag`` (platforms refuse or under-report the last
    moments) and no wider than ``max_window``."""
    start = (high_water - overlap) if high_water is not None else now - first_lookback
    ceiling = now - lag
    end = min(start + max_window, ceiling)
    if end <= start:
        return None
    return TimeWindow(start, end)


def delivered_or_assumed(status: str, delivered_at: datetime | None, shipped_at: datetime | None,
                         assumed_after: timedelta) -> datetime | None:
    """When an order counts as delivered: its delivered signal, else (shipped, with no such signal
    yet) ``assumed_after`` its shipping; None while it has neither."""
    if status == "delivered" and delivered_at is not None:
        return delivered_at
    if status in ("shipped", "delivered") and shipped_at is not None:
        return shipped_at + assumed_after
    return None


def return_window_closes(status: str, delivered_at: datetime | None, shipped_at: datetime | None, *,
                         assumed_after: timedelta, window: timedelta) -> datetime | None:
    """The end of an order's return window, which runs from its (assumed) delivery; None: not delivered."""
    delivered = delivered_or_assumed(status, delivered_at, shipped_at, assumed_after)
    return None if delivered is None else delivered + window
