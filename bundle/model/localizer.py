"""NT localiser: finds the NT box (and whether an NT is visible at all) in an image that has none.

Two stages, both small enough to train inside the main job on a CPU:

1. **Coarse** (:class:`CentreHeatmapNet`): on the letterbox canvas (``S x S``), a centre heatmap with a
   size and a sub-cell offset head at stride 4 (CenterNet's design: Zhou et al., "Objects as
   Points", 2019). The heatmap's peak is the box centre; its value (after a sigmoid) is the
   confidence that an NT is in view at all.
2. **Refine** (:class:`BoxRefineNet`): the ROI-zoom view around the coarse box (the same crop the
   dual-view autoencoder reads, ``R x R`` at native resolution) regresses the box in view
   coordinates; applied ``refine_steps`` times. At 128 px a canvas pixel of a 1120-px-wide frame is
   about 1 mm, so the canvas alone cannot place the box to the half millimetre; the zoom view can.

Box maths (IoU, GIoU, centres) uses :mod:`monai.data.box_utils` (boxes ``[x0, y0, x1, y1]``, MONAI's
standard 2-D mode). The chain image -> box is :meth:`NTLocalizer.locate`; :class:`LocalizeNTd` is the
dictionary transform the inference configs put before the zoom view, and :func:`load_localizer`
reads the trained weights (``models/localizer.pt``, settings in ``models/localizer.json``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from bundle.data.roi_zoom import ROIZoomGeometry, zoom_image
from bundle.data.transforms import LetterboxGeometry, as_box_list, letterbox_image
from bundle.model.network import conv_stages
from monai.config import KeysCollection
from monai.transforms import MapTransform
from torch import nn

STRIDE = 4  # canvas pixels per heatmap cell
#: the settings that define a localiser network; stored in ``localizer.json`` beside the weights
LOCALIZER_KEYS = ("canvas_size", "view_size", "margin", "widths", "refine_widths", "refine_steps", "threshold")
DEFAULTS = {
    "canvas_size": 128,
    "view_size": 64,
    "margin": 0.5,
    "widths": [16, 32, 64, 64],
    "refine_widths": [16, 32, 64, 64],
    "refine_steps": 2,
    "threshold": 0.3,
}


class StridedUNet(nn.Module):
    """A small U-shaped network: strided conv stages down, then nearest upsampling with skips back to ``out_stride``.

    Args:
        widths: channels of the encoder stages (each halves the resolution).
        out_channels: maps of the output.
        out_stride: input pixels per output cell (a power of two, at least 2, at most ``2 ** len(widths)``).
    """

    def __init__(self, widths: Sequence[int], out_channels: int, out_stride: int) -> None:
        super().__init__()
        w = [int(v) for v in widths]
        self.stages = nn.ModuleList(conv_stages(a, [b], "batch") for a, b in zip([1, *w[:-1]], w, strict=True))
        ups = len(w) - int(math.log2(out_stride))
        self.fuse = nn.ModuleList(
            nn.Sequential(nn.Conv2d(w[-1 - k] + w[-2 - k], w[-2 - k], 3, padding=1), nn.LeakyReLU(0.2))
            for k in range(ups)
        )
        last = w[-1 - ups]
        self.head = nn.Sequential(
            nn.Conv2d(last, last, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(last, out_channels, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (B, 1, H, W) images to (B, out_channels, H / out_stride, W / out_stride) maps."""
        return self.maps(x)

    def maps(self, x: torch.Tensor) -> torch.Tensor:
        """The output maps (a method of its own, so subclasses can post-process them under TorchScript)."""
        skips: list[torch.Tensor] = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        for k, fuse in enumerate(self.fuse):
            skip = skips[-2 - k]
            x = fuse(torch.cat([F.interpolate(x, size=skip.shape[-2:], mode="nearest"), skip], 1))
        return self.head(x)


class CentreHeatmapNet(StridedUNet):
    """Centre heatmap, offset and size at stride 4 of a (B, 1, S, S) canvas.

    Output maps: the centre logit, the sub-cell offset (x, y) of the centre, and ``log`` of the
    box size (w, h) in cells.

    Args:
        widths: channels of the encoder stages (at least three).
    """

    def __init__(self, widths: Sequence[int] = (16, 32, 64, 64)) -> None:
        super().__init__(widths, 5, STRIDE)
        nn.init.constant_(self.head[-1].bias[:1], -2.2)  # start with a low centre probability (focal-loss practice)


