"""``--help`` for the bundle's configs: the settings, their defaults and one line each, then exit 0.

``python -m monai.bundle run training --config_file configs/train.json --help`` would otherwise start
the job (MONAI reads ``--help`` as one more setting). The configs import this module first (``$import
bundle.training.help``); on import it looks at the command line, and when it is ``monai.bundle``
with ``--help`` or ``-h`` it prints the settings of the given config files and exits with status 0
before anything is evaluated, trained or written.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["SETTING_HELP", "settings_help", "is_run_id", "is_bundle_command", "exit_with_help_if_asked"]

#: one line per user-facing setting (keys of train.json, inference.json and diffice.json)
SETTING_HELP = {
    "bundle_root": "folder the relative paths below start from",
    "dataset_dir": "folder holding datalist.json, or a datalist file (default: the synthetic set, made on first run)",
    "output_dir": "run folder: checkpoints, logs, report (inference: reconstructions, latents, results.csv)",
    "models_dir": "where the trained weights are written / read",
    "preset": "name of the run folder under runs/ (quick, paper)",
    "held_out_site": "site left out of training and reported as the unseen hospital (-1: none)",
    "val_fraction": "share of the source sites' cases used for validation",
    "model": "dual_view (letterbox + NT zoom view, default) or paper (the paper's single-view CAE)",
    "canvas_size": "letterbox canvas side in pixels (128 quick, 256 paper)",
    "roi_canvas_size": "side of the NT zoom view in pixels",
    "roi_margin": "zoom-view margin around the NT box, as a fraction of its size",
    "network_widths": "channels of the encoder stages",
    "roi_network_widths": "channels of the zoom-view encoder stages",
    "latent_dim": "size of the latent vector",
    "norm": "normalisation layer: batch, instance or group",
    "batch_size": "images per training / inference step",
    "phase1_epochs": "epochs of phase 1 (whole-image MS-SSIM)",
    "phase2_epochs": "epochs of phase 2 (ROI refinement)",
    "lr": "Adam learning rate of phase 1 (phase 2: times phase2_lr_factor)",
    "phase2_lr_factor": "phase 2 learning rate as a fraction of lr",
    "lr_schedule": "constant or cosine",
    "phase2_freeze": "none or encoder (freeze the encoder in phase 2)",
    "loss_weighting": "phase-2 loss weights: calibrated (gradient norms), equal or uncertainty",
    "calibration_batches": "training batches used to calibrate the phase-2 loss weights",
    "early_stop_patience": "validation epochs without improvement before a phase stops",
    "augment": "gain/gamma and affine augmentation on or off",
    "localizer": "train the NT localiser (boxes for images without one) in the main job",
    "localizer_epochs": "epochs of the localiser's coarse stage",
    "localizer_refine_epochs": "epochs of the localiser's refinement stage",
    "seed": "random seed of the run",
    "progress_interval": "without a terminal: seconds between progress lines (epoch, iteration, loss, ETA)",
    "device": "cpu or cuda (default: cuda when available)",
    "cache_dir": "on-disk cache of preprocessed images ('' keeps them in memory)",
    "cache_workers": "processes that fill the cache",
    "train_workers": "data loader processes during training",
    "channels_last": "channels-last memory format (faster convolutions on CPU)",
    "compile": "torch.compile the network",
    "leakage": "patients or copied images across sites: warn, error or off",
    "min_free_mb": "free disk space each output folder needs before the run starts",
    "max_image_pixels": "refuse images whose header claims more pixels (decompression bombs)",
    "num_workers": "data loader processes",
    "ckpt_path": "the network weights to load",
    "scorer_path": "the fitted OOD / quality scorer (scores stay empty without it)",
    "localizer_path": "the NT localiser for images without a box",
    "per_site": "Diff-ICE: synthetic images per site",
    "image_size": "Diff-ICE: image side in pixels",
}


def _config_files(argv: Sequence[str]) -> list[str]:
    """The ``--config_file`` value(s) of a ``monai.bundle`` command line (a path or a list literal)."""
    for i, arg in enumerate(argv):
        value = arg.split("=", 1)[1] if arg.startswith("--config_file=") else None
        if arg == "--config_file" and i + 1 < len(argv):
            value = argv[i + 1]
        if value is not None:
            value = value.strip()
            return [str(v) for v in ast.literal_eval(value)] if value.startswith("[") else [value]
    return []


def _shown(value: object) -> str:
    """A default as the command line would take it (expressions shown as written)."""
    return value if isinstance(value, str) else json.dumps(value)


def is_run_id(config: dict, key: str) -> bool:
    """Whether a top-level key of a config is a command: a list of ``$`` expressions, or one nothing refers to.

    ``initialize`` and ``finalize`` (which MONAI runs around every command) and ``imports`` are not.
    """
    value = config[key]
    if key in ("imports", "initialize", "finalize"):
        return False
    if isinstance(value, list):
        return bool(value) and all(isinstance(item, str) and item.startswith("$") for item in value)
    if not isinstance(value, str) or not value.startswith("$"):
        return False
    return not re.search(rf"[@%]{re.escape(key)}(?![\w])", json.dumps(config))


def settings_help(config_files: Sequence[str]) -> str:
    """The help text: usage, the run ids and every plain setting with its default and one line.

    Args:
        config_files: the config files of the command, merged in order (a later top-level key wins).

    Returns:
        the text to print.
    """
    merged: dict = {}
    for path in config_files:
        merged.update(json.loads(Path(path).read_text()))
    run_ids = [k for k in merged if is_run_id(merged, k)]
    width = max((len(k) for k in merged), default=10) + 2
    lines = [
        "usage: python -m monai.bundle run [RUN_ID] --config_file FILE [--SETTING VALUE ...]",
        "",
        f"config: {', '.join(config_files)} (config files are code: run only files you trust)",
        f"run ids: {', '.join(run_ids) or 'run'}",
        "",
        "settings (override with --SETTING VALUE; nested keys with '#', e.g. --synthetic#per_site 50):",
    ]
    for key, value in merged.items():
        plain = not isinstance(value, dict) and not (isinstance(value, list) and value and isinstance(value[0], dict))
        if key.startswith("_") or key == "imports" or key in run_ids or not plain:
            continue
        if key not in SETTING_HELP and isinstance(value, str) and value.startswith(("$", "@", "%")):
            continue  # wiring, not a setting
        lines.append(f"  --{key:<{width}} {_shown(value):<24} {SETTING_HELP.get(key, '')}".rstrip())
    if "setting_values" in merged:  # the main job
        lines += ["", "experiment tracking: --tracking configs/mlflow.json (MLflow, both phases; docs/training.md)"]
    lines += ["", "docs: README.md, docs/training.md, docs/inference.md, docs/diffice.md"]
    return "\n".join(lines)


def is_bundle_command(argv: Sequence[str]) -> bool:
    """Whether ``argv`` (``sys.argv``) is a ``python -m monai.bundle`` command line."""
    return bool(argv) and "monai" in Path(argv[0]).parts and "bundle" in Path(argv[0]).parts


def exit_with_help_if_asked(argv: Sequence[str] | None = None) -> None:
    """Print :func:`settings_help` and exit 0 when ``argv`` is a ``monai.bundle`` command with ``--help`` / ``-h``."""
    argv = list(sys.argv if argv is None else argv)
    if not is_bundle_command(argv) or not any(a in ("--help", "-h") for a in argv[1:]):
        return
    files = _config_files(argv)
    if files:
        print(settings_help(files))
        raise SystemExit(0)


exit_with_help_if_asked()
