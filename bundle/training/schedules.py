"""Learning-rate schedules of the two training phases (config key ``lr_schedule``).

``constant`` keeps the optimiser's learning rate; ``cosine`` anneals it per epoch from the
configured rate to ``min_factor`` times it over the phase's epochs (half a cosine). The scheduler
is stepped by MONAI's ``LrScheduleHandler`` at each epoch end and saved in the resume checkpoint,
so a resumed run continues on the same curve.
"""

from __future__ import annotations

import math

import torch

SCHEDULES = ("constant", "cosine")


class CosineFactor:
    """Multiplicative factor of epoch ``e``: ``min + (1 - min) (1 + cos(pi e / epochs)) / 2``.

    A class rather than a lambda so that ``LambdaLR.state_dict`` can save it.

    Args:
        epochs: length of the phase (the factor reaches ``min_factor`` at its end).
        min_factor: final factor.
    """

    def __init__(self, epochs: int, min_factor: float) -> None:
        self.epochs = max(1, int(epochs))
        self.min_factor = float(min_factor)

    def __call__(self, epoch: int) -> float:
        """The factor of epoch ``epoch`` (0-based; epochs past the end keep ``min_factor``)."""
        progress = min(epoch, self.epochs) / self.epochs
        return self.min_factor + (1.0 - self.min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer, schedule: str = "cosine", epochs: int = 1, min_factor: float = 0.05
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-epoch scheduler for ``optimizer``.

    Args:
        optimizer: the phase's optimiser.
        schedule: ``constant`` or ``cosine``.
        epochs: the phase's epochs (``phase1_epochs`` / ``phase2_epochs``).
        min_factor: the cosine schedule's final learning rate as a fraction of the initial one.

    Returns:
        a ``LambdaLR`` (constant factor 1 for ``constant``).

    Raises:
        ValueError: for an unknown schedule or a ``min_factor`` outside [0, 1].
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {SCHEDULES}, got {schedule!r}")
    if not 0.0 <= float(min_factor) <= 1.0:
        raise ValueError(f"lr_min_factor must be in [0, 1], got {min_factor}")
    factor = CosineFactor(epochs, min_factor) if schedule == "cosine" else CosineFactor(epochs, 1.0)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