class BoxRefineNet(StridedUNet):
    """Box edges on a (B, 1, R, R) zoom view by integral regression: ``[u0, v0, u1, v1] / R`` (fractions of the view).

    Four maps at stride 2; each edge is the expected position (soft-argmax) of its map's profile
    along its axis (``x0``/``x1`` over columns, ``y0``/``y1`` over rows), so the estimate is
    sub-pixel and moves with the image (Sun et al., "Integral Human Pose Regression", 2018).

    Args:
        widths: channels of the encoder stages.
        view_size: side ``R`` of the view (kept for the settings; the network is fully convolutional).
    """

    def __init__(self, widths: Sequence[int] = (16, 32, 64, 64), view_size: int = 64) -> None:
        super().__init__(widths, 4, 2)
        self.view_size = int(view_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map views (B, 1, R, R) to boxes (B, 4) in fractions of the view."""
        maps = self.maps(x)
        cells = maps.shape[-1]
        position = (torch.arange(cells, dtype=maps.dtype, device=maps.device) + 0.5) / cells
        columns = torch.softmax(maps[:, 0::2].mean(dim=2), dim=-1) @ position  # (B, 2): x0, x1
        rows = torch.softmax(maps[:, 1::2].mean(dim=3), dim=-1) @ position  # (B, 2): y0, y1
        return torch.stack([columns[:, 0], rows[:, 0], columns[:, 1], rows[:, 1]], dim=1)


def decode_heatmap(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes (B, 4) in canvas pixels and confidences (B,) from the peak of each heatmap.

    Args:
        maps: (B, 5, h, w) output of :class:`CentreHeatmapNet`.

    Returns:
        ``[x0, y0, x1, y1]`` boxes around the peak cell's centre (cell + offset) with the predicted
        size, and the sigmoid of the peak logit.
    """
    batch, _, height, width = maps.shape
    logits = maps[:, 0].reshape(batch, -1)
    peak, index = logits.max(dim=1)
    rows, cols = index // width, index % width
    picked = maps.reshape(batch, 5, -1).gather(2, index.view(batch, 1, 1).expand(batch, 5, 1))[..., 0]
    cx = (cols.float() + picked[:, 1]) * STRIDE
    cy = (rows.float() + picked[:, 2]) * STRIDE
    half_w = 0.5 * torch.exp(picked[:, 3].clamp(-5.0, 5.0)) * STRIDE
    half_h = 0.5 * torch.exp(picked[:, 4].clamp(-5.0, 5.0)) * STRIDE
    return torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=1), torch.sigmoid(peak)


class NTLocalizer(nn.Module):
    """The two-stage NT localiser (module docstring): coarse heatmap on the canvas, refinement on the zoom view.

    Args:
        canvas_size: side ``S`` of the letterbox canvas the coarse stage reads.
        view_size: side ``R`` of the zoom view the refinement reads.
        margin: zoom-view margin around the box (fraction of its size, the autoencoder's ``roi_margin``).
        widths: channels of the coarse network's stages.
        refine_widths: channels of the refinement network's stages.
        refine_steps: how often the refinement is applied.
        threshold: confidence from which an NT counts as visible.
    """

    def __init__(
        self,
        canvas_size: int = 128,
        view_size: int = 64,
        margin: float = 0.5,
        widths: Sequence[int] = (16, 32, 64, 64),
        refine_widths: Sequence[int] = (16, 32, 64, 64),
        refine_steps: int = 2,
        threshold: float = 0.3,
    ) -> None:
        super().__init__()
        self.settings = {
            "canvas_size": int(canvas_size),
            "view_size": int(view_size),
            "margin": float(margin),
            "widths": [int(v) for v in widths],
            "refine_widths": [int(v) for v in refine_widths],
            "refine_steps": int(refine_steps),
            "threshold": float(threshold),
        }
        self.coarse = CentreHeatmapNet(widths)
        self.refine = BoxRefineNet(refine_widths, view_size)

    def forward(self, canvas: torch.Tensor) -> torch.Tensor:
        """The coarse stage's maps (B, 5, S/4, S/4) of letterboxed canvases (B, 1, S, S)."""
        return self.coarse(canvas)

    @torch.no_grad()
    def locate(self, image: torch.Tensor) -> tuple[list[float], float]:
        """The NT box of one native (1, H, W) image in [0, 1], in its pixels, and the confidence.

        Args:
            image: the native image (channel first; extra channels are averaged).

        Returns:
            ``([x0, y0, x1, y1], confidence)``; the box is clipped to the image and never empty.
        """
        self.eval()
        x = torch.as_tensor(image).float()
        x = x.mean(0, keepdim=True) if x.shape[0] > 1 else x
        device = next(self.parameters()).device
        height, width = x.shape[-2:]
        geometry = LetterboxGeometry.compute(int(width), int(height), self.settings["canvas_size"])
        canvas = letterbox_image(x, geometry)[None].to(device)
        boxes, confidence = decode_heatmap(self.coarse(canvas).float())
        box = clip_box(geometry.unmap_box(boxes[0].cpu().tolist()), int(width), int(height))
        for _ in range(self.settings["refine_steps"]):
            box = self.refine_box(x, box)
        return box, float(confidence[0])

    def refine_box(self, image: torch.Tensor, box: Sequence[float]) -> list[float]:
        """One refinement step: the box predicted on the zoom view around ``box`` (native pixels)."""
        height, width = image.shape[-2:]
        zoom = ROIZoomGeometry.compute(
            box, int(width), int(height), self.settings["view_size"], self.settings["margin"]
        )
        view = zoom_image(image, zoom)[None].to(next(self.parameters()).device)
        fractions = self.refine(view)[0].float().cpu() * zoom.canvas_size
        return clip_box(zoom.unmap_box(fractions.tolist()), int(width), int(height))


