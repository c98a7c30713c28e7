"""ROI-zoom view: the NT box plus a margin, cropped from the native image onto a fixed small canvas.

The letterbox view shrinks a 960x720 frame to 128 px, so the 1-3 mm NT band spans 1-3 canvas pixels
and no reconstruction can keep it. The zoom view crops the NT box with ``margin`` (a fraction of
the box size added on every side) from the native image and resamples it to ``R x R``
(``roi_canvas_size``, default 64): a 1.5 mm NT spans about 8 rows. The crop is snapped outwards to
whole native pixels, so the mapping is exact and invertible:

``u = (x - cx0) * R / (cx1 - cx0)``, ``v = (y - cy0) * R / (cy1 - cy0)`` (x = column, y = row,
continuous pixel coordinates, pixel ``j`` spans ``[j, j + 1)``). Parts of the crop outside the image
are zero, like the letterbox padding.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from bundle.data.transforms import as_box_list, roi_mask
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform, MapTransform, Transform


@dataclass(frozen=True)
class ROIZoomGeometry:
    """Where the zoom view lies in the native image.

    Args:
        crop_box: ``[cx0, cy0, cx1, cy1]`` in whole native pixels (may extend past the image).
        original_size: native (width, height).
        canvas_size: side ``R`` of the zoom view.
    """

    crop_box: tuple[int, int, int, int]
    original_size: tuple[int, int]
    canvas_size: int

    @classmethod
    def compute(cls, box: Sequence[float], width: int, height: int, canvas_size: int, margin: float = 0.5):
        """Geometry of the zoom view around ``box`` (native ``[x0, y0, x1, y1]``).

        Raises:
            ValueError: for an empty box, a negative margin or a non-positive canvas.
        """
        x0, y0, x1, y1 = (float(v) for v in box)
        if not (x1 > x0 and y1 > y0) or not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
            raise ValueError(
                f"roi {list(box)} is empty or not finite; boxes are [x0, y0, x1, y1] with x1 > x0, y1 > y0"
            )
        if margin < 0 or canvas_size < 1:
            raise ValueError(f"roi_margin must be >= 0 and roi_canvas_size >= 1, got {margin}, {canvas_size}")
        mx, my = margin * (x1 - x0), margin * (y1 - y0)
        crop = (math.floor(x0 - mx), math.floor(y0 - my), math.ceil(x1 + mx), math.ceil(y1 + my))
        return cls(tuple(int(v) for v in crop), (int(width), int(height)), int(canvas_size))

    @property
    def scale(self) -> tuple[float, float]:
        """View pixels per native pixel along (x, y)."""
        cx0, cy0, cx1, cy1 = self.crop_box
        return self.canvas_size / (cx1 - cx0), self.canvas_size / (cy1 - cy0)

    def map_points(self, points: np.ndarray | Sequence) -> np.ndarray:
        """Map (N, 2) native ``(x, y)`` points to view coordinates."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        sx, sy = self.scale
        return np.stack([(p[:, 0] - self.crop_box[0]) * sx, (p[:, 1] - self.crop_box[1]) * sy], axis=1)

    def unmap_points(self, points: np.ndarray | Sequence) -> np.ndarray:
        """Map (N, 2) view ``(u, v)`` points back to native pixels."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        sx, sy = self.scale
        return np.stack([p[:, 0] / sx + self.crop_box[0], p[:, 1] / sy + self.crop_box[1]], axis=1)

    def map_box(self, box: Sequence[float]) -> list[float]:
        """Map a native ``[x0, y0, x1, y1]`` box to view pixels."""
        return [float(v) for v in self.map_points(np.asarray(box, dtype=np.float64).reshape(2, 2)).ravel()]

    def unmap_box(self, box: Sequence[float]) -> list[float]:
        """Map a view box back to native pixels."""
        return [float(v) for v in self.unmap_points(np.asarray(box, dtype=np.float64).reshape(2, 2)).ravel()]

    def mm_per_view_pixel(self, pixel_spacing_mm: Sequence[float]) -> tuple[float, float]:
        """(row, column) spacing of the zoom view in mm, from the native ``pixel_spacing_mm`` (row, column)."""
        sx, sy = self.scale
        return float(pixel_spacing_mm[0]) / sy, float(pixel_spacing_mm[1]) / sx

    def as_dict(self) -> dict:
        """Plain-Python form, safe to collate and to store in JSON."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: Mapping) -> ROIZoomGeometry:
        """Inverse of :meth:`as_dict` (accepts tensors of a single collated item)."""

        def plain(v):
            return v.tolist() if hasattr(v, "tolist") else v

        return cls(
            tuple(int(v) for v in plain(values["crop_box"])),
            tuple(int(v) for v in plain(values["original_size"])),
            int(plain(values["canvas_size"])),
        )


