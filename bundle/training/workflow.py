"""Helpers the bundle configs call: dataset preparation, logging, resume and phase bookkeeping.

They are deliberately small; the engines, handlers and their wiring live in ``configs/*.json``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import torch
from bundle.data.datalist import load_validated_datalist
from bundle.data.leakage import check_leakage
from bundle.utils.checkpoints import load_model_weights
from bundle.utils.rng import reseed
from torch import nn

logger = logging.getLogger("fetal_nt_roi_cae")


def datalist_path(dataset_dir: str | os.PathLike) -> Path:
    """The datalist of ``dataset_dir``: the path itself if it is a JSON file, else ``dataset_dir/datalist.json``."""
    path = Path(dataset_dir)
    return path if path.suffix.lower() == ".json" else path / "datalist.json"


def prepare_datalist(
    dataset_dir: str | os.PathLike,
    synthetic: dict | None = None,
    synthetic_dir: str | os.PathLike | None = None,
    leakage: str = "warn",
) -> list[dict]:
    """Return validated datalist entries, first creating the synthetic dataset where that is safe.

    Synthetic data is generated only when there is no datalist and either ``dataset_dir`` is the
    default location ``synthetic_dir`` or ``synthetic["generate"]`` is true; it never writes into a
    folder holding files it did not write. Anything else is an error naming the path, so a mistyped
    path never trains on synthetic data or touches the user's files.

    Args:
        dataset_dir: dataset folder (holding ``datalist.json``) or a datalist file.
        synthetic: settings of the synthetic dataset (``per_site``, ``sites``, ``seed``, ``size`` as
            [W, H] or None, ``workers``, ``masks`` to also write structure label maps, ``generate``
            to allow a location other than ``synthetic_dir``); None to require an existing datalist.
        synthetic_dir: the config's default dataset folder, where synthetic data may be generated.
        leakage: patients in several sites or copied images across patients: ``warn`` (logged),
            ``error`` (refused before training) or ``off`` (:func:`bundle.data.leakage.check_leakage`).

    Returns:
        the entries with absolute image paths.

    Raises:
        FileNotFoundError: when there is no datalist and generating one is not allowed there.
        FileExistsError: when the generator would write into a folder of someone else's files.
        DatalistError: listing every problem of a broken datalist (nothing is trained on it).
        LeakageError: with ``leakage="error"``, when a patient or an image could reach both sides.
    """
    path = datalist_path(dataset_dir)
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if distributed and torch.distributed.get_rank() > 0:
        torch.distributed.barrier()  # rank 0 creates the dataset first
    elif not path.exists():
        _generate_synthetic(Path(dataset_dir), path, synthetic, synthetic_dir)
    if distributed and torch.distributed.get_rank() == 0:
        torch.distributed.barrier()
    entries = load_validated_datalist(path, progress=sys.stderr.isatty())
    check_leakage(entries, leakage, warn=logger.warning)
    logger.info(f"datalist {path}: {len(entries)} valid entries")
    return entries


def _generate_synthetic(dataset_dir: Path, path: Path, synthetic: dict | None, synthetic_dir) -> None:
    """Write the synthetic dataset for :func:`prepare_datalist`, or say why it may not."""
    at_default = synthetic_dir is not None and dataset_dir.resolve() == Path(synthetic_dir).resolve()
    named_file = path.name != "datalist.json"  # a datalist file that does not exist: never generate
    if named_file or not synthetic or not (at_default or synthetic.get("generate")):
        hint = ""
        if dataset_dir.suffix and dataset_dir.suffix.lower() != ".json":
            hint = f" ({dataset_dir.name!r} looks like a file name: a datalist file must end in .json)"
        elif named_file:
            hint = f" (no such datalist file; the folder holds {_json_files(path.parent)})"
        raise FileNotFoundError(
            f"{path}: no datalist{hint}. Fix dataset_dir: a folder holding datalist.json, or a .json datalist "
            f"file; create one with python -m bundle synth / convert-shenzhen. Synthetic data is generated only "
            f"at the default location ({synthetic_dir}) or with --synthetic#generate true"
        )
    from bundle.data.synthetic.dataset import write_synthetic_dataset

    size = synthetic.get("size")
    logger.info(f"no datalist at {path}: generating the synthetic dataset ({synthetic})")
    write_synthetic_dataset(
        path.parent,
        per_site=int(synthetic["per_site"]),
        sites=int(synthetic.get("sites", 3)),
        seed=int(synthetic.get("seed", 0)),
        size=tuple(size) if size else None,
        workers=int(synthetic.get("workers", 1)),
        masks=bool(synthetic.get("masks", False)),
    )


def _json_files(folder: Path) -> str:
    names = sorted(p.name for p in folder.glob("*.json")) if folder.is_dir() else []
    return ", ".join(names[:5]) if names else "no .json file" if folder.is_dir() else "nothing: it does not exist"


def setup_logging(output_dir: str | os.PathLike, filename: str = "train.log") -> Path:
    """Log INFO and above to the console and to ``output_dir/filename`` (appending on resume)."""
    path = Path(output_dir) / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    formatter = logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s")
    if not any(isinstance(h, logging.FileHandler) and Path(h.baseFilename) == path.resolve() for h in root.handlers):
        file_handler = logging.FileHandler(path)
        file_handler.setFormatter(formatter)
        root.addHandler(file_handler)
    if not any(type(h) is logging.StreamHandler for h in root.handlers):
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(formatter)
        root.addHandler(console)
    return path


def phase_is_complete(marker: str | os.PathLike) -> bool:
    """Whether a phase wrote its completion marker (see ``PhaseCompleteHandler``)."""
    return Path(marker).exists()


def require_file(path: str | os.PathLike, what: str) -> str:
    """Return ``path`` if it exists, else raise a FileNotFoundError saying what produces it."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: {what} not found")
    return str(path)


