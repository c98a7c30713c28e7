"""The settings that define the network, and where a trained checkpoint keeps them (``best.json``)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from torch import nn

__all__ = ["ARCHITECTURE_KEYS", "DEFAULT_ARCHITECTURE", "build_from", "saved_architecture"]

#: the network of the main job's defaults (``configs/train.json`` states the same; a test keeps them equal)
DEFAULT_ARCHITECTURE = {
    "model": "dual_view",
    "canvas_size": 128,
    "roi_canvas_size": 64,
    "roi_margin": 0.5,
    "network_widths": [16, 32, 64, 128, 128],
    "roi_network_widths": [16, 32, 64, 128],
    "latent_dim": 128,
    "norm": "batch",
}
#: the training settings that define the network; saved in ``best.json`` beside the weights
ARCHITECTURE_KEYS = tuple(DEFAULT_ARCHITECTURE)


def saved_architecture(ckpt_path: str | os.PathLike) -> dict:
    """The architecture settings a checkpoint was trained with, read from ``best.json`` beside it.

    Training writes them there (:class:`~bundle.training.handlers.BestModelSaver`), so inference,
    export, scoring and MONAI Label build the same network without restating its settings. A
    checkpoint without them (trained elsewhere, or by 0.7.0 and earlier) gets
    :data:`DEFAULT_ARCHITECTURE`; config overrides still win over both.

    Args:
        ckpt_path: the weights file (e.g. ``models/model.pt``).

    Returns:
        ``{key: value}`` for every key of :data:`ARCHITECTURE_KEYS`.

    Raises:
        ValueError: when ``best.json`` exists but is not valid JSON (names the file and the fix).
    """
    settings = {key: (list(v) if isinstance(v, list) else v) for key, v in DEFAULT_ARCHITECTURE.items()}
    info = Path(ckpt_path).with_name("best.json")
    if info.is_file():
        try:
            saved = json.loads(info.read_text()).get("architecture") or {}
        except (ValueError, AttributeError) as error:
            raise ValueError(f"{info}: not a valid best.json ({error}); delete it or re-run training") from None
        settings.update({key: saved[key] for key in ARCHITECTURE_KEYS if key in saved})
    return settings


def build_from(architecture: Mapping, part: str = "autoencoder") -> nn.Module:
    """The network that architecture settings describe (``architecture`` in ``train.json``).

    Args:
        architecture: the settings of :data:`ARCHITECTURE_KEYS` (``roi_margin`` and
            ``canvas_size`` do not change the encoder).
        part: ``autoencoder`` (:func:`~bundle.model.network.build_autoencoder`) or ``encoder``
            (:func:`~bundle.model.network.build_encoder`).

    Returns:
        the untrained network.

    Raises:
        ValueError: for an unknown part (or model name).
    """
    from bundle.model.network import build_autoencoder, build_encoder

    shared = {
        "model": architecture["model"],
        "widths": architecture["network_widths"],
        "roi_widths": architecture["roi_network_widths"],
        "latent_dim": architecture["latent_dim"],
        "norm": architecture["norm"],
    }
    if part == "autoencoder":
        sizes = {"canvas_size": architecture["canvas_size"], "roi_canvas_size": architecture["roi_canvas_size"]}
        return build_autoencoder(**shared, **sizes)
    if part == "encoder":
        return build_encoder(**shared)
    raise ValueError(f"part must be 'autoencoder' or 'encoder', got {part!r}")
