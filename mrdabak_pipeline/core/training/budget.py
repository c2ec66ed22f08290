"""Train for minutes of wall time instead of a number of steps (``max_train_minutes``).

On a CPU the same recipe runs at very different speeds from one machine to the next (a core with
AMX bf16 matmuls takes many more steps in a minute than one without; README, "What make demo
produced"), so a demo that promises to finish in 20 minutes cannot fix its step count. With a budget, the learning-rate schedule runs on
the clock: warm-up over the first ``warmup`` share of the budget, then the recipe's decay (cosine,
linear or constant) reaching its end exactly when the budget is spent, where training stops and
the model is saved as usual. A fast machine simply takes more steps down the same curve. Epochs
and ``max_steps`` stay upper bounds; the steps actually taken are in the run's metrics.

Transformers has no wall-clock limit of its own (its schedules are functions of the step), so
this is the one place the trainer is extended: `BudgetedTrainer` swaps in a `LambdaLR` over
`TimeBudget.lr_factor`, and `budget_callback` starts the clock and stops the run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: The schedule shapes a budget can follow (transformers' names for the same shapes by step).
BUDGET_SCHEDULES: tuple[str, ...] = ("cosine", "linear", "constant", "constant_with_warmup")


@dataclass
class TimeBudget:
    """A wall-clock budget and the learning-rate multiplier it implies at each moment."""

    seconds: float
    #: Share of the budget spent warming up (transformers' ``warmup_steps`` < 1 is the same ratio).
    warmup: float = 0.0
    schedule: str = "cosine"
    clock: Callable[[], float] = time.monotonic
    _started: float | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not (self.seconds > 0 and math.isfinite(self.seconds)):
            raise ValueError(f"a training budget must be a positive number of seconds, got {self.seconds!r}")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"warm-up is a share of the budget in [0, 1), got {self.warmup!r}")
        if self.schedule not in BUDGET_SCHEDULES:
            raise ValueError(f"lr_scheduler_type {self.schedule!r} has no wall-clock form: "
                             f"one of {', '.join(BUDGET_SCHEDULES)} with max_train_minutes")

    def start(self) -> None:
        self._started = self.clock()

    def share(self) -> float:
        """How much of the budget is spent, 0..1 (0 before `start`)."""
        if self._started is None:
            return 0.0
        return min(1.0, max(0.0, (self.clock() - self._started) / self.seconds))

    def spent(self) -> bool:
        return self.share() >= 1.0

    def lr_factor(self, _step: int = 0) -> float:
        """The multiplier of the peak learning rate now (a `LambdaLR` lambda: the step is ignored)."""
        p = self.share()
        if self.schedule == "constant":
            return 1.0
        if p < self.warmup:
            return p / self.warmup
        if self.schedule == "constant_with_warmup":
            return 1.0
        rest = (p - self.warmup) / (1.0 - self.warmup)
        if self.schedule == "linear":
            return max(0.0, 1.0 - rest)
        return 0.5 * (1.0 + math.cos(math.pi * rest))


def budget_from_recipe(minutes: float, warmup_steps: float, schedule: str) -> TimeBudget:
    """The budget of a recipe: ``warmup_steps`` must be a ratio (< 1), since steps are not known ahead."""
    if warmup_steps >= 1:
        raise ValueError(f"with max_train_minutes give warmup_steps as a share of the budget (< 1), got {warmup_steps}")
    return TimeBudget(seconds=float(minutes) * 60.0, warmup=float(warmup_steps), schedule=schedule)


def budget_callback(budget: TimeBudget) -> Any:
    """A `TrainerCallback` that starts the budget's clock with training and stops at its end."""
    from transformers import TrainerCallback

    class StopAtBudget(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
            budget.start()

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            if budget.spent():
                control.should_training_stop = True
            return control

    return StopAtBudget()


def budgeted(trainer_cls: type, budget: TimeBudget) -> type:
    """`trainer_cls` whose learning-rate schedule follows `budget` instead of the step count."""
    from torch.optim.lr_scheduler import LambdaLR

    class BudgetedTrainer(trainer_cls):  # type: ignore[misc, valid-type]
        def create_scheduler(self, num_training_steps: int, optimizer: Any = None) -> Any:
            if self.lr_scheduler is None:
                self.lr_scheduler = LambdaLR(optimizer or self.optimizer, budget.lr_factor)
                self._created_lr_scheduler = True
            return self.lr_scheduler

    BudgetedTrainer.__name__ = f"Budgeted{trainer_cls.__name__}"
    return BudgetedTrainer
