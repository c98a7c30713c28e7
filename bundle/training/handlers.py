"""Ignite handlers of the bundle: small classes with ``attach(engine)`` that keep state on the engine.

- :class:`GradientCalibrationHandler` sets the phase-2 loss weights once when phase 2 starts.
- :class:`ReconstructionGridHandler` writes original / reconstruction / error grids with the ROI box to TensorBoard.
- :class:`ProgressBarHandler` shows a progress bar with the running loss.
- :class:`PhaseCompleteHandler` marks a finished phase so a re-run skips it.
- :class:`ResumeCheckpointHandler` saves and restores everything a killed run needs to resume.
- :class:`BestModelSaver` keeps the best model (and encoder) by a validation metric.
- :class:`EarlyStopOnValidation` stops training when validation stops improving.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from bundle.model.batches import ROIBatch, network_input
from bundle.model.calibration import calibrate_loss_weights, weights_from_gradient_norms
from bundle.model.losses import ROICompositeLoss
from bundle.utils.atomic import atomic_write_json
from bundle.utils.checkpoints import CheckpointError, read_checkpoint
from bundle.utils.rng import capture_random_state, restore_random_state
from ignite.engine import Engine, Events

logger = logging.getLogger(__name__)


def is_rank0() -> bool:
    """True outside distributed runs and on rank 0: only rank 0 writes files."""
    return (
        not torch.distributed.is_available()
        or not torch.distributed.is_initialized()
        or torch.distributed.get_rank() == 0
    )


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


class ProgressBarHandler:
    """Ignite progress bar showing the running loss of a trainer.

    Args:
        desc: text before the bar.
    """

    def __init__(self, desc: str = "") -> None:
        self.desc = desc

    def attach(self, engine: Engine) -> None:
        """Attach the bar to the engine's iterations."""
        from ignite.handlers import ProgressBar

        ProgressBar(persist=False, desc=self.desc).attach(
            engine, output_transform=lambda output: {"loss": float(output["loss"])}
        )


