"""Learning-rate schedules (``lr_schedule``): the curve, its end points, and resuming on it."""

from __future__ import annotations

import math

import pytest
import torch
from bundle.training.schedules import build_lr_scheduler


def _optimizer(lr: float = 1e-3) -> torch.optim.Optimizer:
    return torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def _lrs(scheduler: torch.optim.lr_scheduler.LRScheduler, epochs: int) -> list[float]:
    lrs = []
    for _ in range(epochs):
        lrs.append(scheduler.optimizer.param_groups[0]["lr"])
        scheduler.optimizer.step()
        scheduler.step()
    return lrs


def test_cosine_starts_at_lr_decreases_and_ends_at_min_factor() -> None:
    scheduler = build_lr_scheduler(_optimizer(1e-3), "cosine", epochs=10, min_factor=0.05)
    lrs = _lrs(scheduler, 11)
    assert lrs[0] == pytest.approx(1e-3)
    assert all(b < a for a, b in zip(lrs, lrs[1:], strict=False))
    assert lrs[10] == pytest.approx(0.05e-3)
    assert lrs[5] == pytest.approx(1e-3 * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi / 2))))


def test_constant_keeps_the_rate() -> None:
    assert _lrs(build_lr_scheduler(_optimizer(2e-4), "constant", epochs=5), 6) == pytest.approx([2e-4] * 6)


def test_resumed_scheduler_continues_on_the_same_curve() -> None:
    first = build_lr_scheduler(_optimizer(), "cosine", epochs=8)
    _lrs(first, 3)
    resumed = build_lr_scheduler(_optimizer(), "cosine", epochs=8)
    # the resume checkpoint restores both after the engine built them
    resumed.optimizer.load_state_dict(first.optimizer.state_dict())
    resumed.load_state_dict(first.state_dict())
    assert _lrs(resumed, 5) == pytest.approx(_lrs(first, 5))


@pytest.mark.parametrize(("schedule", "min_factor", "match"), [("step", 0.1, "lr_schedule"), ("cosine", 1.5, "lr_min")])
def test_bad_settings_are_refused(schedule: str, min_factor: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_lr_scheduler(_optimizer(), schedule, epochs=4, min_factor=min_factor)
