"""Phase 2's loss weights set from per-term gradient magnitudes when the phase starts (an Ignite handler)."""

from __future__ import annotations

import logging
import os

import torch
from bundle.model.batches import ROIBatch
from bundle.model.calibration import calibrate_loss_weights, weights_from_gradient_norms
from bundle.model.losses import ROICompositeLoss
from bundle.utils.atomic import atomic_write_json
from bundle.utils.distributed import is_rank0
from ignite.engine import Engine, Events

logger = logging.getLogger(__name__)


class GradientCalibrationHandler:
    """Calibrate :class:`ROICompositeLoss` weights from per-term gradient norms at ``Events.STARTED``.

    Runs once: a loss already calibrated (e.g. restored from a checkpoint on resume) is left alone.
    Batch-norm statistics are restored afterwards, so calibration changes nothing but the weights.

    Under DDP every rank calibrates on its own batches and the gradient norms are averaged over
    ranks, so all ranks get the same weights.

    Args:
        loss: the phase-2 loss (only ``weighting="calibrated"`` is calibrated).
        data_loader: training loader the calibration batches come from.
        num_batches: N, the number of batches averaged.
        prepare_batch: maps a loader batch to ``(inputs, targets)``.
        output_file: JSON file receiving weights and gradient norms (None: don't write).
        network: the (unwrapped) network to calibrate; by default the engine's network.
    """

    def __init__(
        self,
        loss: ROICompositeLoss,
        data_loader,
        num_batches: int = 20,
        prepare_batch=None,
        output_file: str | os.PathLike | None = None,
        network: torch.nn.Module | None = None,
    ) -> None:
        self.network = network
        self.loss = loss
        self.data_loader = data_loader
        self.num_batches = num_batches
        self.prepare_batch = prepare_batch or ROIBatch()
        self.output_file = output_file

    def attach(self, engine: Engine) -> None:
        """Run at the start of the engine's run."""
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        """Calibrate unless already done; see the class docstring."""
        if getattr(self.loss, "weighting", None) != "calibrated" or self.loss.is_calibrated:
            if hasattr(self.loss, "weight_dict"):
                logger.info(f"loss weights in use: {self.loss.weight_dict()}")
            return
        network = self.network if self.network is not None else engine.network
        device = engine.state.device
        buffers = {
            k: v.clone()
            for k, v in network.state_dict().items()
            if k.endswith(("running_mean", "running_var", "num_batches_tracked"))
        }
        network.train()

        def batches():
            for i, batch in enumerate(self.data_loader):
                if i >= self.num_batches:
                    return
                yield self.prepare_batch(batch, device)

        def term_losses(batch):
            inputs, targets = batch
            values = self.loss.term_values(network(inputs), targets)
            return {name: value.mean() for name, value in values.items()}

        weights, norms = calibrate_loss_weights(term_losses, network.parameters(), batches())
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            values = torch.tensor([norms[k] for k in sorted(norms)], dtype=torch.float64, device=device)
            torch.distributed.all_reduce(values)
            norms = {
                k: float(v) / torch.distributed.get_world_size() for k, v in zip(sorted(norms), values, strict=True)
            }
            weights = weights_from_gradient_norms(norms)
        network.load_state_dict(buffers, strict=False)
        self.loss.set_weights(weights)
        engine.state.loss_weights = weights
        logger.info(
            f"gradient calibration over {self.num_batches} batches: mean gradient norms {norms}, weights {weights}"
        )
        if self.output_file is not None and is_rank0():
            atomic_write_json(
                self.output_file, {"weights": weights, "gradient_norms": norms, "num_batches": self.num_batches}
            )