class PhaseCompleteHandler:
    """Write ``path`` (JSON: epochs run, early stop) when the engine completes, so re-runs skip the phase.

    Args:
        path: marker file.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def attach(self, engine: Engine) -> None:
        """Run on ``Events.COMPLETED``."""
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        """Write the marker (rank 0)."""
        if not is_rank0():
            return
        atomic_write_json(self.path, {"epochs_run": engine.state.epoch, "max_epochs": engine.state.max_epochs})


def save_models(files: dict) -> None:
    """Write each module's plain ``state_dict`` to its path, atomically (the zoo's ``models/model.pt`` format).

    Args:
        files: path -> module.
    """
    from bundle.utils.atomic import atomic_path

    for path, module in files.items():
        with atomic_path(path) as tmp:
            torch.save(module.state_dict(), tmp)


class ModelSaver:
    """Save modules as plain ``state_dict`` files (atomically, rank 0) when the engine completes.

    Args:
        files: path -> module.
    """

    def __init__(self, files: dict) -> None:
        self.files = {Path(path): module for path, module in files.items()}

    def attach(self, engine: Engine) -> None:
        """Run on ``Events.COMPLETED``."""
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine | None = None) -> None:
        """Write every file (rank 0)."""
        if not is_rank0():
            return
        save_models(self.files)
        logger.info(f"saved {', '.join(str(p) for p in self.files)}")


def register_resume_state(engine: Engine, name: str, obj: object) -> None:
    """Have the engine's :class:`ResumeCheckpointHandler` save and restore ``obj`` under ``name``.

    For a stateful handler defined in the engine's handler list, which the resume handler's
    ``objects`` cannot reference without a list position.
    """
    engine.__dict__.setdefault("resume_objects", {})[name] = obj


class ResumeCheckpointHandler:
    """Save everything needed to resume after every epoch, and resume from the newest save at start.

    Files are ``checkpoint_dir/checkpoint_epoch=N.pt`` written atomically (temporary file, then
    rename); older ones are removed once the new one is in place. (Ignite's ``Checkpoint`` removes the
    previous file before it writes the next one, so a kill between the two would leave no resume
    point; that is why this handler is the bundle's own.) The engine itself (epoch,
    iteration) and every random stream (:func:`bundle.utils.rng.capture_random_state`: torch, NumPy,
    Python and the augmentation transforms of ``random_sources``) are saved with the given objects,
    so a resumed run continues bit for bit where the killed one stopped; loading uses
    ``torch.load(..., weights_only=True)``. The save is registered when the run starts, after every
    other epoch handler, so a checkpoint includes its epoch's validation (best model, early-stopping
    counter). Under DDP every rank loads and only rank 0 writes (ranks > 0 then continue with rank
    0's augmentation streams: valid, but not bit-identical to an uninterrupted DDP run).

    Args:
        checkpoint_dir: folder of the resume checkpoints.
        objects: name -> object with ``state_dict``/``load_state_dict`` (network, optimiser, loss,
            stateful handlers).
        interval: epochs between saves.
        keep: number of newest checkpoints kept.
        random_sources: datasets (or transforms) whose augmentation random states are saved.
    """

    def __init__(
        self,
        checkpoint_dir: str | os.PathLike,
        objects: dict,
        interval: int = 1,
        keep: int = 1,
        random_sources: list | tuple = (),
    ) -> None:
        self.checkpoint_dir = Path(checkpoint_dir)
        self.objects = dict(objects)
        self.interval = interval
        self.keep = keep
        self.random_sources = list(random_sources)
        self._saver = Events.EPOCH_COMPLETED(every=interval)

    def attach(self, engine: Engine) -> None:
        """Load at ``STARTED`` (when a checkpoint exists); from then on save every ``interval`` epochs."""
        engine.add_event_handler(Events.STARTED, self.load)
        engine.add_event_handler(Events.STARTED, self._register_save)

    def _register_save(self, engine: Engine) -> None:
        """Register the save now, behind the epoch handlers attached after this one (validation)."""
        if not engine.has_event_handler(self.save):
            engine.add_event_handler(self._saver, self.save)

    def _checkpoints(self) -> list[Path]:
        """Existing checkpoints, oldest first."""
        return sorted(self.checkpoint_dir.glob("checkpoint_epoch=*.pt"), key=lambda p: int(p.stem.split("=")[-1]))

    def _objects(self, engine: Engine) -> dict:
        """The given objects and those handlers registered on the engine (:func:`register_resume_state`)."""
        return {**self.objects, **getattr(engine, "resume_objects", {})}

    def load(self, engine: Engine) -> None:
        """Restore the newest checkpoint, if any."""
        checkpoints = self._checkpoints()
        if not checkpoints:
            return
        path = checkpoints[-1]
        try:
            state = read_checkpoint(path, "resume checkpoint")
        except CheckpointError as error:
            raise CheckpointError(
                f"{error}. Delete it to train this phase again from its start, or give another --output_dir"
            ) from None
        max_epochs = engine.state.max_epochs
        for name, obj in self._objects(engine).items():
            obj.load_state_dict(state[name])
        engine.load_state_dict(state["engine"])
        engine.state.max_epochs = max_epochs
        if "random" in state:
            restore_random_state(state["random"], self.random_sources)
        else:  # checkpoints of 0.5.0 and earlier
            torch.set_rng_state(state["torch_rng"])
        logger.info(f"resumed from {path} at epoch {engine.state.epoch} of {max_epochs}")

    def save(self, engine: Engine) -> None:
        """Write ``checkpoint_epoch=N.pt`` atomically and prune older ones (rank 0)."""
        from bundle.utils.atomic import atomic_path

        if not is_rank0():
            return
        state = {name: obj.state_dict() for name, obj in self._objects(engine).items()}
        state["engine"] = engine.state_dict()
        state["random"] = capture_random_state(self.random_sources)
        path = self.checkpoint_dir / f"checkpoint_epoch={engine.state.epoch}.pt"
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
        for old in self._checkpoints()[: -self.keep]:
            old.unlink(missing_ok=True)


class BestModelSaver:
    """Save the network (and sub-networks) when a validation metric improves; resumable.

    Attach to the evaluator. Each file holds the module's plain ``state_dict`` and is written atomically;
    ``best.json`` beside them records the metric and the epoch. Under DDP every rank tracks the
    best value (so resume state agrees) and only rank 0 writes.

    Args:
        save_dir: output folder (e.g. ``models/``).
        files: file name -> module, e.g. ``{"model.pt": net, "encoder.pt": net.encoder}``.
        metric: evaluator metric name.
        mode: ``max`` or ``min`` (which direction is better).
        architecture: the settings that define the network (``model``, ``canvas_size``, ...), saved
            in ``best.json`` so that inference and export rebuild the same network
            (:func:`bundle.model.architecture.saved_architecture`).
    """

    def __init__(
        self, save_dir: str | os.PathLike, files: dict, metric: str, mode: str = "max", architecture: dict | None = None
    ) -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.save_dir = Path(save_dir)
        self.files = dict(files)
        self.metric = metric
        self.mode = mode
        self.architecture = dict(architecture or {})
        self.best: float | None = None
        self.best_epoch: int | None = None

    def attach(self, engine: Engine) -> None:
        """Run when the evaluator completes (its metrics are computed by then)."""
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def state_dict(self) -> dict:
        """Best value so far, so a resumed run does not overwrite a better model."""
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict) -> None:
        """Restore the best value."""
        self.best, self.best_epoch = state["best"], state["best_epoch"]

    def __call__(self, engine: Engine) -> None:
        """Save if the metric improved."""
        value = float(engine.state.metrics[self.metric])
        improved = self.best is None or (value > self.best if self.mode == "max" else value < self.best)
        if not improved:
            return
        self.best, self.best_epoch = value, int(engine.state.epoch)
        if not is_rank0():
            return
        save_models({self.save_dir / name: module for name, module in self.files.items()})
        info = {"metric": self.metric, "value": value, "epoch": self.best_epoch, "architecture": self.architecture}
        atomic_write_json(self.save_dir / "best.json", info, indent=4)  # the zoo's pretty-format-json style
        logger.info(
            f"new best {self.metric} = {value:.5f} at epoch {self.best_epoch}: "
            f"saved {sorted(self.files)} to {self.save_dir}"
        )


class EarlyStopOnValidation:
    """Stop the trainer when a validation metric has not improved for ``patience`` validations.

    Attach to the trainer after the ``ValidationHandler`` (handlers run in registration order).
    Ignite's ``EarlyStopping`` attaches to the evaluator and needs the trainer when it is built, a
    reference cycle in a config (trainer -> its handlers -> validator -> its handlers -> trainer), and
    does not stop a resumed run whose patience had already run out; this one does both.

    Args:
        validator: the evaluator whose metrics are read.
        metric: metric name.
        patience: validations without improvement before stopping.
        mode: ``max`` or ``min``.
        min_delta: smallest change that counts as an improvement.
        state_name: save and restore the counters in the trainer's resume checkpoint under this name
            (:func:`register_resume_state`); None: not resumable.
    """

    def __init__(
        self,
        validator: Engine,
        metric: str,
        patience: int,
        mode: str = "max",
        min_delta: float = 0.0,
        state_name: str | None = None,
    ) -> None:
        self.state_name = state_name
        self.validator = validator
        self.metric = metric
        self.patience = patience
        self.sign = 1.0 if mode == "max" else -1.0
        self.min_delta = min_delta
        self.best: float | None = None
        self.counter = 0

    def attach(self, engine: Engine) -> None:
        """Check after every trainer epoch that ran a validation, and at start (a resumed run that had stopped)."""
        if self.state_name:
            register_resume_state(engine, self.state_name, self)
        engine.add_event_handler(Events.STARTED, self.stop_if_exhausted)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def stop_if_exhausted(self, engine: Engine) -> None:
        """Terminate at once when resumed state says patience had already run out (killed after stopping)."""
        if 0 < self.patience <= self.counter:
            logger.info(
                f"early stopping: already stopped ({self.metric} did not improve for {self.counter} validations)"
            )
            engine.terminate()

    def state_dict(self) -> dict:
        """Best score and the count of validations without improvement."""
        return {"best": self.best, "counter": self.counter}

    def load_state_dict(self, state: dict) -> None:
        """Restore after resume."""
        self.best, self.counter = state["best"], state["counter"]

    def __call__(self, engine: Engine) -> None:
        """Update the counter; terminate the trainer when patience runs out."""
        if (
            self.patience <= 0
            or self.validator.state.epoch != engine.state.epoch
            or self.metric not in self.validator.state.metrics
        ):
            return
        score = self.sign * float(self.validator.state.metrics[self.metric])
        if self.best is None or score > self.best + self.min_delta:
            self.best, self.counter = score, 0
            return
        self.counter += 1
        if self.counter >= self.patience:
            logger.info(f"early stopping: {self.metric} did not improve for {self.patience} validations")
            engine.terminate()


class _EvaluationRowsSaver:
    """Base of the evaluation savers: rows collected per iteration, written at completion.

    Subclasses implement ``batch_rows(preds, batch)`` and ``write(engine)``.

    Args:
        output_dir: folder of the outputs.
    """

    def __init__(self, output_dir: str | os.PathLike) -> None:
        self.output_dir = Path(output_dir)
        self.rows: list[dict] = []

    def attach(self, engine: Engine) -> None:
        """Collect after every iteration, write at completion."""
        engine.add_event_handler(Events.STARTED, lambda e: self.rows.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def collect(self, engine: Engine) -> None:
        """Add the current batch's rows."""
        self.rows += self.batch_rows(engine.state.output["pred"], engine.state.batch)

    def batch_rows(self, preds: torch.Tensor, batch: dict) -> list[dict]:
        """The rows of one batch (``decollate=False`` output)."""
        raise NotImplementedError

    def write(self, engine: Engine) -> None:
        """Write the outputs."""
        raise NotImplementedError


class PerImageMetricsSaver(_EvaluationRowsSaver):
    """Collect every reconstruction metric per image during evaluation; write CSVs and a summary.

    Attach to an evaluator run with ``decollate=False``. At completion writes, atomically,
    ``output_dir/per_image.csv``, ``output_dir/per_site.csv`` (means per site) and
    ``output_dir/summary.json`` (means per site and overall).

    Args:
        output_dir: folder of the outputs.
    """

    def batch_rows(self, preds: torch.Tensor, batch: dict) -> list[dict]:
        """Every metric of every image of the batch."""
        from bundle.evaluation.report import per_image_rows

        return per_image_rows(preds, batch)

    def write(self, engine: Engine) -> None:
        """Write the files (rank 0)."""
        from bundle.evaluation.report import ALL_METRICS
        from bundle.utils.atomic import atomic_write_csv

        if not is_rank0() or not self.rows:
            return
        atomic_write_csv(self.output_dir / "per_image.csv", self.rows, ["case_id", "site", "roi_area_px", *ALL_METRICS])
        sites = sorted({r["site"] for r in self.rows})
        summary = {
            "all": {m: sum(r[m] for r in self.rows) / len(self.rows) for m in ALL_METRICS} | {"n": len(self.rows)}
        }
        for site in sites:
            rows = [r for r in self.rows if r["site"] == site]
            summary[f"site{site}"] = {m: sum(r[m] for r in rows) / len(rows) for m in ALL_METRICS} | {"n": len(rows)}
        table = [{"group": group, **values} for group, values in summary.items()]
        atomic_write_csv(self.output_dir / "per_site.csv", table, ["group", "n", *ALL_METRICS])
        atomic_write_json(self.output_dir / "summary.json", summary)
        logger.info(f"evaluation of {len(self.rows)} images written to {self.output_dir} (per_image.csv, per_site.csv)")


class NTFidelitySaver(_EvaluationRowsSaver):
    """Measure the NT on every original and reconstruction during evaluation; write ``fidelity.csv`` and a summary.

    Attach to an evaluator run with ``decollate=False`` over letterboxed items (``case_id`` and
    geometries kept). Each reconstruction is mapped back to native geometry and the NT measured in
    the native box on it and on the original (:mod:`bundle.evaluation.fidelity`, as the training
    report does). At completion writes, atomically, ``output_dir/fidelity.csv`` (one row per
    image) and ``output_dir/fidelity.json`` (standard and all planes: share measurable, median
    and p90 of |NT(recon) - NT(original)|, share within 0.2 mm, bias, MAE against the exact NT),
    and the Bland-Altman agreement per site on standard planes beside the null baselines and the
    human anchors (:mod:`bundle.evaluation.agreement`): ``agreement.json``, ``agreement.md`` and
    ``bland_altman.png``.

    Args:
        output_dir: folder of the outputs.
        entries: the evaluated datalist entries (``case_id``, ``image``, ``roi``,
            ``pixel_spacing_mm``); entries without a spacing are skipped (the NT is in mm).
        constant_nt_mm: the constant-NT null baseline (the training originals' median,
            :func:`bundle.evaluation.report.constant_nt`); None leaves it out.
    """

    def __init__(self, output_dir: str | os.PathLike, entries: list[dict], constant_nt_mm: float | None = None) -> None:
        super().__init__(output_dir)
        self.entries = {e["case_id"]: e for e in entries}
        self.constant_nt_mm = constant_nt_mm

    def batch_rows(self, preds: torch.Tensor, batch: dict) -> list[dict]:
        """The NT measurements of the batch's images."""
        from bundle.evaluation.report import batch_fidelity_rows

        return batch_fidelity_rows(preds, batch, self.entries)

    def write(self, engine: Engine) -> None:
        """Write the files (rank 0)."""
        from bundle.evaluation.fidelity import fidelity_by_plane
        from bundle.evaluation.report import FIDELITY_COLUMNS
        from bundle.utils.atomic import atomic_write_csv

        if not is_rank0() or not self.rows:
            return
        atomic_write_csv(self.output_dir / "fidelity.csv", self.rows, list(FIDELITY_COLUMNS))
        summary = fidelity_by_plane(self.rows)
        atomic_write_json(self.output_dir / "fidelity.json", summary)
        self.write_agreement()
        standard = summary["standard_planes"]
        logger.info(
            f"NT fidelity of {len(self.rows)} images written to {self.output_dir} (fidelity.csv, fidelity.json); "
            f"standard planes: measurable {standard['measurable_pct']:.0f} %, "
            f"median {standard['abs_diff_median_mm']:.3f} mm, p90 {standard['abs_diff_p90_mm']:.3f} mm, "
            f"bias {standard['bias_mm']:+.3f} mm"
        )

    def write_agreement(self) -> None:
        """Bland-Altman per site on standard planes with the null baselines: JSON, Markdown and the figure."""
        from bundle.evaluation.agreement import agreement_markdown, agreement_rows, bland_altman_figure
        from bundle.evaluation.fidelity import is_standard_plane
        from bundle.utils.atomic import atomic_write_text

        standard = {"model": [r for r in self.rows if is_standard_plane(r)]}
        rows = agreement_rows(standard, self.constant_nt_mm)
        atomic_write_json(self.output_dir / "agreement.json", {"constant_nt_mm": self.constant_nt_mm, "rows": rows})
        lines = ["# NT agreement (Bland-Altman), standard planes", "", *agreement_markdown(rows, str), ""]
        atomic_write_text(self.output_dir / "agreement.md", "\n".join(lines))
        bland_altman_figure(standard, self.constant_nt_mm, self.output_dir / "bland_altman.png")
