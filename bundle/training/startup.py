"""What every command of the main job does before its first step (``initialize`` of ``configs/train.json``).

MONAI runs ``initialize`` before every command (``training``, ``train_phase1``, ``evaluate_report``, ...), so a
run checks its settings, folders and disk, locks its folders and sets its seed in the same order whichever
command starts it. Under ``torchrun`` (``configs/multi_gpu_train.json``) rank 0 alone locks the folders and checks
the run settings; the other ranks wait for it and each writes its own log.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch.distributed as dist
from bundle.data.readers import set_max_pixels
from bundle.training.settings import check_setting_values, run_settings
from bundle.training.signals import stop_on_signals
from bundle.training.workflow import check_run_settings, check_writable, setup_logging
from bundle.utils.locks import acquire_run_locks
from monai.utils import set_determinism

__all__ = ["start_run"]


def start_run(
    output_dir: str | os.PathLike,
    models_dir: str | os.PathLike,
    dataset_dir: str,
    setting_values: dict,
    architecture: dict,
    seed: int,
    folders: dict[str, str | os.PathLike] | None = None,
    min_free_mb: float = 200.0,
    max_image_pixels: int | None = None,
    log_name: str = "train.log",
) -> dict:
    """Check, lock and seed a run, in this order; each check fails before anything is written.

    1. the pixel limit of every image reader (``max_image_pixels``, decompression bombs);
    2. every setting's kind (:func:`~bundle.training.settings.check_setting_values`);
    3. that ``output_dir``, ``models_dir`` and ``folders`` can be written and have ``min_free_mb`` free;
    4. a lock on ``output_dir`` and ``models_dir`` (another live run there is refused);
    5. SIGTERM / SIGINT stop the run after a last message naming the resume command;
    6. a run folder made with other settings is not resumed (``output_dir/run_settings.json``);
    7. logging to the console and ``output_dir/log_name`` (``<stem>_rank{N}.log`` per rank under DDP);
    8. ``monai.utils.set_determinism(seed)``.

    Args:
        output_dir: the run folder.
        models_dir: where the best models go.
        dataset_dir: the dataset folder or datalist (part of the run settings).
        setting_values: the user-facing settings to check and record (``setting_values``).
        architecture: the network's settings (``architecture``), recorded with them.
        seed: the run's seed.
        folders: further folders to check, config key -> folder (named in the error).
        min_free_mb: free disk space each folder needs.
        max_image_pixels: the readers' pixel limit (``None``: unchanged).
        log_name: the log file's name.

    Returns:
        the run settings (as written to ``run_settings.json``).
    """
    set_max_pixels(max_image_pixels)
    check_setting_values(setting_values)
    owned = {"output_dir": output_dir, "models_dir": models_dir}
    check_writable({**owned, **(folders or {})}, min_free_mb)
    distributed = dist.is_available() and dist.is_initialized()
    rank = dist.get_rank() if distributed else 0
    settings = run_settings(dataset_dir, setting_values, architecture)
    if rank == 0:
        acquire_run_locks(owned)
    stop_on_signals(output_dir)
    if rank == 0:
        settings = check_run_settings(output_dir, settings)
    if distributed:
        dist.barrier()  # the other ranks start once rank 0 has accepted the run folder
        log_name = f"{Path(log_name).stem}_rank{rank}{Path(log_name).suffix}"
    setup_logging(output_dir, log_name)
    set_determinism(seed=seed)
    return settings
