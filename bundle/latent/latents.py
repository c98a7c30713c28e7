"""Latent vectors of a dataset from a frozen encoder, with the ROI error of each reconstruction.

Saved as ``.npz`` (plain arrays, loaded with ``allow_pickle=False``), so latents written at training
time can be read back without trusting the file.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from bundle.model.batches import network_input, network_target
from bundle.model.losses import roi_view_pair
from bundle.model.metrics import roi_edge_error, roi_mae
from bundle.utils.atomic import atomic_path
from torch import nn

LATENT_FIELDS = ("z", "site", "case_id", "roi_mae", "roi_edge_mae", "split")


@torch.no_grad()
def collect_latents(network: nn.Module, data_loader, device: str | torch.device = "cpu") -> dict[str, np.ndarray]:
    """Encode every item of a loader, decode the latent, and measure the ROI errors.

    Args:
        network: an autoencoder of :mod:`bundle.model.network` (``encode``/``decode``); put in eval mode here.
        data_loader: batches of letterboxed items (``image``, ``roi_mask``, ``site``, ``case_id``).
        device: where to run the network.

    Returns:
        ``z`` (N, D) float32, ``site`` (N,) int, ``case_id`` (N,) str, ``roi_mae`` and ``roi_edge_mae``
        (N,) float32 of the reconstruction ``decode(z)``.
    """
    network.eval()
    parts: dict[str, list] = {name: [] for name in LATENT_FIELDS[:-1]}
    for batch in data_loader:
        target = network_target(network, batch, device)
        z = network.encode(network_input(network, batch, device))
        pred, images, masks = roi_view_pair(network.decode(z), target)  # the zoom view of a dual-view model
        parts["z"].append(z.cpu().numpy().astype(np.float32))
        parts["roi_mae"].append(roi_mae(pred, images, masks).cpu().numpy().astype(np.float32))
        parts["roi_edge_mae"].append(roi_edge_error(pred, images, masks).cpu().numpy().astype(np.float32))
        parts["site"].append(np.asarray([int(s) for s in batch["site"]], dtype=np.int64))
        parts["case_id"].append(np.asarray([str(c) for c in batch["case_id"]]))
    if not parts["z"]:
        raise ValueError("the data loader yielded no batches; nothing to encode")
    return {name: np.concatenate(values) for name, values in parts.items()}


def concat_splits(latents: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Join the latents of several splits into one table with a ``split`` column."""
    out = {name: np.concatenate([part[name] for part in latents.values()]) for name in LATENT_FIELDS[:-1]}
    out["split"] = np.concatenate([np.full(len(part["z"]), split) for split, part in latents.items()])
    return out


def select_split(table: dict[str, np.ndarray], split: str) -> dict[str, np.ndarray]:
    """The rows of one split of a table made by :func:`concat_splits`."""
    keep = table["split"] == split
    if not keep.any():
        raise ValueError(f"no latents of split {split!r}; splits present: {sorted(set(table['split'].tolist()))}")
    return {name: values[keep] for name, values in table.items()}


def save_latents(path: str | os.PathLike, table: dict[str, np.ndarray]) -> None:
    """Write a latent table as ``.npz`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **table)


def load_latents(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a latent table written by :func:`save_latents` (no pickled objects accepted)."""
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}
