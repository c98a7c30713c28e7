"""What a training phase logs: its loss and validation metrics, reconstruction grids and its progress.

:class:`PhaseLogging` attaches MONAI's ``StatsHandler`` and ``TensorBoardStatsHandler`` to the
trainer and its validator, :class:`ReconstructionGridHandler` and
:class:`~bundle.training.progress.ProgressHandler`, all named after the phase: one handler instead of
six, which :class:`~bundle.training.phase_handlers.PhaseHandlers` makes for each phase (``logging``).
"""

from __future__ import annotations

import torch
from bundle.model.batches import network_input
from bundle.training.progress import ProgressHandler
from ignite.engine import Engine, Events


def _draw_box(image: torch.Tensor, box: torch.Tensor, value: float = 1.0) -> torch.Tensor:
    """Draw a one-pixel rectangle ``[x0, y0, x1, y1]`` into a (1, H, W) image (a copy)."""
    out = image.clone()
    height, width = out.shape[-2:]
    x0, y0 = int(max(0, min(width - 1, float(box[0])))), int(max(0, min(height - 1, float(box[1]))))
    x1, y1 = int(max(0, min(width - 1, float(box[2]) - 1))), int(max(0, min(height - 1, float(box[3]) - 1)))
    out[:, y0, x0 : x1 + 1] = value
    out[:, y1, x0 : x1 + 1] = value
    out[:, y0 : y1 + 1, x0] = value
    out[:, y0 : y1 + 1, x1] = value
    return out


def reconstruction_grid(images: torch.Tensor, recons: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Grid (1, rows*H, 3*W): per row the original, the reconstruction and 4x the absolute error, ROI box drawn."""
    rows = []
    for image, recon, box in zip(images, recons, boxes, strict=True):
        error = (4 * (recon - image).abs()).clamp(0, 1)
        rows.append(torch.cat([_draw_box(image, box), _draw_box(recon, box), _draw_box(error, box)], dim=-1))
    return torch.cat(rows, dim=-2)


class ReconstructionGridHandler:
    """Every ``interval`` epochs, reconstruct a fixed batch and write the grid to TensorBoard.

    Args:
        network: the autoencoder.
        data_loader: loader whose first batch (up to ``max_images``) is shown every time.
        log_dir: TensorBoard folder (a ``SummaryWriter`` is created lazily).
        tag: image tag.
        interval: epochs between grids.
        max_images: rows of the grid.
    """

    def __init__(
        self, network, data_loader, log_dir: str, tag: str = "reconstruction", interval: int = 1, max_images: int = 4
    ) -> None:
        self.network = network
        self.data_loader = data_loader
        self.log_dir = log_dir
        self.tag = tag
        self.interval = interval
        self.max_images = max_images
        self._batch = None
        self._writer = None

    def attach(self, engine: Engine) -> None:
        """Run every ``interval`` epochs and once at completion."""
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)

    def __call__(self, engine: Engine) -> None:
        """Write one grid for the current epoch."""
        from torch.utils.tensorboard import SummaryWriter

        if self._batch is None:
            self._batch = next(iter(self.data_loader))
        if self._writer is None:
            self._writer = SummaryWriter(log_dir=self.log_dir)
        images = network_input(self.network, self._batch)[: self.max_images]  # the view mosaic of a dual-view model
        boxes = torch.as_tensor(self._batch["roi"][: self.max_images])
        was_training = self.network.training
        self.network.eval()
        with torch.no_grad():
            recons = self.network(images.to(engine.state.device)).cpu()
        self.network.train(was_training)
        self._writer.add_image(self.tag, reconstruction_grid(images, recons, boxes), engine.state.epoch)
        self._writer.flush()


def loss_value(output: dict) -> float:
    """The trainer output's loss as a number (what the loss handlers log)."""
    return output["loss"].item()


class PhaseLogging:
    """Everything a training phase logs, named after the phase.

    On the trainer: the epoch loss to the console (``StatsHandler``, tag ``<tag>_loss``), the loss
    every ``log_interval`` iterations to TensorBoard (``<tag>/train_loss``), a reconstruction grid
    every ``grid_interval`` epochs (``<tag>/reconstruction``) and the progress
    (:class:`~bundle.training.progress.ProgressHandler`, ``desc``). On the validator, when given:
    its metrics to the console and to TensorBoard (tag ``<tag>``).

    Args:
        tag: the phase's name in logs and TensorBoard (``phase1``).
        desc: the phase's name in progress lines (``phase 1``).
        network: the (unwrapped) autoencoder the grid reconstructs with.
        data_loader: loader whose first batch the grid shows.
        log_dir: TensorBoard folder.
        log_interval: iterations between TensorBoard loss points.
        show_progress: a progress bar (a terminal) instead of progress lines.
        progress_interval: seconds between progress lines.
        validator: the phase's evaluator (None: the trainer only).
        grid_interval: epochs between reconstruction grids.
    """

    def __init__(
        self,
        tag: str,
        desc: str,
        network: torch.nn.Module,
        data_loader,
        log_dir: str,
        log_interval: int = 10,
        show_progress: bool = False,
        progress_interval: float = 30.0,
        validator: Engine | None = None,
        grid_interval: int = 5,
    ) -> None:
        from monai.handlers import StatsHandler, TensorBoardStatsHandler

        self.trainer_handlers = [
            StatsHandler(tag_name=f"{tag}_loss", iteration_log=False, output_transform=loss_value),
            TensorBoardStatsHandler(
                log_dir=log_dir, tag_name=f"{tag}/train_loss", iteration_log=log_interval, output_transform=loss_value
            ),
            ReconstructionGridHandler(
                network, data_loader, log_dir, tag=f"{tag}/reconstruction", interval=grid_interval
            ),
            ProgressHandler(desc, bar=show_progress, interval=progress_interval),
        ]
        self.validator = validator
        self.validator_handlers = [
            StatsHandler(iteration_log=False),
            TensorBoardStatsHandler(log_dir=log_dir, iteration_log=False, tag_name=tag),
        ]

    def attach(self, engine: Engine) -> None:
        """Attach the trainer's handlers to ``engine`` and the validator's to the validator."""
        for handler in self.trainer_handlers:
            handler.attach(engine)
        if self.validator is not None:
            for handler in self.validator_handlers:
                handler.attach(self.validator)