def freeze(network: nn.Module, part: str) -> nn.Module:
    """Freeze part of the autoencoder for phase 2.

    Args:
        network: the autoencoder (``encoder`` / ``decoder`` submodules).
        part: ``none`` or ``encoder``. A frozen encoder gets no gradients and keeps its batch-norm
            statistics (it stays in eval mode even when the trainer calls ``network.train()``).

    Returns:
        the same network.

    Raises:
        ValueError: for an unknown part.
    """
    if part == "none":
        return network
    if part != "encoder":
        raise ValueError(f"phase2_freeze must be 'none' or 'encoder', got {part!r}")
    encoder = network.encoder
    for parameter in encoder.parameters():
        parameter.requires_grad_(False)

    def train_frozen(mode: bool = True) -> nn.Module:
        return nn.Module.train(encoder, False)

    encoder.train = train_frozen  # the trainer's network.train() must not wake the frozen encoder
    encoder.eval()
    return network


def trainable_parameters(
    network: nn.Module, loss: nn.Module | None = None, freeze_part: str = "none"
) -> list[torch.Tensor]:
    """Apply ``freeze_part`` and return the parameters to optimise (network, plus learned loss weights)."""
    freeze(network, freeze_part)
    params = [p for p in network.parameters() if p.requires_grad]
    if loss is not None:
        params += [p for p in loss.parameters() if p.requires_grad]
    return params


def log_phase_skip(phase: str, marker: str | os.PathLike) -> None:
    """Say that a completed phase is skipped on a re-run."""
    logger.info(f"{phase}: already complete ({marker}); skipping. Delete the marker to train it again.")


def run_phase(
    name: str,
    trainer,
    complete_marker: str | os.PathLike,
    network: nn.Module | None = None,
    init_weights: str | os.PathLike | None = None,
    seed: int | None = None,
    random_sources: list | tuple = (),
) -> None:
    """Run one training phase unless its completion marker says it already finished.

    Args:
        name: phase name for the log.
        trainer: the phase's trainer (resumes by itself from its last checkpoint).
        complete_marker: file written when the phase completes.
        network: network to initialise from ``init_weights`` before the phase starts (a resume
            checkpoint, when present, overrides it at ``STARTED``).
        init_weights: ``state_dict`` file, e.g. the best phase-1 model for phase 2.
        seed: when given, every random stream (and the augmentation of ``random_sources``) is
            seeded from it before the phase starts, so a phase starts the same way whether the
            previous one ran in this process or in a killed one (a resume checkpoint then restores
            its own saved state).
        random_sources: datasets whose augmentation transforms are seeded with ``seed``.
    """
    if phase_is_complete(complete_marker):
        log_phase_skip(name, complete_marker)
        return
    if seed is not None:
        reseed(int(seed), random_sources)
    if network is not None and init_weights is not None:
        load_model_weights(network, init_weights, f"{name} initial weights")
        logger.info(f"{name}: starting from {init_weights}")
    logger.info(f"{name}: training for up to {trainer.state.max_epochs} epochs")
    trainer.run()


