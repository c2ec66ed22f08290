"""When to retrain: a pure decision over a count of new conversations and a high-water mark.

The retrain sensor (``defs/automation/automation.py``) asks the raw DB one indexed aggregate
(`db.count_sessions_since`) and hands the numbers here. Keeping the rule pure makes the policy
testable without a DB or Dagster, and keeps the sensor a few lines.

A *high-water mark* is the newest ``created_at`` of the conversations a dataset holds or a model was
trained on, as a naive Asia/Seoul wall-clock time (the app's clock, see `core.db`). It is stored as
ISO text in the sensor cursor and in the ``data_high_water_mark`` metadata of the datasets and of
``fine_tuned_model``.

The decision compares three marks: what the current model was trained on (``since``), what the
datasets hold now (``dataset_mark``) and the newest complete conversation in the raw DB. When
enough conversations arrived after the model's mark, either the datasets already hold them (train
on the datasets as they are) or they do not (first refresh the Seoul days that hold them and
rebuild the datasets, in the same run that trains): a model is only ever said to be trained on
data up to X when X is in the data it trains on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from mrdabak_pipeline.core.domain import SessionStatus

SEOUL = ZoneInfo("Asia/Seoul")

#: Conversations that reached an end the assistant handled (an order or an explicit cancel).
#: IN_PROGRESS may still change, ABANDONED has no final answer to learn from.
COMPLETE_STATUSES: tuple[str, ...] = (SessionStatus.CONFIRMED.value, SessionStatus.CANCELLED.value)

#: The guide's minimum number of training conversations.
DEFAULT_MIN_NEW_SESSIONS = 50
MIN_NEW_SESSIONS_ENV = "MRDABAK_RETRAIN_MIN_SESSIONS"


def parse_high_water_mark(value: object) -> datetime | None:
    """ISO text, a datetime or epoch seconds -> naive Seoul wall-clock time (None stays None).

    Aware values are converted to Seoul first, so a UTC mark written by another tool compares
    correctly with the app's naive Seoul timestamps. Garbage raises ValueError naming the value.
    """
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(float(value), tz=SEOUL).replace(tzinfo=None)
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError as exc:
            raise ValueError(f"not an ISO timestamp for a data high-water mark: {value!r}") from exc
    else:
        raise ValueError(f"cannot read a data high-water mark from {type(value).__name__}: {value!r}")
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(SEOUL).replace(tzinfo=None)
    return parsed


def format_high_water_mark(mark: datetime) -> str:
    """The one text form used in cursors, run keys and tags (ISO, microseconds kept)."""
    return mark.isoformat(timespec="microseconds")


def latest_high_water_mark(*marks: datetime | None) -> datetime | None:
    """The newest of the known marks: the cursor and the current model may disagree after a manual
    retrain from the UI, and the newer one is the data that is already covered."""
    known = [m for m in marks if m is not None]
    return max(known) if known else None


def retrain_run_key(newest: datetime) -> str:
    """Derived from the data only: the same data can never request a second training run."""
    return f"retrain@{format_high_water_mark(newest)}"


def min_new_sessions_from_env(environ: dict[str, str] | None = None) -> int:
    """The threshold from `MRDABAK_RETRAIN_MIN_SESSIONS` (default 50); a bad value is an error
    with the variable's name, not a silent fallback."""
    raw = (environ if environ is not None else os.environ).get(MIN_NEW_SESSIONS_ENV, "").strip()
    if not raw:
        return DEFAULT_MIN_NEW_SESSIONS
    try:
        value = int(raw)
    except ValueError as exc:
        raise ValueError(f"{MIN_NEW_SESSIONS_ENV} must be a positive integer, got {raw!r}") from exc
    if value < 1:
        raise ValueError(f"{MIN_NEW_SESSIONS_ENV} must be a positive integer, got {value}")
    return value


def session_day(mark: datetime) -> str:
    """The daily partition key (Seoul calendar day) a conversation started at `mark` belongs to."""
    return mark.date().isoformat()


def refresh_range(oldest: datetime | None, newest: datetime, dataset_mark: datetime | None) -> tuple[str, str]:
    """First and last Seoul day holding a new conversation the datasets do not contain yet.

    Every conversation after `dataset_mark` starts on its day or later, and every new one on the
    day of `oldest` or later, so the later of the two is where the missing ones begin.
    """
    known = [m for m in (oldest, dataset_mark) if m is not None]
    start = max(known) if known else newest
    return session_day(min(start, newest)), session_day(newest)


@dataclass(frozen=True)
class RetrainDecision:
    """What the sensor does this tick, and the sentence it shows in the UI's tick history.

    ``refresh_days`` is None when the datasets already hold every new conversation (train on them
    as they are), else the (first, last) Seoul day to refresh before the datasets are rebuilt.
    """

    should_train: bool
    new_sessions: int
    threshold: int
    since: datetime | None
    newest: datetime | None
    reason: str
    run_key: str | None = None
    refresh_days: tuple[str, str] | None = None


def decide_retrain(
    new_sessions: int,
    newest: datetime | None,
    since: datetime | None,
    threshold: int,
    *,
    oldest: datetime | None = None,
    dataset_mark: datetime | None = None,
) -> RetrainDecision:
    """Train once at least `threshold` complete conversations arrived after `since` (the model's
    mark), on datasets that hold them: rebuilt first unless `dataset_mark` already covers `newest`."""
    since_text = format_high_water_mark(since) if since else "the beginning (no model trained yet)"
    if new_sessions < threshold or newest is None:
        reason = (
            f"{new_sessions} new complete conversation(s) since {since_text}; "
            f"retraining needs {threshold} ({threshold - new_sessions} more)."
        )
        return RetrainDecision(False, new_sessions, threshold, since, newest, reason)
    head = f"{new_sessions} new complete conversation(s) since {since_text} (threshold {threshold}); "
    newest_text = format_high_water_mark(newest)
    if dataset_mark is not None and dataset_mark >= newest:
        reason = head + (
            f"the datasets already hold them (up to {format_high_water_mark(dataset_mark)}): "
            f"training on data up to {newest_text} or later."
        )
        return RetrainDecision(True, new_sessions, threshold, since, newest, reason, retrain_run_key(newest))
    first, last = refresh_range(oldest, newest, dataset_mark)
    held = format_high_water_mark(dataset_mark) if dataset_mark else "nothing"
    days = first if first == last else f"{first}..{last}"
    reason = head + (
        f"the datasets hold data up to {held}, so the run refreshes {days}, rebuilds the datasets "
        f"and trains on data up to {newest_text} or later."
    )
    return RetrainDecision(True, new_sessions, threshold, since, newest, reason, retrain_run_key(newest), (first, last))
