"""Export the frozen encoder on its own: TorchScript with embedded metadata, and ONNX (SPEC 3).

Downstream users embed images with ``torch.jit.load`` or ``onnxruntime`` and no bundle code.
TorchScript goes through MONAI's ``ckpt_export`` with ``net_id="encoder_def"`` (the sub-network's
own checkpoint ``models/encoder.pt``; exporting it from the full checkpoint fails strict loading).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bundle.atomic import atomic_path

logger = logging.getLogger("fetal_nt_roi_cae")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = str(REPO / "configs" / "train.json")
DEFAULT_META = str(REPO / "configs" / "metadata.json")
TOLERANCE = 1e-5
META_SHAPE = "_meta_#encoder_data_format#inputs#image#spatial_shape"


def export_torchscript(
    filepath: str | os.PathLike,
    ckpt_file: str | os.PathLike,
    config_file: str | Sequence[str] = DEFAULT_CONFIG,
    meta_file: str = DEFAULT_META,
    **override,
) -> Path:
    """TorchScript encoder with the bundle metadata and configs embedded (MONAI ``ckpt_export``).

    Args:
        filepath: output ``.ts`` file.
        ckpt_file: encoder checkpoint ``{"model": state_dict}`` (``models/encoder.pt``).
        config_file: config file(s) that define ``encoder_def``.
        meta_file: ``metadata.json`` to embed.
        override: config overrides (e.g. ``network_widths``) when the encoder was trained with them.

    Returns:
        the written path.
    """
    from monai.bundle import ckpt_export

    target = Path(filepath)
    target.parent.mkdir(parents=True, exist_ok=True)
    # A temporary folder (not a temporary name) keeps the archive's inner folder named after the file.
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".export.") as tmp_dir, warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        tmp = Path(tmp_dir) / target.name
        ckpt_export(
            net_id="encoder_def",
            filepath=str(tmp),
            ckpt_file=str(ckpt_file),
            meta_file=meta_file,
            config_file=config_file,
            key_in_ckpt="model",
            **override,
        )
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    return target


def export_onnx(
    encoder: nn.Module, filepath: str | os.PathLike, canvas_size: int, metadata: dict | None = None
) -> Path:
    """ONNX encoder (opset from the torch exporter) with a dynamic batch axis and the metadata as properties.

    Args:
        encoder: the encoder with its trained weights; exported in eval mode on the CPU.
        filepath: output ``.onnx`` file (one self-contained file).
        canvas_size: side of the square input canvas.
        metadata: stored as the ONNX metadata property ``metadata`` (JSON).

    Returns:
        the written path.
    """
    import onnx

    encoder = encoder.eval().cpu()
    example = torch.rand(2, 1, canvas_size, canvas_size)
    target = Path(filepath)
    quiet = [logging.getLogger(name) for name in ("onnx_ir", "onnxscript", "torch.onnx")]
    levels = [log.level for log in quiet]
    with atomic_path(target) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for log in quiet:
            log.setLevel(logging.ERROR)
        program = torch.onnx.export(
            encoder,
            (example,),
            input_names=["image"],
            output_names=["latent"],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            dynamo=True,
            verbose=False,
        )
        model = program.model_proto
        if metadata is not None:
            entry = model.metadata_props.add()
            entry.key, entry.value = "metadata", json.dumps(metadata)
        onnx.save_model(model, str(tmp))
    for log, level in zip(quiet, levels, strict=True):
        log.setLevel(level)
    return target


def onnx_latents(filepath: str | os.PathLike, images: np.ndarray) -> np.ndarray:
    """Latents from an exported ONNX encoder with onnxruntime (CPU)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(filepath), providers=["CPUExecutionProvider"])
    return session.run(["latent"], {"image": np.asarray(images, np.float32)})[0]


def max_latent_difference(reference: nn.Module, exported: str | os.PathLike, canvas_size: int, n: int = 4) -> float:
    """Largest absolute latent difference between an in-bundle encoder and an exported file on random images."""
    images = torch.rand(n, 1, canvas_size, canvas_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference.eval().cpu()(images).numpy()
    if str(exported).endswith(".onnx"):
        got = onnx_latents(exported, images.numpy())
    else:
        got = torch.jit.load(str(exported), map_location="cpu")(images).detach().numpy()
    return float(np.abs(got - expected).max())


def export_encoder(
    output_dir: str | os.PathLike = "models",
    ckpt_file: str | os.PathLike | None = None,
    config_file: str | Sequence[str] = DEFAULT_CONFIG,
    meta_file: str = DEFAULT_META,
    formats: Sequence[str] = ("ts", "onnx"),
    **override,
) -> dict[str, dict]:
    """Export ``encoder.ts`` and/or ``encoder.onnx`` and check each against the in-bundle encoder.

    Args:
        output_dir: folder for the exported files.
        ckpt_file: encoder checkpoint (default ``<output_dir>/encoder.pt``).
        config_file: config file(s) that define ``encoder_def`` and ``canvas_size``.
        meta_file: ``metadata.json`` to embed.
        formats: ``ts`` and/or ``onnx``.
        override: config overrides (must match the training run's architecture settings).

    Returns:
        per format: ``path`` and ``max_abs_diff`` (latent difference to the in-bundle encoder).

    Raises:
        FileNotFoundError: when the checkpoint is missing (with the command that makes it).
        RuntimeError: when an exported encoder differs from the in-bundle one by more than 1e-5.
    """
    from monai.bundle import ConfigParser

    from bundle.checkpoints import load_model_weights

    ckpt = Path(ckpt_file) if ckpt_file is not None else Path(output_dir) / "encoder.pt"
    if not ckpt.exists():
        raise FileNotFoundError(
            f"{ckpt}: no encoder checkpoint; train first "
            "(python -m monai.bundle run training --config_file configs/train.json)"
        )
    unknown = set(formats) - {"ts", "onnx"}
    if unknown:
        raise ValueError(f"unknown export format(s) {sorted(unknown)}; choose ts and/or onnx")
    parser = ConfigParser()
    parser.read_config(config_file)
    parser.read_meta(meta_file)
    parser.update(override)
    canvas_size = int(parser.get_parsed_content("canvas_size"))
    # The embedded metadata states the canvas the encoder was trained on (presets differ).
    override = {**override, META_SHAPE: [canvas_size, canvas_size]}
    parser.update({META_SHAPE: [canvas_size, canvas_size]})
    encoder = load_model_weights(parser.get_parsed_content("encoder_def"), ckpt).eval().cpu()
    results = {}
    for fmt in formats:
        path = Path(output_dir) / f"encoder.{fmt}"
        if fmt == "ts":
            export_torchscript(path, ckpt, config_file, meta_file, **override)
        else:
            export_onnx(encoder, path, canvas_size, parser.get("_meta_"))
        diff = max_latent_difference(encoder, path, canvas_size)
        if diff > TOLERANCE:
            raise RuntimeError(f"{path}: exported encoder differs from the in-bundle one by {diff:.2e} (> {TOLERANCE})")
        logger.info("exported %s (max latent difference to the in-bundle encoder %.1e)", path, diff)
        results[fmt] = {"path": str(path), "max_abs_diff": diff}
    return results
