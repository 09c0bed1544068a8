"""Window arithmetic: platform widths, backward overlap, lag behind now."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from app.domain.windows import poll_window, split_windows

T0 = datetime(2026, 11, 28, 0, 0, tzinfo=timezone.utc)


def test_a_day_of_pinduoduo_is_48_windows_of_30_minutes():
    windows = split_windows(T0, T0 + timedelta(days=1), timedelta(minutes=30))
    assert len(windows) == 48
    assert all(w.end - w.start == timedelta(minutes=30) for w in windows)
    assert all(a.end == b.start for a, b in zip(windows, windows[1:]))  # nothing falls between


def test_a_day_of_taobao_is_one_window_and_a_ragged_range_ends_exactly():
    assert len(split_windows(T0, T0 + timedelta(days=1), timedelta(days=1))) == 1
    windows = split_windows(T0, T0 + timedelta(minutes=70), timedelta(minutes=30))
    assert [w.end - w.start for w in windows] == [timedelta(minutes=30)] * 2 + [timedelta(minutes=10)]


def test_windows_refuse_naive_times():
    with pytest.raises(ValueError):
        split_windows(datetime(2026, 1, 1), datetime(2026, 1, 2), timedelta(hours=1))


def test_poll_window_overlaps_backwards_and_stops_short_of_now():
    now = T0 + timedelta(hours=5)
    w = poll_window(T0 + timedelta(hours=4), now, overlap=timedelta(minutes=5), lag=timedelta(minutes=1),
                    max_window=timedelta(minutes=30), first_lookback=timedelta(hours=1))
    assert w.start == T0 + timedelta(hours=4) - timedelta(minutes=5)
    assert w.end == w.start + timedelta(minutes=30)
    caught_up = poll_window(now - timedelta(minutes=2), now, overlap=timedelta(minutes=5), lag=timedelta(minutes=1),
                            max_window=timedelta(hours=1), first_lookback=timedelta(hours=1))
    assert caught_up.end == now - timedelta(minutes=1)


def test_poll_window_is_none_when_lag_leaves_nothing():
    now = T0
    assert poll_window(now, now, overlap=timedelta(0), lag=timedelta(minutes=1), max_window=timedelta(hours=1),
                       first_lookback=timedelta(hours=1)) is None
