"""Training helpers of the Diff-ICE configs: splits, batch preparation, losses, seeding, loading.

The configs in ``configs/diffice/`` build MONAI ``SupervisedTrainer``s from these pieces; nothing
here runs a training loop of its own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from bundle.diffice.data import NSP, SP
from bundle.model.batches import plain_tensor
from monai.engines.utils import DiffusionPrepareBatch
from torch import nn

__all__ = [
    "split_items",
    "class_weights",
    "TargetBatch",
    "FeatureBatch",
    "UnitRangeDiffusionBatch",
    "FeatureLoss",
    "seeded",
    "load_weights",
]


def split_items(items: Sequence[dict], test_fraction: float, seed: int) -> dict[str, list[dict]]:
    """Stratified split by (site, plane) into ``train`` and ``test``.

    Args:
        items: Diff-ICE items (see :func:`bundle.diffice.data.diffice_items`).
        test_fraction: share of each (site, plane) group held out for testing.
        seed: split seed.

    Returns:
        ``{"train": [...], "test": [...]}``.

    Raises:
        ValueError: when a split would hold no standard or no non-standard plane.
    """
    rng = np.random.default_rng(seed)
    groups: dict[tuple[int, int], list[dict]] = {}
    for item in items:
        groups.setdefault((item["site"], item["plane"]), []).append(item)
    split: dict[str, list[dict]] = {"train": [], "test": []}
    for key in sorted(groups):
        group = groups[key]
        order = rng.permutation(len(group))
        n_test = int(round(test_fraction * len(group)))
        split["test"] += [group[i] for i in order[:n_test]]
        split["train"] += [group[i] for i in order[n_test:]]
    for name, part in split.items():
        planes = {item["plane"] for item in part}
        if planes != {SP, NSP}:
            raise ValueError(
                f"the {name} split has planes {sorted(planes)} only; Diff-ICE needs standard and non-standard "
                "planes in both (more images, or another test_fraction)"
            )
    return split


def class_weights(items: Sequence[dict], key: str = "plane", num_classes: int = 2) -> torch.Tensor:
    """Inverse-frequency class weights (mean 1) for a class-balanced cross-entropy."""
    counts = np.bincount([int(item[key]) for item in items], minlength=num_classes).astype(np.float64)
    if (counts == 0).any():
        raise ValueError(f"class counts {counts.tolist()} of {key!r}: every class needs at least one image")
    weights = counts.sum() / (num_classes * counts)
    return torch.tensor(weights, dtype=torch.float32)


class TargetBatch:
    """``prepare_batch``: the image as input and one item key as target.

    Args:
        target_key: item key of the target (``label`` for segmentation, ``plane`` for classifiers).
    """

    def __init__(self, target_key: str) -> None:
        self.target_key = target_key

    def __call__(
        self, batchdata: dict, device: str | torch.device | None = None, non_blocking: bool = False, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(image, target)`` as plain tensors on ``device``."""
        image = plain_tensor(batchdata["image"], device).float()
        target = plain_tensor(batchdata[self.target_key], device)
        return image, target.long() if not target.is_floating_point() else target


class FeatureBatch:
    """``prepare_batch`` of the feature network: target = ``[site, structure fractions...]`` (B, 1 + K).

    Args:
        num_structures: structure classes ``K`` of the label map.
    """

    def __init__(self, num_structures: int) -> None:
        self.num_structures = num_structures

    def __call__(
        self, batchdata: dict, device: str | torch.device | None = None, non_blocking: bool = False, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(image, target)``."""
        image = plain_tensor(batchdata["image"], device).float()
        label = plain_tensor(batchdata["label"], device).long()[:, 0]
        fractions = F.one_hot(label, self.num_structures).float().mean(dim=(1, 2))
        site = plain_tensor(batchdata["site"], device).float().reshape(-1, 1)
        return image, torch.cat([site, fractions], dim=1)


class FeatureLoss(nn.Module):
    """Cross-entropy on the site plus ``structure_weight`` x MSE on the structure fractions.

    Args:
        num_sites: site classes (the first ``num_sites`` outputs are their logits).
        structure_weight: weight of the fraction regression.
    """

    def __init__(self, num_sites: int, structure_weight: float = 10.0) -> None:
        super().__init__()
        self.num_sites = num_sites
        self.structure_weight = structure_weight

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of ``output`` (B, S + K) against ``target`` (B, 1 + K)."""
        site_loss = F.cross_entropy(output[:, : self.num_sites], target[:, 0].long())
        structure_loss = F.mse_loss(output[:, self.num_sites :], target[:, 1:])
        return site_loss + self.structure_weight * structure_loss


class UnitRangeDiffusionBatch(DiffusionPrepareBatch):
    """MONAI's ``DiffusionPrepareBatch`` for images stored in [0, 1]: the model sees them in [-1, 1]."""

    def __call__(
        self, batchdata: dict, device: str | torch.device | None = None, non_blocking: bool = False, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor, tuple, dict]:
        """Return ``(images in [-1, 1], noise target, (), {"noise", "timesteps"})``."""
        images, target, args, infer_kwargs = super().__call__(
            {"image": plain_tensor(batchdata["image"], None).float()}, device, non_blocking, **kwargs
        )
        return images * 2.0 - 1.0, target, args, infer_kwargs


def seeded(seed: int, factory: Callable[..., nn.Module], *args, **kwargs) -> nn.Module:
    """Build ``factory(*args, **kwargs)`` with the torch RNG seeded (reproducible initial weights)."""
    state = torch.get_rng_state()
    torch.manual_seed(int(seed))
    try:
        return factory(*args, **kwargs)
    finally:
        torch.set_rng_state(state)


def load_weights(network: nn.Module, path: str | os.PathLike, what: str) -> nn.Module:
    """Load the ``state_dict`` in ``path`` (``weights_only=True``) into ``network``.

    Args:
        network: the module to fill.
        path: the step's model file.
        what: what the file is, for the error message.

    Returns:
        ``network``.

    Raises:
        FileNotFoundError: naming the step that writes ``path``.
    """
    from bundle.training.workflow import require_file
    from bundle.utils.checkpoints import load_model_weights

    return load_model_weights(network, require_file(path, f"{what} (run its training step first, see docs/diffice.md)"))


def every(interval: int) -> Callable[[object, int], bool]:
    """Ignite event filter (e.g. ``StatsHandler(iteration_log=...)``): every ``interval``-th iteration."""

    def keep(engine: object, event: int) -> bool:
        return event % max(int(interval), 1) == 0

    return keep


def step_marker(output_dir: str | os.PathLike, name: str) -> str:
    """Completion marker of a training step."""
    return os.path.join(os.fspath(output_dir), "steps", f"{name}.json")


def run_step(name: str, trainer, output_dir: str | os.PathLike) -> None:
    """Run a training step unless its marker says it finished (a crashed step resumes from its checkpoint)."""
    from bundle.training.workflow import run_phase

    run_phase(name, trainer, step_marker(output_dir, name))


def psi_function(
    weights_path: str | os.PathLike | None, features: nn.Module, device: str | torch.device
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The frozen feature function ``psi`` on [0, 1] images.

    Args:
        weights_path: a user-supplied ResNet-50 ``state_dict`` (e.g. RadImageNet); empty for the local net.
        features: the locally trained :class:`~bundle.diffice.networks.FeatureNet`.
        device: where it runs.

    Returns:
        ``x -> features (B, D)``.
    """
    from bundle.diffice.networks import ResNet50Features, freeze

    network = ResNet50Features(weights_path) if weights_path else freeze(features)
    return network.to(device).features
