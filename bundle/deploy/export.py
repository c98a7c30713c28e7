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
from bundle.utils.atomic import atomic_path
from bundle.utils.paths import REPO_ROOT, load_config
from torch import nn

logger = logging.getLogger("fetal_nt_roi_cae")

DEFAULT_CONFIG = str(REPO_ROOT / "configs" / "train.json")
DEFAULT_META = str(REPO_ROOT / "configs" / "metadata.json")
TOLERANCE = 1e-5
META_SHAPE = "_meta_#encoder_data_format#inputs#image#spatial_shape"
META_ROI_SHAPE = "_meta_#encoder_data_format#inputs#roi_view#spatial_shape"
META_SHA256 = "_meta_#encoder_sha256"  # the weights' identity (bundle.utils.checkpoints.state_dict_sha256)


def encoder_inputs(
    canvas_size: int, roi_canvas_size: int | None = None, n: int = 2, seed: int | None = None
) -> dict[str, torch.Tensor]:
    """Random encoder inputs by name: ``image`` (n, 1, S, S), plus ``roi_view`` (n, 1, R, R) if dual-view."""
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    inputs = {"image": torch.rand(n, 1, canvas_size, canvas_size, generator=generator)}
    if roi_canvas_size:
        inputs["roi_view"] = torch.rand(n, 1, roi_canvas_size, roi_canvas_size, generator=generator)
    return inputs


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
        ckpt_file: encoder checkpoint, a ``state_dict`` (``models/encoder.pt``; 0.7.0's ``{"model": ...}`` too).
        config_file: config file(s) that define ``encoder_def``.
        meta_file: ``metadata.json`` to embed.
        override: config overrides (e.g. ``network_widths``) when the encoder was trained with them.

    Returns:
        the written path.
    """
    from bundle.utils.checkpoints import state_dict_key
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
            key_in_ckpt=state_dict_key(ckpt_file),
            **override,
        )
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    return target


def export_onnx(
    encoder: nn.Module,
    filepath: str | os.PathLike,
    canvas_size: int,
    metadata: dict | None = None,
    roi_canvas_size: int | None = None,
) -> Path:
    """ONNX encoder (opset from the torch exporter) with a dynamic batch axis and the metadata as properties.

    Args:
        encoder: the encoder with its trained weights; exported in eval mode on the CPU.
        filepath: output ``.onnx`` file (one self-contained file).
        canvas_size: side of the square input canvas.
        metadata: stored as the ONNX metadata property ``metadata`` (JSON).
        roi_canvas_size: side of the ROI-zoom view for the dual-view encoder (a second input
            ``roi_view``); None for the single-view encoder.

    Returns:
        the written path.
    """
    import onnx

    encoder = encoder.eval().cpu()
    examples = encoder_inputs(canvas_size, roi_canvas_size)
    batch = torch.export.Dim("batch")
    target = Path(filepath)
    quiet = [logging.getLogger(name) for name in ("onnx_ir", "onnxscript", "torch.onnx")]
    levels = [log.level for log in quiet]
    with atomic_path(target) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for log in quiet:
            log.setLevel(logging.ERROR)
        program = torch.onnx.export(
            encoder,
            tuple(examples.values()),
            input_names=list(examples),
            output_names=["latent"],
            dynamic_shapes=tuple({0: batch} for _ in examples),
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


def onnx_latents(filepath: str | os.PathLike, images: np.ndarray, roi_views: np.ndarray | None = None) -> np.ndarray:
    """Latents from an exported ONNX encoder with onnxruntime (CPU); ``roi_views`` for the dual-view encoder."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(filepath), providers=["CPUExecutionProvider"])
    feeds = {"image": np.asarray(images, np.float32)}
    if roi_views is not None:
        feeds["roi_view"] = np.asarray(roi_views, np.float32)
    return session.run(["latent"], feeds)[0]


def max_latent_difference(
    reference: nn.Module, exported: str | os.PathLike, canvas_size: int, n: int = 4, roi_canvas_size: int | None = None
) -> float:
    """Largest absolute latent difference between an in-bundle encoder and an exported file on random images."""
    inputs = encoder_inputs(canvas_size, roi_canvas_size, n, seed=0)
    with torch.no_grad():
        expected = reference.eval().cpu()(*inputs.values()).numpy()
    if str(exported).endswith(".onnx"):
        got = onnx_latents(exported, *(v.numpy() for v in inputs.values()))
    else:
        got = torch.jit.load(str(exported), map_location="cpu")(*inputs.values()).detach().numpy()
    return float(np.abs(got - expected).max())


def export_encoder(
    output_dir: str | os.PathLike = "models",
    ckpt_file: str | os.PathLike | None = None,
    config_file: str | Sequence[str] = DEFAULT_CONFIG,
    meta_file: str = DEFAULT_META,
    formats: Sequence[str] = ("ts", "onnx", "image", "image_onnx"),
    **override,
) -> dict[str, dict]:
    """Export ``encoder.ts``, ``encoder.onnx`` and ``image_encoder.ts`` / ``.onnx``; check each against the bundle.

    Args:
        output_dir: folder for the exported files.
        ckpt_file: encoder checkpoint (default ``<output_dir>/encoder.pt``).
        config_file: config file(s) that define ``encoder_def`` and ``canvas_size``.
        meta_file: ``metadata.json`` to embed.
        formats: ``ts``, ``onnx``, ``image`` and/or ``image_onnx`` (``image_encoder.ts`` / ``.onnx``: raw
            image -> NT box -> latent, :mod:`bundle.deploy.image_encoder`; they need ``localizer.pt`` beside
            the checkpoint and are skipped with a warning without it).
        override: config overrides (must match the training run's architecture settings).

    Returns:
        per format: ``path`` and ``max_abs_diff`` (latent difference to the in-bundle encoder).

    Raises:
        FileNotFoundError: when the checkpoint is missing (with the command that makes it).
        RuntimeError: when an exported encoder differs from the in-bundle one by more than 1e-5.
    """
    from bundle.model.architecture import saved_architecture
    from bundle.utils.checkpoints import load_model_weights, state_dict_sha256

    ckpt = Path(ckpt_file) if ckpt_file is not None else Path(output_dir) / "encoder.pt"
    if not ckpt.exists():
        raise FileNotFoundError(
            f"{ckpt}: no encoder checkpoint; train first "
            "(python -m monai.bundle run training --config_file configs/train.json)"
        )
    override = {**saved_architecture(ckpt), **override}  # the trained network's settings, then the caller's
    unknown = set(formats) - {"ts", "onnx", "image", "image_onnx"}
    if unknown:
        raise ValueError(f"unknown export format(s) {sorted(unknown)}; choose from ts, onnx, image and image_onnx")
    parser = load_config(config_file, override, meta_file=meta_file)
    canvas_size = int(parser.get_parsed_content("canvas_size"))
    dual_view = parser.get("model", "paper") == "dual_view"
    roi_canvas_size = int(parser.get_parsed_content("roi_canvas_size")) if dual_view else None
    # The embedded metadata states the canvas (and zoom view) the encoder was trained on (presets differ).
    shapes = {META_SHAPE: [canvas_size, canvas_size]}
    if dual_view:
        shapes[META_ROI_SHAPE] = [roi_canvas_size, roi_canvas_size]
    else:
        parser.update(
            {"_meta_#encoder_data_format#inputs": {"image": parser.get("_meta_#encoder_data_format#inputs#image")}}
        )
    encoder = load_model_weights(parser.get_parsed_content("encoder_def"), ckpt).eval().cpu()
    shapes[META_SHA256] = state_dict_sha256(encoder)  # the scorer's encoder_sha256 must match (score checks)
    override = {**override, **shapes}
    parser.update(shapes)
    results = {}
    if "image" in formats or "image_onnx" in formats:
        chosen = tuple(f for f, name in (("ts", "image"), ("onnx", "image_onnx")) if name in formats)
        found = _export_image_encoder(Path(output_dir), ckpt, encoder, parser, chosen)
        results.update({f"image_{fmt}": found.get(fmt) for fmt in chosen})
    for fmt in [f for f in formats if f in ("ts", "onnx")]:
        path = Path(output_dir) / f"encoder.{fmt}"
        if fmt == "ts":
            export_torchscript(path, ckpt, config_file, meta_file, **override)
        else:
            export_onnx(encoder, path, canvas_size, parser.get("_meta_"), roi_canvas_size)
        diff = max_latent_difference(encoder, path, canvas_size, roi_canvas_size=roi_canvas_size)
        if diff > TOLERANCE:
            raise RuntimeError(f"{path}: exported encoder differs from the in-bundle one by {diff:.2e} (> {TOLERANCE})")
        logger.info("exported %s (max latent difference to the in-bundle encoder %.1e)", path, diff)
        results[fmt] = {"path": str(path), "max_abs_diff": diff}
    return results


def _export_image_encoder(output_dir: Path, ckpt: Path, encoder: nn.Module, parser, formats) -> dict:
    """``image_encoder.ts`` / ``.onnx`` from the encoder and the ``localizer.pt`` beside its checkpoint."""
    from bundle.deploy.image_encoder import export_image_encoder

    localizer = ckpt.with_name("localizer.pt")
    if parser.get("model", "paper") != "dual_view" or not localizer.exists():
        logger.warning("image_encoder skipped: it needs the dual-view model and %s (train_localizer)", localizer)
        return {}
    architecture = {k: parser.get_parsed_content(k) for k in ("model", "canvas_size", "roi_canvas_size", "roi_margin")}
    results = export_image_encoder(output_dir, encoder, localizer, architecture, formats)
    for result in results.values():
        logger.info("exported %s (raw image -> NT box -> latent)", result["path"])
    return results