def zoom_image(image: torch.Tensor, geometry: ROIZoomGeometry) -> torch.Tensor:
    """Crop the zoom region of a (C, H, W) native image and resample it to (C, R, R).

    Downsampling is antialiased bilinear (like the letterbox); pixels of the crop outside the
    image are zero.
    """
    x = torch.as_tensor(image).float()
    width, height = geometry.original_size
    cx0, cy0, cx1, cy1 = geometry.crop_box
    crop = x.new_zeros((x.shape[0], cy1 - cy0, cx1 - cx0))
    sx0, sy0, sx1, sy1 = max(cx0, 0), max(cy0, 0), min(cx1, width), min(cy1, height)
    if sx1 > sx0 and sy1 > sy0:
        crop[:, sy0 - cy0 : sy1 - cy0, sx0 - cx0 : sx1 - cx0] = x[:, sy0:sy1, sx0:sx1]
    size = (geometry.canvas_size, geometry.canvas_size)
    return F.interpolate(crop[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]


def view_to_crop(view: torch.Tensor, geometry: ROIZoomGeometry) -> torch.Tensor:
    """Resample a (C, R, R) zoom view to the crop's native size (C, cy1 - cy0, cx1 - cx0) (bilinear)."""
    cx0, cy0, cx1, cy1 = geometry.crop_box
    return F.interpolate(torch.as_tensor(view).float()[None], size=(cy1 - cy0, cx1 - cx0), mode="bilinear")[0]


def unzoom_image(
    view: torch.Tensor, geometry: ROIZoomGeometry, background: torch.Tensor | None = None, feather: float = 0.0
) -> torch.Tensor:
    """Map a (C, R, R) zoom view back into native geometry.

    Args:
        view: the zoom view (e.g. a reconstruction of it).
        geometry: from :meth:`ROIZoomGeometry.compute`.
        background: (C, H, W) native image the view is pasted into (zeros when None).
        feather: width of a linear fade from ``background`` into the view at the crop's edges, as a
            fraction of the crop's side (0: a hard edge). Below ``margin / (1 + 2 margin)`` (0.25 at the
            default margin of 0.5) the fade stays in the margin and the NT box holds the view unchanged.

    Returns:
        (C, H, W): ``background`` with the crop region replaced by (faded into) the resampled view.
    """
    v = torch.as_tensor(view).float()
    width, height = geometry.original_size
    cx0, cy0, cx1, cy1 = geometry.crop_box
    out = (
        v.new_zeros((v.shape[0], height, width)) if background is None else torch.as_tensor(background).float().clone()
    )
    crop = F.interpolate(v[None], size=(cy1 - cy0, cx1 - cx0), mode="bilinear", align_corners=False)[0]
    sx0, sy0, sx1, sy1 = max(cx0, 0), max(cy0, 0), min(cx1, width), min(cy1, height)
    if sx1 > sx0 and sy1 > sy0:
        inside = crop[:, sy0 - cy0 : sy1 - cy0, sx0 - cx0 : sx1 - cx0]
        if feather > 0 and background is not None:
            inside = torch.lerp(
                out[:, sy0:sy1, sx0:sx1],
                inside,
                _fade(cx0, cx1, sx0, sx1, feather)[None, :] * _fade(cy0, cy1, sy0, sy1, feather)[:, None],
            )
        out[:, sy0:sy1, sx0:sx1] = inside
    return out


def _fade(start: int, stop: int, first: int, last: int, feather: float) -> torch.Tensor:
    """Weights of pixels ``first..last-1`` rising linearly from 0 at the crop's edges ``start``/``stop`` to 1."""
    centres = torch.arange(first, last, dtype=torch.float32) + 0.5
    distance = torch.minimum(centres - start, stop - centres)
    return (distance / max(feather * (stop - start), 1.0)).clamp(0.0, 1.0)


class ROIZoom(Transform):
    """Crop the NT box with a margin from a native (C, H, W) image onto an ``R x R`` view (array version).

    Args:
        canvas_size: side ``R`` of the view (``roi_canvas_size``).
        margin: fraction of the box width/height added on each side.

    Example::

        view, geometry = ROIZoom(64)(image, [412.0, 398.5, 583.0, 452.0])  # (1, 64, 64)
    """

    def __init__(self, canvas_size: int = 64, margin: float = 0.5) -> None:
        self.canvas_size = int(canvas_size)
        self.margin = float(margin)

    def __call__(self, image: torch.Tensor, box: Sequence[float]) -> tuple[torch.Tensor, ROIZoomGeometry]:
        """Return the view and its geometry."""
        height, width = image.shape[-2:]
        geometry = ROIZoomGeometry.compute(box, int(width), int(height), self.canvas_size, self.margin)
        return zoom_image(image, geometry), geometry


class ROIZoomd(MapTransform, InvertibleTransform):
    """Add the ROI-zoom view of a native image and its NT-box mask (dictionary version).

    Reads the native image under the first key and the native box under ``roi_key`` (so it runs
    before :class:`~bundle.data.transforms.LetterboxROId`), and adds ``view_key`` (a ``MetaTensor``
    (C, R, R)), ``mask_key`` (the NT box on the view, as :func:`~bundle.data.transforms.roi_mask`) and
    ``geometry_key`` (plain numbers). ``inverse`` maps ``view_key`` back to the native size.

    Args:
        keys: the native image key (one key).
        canvas_size: side ``R`` of the view.
        margin: fraction of the box size added on each side.
        roi_key: key of the native ``[x0, y0, x1, y1]`` box.
        view_key: output key of the view.
        mask_key: output key of the NT-box mask on the view.
        geometry_key: output key of the geometry dict.
        allow_missing_keys: don't raise when a key is absent.

    Raises:
        ValueError: when an item has no box (the dual-view model needs one; name the entry).

    Example::

        t = ROIZoomd(keys="image", canvas_size=64)
        out = t({"image": image, "roi": [412.0, 398.5, 583.0, 452.0]})
        out["roi_view"].shape  # (1, 64, 64)
        native = t.inverse(out)["roi_view"]  # (1, H, W), zero outside the crop
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        canvas_size: int = 64,
        margin: float = 0.5,
        roi_key: str = "roi",
        view_key: str = "roi_view",
        mask_key: str = "roi_view_mask",
        geometry_key: str = "roi_zoom",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.zoom = ROIZoom(canvas_size, margin)
        self.roi_key = roi_key
        self.view_key = view_key
        self.mask_key = mask_key
        self.geometry_key = geometry_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        """Add the view, its mask and geometry; see the class docstring."""
        d = dict(data)
        for key in self.key_iterator(d):
            box = d.get(self.roi_key)
            if box is None or len(as_box_list(box)) != 4:
                name = getattr(d[key], "meta", {}).get("filename_or_obj") or d.get("case_id") or key
                raise ValueError(
                    f"{name}: no NT box ('{self.roi_key}'); the dual-view model needs one per image. "
                    "Add the box to the datalist entry, or train the NT localiser so that images without one get "
                    "a predicted box (python -m monai.bundle run train_localizer --config_file configs/train.json)"
                )
            image = d[key] if isinstance(d[key], MetaTensor) else MetaTensor(torch.as_tensor(d[key]))
            view, geometry = self.zoom(image.as_tensor(), as_box_list(box))
            out = MetaTensor(view, meta=dict(image.meta))
            out.meta["spatial_shape"] = [geometry.canvas_size, geometry.canvas_size]
            self.push_transform(
                out, orig_size=(geometry.original_size[1], geometry.original_size[0]), extra_info=geometry.as_dict()
            )
            d[self.view_key] = out
            r = geometry.canvas_size
            d[self.mask_key] = roi_mask(geometry.map_box(as_box_list(box)), r, r)
            d[self.geometry_key] = geometry.as_dict()
            break  # one image defines the view
        return d

    def inverse(self, data: Mapping[Hashable, object]) -> dict:
        """Map the view back to the native size (zero outside the crop)."""
        d = dict(data)
        view = d[self.view_key]
        geometry = ROIZoomGeometry.from_dict(self.pop_transform(view)["extra_info"])
        restored = unzoom_image(view.as_tensor(), geometry)
        d[self.view_key] = MetaTensor(restored, meta=view.meta, applied_operations=view.applied_operations)
        d[self.view_key].meta["spatial_shape"] = [geometry.original_size[1], geometry.original_size[0]]
        return d
