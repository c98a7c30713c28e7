"""Cached datasets: in memory (``CacheDataset``) or on disk (``PersistentDataset``) by one config key.

Both cache the deterministic part of a transform chain (loading, letterbox, ROI mask) and run the
random augmentation per item. The on-disk cache survives the process: a second training run, a
resumed run or another phase reads the letterboxed arrays instead of decoding and resizing the
originals again. Cached files are read with ``torch.load(..., weights_only=True)``; the cache key
hashes the data entry *and* the transform chain, so changing the canvas size or the preprocessing
never reads a stale file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch
from monai.data import CacheDataset, Dataset, PersistentDataset
from monai.data.utils import pickle_hashing
from monai.transforms import Compose

__all__ = ["cached_dataset", "to_memory_format"]


def cached_dataset(
    data: Sequence[dict],
    transform: Callable,
    cache_dir: str | os.PathLike | None = None,
    num_workers: int | None = 1,
    progress: bool = False,
) -> Dataset:
    """A dataset caching the deterministic transforms, in memory or under ``cache_dir``.

    Args:
        data: datalist entries.
        transform: the transform chain (deterministic transforms first, random ones after).
        cache_dir: folder of a persistent on-disk cache; empty or ``None`` caches in memory.
        num_workers: threads building the in-memory cache.
        progress: show a progress bar while the in-memory cache is built.

    Returns:
        a ``PersistentDataset`` when ``cache_dir`` is given, else a ``CacheDataset``.

    Note:
        A nested ``Compose`` is flattened first: MONAI caches up to the first randomizable transform
        and a ``Compose`` counts as one, so ``Compose([preprocessing, augmentation])`` would
        otherwise cache nothing at all.
    """
    if isinstance(transform, Compose):
        transform = transform.flatten()
    if cache_dir:
        os.makedirs(cache_dir, exist_ok=True)
        return PersistentDataset(data, transform, cache_dir=cache_dir, hash_transform=pickle_hashing)
    return CacheDataset(data, transform, cache_rate=1.0, num_workers=num_workers, progress=progress)


def to_memory_format(network: torch.nn.Module, device: torch.device | str, channels_last: bool) -> torch.nn.Module:
    """Move ``network`` to ``device``, in ``channels_last`` memory format when asked.

    Args:
        network: the model.
        device: target device.
        channels_last: store 4-D weights as NHWC (faster convolutions on tensor-core GPUs).

    Returns:
        the same module, moved.
    """
    network = network.to(device)
    return network.to(memory_format=torch.channels_last) if channels_last else network