def clip_box(box: Sequence[float], width: int, height: int, min_size: float = 2.0) -> list[float]:
    """Order a box's corners, clip it to a ``width`` x ``height`` image, keep it ``min_size`` px wide and high."""
    x0, x1 = sorted(float(v) for v in (box[0], box[2]))
    y0, y1 = sorted(float(v) for v in (box[1], box[3]))
    x0, x1 = min(max(x0, 0.0), width - min_size), min(max(x1, min_size), float(width))
    y0, y1 = min(max(y0, 0.0), height - min_size), min(max(y1, min_size), float(height))
    return [x0, y0, max(x1, x0 + min_size), max(y1, y0 + min_size)]


def localizer_info_path(path: str | os.PathLike) -> Path:
    """``localizer.json`` beside the weights file ``path`` (the network's settings and its evaluation)."""
    return Path(path).with_suffix(".json")


def load_localizer(path: str | os.PathLike, device: str | torch.device = "cpu") -> NTLocalizer:
    """The trained localiser: weights from ``path`` (read with ``weights_only=True``), settings from ``localizer.json``.

    Args:
        path: ``models/localizer.pt``.
        device: where to put it.

    Raises:
        FileNotFoundError: when the weights are missing (with the command that makes them).
        CheckpointError: when the weights do not fit the stored settings.
    """
    from bundle.utils.checkpoints import load_model_weights

    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path}: no NT localiser; train one with "
            "python -m monai.bundle run train_localizer --config_file configs/train.json"
        )
    info = localizer_info_path(path)
    settings = dict(DEFAULTS)
    if info.is_file():
        try:
            settings.update(json.loads(info.read_text()).get("settings") or {})
        except ValueError as error:
            raise ValueError(f"{info}: not valid JSON ({error}); delete it and train the localiser again") from None
    network = NTLocalizer(**{key: settings[key] for key in LOCALIZER_KEYS})
    return load_model_weights(network, path, "NT localiser").to(device).eval()


class LocalizeNTd(MapTransform):
    """Give an item without an NT box the localiser's box (dictionary transform, before the zoom view).

    A given box always wins (``roi_source = "given"``); otherwise the localiser's box is stored under
    ``roi_key`` in native pixels with ``roi_source = "predicted"`` and its confidence. When the
    confidence is below the localiser's threshold the item gets ``roi_source = "none"`` and a
    ``no_nt`` message (no box), so a batch run can report "no NT found" and go on. Items that
    already carry an error (an unreadable file) pass through. Every other item gets ``nt_box``:
    the box it will be processed with, in native pixels (later transforms map ``roi`` to the canvas).

    Args:
        keys: the native image key (one key).
        localizer_path: ``models/localizer.pt`` (loaded at construction); a missing file leaves box-less
            items without a box (the zoom view then reports how to get one).
        roi_key: key of the ``[x0, y0, x1, y1]`` box in native pixels.
        error_key: key of an item's error message.
        device: where to run the localiser.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        localizer_path: str | os.PathLike | None = None,
        roi_key: str = "roi",
        error_key: str = "error",
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.localizer_path = localizer_path
        self.roi_key = roi_key
        self.error_key = error_key
        self.device = device
        # loaded now, so a broken file is reported when the run starts, not from inside a data loader
        self._network: NTLocalizer | None = load_localizer(localizer_path, device) if self.available else None

    @property
    def available(self) -> bool:
        """Whether a trained localiser exists at ``localizer_path``."""
        return self.localizer_path is not None and os.path.exists(self.localizer_path)

    @property
    def network(self) -> NTLocalizer:
        """The localiser, loaded on first use."""
        if self._network is None:
            self._network = load_localizer(self.localizer_path, self.device)
        return self._network

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        """Add a box where there is none; see the class docstring."""
        d = dict(data)
        given = d.get(self.roi_key) is not None
        d.setdefault("roi_source", "given" if given else "none")
        d.setdefault("roi_confidence", None)
        d.setdefault("no_nt", None)
        if d.get(self.error_key):
            return d
        if self.available and not given:
            for key in self.key_iterator(d):
                self._predict(d, torch.as_tensor(d[key]))
                break
        d["nt_box"] = as_box_list(d[self.roi_key]) if d.get(self.roi_key) is not None else None
        return d

    def _predict(self, d: dict, image: torch.Tensor) -> None:
        """Store the localiser's box (or why there is none) in ``d``."""
        box, confidence = self.network.locate(image)
        threshold = self.network.settings["threshold"]
        d["roi_confidence"] = round(confidence, 4)
        if confidence < threshold:
            d.update({self.roi_key: None, "roi_source": "none"})
            d["no_nt"] = (
                f"no NT found (localiser confidence {confidence:.2f} < {threshold:.2f}); "
                "if the image shows one, give its box as 'roi' [x0, y0, x1, y1] in a datalist"
            )
        else:
            d.update({self.roi_key: [round(v, 2) for v in box], "roi_source": "predicted"})
