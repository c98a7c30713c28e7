"""The whole chain from a raw grey image to the latent in one TorchScript module (``models/image_encoder.ts``).

:class:`ImageEncoder` repeats, with torch operations only, what the bundle does to an image that has
no NT box: letterbox (:mod:`bundle.data.transforms`), the NT localiser's coarse stage and its
refinement steps (:class:`bundle.model.localizer.NTLocalizer`), the ROI-zoom view of the found box
(:mod:`bundle.data.roi_zoom`) and the dual-view encoder. Scripted with ``torch.jit.script`` it runs
with ``torch.jit.load`` alone::

    import torch
    from PIL import Image
    import numpy as np

    encoder = torch.jit.load("models/image_encoder.ts")
    grey = np.asarray(Image.open("scan.png").convert("L"), dtype=np.float32) / 255.0
    latent, box, confidence = encoder(torch.from_numpy(grey))
    # latent (128,), box [x0, y0, x1, y1] in the image's pixels, confidence of "an NT is in view"

Tested against the bundle's own chain (the same latent to 1e-4).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from bundle.model.localizer import STRIDE
from torch import nn


def resample_rows(
    in_size: int, start: torch.Tensor, length: torch.Tensor, out_size: torch.Tensor, offset: torch.Tensor, rows: int
) -> torch.Tensor:
    """(rows, in_size) weights of PyTorch's antialiased bilinear resize as a matrix, window and padding included.

    Output row ``r`` is pixel ``i = r - offset`` of a resize of the window ``[start, start + length)`` of
    the input axis (positions outside ``[0, in_size)`` are zero, like the bundle's zero-padded crops) to
    ``out_size`` pixels; rows with ``i`` outside ``[0, out_size)`` are zero (the letterbox padding).
    The weights are those of ``F.interpolate(..., mode="bilinear", antialias=True, align_corners=False)``
    (PIL's triangle filter widened by the scale when shrinking), so ``A_y @ image @ A_x.T`` equals the
    bundle's crop-and-resize to float precision with fixed shapes: the chain exports to ONNX.
    """
    start, length, out_size = start.double(), length.double(), out_size.double()
    scale = length / out_size
    support = torch.where(scale >= 1.0, scale, torch.ones_like(scale))
    invscale = torch.where(scale >= 1.0, 1.0 / scale, torch.ones_like(scale))
    i = torch.arange(rows, dtype=torch.float64) - offset.double()
    valid = (i >= 0) & (i < out_size)
    center = scale * (i + 0.5)
    first = torch.clamp(torch.trunc(center - support + 0.5), min=0.0)
    stop = torch.minimum(torch.trunc(center + support + 0.5), length)
    taps = first[:, None] + torch.arange(2 * in_size + 4, dtype=torch.float64)[None, :]
    tap_weights = torch.clamp(1.0 - torch.abs((taps - center[:, None] + 0.5) * invscale), min=0.0)
    total = (tap_weights * (taps < stop[:, None])).sum(dim=1)
    j = torch.arange(in_size, dtype=torch.float64)[None, :] - start
    weights = torch.clamp(1.0 - torch.abs((j - center[:, None] + 0.5) * invscale), min=0.0)
    weights = weights * ((j >= first[:, None]) & (j < stop[:, None]) & valid[:, None])
    return (weights / torch.where(total > 0, total, torch.ones_like(total))[:, None]).float()


def _length(image: torch.Tensor, axis: int) -> torch.Tensor:
    """An image's height (``axis`` 0) or width (1) as a float64 tensor.

    Computed from the shape by a tensor operation, so an ONNX export keeps it free instead of fixing it
    to the example's size.
    """
    return image.new_ones(image.shape[axis]).sum().double()


class ImageEncoder(nn.Module):
    """Raw image (H, W) in [0, 1] -> (latent, NT box in its pixels, localiser confidence).

    Every resize is a product with :func:`resample_rows` matrices and every box a tensor, so the
    module has no shape that depends on the image's content: it scripts for TorchScript and exports
    to ONNX with free height and width.

    Args:
        localizer: a trained :class:`~bundle.model.localizer.NTLocalizer`.
        encoder: the trained dual-view encoder (``encoder(canvas, roi_view)``).
        canvas_size: the autoencoder's letterbox canvas ``S``.
        roi_canvas_size: the autoencoder's zoom view ``R``.
        roi_margin: the autoencoder's zoom margin.
    """

    def __init__(
        self, localizer: nn.Module, encoder: nn.Module, canvas_size: int, roi_canvas_size: int, roi_margin: float
    ) -> None:
        super().__init__()
        self.coarse = localizer.coarse
        self.refine = localizer.refine
        self.encoder = encoder
        self.localizer_canvas = int(localizer.settings["canvas_size"])
        self.stride = STRIDE  # canvas pixels per heatmap cell, as the localiser decodes
        self.view_size = int(localizer.settings["view_size"])
        self.margin = float(localizer.settings["margin"])
        self.refine_steps = int(localizer.settings["refine_steps"])
        self.canvas_size = int(canvas_size)
        self.roi_canvas_size = int(roi_canvas_size)
        self.roi_margin = float(roi_margin)

    def letterbox(
        self, image: torch.Tensor, size: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(1, 1, S, S) canvas of an (H, W) image, and the scale and offsets (``LetterboxGeometry``)."""
        height, width = image.shape[-2], image.shape[-1]
        h, w = _length(image, 0), _length(image, 1)
        scale = torch.minimum(size / w, size / h)
        new_w = torch.clamp(torch.round(scale * w), 1.0, float(size))
        new_h = torch.clamp(torch.round(scale * h), 1.0, float(size))
        dx, dy = torch.floor((size - new_w) / 2), torch.floor((size - new_h) / 2)
        zero = torch.zeros((), dtype=torch.float64)
        rows = resample_rows(height, zero, h, new_h, dy, size)
        columns = resample_rows(width, zero, w, new_w, dx, size)
        return (rows @ image @ columns.T)[None, None], scale, dx, dy

    def zoom(
        self, image: torch.Tensor, box: torch.Tensor, size: int, margin: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, 1, R, R) zoom view around a native box and its whole-pixel crop box (``ROIZoomGeometry``)."""
        mx, my = margin * (box[2] - box[0]), margin * (box[3] - box[1])
        crop = torch.stack(
            [torch.floor(box[0] - mx), torch.floor(box[1] - my), torch.ceil(box[2] + mx), torch.ceil(box[3] + my)]
        )
        zero, r = torch.zeros((), dtype=torch.float64), torch.tensor(float(size), dtype=torch.float64)
        rows = resample_rows(image.shape[-2], crop[1], crop[3] - crop[1], r, zero, size)
        columns = resample_rows(image.shape[-1], crop[0], crop[2] - crop[0], r, zero, size)
        return (rows @ image @ columns.T)[None, None], crop

    def clip(self, box: torch.Tensor, width: torch.Tensor, height: torch.Tensor) -> torch.Tensor:
        """As :func:`bundle.model.localizer.clip_box` (2-pixel minimum)."""
        x0, x1 = torch.minimum(box[0], box[2]), torch.maximum(box[0], box[2])
        y0, y1 = torch.minimum(box[1], box[3]), torch.maximum(box[1], box[3])
        x0, x1 = torch.minimum(torch.clamp(x0, min=0.0), width - 2.0), torch.minimum(torch.clamp(x1, min=2.0), width)
        y0, y1 = torch.minimum(torch.clamp(y0, min=0.0), height - 2.0), torch.minimum(torch.clamp(y1, min=2.0), height)
        return torch.stack([x0, y0, torch.maximum(x1, x0 + 2.0), torch.maximum(y1, y0 + 2.0)])

    def locate(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The localiser's box (native pixels, rounded to 0.01 like the bundle) and confidence."""
        height, width = _length(image, 0), _length(image, 1)
        canvas, scale, dx, dy = self.letterbox(image, self.localizer_canvas)
        maps = self.coarse(canvas)[0].reshape(5, -1)
        index = torch.argmax(maps[0])
        stride = self.stride
        cells = self.localizer_canvas // stride
        row, col = (index // cells).double(), (index % cells).double()
        picked = maps[:, index].double()
        cx, cy = (col + picked[1]) * stride, (row + picked[2]) * stride
        half_w = 0.5 * torch.exp(torch.clamp(picked[3], -5.0, 5.0)) * stride
        half_h = 0.5 * torch.exp(torch.clamp(picked[4], -5.0, 5.0)) * stride
        corners = torch.stack([cx - half_w - dx, cy - half_h - dy, cx + half_w - dx, cy + half_h - dy]) / scale
        box = self.clip(corners, width, height)
        for _ in range(self.refine_steps):
            view, crop = self.zoom(image, box, self.view_size, self.margin)
            fractions = self.refine(view)[0].double()
            span = torch.stack([crop[2] - crop[0], crop[3] - crop[1], crop[2] - crop[0], crop[3] - crop[1]])
            box = self.clip(fractions * span + torch.stack([crop[0], crop[1], crop[0], crop[1]]), width, height)
        return torch.round(box * 100.0) / 100.0, torch.sigmoid(picked[0]).float()

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode one grey image.

        Args:
            image: (H, W) float in [0, 1].

        Returns:
            ``latent`` (D,), ``box`` (4,) ``[x0, y0, x1, y1]`` in the image's pixels, ``confidence`` ().
            Compare ``confidence`` with the threshold in the embedded metadata: below it, no NT was
            found and the latent describes an arbitrary region.
        """
        with torch.no_grad():
            x = image.float()
            box, confidence = self.locate(x)
            canvas = self.letterbox(x, self.canvas_size)[0]
            view = self.zoom(x, box, self.roi_canvas_size, self.roi_margin)[0]
            latent = self.encoder(canvas, view)[0]
        return latent, box.float(), confidence


def export_image_encoder(
    output_dir: str | os.PathLike,
    encoder: nn.Module,
    localizer_path: str | os.PathLike,
    architecture: dict,
    formats: tuple[str, ...] = ("ts", "onnx"),
) -> dict[str, dict]:
    """Write ``image_encoder.ts`` (TorchScript) and ``image_encoder.onnx``, each checked against the bundle.

    Args:
        output_dir: folder of the files (``models``).
        encoder: the trained dual-view encoder (eval mode, CPU).
        localizer_path: ``models/localizer.pt``.
        architecture: the autoencoder's settings (``model``, ``canvas_size``, ``roi_canvas_size``, ``roi_margin``).
        formats: ``ts`` and/or ``onnx``.

    Returns:
        per format: ``path`` and ``max_abs_diff``, the largest latent difference to :func:`bundle_latent`
        on two random images of different sizes.

    Raises:
        RuntimeError: when that difference exceeds 1e-4.
        FileNotFoundError: without a trained localiser (with the command that trains one).
        ValueError: for the single-view model (its encoder reads no zoom view; use ``encoder.ts``).
    """
    from bundle.model.localizer import load_localizer
    from bundle.utils.checkpoints import state_dict_sha256

    if architecture.get("model") != "dual_view":
        raise ValueError("image_encoder needs the dual-view model; the single-view encoder.ts reads the canvas only")
    localizer = load_localizer(localizer_path)
    module = ImageEncoder(
        localizer,
        encoder.eval().cpu(),
        int(architecture["canvas_size"]),
        int(architecture["roi_canvas_size"]),
        float(architecture["roi_margin"]),
    ).eval()
    metadata = {
        "inputs": {"image": "(H, W) float32 grey image in [0, 1], any size"},
        "outputs": {
            "latent": "(D,) the frozen encoder's latent",
            "box": "(4,) NT box [x0, y0, x1, y1] in the input's pixels (x = column)",
            "confidence": "() the localiser's confidence that an NT is in view",
        },
        "threshold": localizer.settings["threshold"],
        "localizer": localizer.settings,
        "architecture": architecture,
        "encoder_sha256": state_dict_sha256(encoder),
    }
    generator = torch.Generator().manual_seed(0)
    checks = [torch.rand(1, 300, 400, generator=generator), torch.rand(1, 257, 181, generator=generator)]
    expected = [bundle_latent(encoder, localizer, image, architecture) for image in checks]
    results = {}
    for fmt in formats:
        path = Path(output_dir) / f"image_encoder.{fmt}"
        run = _save_torchscript(module, path, metadata) if fmt == "ts" else _save_onnx(module, path, metadata)
        difference = max(
            float(np.abs(run(image[0]) - e.numpy()).max()) for image, e in zip(checks, expected, strict=True)
        )
        if difference > 1e-4:
            path.unlink()
            raise RuntimeError(f"{path}: the exported chain differs from the bundle's by {difference:.2e} (> 1e-4)")
        results[fmt] = {"path": str(path), "max_abs_diff": difference}
    return results


def _save_torchscript(module: nn.Module, path: Path, metadata: dict):
    """Script and save ``module`` with ``metadata.json`` inside; return a function image -> latent of the file."""
    from bundle.utils.atomic import atomic_path

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates TorchScript
        scripted = torch.jit.script(module)
        with atomic_path(path) as tmp:
            torch.jit.save(scripted, str(tmp), _extra_files={"metadata.json": json.dumps(metadata)})
        loaded = torch.jit.load(str(path))

    def run(image: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return loaded(image)[0].numpy()

    return run


def _save_onnx(module: nn.Module, path: Path, metadata: dict):
    """Export ``module`` to ONNX with free height and width, ``metadata`` as a property; return image -> latent."""
    import logging

    import onnx
    import onnxruntime
    from bundle.utils.atomic import atomic_path

    example = torch.rand(300, 400, generator=torch.Generator().manual_seed(1))
    dims = ({0: torch.export.Dim("height", min=16, max=8192), 1: torch.export.Dim("width", min=16, max=8192)},)
    quiet = [logging.getLogger(name) for name in ("onnx_ir", "onnxscript", "torch.onnx", "torch.export")]
    levels = [log.level for log in quiet]
    try:
        for log in quiet:
            log.setLevel(logging.ERROR)
        with warnings.catch_warnings(), atomic_path(path) as tmp:
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module,
                (example,),
                input_names=["image"],
                output_names=["latent", "box", "confidence"],
                dynamic_shapes=dims,
                dynamo=True,
                verbose=False,
            )
            model = program.model_proto
            entry = model.metadata_props.add()
            entry.key, entry.value = "metadata", json.dumps(metadata)
            onnx.save_model(model, str(tmp))
    finally:
        for log, level in zip(quiet, levels, strict=True):
            log.setLevel(level)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda image: session.run(["latent"], {"image": image.numpy()})[0]


def bundle_latent(encoder: nn.Module, localizer: nn.Module, image: torch.Tensor, architecture: dict) -> torch.Tensor:
    """The latent the bundle's own transforms give a (1, H, W) image without a box (the export's reference)."""
    from bundle.data.roi_zoom import ROIZoom
    from bundle.data.transforms import Letterbox

    box, _ = localizer.locate(image)
    box = [round(v, 2) for v in box]
    view, _ = ROIZoom(int(architecture["roi_canvas_size"]), float(architecture["roi_margin"]))(image, box)
    canvas, _ = Letterbox(int(architecture["canvas_size"]))(image)
    with torch.no_grad():
        return encoder.eval()(canvas[None], view[None])[0]
