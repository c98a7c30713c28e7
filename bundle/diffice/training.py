"""Training helpers of the Diff-ICE configs: splits, batch preparation, losses, seeding, loading.

The configs in ``configs/diffice/`` build MONAI ``SupervisedTrainer``s from these pieces; nothing
here runs a training loop of its own.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from bundle.diffice.data import NSP, SP
from bundle.model.batches import plain_tensor
from monai.engines.utils import DiffusionPrepareBatch
from torch import nn

logger = logging.getLogger(__name__)

__all__ = [
    "split_items",
    "class_weights",
    "TargetBatch",
    "FeatureBatch",
    "UnitRangeDiffusionBatch",
    "FeatureLoss",
    "EMAHandler",
    "BestBalancedAccuracySaver",
    "step_trainer",
    "queried_timesteps",
    "seeded",
    "load_weights",
]


def _stratified(items: Sequence[dict], fraction: float, rng: np.random.Generator) -> tuple[list[dict], list[dict]]:
    """Split ``items`` into (``fraction``, rest) inside each (site, plane, non-standard type) group."""
    groups: dict[tuple, list[dict]] = {}
    for item in items:
        groups.setdefault((item["site"], item["plane"], item.get("reason", "")), []).append(item)
    first: list[dict] = []
    rest: list[dict] = []
    for key in sorted(groups):
        group = groups[key]
        order = rng.permutation(len(group))
        n_first = int(round(fraction * len(group)))
        first += [group[i] for i in order[:n_first]]
        rest += [group[i] for i in order[n_first:]]
    return first, rest


def split_items(
    items: Sequence[dict], test_fraction: float, seed: int, validation_fraction: float = 0.15
) -> dict[str, list[dict]]:
    """Held-out test images, and two disjoint halves of the rest: one for the guide, one for the oracle.

    Every split is stratified by site, plane and non-standard type. The guide's and the oracle's
    halves each keep ``validation_fraction`` aside for checkpoint selection, so the oracle that grades
    the counterfactuals never saw an image the guide was trained or selected on.

    Args:
        items: Diff-ICE items (see :func:`bundle.diffice.data.diffice_items`).
        test_fraction: share of each group held out for testing (never trained on).
        seed: split seed.
        validation_fraction: share of each half used for validation.

    Returns:
        ``train`` (every non-test image: segmentation, proximity network, DDPM), ``test``,
        ``guide_train``, ``guide_val``, ``oracle_train``, ``oracle_val``.

    Raises:
        ValueError: when a split would hold no standard or no non-standard plane.
    """
    rng = np.random.default_rng(seed)
    test, train = _stratified(items, test_fraction, rng)
    guide, oracle = _stratified(train, 0.5, rng)
    split: dict[str, list[dict]] = {"train": train, "test": test}
    for name, half in (("guide", guide), ("oracle", oracle)):
        split[f"{name}_val"], split[f"{name}_train"] = _stratified(half, validation_fraction, rng)
    for name, part in split.items():
        planes = {item["plane"] for item in part}
        if planes != {SP, NSP}:
            raise ValueError(
                f"the {name} split has planes {sorted(planes)} only; Diff-ICE needs standard and non-standard "
                "planes in every split (more images, e.g. --synthetic#per_site, or another test_fraction)"
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
    """MONAI's ``DiffusionPrepareBatch`` for images stored in [0, 1]: the model sees them in [-1, 1].

    Args:
        num_train_timesteps: ``T``.
        max_timestep: train only on steps ``0 .. max_timestep`` (the ones the sampler queries, see
            :func:`queried_timesteps`); None for the whole chain.
    """

    def __init__(self, num_train_timesteps: int, max_timestep: int | None = None) -> None:
        super().__init__(num_train_timesteps)
        top = num_train_timesteps - 1 if max_timestep is None else int(max_timestep)
        if not 0 <= top < num_train_timesteps:
            raise ValueError(f"max_timestep must be in [0, {num_train_timesteps - 1}], got {max_timestep}")
        self.max_timestep = top

    def get_timesteps(self, images: torch.Tensor) -> torch.Tensor:
        """Uniform steps in ``0 .. max_timestep``."""
        return torch.randint(0, self.max_timestep + 1, (images.shape[0],), device=images.device).long()

    def __call__(
        self, batchdata: dict, device: str | torch.device | None = None, non_blocking: bool = False, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor, tuple, dict]:
        """Return ``(images in [-1, 1], noise target, (), {"noise", "timesteps"})``."""
        images, target, args, infer_kwargs = super().__call__(
            {"image": plain_tensor(batchdata["image"], None).float()}, device, non_blocking, **kwargs
        )
        return images * 2.0 - 1.0, target, args, infer_kwargs


def queried_timesteps(ddpm: dict, counterfactual: dict) -> int | None:
    """Highest DDPM step worth training for a sampler that starts at kept step ``tau``.

    Args:
        ddpm: the ``ddpm`` settings: ``num_train_timesteps`` (``T``) and ``timestep_factor`` (margin over
            the original step of ``tau``, 1.2: 20 % above; None trains the whole chain).
        counterfactual: the sampler settings ``num_inference_steps`` (``N``) and ``tau``.

    Returns:
        the last step to train, or None for all.
    """
    from bundle.diffice.schedule import NoiseSchedule

    num_train_timesteps, factor = int(ddpm["num_train_timesteps"]), ddpm.get("timestep_factor")
    if factor is None:
        return None
    kept = NoiseSchedule(num_train_timesteps).respaced(int(counterfactual["num_inference_steps"])).timesteps
    step = int(kept[int(counterfactual["tau"])])
    return int(min(num_train_timesteps - 1, round(float(factor) * step)))


def ema_update(decay: float, warmup: float = 10.0) -> Callable:
    """``multi_avg_fn`` of ``torch.optim.swa_utils.AveragedModel``: EMA whose decay warms up.

    The decay of update ``n`` is ``min(decay, (1 + n) / (warmup + n))``, so a short run (a few
    hundred steps on a CPU) is not dominated by the random initial weights.

    Args:
        decay: the final decay (e.g. 0.999).
        warmup: the warm-up constant.

    Returns:
        ``update(averaged, current, num_averaged)`` working in place.
    """

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        n = float(num_averaged)
        weight = 1.0 - min(float(decay), (1.0 + n) / (float(warmup) + n))
        torch._foreach_lerp_(averaged, current, weight)

    return update


class EMAHandler:
    """Exponential moving average of a network's weights, updated after every iteration.

    The average lives in a ``torch.optim.swa_utils.AveragedModel`` (put it in the resume
    checkpoint's objects as ``ema``); when the engine completes its weights are saved to ``path`` as
    a plain ``state_dict`` of the network, so the step's model file holds the EMA weights.

    Args:
        network: the trained network.
        path: model file written at the end (atomically, rank 0).
        decay: final EMA decay.
        warmup: see :func:`ema_update`.
    """

    def __init__(self, network: nn.Module, path: str | os.PathLike, decay: float = 0.999, warmup: float = 10.0) -> None:
        from torch.optim.swa_utils import AveragedModel

        self.network = network
        self.path = path
        self.ema = AveragedModel(network, multi_avg_fn=ema_update(decay, warmup), use_buffers=True)

    def attach(self, engine) -> None:
        """Update on ``ITERATION_COMPLETED``, save on ``COMPLETED``."""
        from ignite.engine import Events

        engine.add_event_handler(Events.ITERATION_COMPLETED, lambda _: self.ema.update_parameters(self.network))
        engine.add_event_handler(Events.COMPLETED, lambda _: self.save())

    def state_dict(self) -> dict:
        """The average (for resume)."""
        return self.ema.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Restore the average."""
        self.ema.load_state_dict(state)

    def save(self) -> None:
        """Write the EMA weights as the network's ``state_dict``."""
        from bundle.utils.checkpoints import save_models
        from bundle.utils.distributed import is_rank0

        if is_rank0():
            save_models({self.path: self.ema.module})


class ModelSaver:
    """Save modules as plain ``state_dict`` files (atomically, rank 0) when the engine completes.

    Args:
        files: path -> module.
    """

    def __init__(self, files: dict) -> None:
        self.files = {os.fspath(path): module for path, module in files.items()}

    def attach(self, engine) -> None:
        """Run on ``Events.COMPLETED``."""
        from ignite.engine import Events

        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine=None) -> None:
        """Write every file (rank 0)."""
        from bundle.utils.checkpoints import save_models
        from bundle.utils.distributed import is_rank0

        if not is_rank0():
            return
        save_models(self.files)
        logger.info(f"saved {', '.join(self.files)}")


