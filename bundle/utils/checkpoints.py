"""Checkpoints read safely (``weights_only=True``, errors that name the file and the fix) and saved atomically.

Every place the bundle reads a ``.pt`` file goes through :func:`read_checkpoint`. A pickle that
would build arbitrary objects (and could run code) is refused with :class:`UnsafeCheckpointError`;
a truncated or foreign file gets a :class:`CheckpointError` instead of a traceback from inside
PyTorch's zip reader. Resume checkpoints are written by ignite's ``DiskSaver`` (atomic), through
:class:`ReplacingDiskSaver`, which removes a superseded file only once its successor is written.
"""

from __future__ import annotations

import os
import pickle
import zipfile

import ignite.distributed as idist
import torch
from ignite.handlers import DiskSaver
from torch import nn


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint that holds more than tensors and plain values; it was not unpickled."""


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read (truncated, not a PyTorch file) or does not fit the network."""


def state_dict_sha256(module: nn.Module) -> str:
    """SHA-256 of a module's weights (names, dtypes, shapes and values in name order): its identity.

    The scorer stores it and every exported encoder embeds it, so ``score`` can tell whether an
    encoder and a scorer come from the same training run.
    """
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.numpy().tobytes() if value.dtype != torch.bfloat16 else value.float().numpy().tobytes())
    return digest.hexdigest()


def read_checkpoint(path: str | os.PathLike, what: str = "checkpoint") -> object:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with clear errors.

    Args:
        path: the ``.pt`` file.
        what: what the file is, for the messages (e.g. "resume checkpoint").

    Returns:
        the loaded object (state dicts, tensors, numbers, strings, lists, dicts).

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        UnsafeCheckpointError: when the file holds other objects (nothing of it is executed).
        CheckpointError: when the file is truncated or not a PyTorch checkpoint.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: {what} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = str(error).strip().splitlines()[0]
        raise UnsafeCheckpointError(
            f"{path}: refused to load this {what}: it holds objects other than tensors and plain values "
            f"({reason}); such a file can run code when loaded. Use only checkpoints from sources you trust, "
            "saved as a state dict (torch.save({'model': model.state_dict()}, path))"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"{path}: cannot read this {what} ({reason}); the file is truncated or not a PyTorch checkpoint: "
            "copy it again or re-create it"
        ) from None


def _wrapping_key(checkpoint: object) -> str:
    """``"model"`` for a 0.7.0-style ``{"model": state_dict}`` checkpoint, ``""`` for a plain state dict."""
    if isinstance(checkpoint, dict) and set(checkpoint) == {"model"} and isinstance(checkpoint["model"], dict):
        return "model"
    return ""


def state_dict_key(path: str | os.PathLike, what: str = "model checkpoint") -> str:
    """The key that holds the weights in ``path``, for ``ckpt_export(key_in_ckpt=...)``.

    ``""`` for a plain ``state_dict`` (what training writes, and what MONAI's ``ckpt_export`` reads
    without ``--key_in_ckpt``), ``"model"`` for the ``{"model": state_dict}`` files of 0.7.0 and earlier.

    Args:
        path: the checkpoint.
        what: what the file is, for the messages.

    Returns:
        the value for ``ckpt_export(key_in_ckpt=...)``.
    """
    return _wrapping_key(read_checkpoint(path, what))


def load_model_weights(network: nn.Module, path: str | os.PathLike, what: str = "model checkpoint") -> nn.Module:
    """Load a ``state_dict`` file (or 0.7.0's ``{"model": state_dict}``) from ``path`` into ``network``.

    Args:
        network: the module to fill.
        path: the checkpoint.
        what: what the file is, for the messages.

    Returns:
        ``network``.

    Raises:
        CheckpointError: when the weights do not fit ``network`` (other architecture settings).
    """
    checkpoint = read_checkpoint(path, what)
    key = _wrapping_key(checkpoint)
    state = checkpoint[key] if key else checkpoint
    try:
        network.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        raise CheckpointError(
            f"{path}: this {what} does not fit the configured network ({lines[-1] if lines else error}); "
            "use the settings it was trained with (canvas_size, network_widths, latent_dim, norm)"
        ) from None
    return network


def checked_checkpoint(path: str | os.PathLike, what: str = "model checkpoint") -> str:
    """Return ``path`` once :func:`read_checkpoint` has read it; for configs that hand the path to MONAI's loader.

    ``CheckpointLoader`` also reads with ``weights_only=True`` but a truncated file surfaces as a
    PyTorch zip-reader traceback; checking first gives the file, the reason and the fix instead.

    Args:
        path: the checkpoint.
        what: what the file is, for the messages.

    Returns:
        ``path`` as a string.
    """
    read_checkpoint(path, what)
    return str(path)


def save_models(files: dict) -> None:
    """Write each module's plain ``state_dict`` to its path, atomically (the zoo's ``models/model.pt`` format).

    Args:
        files: path -> module.
    """
    from bundle.utils.atomic import atomic_path

    for path, module in files.items():
        with atomic_path(path) as tmp:
            torch.save(module.state_dict(), tmp)


class ReplacingDiskSaver(DiskSaver):
    """Ignite's atomic ``DiskSaver`` that removes a superseded checkpoint only after the next one is written.

    Ignite's ``Checkpoint`` asks its saver to remove the oldest file before it writes the new one; a
    kill between the two would leave no resume point. This saver holds the removal back until the
    new file is in place.
    """

    def __init__(self, dirname: str | os.PathLike) -> None:
        super().__init__(dirname, atomic=True, create_dir=True, require_empty=False)
        self._superseded: list[str] = []

    def __call__(self, checkpoint: dict, filename: str, metadata: dict | None = None) -> None:
        """Write ``filename`` atomically, then remove the files it replaces."""
        super().__call__(checkpoint, filename, metadata)
        superseded, self._superseded = self._superseded, []
        if idist.get_rank() != self.save_on_rank:
            return
        for name in superseded:
            if name != filename:  # a file saved again under its own name was just replaced
                (self.dirname / name).unlink(missing_ok=True)

    def remove(self, filename: str) -> None:
        """Remove ``filename`` once the next checkpoint is written."""
        self._superseded.append(filename)