def check_writable(folders: dict[str, str | os.PathLike], min_free_mb: float = 200.0) -> None:
    """Fail before any work starts when an output folder cannot be written or its disk is nearly full.

    Nothing is created: for each folder, its nearest existing ancestor (the folder itself when it
    exists) must be a folder that a probe file can be written to, and its file system must have
    ``min_free_mb`` free. A path that is (or lies under) a file is refused.

    Args:
        folders: config key -> folder, e.g. ``{"output_dir": "runs/quick", "models_dir": "models"}``.
        min_free_mb: free space each folder's disk must have (checkpoints, reports, models).

    Raises:
        OSError: naming the key, the folder, the reason and the fix.
    """
    import shutil
    import tempfile

    for key, folder in folders.items():
        path = Path(folder)
        existing = path
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        fix = f"give a writable folder with --{key} or fix its permissions (nothing was started)"
        if not existing.is_dir():
            raise OSError(f"{key} = {path}: cannot write there ({existing} is a file, not a folder); {fix}")
        try:
            with tempfile.NamedTemporaryFile(dir=existing, prefix=".write_probe_"):
                pass
        except OSError as error:
            raise OSError(f"{key} = {path}: cannot write there ({error.strerror or error}); {fix}") from None
        free_mb = shutil.disk_usage(existing).free / 2**20
        if free_mb < min_free_mb:
            raise OSError(
                f"{key} = {path}: only {free_mb:.0f} MB free on its disk, {min_free_mb:.0f} MB needed for "
                f"checkpoints, models and reports; free some space or give another --{key} (nothing was started)"
            )


def has_training_state(output_dir: str | os.PathLike) -> bool:
    """Whether a run folder holds anything a resume would continue: a checkpoint or a finished phase's marker."""
    folder = Path(output_dir)
    return any(folder.glob("checkpoints/**/*.pt")) or any(folder.glob("*_complete.json"))


def check_run_settings(output_dir: str | os.PathLike, settings: dict) -> dict:
    """Refuse to resume a run folder that was made with different settings.

    The first call writes ``output_dir/run_settings.json``; later calls (a re-run that resumes)
    compare against it, so a changed held-out site or seed can never mix with an older run's
    checkpoints and completion markers. A folder without any checkpoint or finished phase (a run
    refused before its first epoch) takes the new settings. Epoch counts are not part of the check: an interrupted run
    may resume with another budget (a phase that completed stays complete).

    Args:
        output_dir: the run folder.
        settings: the settings that define the run (JSON-serialisable).

    Returns:
        the settings.

    Raises:
        ValueError: naming every changed setting and the fix.
    """
    from bundle.utils.atomic import atomic_write_json

    path = Path(output_dir) / "run_settings.json"
    settings = json.loads(json.dumps(settings))
    if path.exists():
        previous = json.loads(path.read_text())
        changed = {k: {"before": previous.get(k), "now": v} for k, v in settings.items() if previous.get(k) != v}
        if changed and not has_training_state(output_dir):
            # a run refused before its first epoch (a bad setting, a broken datalist) left only its settings:
            # nothing can mix, so the corrected command starts afresh
            logger.info(f"{output_dir}: no checkpoint or finished phase yet; the new settings replace {changed}")
            atomic_write_json(path, settings)
        elif changed:
            raise ValueError(
                f"{output_dir} holds a run made with other settings {changed}; resuming it would mix two runs. "
                f"Give a new --output_dir (e.g. runs/heldout{settings.get('held_out_site', 'N')}) "
                f"or delete {output_dir}."
            )
    else:
        atomic_write_json(path, settings)
    return settings