class BestBalancedAccuracySaver:
    """Keep the epoch whose validation balanced accuracy is best (the guide's and oracle's checkpoint selection).

    After every epoch the network predicts the validation loader; when the balanced accuracy
    (``sklearn.metrics.balanced_accuracy_score``) improves, its ``state_dict`` is written to ``path``
    (atomically). Stateful, so a resumed step keeps its best. Ignite's ``Checkpoint`` with a score
    function would need an evaluator engine per step; this is the whole of it.

    Args:
        network: the classifier (logits of NSP, SP).
        data_loader: the validation loader (``image`` and ``target_key``).
        path: model file of the best epoch.
        device: where to predict.
        target_key: item key of the class.
        name: step name for the log.
    """

    def __init__(
        self,
        network: nn.Module,
        data_loader,
        path: str | os.PathLike,
        device: str | torch.device = "cpu",
        target_key: str = "plane",
        name: str = "",
    ) -> None:
        self.network = network
        self.data_loader = data_loader
        self.path = path
        self.device = torch.device(device)
        self.target_key = target_key
        self.name = name
        self.best: float | None = None
        self.best_epoch: int | None = None

    def attach(self, engine) -> None:
        """Validate on ``EPOCH_COMPLETED``."""
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def state_dict(self) -> dict:
        """Best value and epoch so far."""
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict) -> None:
        """Restore the best value and epoch."""
        self.best, self.best_epoch = state["best"], state["best_epoch"]

    @torch.no_grad()
    def evaluate(self) -> float:
        """Balanced accuracy of the network on the validation loader."""
        from sklearn.metrics import balanced_accuracy_score

        was_training = self.network.training
        self.network.eval()
        predicted, truth = [], []
        for batch in self.data_loader:
            predicted.append(self.network(plain_tensor(batch["image"], self.device).float()).argmax(1).cpu())
            truth.append(plain_tensor(batch[self.target_key]).long())
        self.network.train(was_training)
        return float(balanced_accuracy_score(torch.cat(truth).numpy(), torch.cat(predicted).numpy()))

    def __call__(self, engine) -> None:
        """Save the network when the validation balanced accuracy improves."""
        from bundle.utils.checkpoints import save_models
        from bundle.utils.distributed import is_rank0

        value = self.evaluate()
        epoch = int(engine.state.epoch)
        if self.best is None or value > self.best:
            self.best, self.best_epoch = value, epoch
            if is_rank0():
                save_models({self.path: self.network})
        logger.info(f"{self.name} epoch {epoch}: validation balanced accuracy {value:.3f} (best {self.best:.3f})")


