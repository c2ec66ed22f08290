"""The retrain rule and the high-water-mark text form, without Dagster or a DB."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mrdabak_pipeline.core.training.retrain_policy import (
    DEFAULT_MIN_NEW_SESSIONS,
    MIN_NEW_SESSIONS_ENV,
    decide_retrain,
    format_high_water_mark,
    latest_high_water_mark,
    min_new_sessions_from_env,
    parse_high_water_mark,
    refresh_range,
    retrain_run_key,
    session_day,
)

naive_times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1))


@given(naive_times)
def test_high_water_mark_round_trips(mark: datetime) -> None:
    assert parse_high_water_mark(format_high_water_mark(mark)) == mark


@given(naive_times)
def test_aware_marks_become_seoul_wall_clock(mark: datetime) -> None:
    as_utc = (mark - timedelta(hours=9)).replace(tzinfo=UTC)  # Seoul has no DST: always UTC+9
    assert parse_high_water_mark(as_utc.isoformat()) == mark
    assert parse_high_water_mark(as_utc.timestamp()) == mark


@pytest.mark.parametrize("bad", ["yesterday", "2025-13-01", ["2025-01-01"]])
def test_garbage_marks_raise_with_the_value(bad: object) -> None:
    with pytest.raises(ValueError, match="high-water mark"):
        parse_high_water_mark(bad)


def test_missing_marks() -> None:
    assert parse_high_water_mark(None) is None and parse_high_water_mark("") is None
    assert latest_high_water_mark(None, None) is None
    assert latest_high_water_mark(datetime(2025, 1, 2), None, datetime(2025, 1, 1)) == datetime(2025, 1, 2)


@given(st.integers(0, 500), st.integers(1, 200), naive_times)
def test_decision_boundary_and_reason(count: int, threshold: int, newest: datetime) -> None:
    decision = decide_retrain(count, newest if count else None, None, threshold)
    assert decision.should_train == (count >= threshold)
    assert f"{count} new complete conversation(s)" in decision.reason
    assert (decision.run_key == retrain_run_key(newest)) if decision.should_train else decision.run_key is None


def test_run_key_depends_only_on_the_data() -> None:
    mark = datetime(2025, 3, 9, 21, 59, 59, 123456)
    assert retrain_run_key(mark) == retrain_run_key(parse_high_water_mark(format_high_water_mark(mark)))
    assert retrain_run_key(mark) != retrain_run_key(mark + timedelta(microseconds=1))


def test_threshold_from_env() -> None:
    assert min_new_sessions_from_env({}) == DEFAULT_MIN_NEW_SESSIONS == 50
    assert min_new_sessions_from_env({MIN_NEW_SESSIONS_ENV: " 7 "}) == 7
    for bad in ("0", "-3", "fifty"):
        with pytest.raises(ValueError, match=MIN_NEW_SESSIONS_ENV):
            min_new_sessions_from_env({MIN_NEW_SESSIONS_ENV: bad})


# --- What the retrain run trains on (issue 15, item 1) ----------------------------------------


@given(naive_times, st.timedeltas(timedelta(0), timedelta(days=40)), st.none() | naive_times, st.data())
def test_refresh_range_covers_every_session_the_datasets_miss(oldest, span, dataset_mark, data) -> None:
    newest = oldest + span
    first, last = refresh_range(oldest, newest, dataset_mark)
    assert first <= last == session_day(newest)
    # any new session (between oldest and newest) that the datasets do not hold is in the range
    session = data.draw(st.datetimes(min_value=oldest, max_value=newest))
    if dataset_mark is None or session > dataset_mark:
        assert first <= session_day(session) <= last


def test_stale_datasets_ask_for_the_days_that_hold_the_new_sessions() -> None:
    model = datetime(2025, 3, 5, 20, 0)
    oldest, newest = datetime(2025, 3, 6, 9, 0), datetime(2025, 3, 9, 14, 30)
    decision = decide_retrain(60, newest, model, 50, oldest=oldest, dataset_mark=datetime(2025, 3, 8, 23, 0))
    assert decision.should_train and decision.refresh_days == ("2025-03-08", "2025-03-09")
    assert "refreshes 2025-03-08..2025-03-09, rebuilds the datasets" in decision.reason
    no_datasets = decide_retrain(60, newest, model, 50, oldest=oldest)
    assert no_datasets.refresh_days == ("2025-03-06", "2025-03-09")
    assert "hold data up to nothing" in no_datasets.reason


def test_datasets_that_hold_the_new_sessions_are_trained_on_as_they_are() -> None:
    newest = datetime(2025, 3, 9, 14, 30)
    decision = decide_retrain(60, newest, datetime(2025, 3, 5), 50, oldest=datetime(2025, 3, 6), dataset_mark=newest)
    assert decision.should_train and decision.refresh_days is None
    assert decision.run_key == retrain_run_key(newest)
    assert "the datasets already hold them" in decision.reason


def test_below_threshold_never_refreshes() -> None:
    decision = decide_retrain(49, datetime(2025, 3, 9), None, 50, oldest=datetime(2025, 3, 1))
    assert not decision.should_train and decision.refresh_days is None and decision.run_key is None
