"""The learning-rate schedules and the time-budget clock (nst_lightning.training.schedule)."""

import math
from types import SimpleNamespace

import pytest
from lightning.pytorch.callbacks import Timer

from nst_lightning.errors import NSTError
from nst_lightning.training.schedule import LRSchedule, budget_progress


def test_warmup_is_linear_then_constant():
    schedule = LRSchedule(4, "constant", 100, 0.1)
    assert [schedule(s) for s in range(6)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])


def test_cosine_decays_over_the_steps_after_warmup():
    schedule = LRSchedule(0, "cosine", 10, 0.0)
    assert schedule(0) == pytest.approx(1.0) and schedule(5) == pytest.approx(0.5)
    assert schedule(10) == pytest.approx(0.0) and math.isfinite(schedule(20))
    warm = LRSchedule(2, "cosine", 12, 0.2)
    assert warm(2) == pytest.approx(1.0) and warm(7) == pytest.approx(0.6) and warm(12) == pytest.approx(0.2)


def test_cosine_without_a_step_budget_stays_constant():
    assert LRSchedule(0, "cosine", None, 0.1)(1000) == 1.0


def test_cosine_time_follows_the_progress_not_the_step():
    schedule = LRSchedule(0, "cosine_time", None, 0.1)
    values = []
    for progress in (0.0, 0.5, 1.0, 1.5):
        schedule.progress = progress
        values.append(schedule(step=7))
    assert values[0] == pytest.approx(1.0) and values[1] == pytest.approx(0.55)
    assert values[2] == pytest.approx(0.1) and values[3] == pytest.approx(0.1)


def test_unknown_schedule_is_a_clear_error():
    with pytest.raises(NSTError, match="lr_schedule 'linear'.*cosine_time"):
        LRSchedule(0, "linear", 10, 0.1)


class _FakeTimer(Timer):
    def __init__(self, elapsed: float, remaining: float | None) -> None:
        super().__init__(duration=None)
        self._elapsed, self._remaining = elapsed, remaining

    def time_elapsed(self, stage: str = "train") -> float:
        return self._elapsed

    def time_remaining(self, stage: str = "train") -> float | None:
        return self._remaining


def _trainer(timer: Timer | None, step: int = 0, max_steps: int = -1) -> SimpleNamespace:
    return SimpleNamespace(callbacks=[timer] if timer else [], global_step=step, max_steps=max_steps)


def test_budget_progress_is_the_elapsed_share_of_max_time_or_the_step_share_if_larger():
    assert budget_progress(_trainer(_FakeTimer(30.0, 90.0))) == pytest.approx(0.25)
    assert budget_progress(_trainer(_FakeTimer(30.0, 90.0), step=50, max_steps=100)) == pytest.approx(0.5)
    assert budget_progress(_trainer(_FakeTimer(200.0, 0.0))) == pytest.approx(1.0)


def test_budget_progress_without_a_time_budget_is_a_clear_error():
    with pytest.raises(NSTError, match="trainer.max_time"):
        budget_progress(_trainer(None))
    with pytest.raises(NSTError, match="trainer.max_time"):
        budget_progress(_trainer(_FakeTimer(1.0, None)))