def step_trainer(
    name: str,
    network: nn.Module,
    loss_function: Callable,
    optimizer: torch.optim.Optimizer,
    prepare_batch: Callable,
    data_loader,
    epochs: int,
    saver,
    output_dir: str | os.PathLike,
    device: str | torch.device = "cpu",
    log_every: Callable | int = 1,
    show_progress: bool = False,
    inferer=None,
    random_sources: Sequence = (),
):
    """The MONAI ``SupervisedTrainer`` of one Diff-ICE training step, with the handlers every step shares.

    Handlers, in order: resume from ``output_dir/checkpoints/<name>`` (network, optimiser and the
    saver's state, every random stream), loss logging every ``log_every`` iterations, the ``saver``
    (:class:`ModelSaver`, :class:`BestBalancedAccuracySaver` or
    :class:`EMAHandler`), the completion marker ``steps/<name>.json`` and a progress bar on a terminal.

    Args:
        name: the step's name (checkpoints, marker, log tags).
        network: the trained network.
        loss_function: the loss.
        optimizer: its optimiser.
        prepare_batch: MONAI ``prepare_batch`` callable.
        data_loader: the training loader.
        epochs: epochs to train.
        saver: the handler that writes the step's model file.
        output_dir: the run folder (checkpoints, markers).
        device: where to train.
        log_every: iterations between loss log lines (or an ignite event filter).
        show_progress: draw a progress bar.
        inferer: MONAI inferer (default ``SimpleInferer``).
        random_sources: datasets whose augmentation random states the resume checkpoint keeps.

    Returns:
        the trainer.
    """
    from bundle.training.handlers import PhaseCompleteHandler, ResumeCheckpointHandler
    from bundle.training.progress import ProgressBarHandler
    from bundle.training.settings import as_flag
    from monai.engines import SupervisedTrainer
    from monai.handlers import StatsHandler
    from monai.inferers import SimpleInferer

    objects = {"model": network, "optimizer": optimizer}
    if hasattr(saver, "state_dict"):
        objects["saver"] = saver
    handlers = [
        ResumeCheckpointHandler(
            os.path.join(os.fspath(output_dir), "checkpoints", name), objects, random_sources=random_sources
        ),
        StatsHandler(tag_name=f"{name}_loss", iteration_log=log_every, output_transform=lambda out: out["loss"].item()),
        saver,
        PhaseCompleteHandler(step_marker(output_dir, name)),
    ]
    if as_flag(show_progress, "show_progress"):
        handlers.append(ProgressBarHandler(desc=name))
    return SupervisedTrainer(
        device=device,
        max_epochs=int(epochs),
        train_data_loader=data_loader,
        network=network,
        optimizer=optimizer,
        loss_function=loss_function,
        prepare_batch=prepare_batch,
        inferer=inferer if inferer is not None else SimpleInferer(),
        train_handlers=handlers,
        optim_set_to_none=True,
        decollate=False,
    )


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


def proximity_distance(weights_path: str | os.PathLike | None, features: nn.Module, device: str | torch.device):
    """The proximity term's distance ``L_p``: a spatial perceptual distance on a frozen network.

    Args:
        weights_path: a user-supplied ResNet-50 ``state_dict`` (e.g. RadImageNet); empty for the local net.
        features: the locally trained :class:`~bundle.diffice.networks.FeatureNet` (``psi``).
        device: where it runs.

    Returns:
        a :class:`~bundle.diffice.networks.SpatialPerceptualDistance`.
    """
    from bundle.diffice.networks import ResNet50Features, SpatialPerceptualDistance

    network = ResNet50Features(weights_path) if weights_path else features
    return SpatialPerceptualDistance(network).to(device)
