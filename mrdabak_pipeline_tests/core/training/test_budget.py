"""A wall-clock training budget: the learning rate follows the clock and training stops when spent."""

from __future__ import annotations

import math

import pytest

from mrdabak_pipeline.core.training.budget import TimeBudget, budget_from_recipe
from mrdabak_pipeline.core.training.config import TrainRecipe, run_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def started(seconds: float, warmup: float, schedule: str = "cosine") -> tuple[TimeBudget, Clock]:
    clock = Clock()
    budget = TimeBudget(seconds, warmup=warmup, schedule=schedule, clock=clock)
    budget.start()
    return budget, clock


def test_cosine_by_the_clock_warms_up_peaks_and_ends_at_zero_when_spent() -> None:
    budget, clock = started(600, warmup=0.1)
    seen = []
    for t in (0, 30, 60, 330, 600, 900):
        clock.now = 1000.0 + t
        seen.append((round(budget.lr_factor(), 6), budget.spent()))
    assert seen == [(0.0, False), (0.5, False), (1.0, False), (0.5, False), (0.0, True), (0.0, True)]
    # the step number does not matter, only the time
    assert budget.lr_factor(0) == budget.lr_factor(10_000)


def test_linear_and_constant_shapes() -> None:
    linear, clock = started(100, warmup=0.0, schedule="linear")
    clock.now += 25
    assert linear.lr_factor() == pytest.approx(0.75)
    const, clock = started(100, warmup=0.5, schedule="constant_with_warmup")
    clock.now += 25
    assert const.lr_factor() == pytest.approx(0.5)
    clock.now += 50
    assert const.lr_factor() == 1.0


def test_not_started_is_the_beginning() -> None:
    budget = TimeBudget(60, warmup=0.1)
    assert budget.share() == 0.0 and budget.lr_factor() == 0.0 and not budget.spent()


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"seconds": 0}, "positive"),
    ({"seconds": math.inf}, "positive"),
    ({"seconds": 60, "warmup": 1.0}, "share"),
    ({"seconds": 60, "schedule": "polynomial"}, "wall-clock"),
])
def test_bad_budgets_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TimeBudget(**kwargs)


def test_recipe_budget_needs_a_warmup_ratio() -> None:
    assert budget_from_recipe(2, 0.1, "cosine").seconds == 120
    with pytest.raises(ValueError, match="share of the budget"):
        budget_from_recipe(2, 10, "cosine")


def test_recipe_knob_is_checked_and_changes_the_run_key() -> None:
    plain = TrainRecipe.from_config({"base_model": "gemma3-ko", "max_steps": 100})
    timed = TrainRecipe.from_config({"base_model": "gemma3-ko", "max_train_minutes": 8})
    assert timed.max_train_minutes == 8 and timed.settings()["max_train_minutes"] == 8
    assert run_key({"path": "d"}, plain) != run_key({"path": "d"}, timed)
    with pytest.raises(ValueError, match="positive"):
        TrainRecipe.from_config({"max_train_minutes": 0})
    with pytest.raises(ValueError, match="share of the budget"):  # refused before any model is loaded
        TrainRecipe.from_settings({"max_train_minutes": 5, "warmup_steps": 20})
    with pytest.raises(ValueError, match="no wall-clock form"):
        TrainRecipe.from_settings({"max_train_minutes": 5, "lr_scheduler_type": "cosine_with_restarts"})
    assert timed.time_budget().seconds == 480 and plain.time_budget() is None
    with pytest.raises(ValueError, match="dpo"):
        TrainRecipe.from_settings({"method": "dpo", "max_train_minutes": 5})
