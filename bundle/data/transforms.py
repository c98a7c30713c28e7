"""MONAI transforms of the bundle: ultrasound loading, letterbox with ROI offsets, ROI mask (SPEC 1.2, 2).

Letterbox: uniform scale ``s = min(S / W, S / H)``, resize to ``(round(s W), round(s H))`` with antialiased
bilinear resampling, pad centred to ``S x S`` with zeros at offsets ``dx = floor((S - round(s W)) / 2)``
and ``dy = floor((S - round(s H)) / 2)``; a box maps to ``(s x0 + dx, s y0 + dy, s x1 + dx, s y1 + dy)``.
The dictionary transform records ``s, dx, dy`` and the original size so that reconstructions and
boxes map back exactly (``inverse``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from bundle.data.readers import read_image
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform, MapTransform, Randomizable, Transform
from monai.utils import ensure_tuple_rep


@dataclass(frozen=True)
class LetterboxGeometry:
    """Where an original image lies on the square canvas.

    Args:
        scale: uniform scale ``s``.
        dx: left padding in canvas pixels.
        dy: top padding in canvas pixels.
        original_size: original (width, height).
        resized_size: resized content (width, height) = (round(s W), round(s H)).
        canvas_size: side ``S`` of the canvas.
    """

    scale: float
    dx: int
    dy: int
    original_size: tuple[int, int]
    resized_size: tuple[int, int]
    canvas_size: int

    @classmethod
    def compute(cls, width: int, height: int, canvas_size: int) -> LetterboxGeometry:
        """Geometry of a ``width`` x ``height`` image letterboxed onto a ``canvas_size`` square.

        Raises:
            ValueError: for non-positive sizes.
        """
        if width < 1 or height < 1 or canvas_size < 1:
            raise ValueError(f"cannot letterbox a {width}x{height} image onto a {canvas_size} canvas")
        scale = min(canvas_size / width, canvas_size / height)
        new_w = min(canvas_size, max(1, round(scale * width)))
        new_h = min(canvas_size, max(1, round(scale * height)))
        return cls(
            scale, (canvas_size - new_w) // 2, (canvas_size - new_h) // 2, (width, height), (new_w, new_h), canvas_size
        )

    def map_box(self, box: Sequence[float]) -> list[float]:
        """Map ``[x0, y0, x1, y1]`` from original pixels to canvas pixels."""
        x0, y0, x1, y1 = (float(v) for v in box)
        s = self.scale
        return [s * x0 + self.dx, s * y0 + self.dy, s * x1 + self.dx, s * y1 + self.dy]

    def unmap_box(self, box: Sequence[float]) -> list[float]:
        """Map ``[x0, y0, x1, y1]`` from canvas pixels back to original pixels."""
        x0, y0, x1, y1 = (float(v) for v in box)
        s = self.scale
        return [(x0 - self.dx) / s, (y0 - self.dy) / s, (x1 - self.dx) / s, (y1 - self.dy) / s]

    def content_box(self) -> list[int]:
        """Canvas pixels ``[x0, y0, x1, y1]`` holding image content (the rest is padding)."""
        return [self.dx, self.dy, self.dx + self.resized_size[0], self.dy + self.resized_size[1]]

    def as_dict(self) -> dict:
        """Plain-Python form, safe to collate and to store in JSON."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: Mapping) -> LetterboxGeometry:
        """Inverse of :meth:`as_dict` (accepts tensors from a collated batch item)."""

        def plain(v):
            return v.tolist() if hasattr(v, "tolist") else v

        return cls(
            float(plain(values["scale"])),
            int(plain(values["dx"])),
            int(plain(values["dy"])),
            tuple(int(v) for v in plain(values["original_size"])),
            tuple(int(v) for v in plain(values["resized_size"])),
            int(plain(values["canvas_size"])),
        )


def letterbox_image(image: torch.Tensor, geometry: LetterboxGeometry, mode: str = "bilinear") -> torch.Tensor:
    """Resize and pad a channel-first (C, H, W) image onto the canvas.

    Args:
        image: (C, H, W) image.
        geometry: from :meth:`LetterboxGeometry.compute`.
        mode: ``bilinear`` (antialiased) for images, ``nearest`` for label maps.

    Returns:
        (C, S, S) tensor, zero outside the content box.
    """
    new_w, new_h = geometry.resized_size
    x = torch.as_tensor(image).float()[None]
    if mode == "nearest":
        resized = F.interpolate(x, size=(new_h, new_w), mode="nearest-exact")
    else:
        resized = F.interpolate(x, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
    size = geometry.canvas_size
    canvas = resized.new_zeros((x.shape[1], size, size))
    canvas[:, geometry.dy : geometry.dy + new_h, geometry.dx : geometry.dx + new_w] = resized[0]
    return canvas


def unletterbox_image(canvas: torch.Tensor, geometry: LetterboxGeometry, mode: str = "bilinear") -> torch.Tensor:
    """Crop the content box from a (C, S, S) canvas and resize it back to the original (C, H, W)."""
    new_w, new_h = geometry.resized_size
    content = torch.as_tensor(canvas).float()[:, geometry.dy : geometry.dy + new_h, geometry.dx : geometry.dx + new_w]
    width, height = geometry.original_size
    if mode == "nearest":
        return F.interpolate(content[None], size=(height, width), mode="nearest-exact")[0]
    return F.interpolate(content[None], size=(height, width), mode="bilinear", antialias=True, align_corners=False)[0]


def roi_mask(box: Sequence[float], height: int, width: int) -> torch.Tensor:
    """Mask of the pixels whose centres lie inside a box.

    Pixel ``(i, j)`` is inside when ``x0 <= j + 0.5 < x1`` and ``y0 <= i + 0.5 < y1``. A box too
    small to contain a pixel centre marks the pixel holding its centre, so the mask is never empty.

    Args:
        box: ``[x0, y0, x1, y1]`` in pixel units of the target grid.
        height: mask height.
        width: mask width.

    Returns:
        float32 (1, height, width) tensor of 0/1.
    """
    x0, y0, x1, y1 = (float(v) for v in box)

    def span(low: float, high: float, size: int) -> tuple[int, int]:
        first = max(0, math.ceil(low - 0.5))
        last = min(size, math.ceil(high - 0.5))
        if last <= first:
            centre = min(size - 1, max(0, int(math.floor(0.5 * (low + high)))))
            return centre, centre + 1
        return first, last

    c0, c1 = span(x0, x1, width)
    r0, r1 = span(y0, y1, height)
    mask = torch.zeros((1, height, width), dtype=torch.float32)
    mask[:, r0:r1, c0:c1] = 1.0
    return mask


class Letterbox(Transform):
    """Letterbox a channel-first image onto a square canvas (array version).

    Args:
        canvas_size: side ``S`` of the output canvas.
        mode: ``bilinear`` (antialiased) or ``nearest``.

    Example::

        canvas, geometry = Letterbox(128)(image)  # image: (1, 720, 960) -> canvas (1, 128, 128)
    """

    def __init__(self, canvas_size: int, mode: str = "bilinear") -> None:
        self.canvas_size = int(canvas_size)
        self.mode = mode

    def __call__(self, image: torch.Tensor) -> tuple[torch.Tensor, LetterboxGeometry]:
        """Return the canvas and the geometry needed to map boxes and to invert."""
        height, width = image.shape[-2:]
        geometry = LetterboxGeometry.compute(int(width), int(height), self.canvas_size)
        return letterbox_image(image, geometry, self.mode), geometry


class LetterboxROId(MapTransform, InvertibleTransform):
    """Letterbox images and carry the NT box through resize and padding (dictionary version).

    The geometry is computed from the first key's spatial shape and applied to every key; the box
    under ``roi_key`` is mapped to canvas pixels, and the geometry is stored under
    ``geometry_key`` as plain numbers. ``inverse`` restores the original size of every key and
    the original box.

    Args:
        keys: image-like keys to letterbox (first one defines the geometry).
        canvas_size: side ``S`` of the canvas.
        roi_key: key of the ``[x0, y0, x1, y1]`` box in original pixels (None: no box).
        geometry_key: key that receives the geometry dict.
        mode: resampling mode per key, ``bilinear`` or ``nearest``.
        allow_missing_keys: don't raise when a key is absent.

    Example::

        t = LetterboxROId(keys="image", canvas_size=128)
        out = t({"image": image, "roi": [412.0, 398.5, 583.0, 452.0]})
        out["roi"]  # box on the 128 x 128 canvas
        back = t.inverse(out)  # original image size and box
    """

    def __init__(
        self,
        keys: KeysCollection,
        canvas_size: int,
        roi_key: str | None = "roi",
        geometry_key: str = "letterbox",
        mode: Sequence[str] | str = "bilinear",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.canvas_size = int(canvas_size)
        self.roi_key = roi_key
        self.geometry_key = geometry_key
        self.mode = ensure_tuple_rep(mode, len(self.keys))

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        """Letterbox every key; see the class docstring."""
        d = dict(data)
        geometry = None
        for key, mode in self.key_iterator(d, self.mode):
            image = d[key] if isinstance(d[key], MetaTensor) else MetaTensor(torch.as_tensor(d[key]))
            if geometry is None:
                height, width = image.shape[-2:]
                geometry = LetterboxGeometry.compute(int(width), int(height), self.canvas_size)
            out = MetaTensor(
                letterbox_image(image.as_tensor(), geometry, mode),
                meta=image.meta,
                applied_operations=image.applied_operations,
            )
            out.meta["spatial_shape"] = [self.canvas_size, self.canvas_size]
            self.push_transform(
                out,
                orig_size=(geometry.original_size[1], geometry.original_size[0]),
                extra_info={"mode": mode, **geometry.as_dict()},
            )
            d[key] = out
        if geometry is None:
            return d
        if self.roi_key is not None and d.get(self.roi_key) is not None:
            d[self.roi_key] = torch.as_tensor(geometry.map_box(as_box_list(d[self.roi_key])), dtype=torch.float64)
        d[self.geometry_key] = geometry.as_dict()
        return d

    def inverse(self, data: Mapping[Hashable, object]) -> dict:
        """Map every key back to its original size and the box back to original pixels."""
        d = dict(data)
        geometry = None
        for key in self.key_iterator(d):
            transform = self.pop_transform(d[key])
            info = transform["extra_info"]
            geometry = LetterboxGeometry.from_dict(info)
            image = d[key]
            restored = unletterbox_image(image.as_tensor(), geometry, info["mode"])
            d[key] = MetaTensor(restored, meta=image.meta, applied_operations=image.applied_operations)
            d[key].meta["spatial_shape"] = [geometry.original_size[1], geometry.original_size[0]]
        if geometry is not None and self.roi_key is not None and d.get(self.roi_key) is not None:
            d[self.roi_key] = torch.as_tensor(geometry.unmap_box(as_box_list(d[self.roi_key])), dtype=torch.float64)
        return d


def as_box_list(box: object) -> list[float]:
    """A box given as list, tuple, array or tensor, as four floats."""
    values = box.tolist() if hasattr(box, "tolist") else list(box)
    return [float(v) for v in values]


class ROIMaskd(MapTransform):
    """Add a binary ROI mask of the box under ``roi_key``, on the grid of ``reference_key``.

    Args:
        keys: box keys (normally ``"roi"``), in pixel units of the reference image.
        reference_key: image whose (H, W) the mask takes.
        mask_key: output key for the first box key's mask (``"{key}_mask"`` for further keys).
        allow_missing_keys: don't raise when a key is absent.

    Example::

        ROIMaskd(keys="roi", reference_key="image")(item)["roi_mask"]  # (1, S, S) of 0/1
    """

    def __init__(
        self,
        keys: KeysCollection = "roi",
        reference_key: str = "image",
        mask_key: str = "roi_mask",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.reference_key = reference_key
        self.mask_key = mask_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        """Add the mask(s); see the class docstring."""
        d = dict(data)
        height, width = d[self.reference_key].shape[-2:]
        for i, key in enumerate(self.key_iterator(d)):
            out_key = self.mask_key if i == 0 else f"{key}_mask"
            d[out_key] = roi_mask(as_box_list(d[key]), int(height), int(width))
        return d


class LoadUltrasoundImage(Transform):
    """Load an ultrasound image file as a channel-first ``MetaTensor`` of shape (1, H, W).

    The metadata holds ``filename_or_obj``, ``pixel_spacing_mm`` (row, column; NaN when the file
    has none) and ``spatial_shape`` (H, W).

    Args:
        frame: frame index for multi-frame DICOM files (None rejects them with a clear error).

    Example::

        image = LoadUltrasoundImage()("images/site0/s0_000000.png")
        image.shape  # torch.Size([1, H, W])
    """

    def __init__(self, frame: int | None = None) -> None:
        self.frame = frame

    def __call__(self, path: str | os.PathLike) -> MetaTensor:
        """Read ``path``; see the class docstring."""
        loaded = read_image(path, self.frame)
        spacing = loaded.pixel_spacing_mm or (math.nan, math.nan)
        meta = {
            "filename_or_obj": str(path),
            "pixel_spacing_mm": np.asarray(spacing, dtype=np.float64),
            "spatial_shape": np.asarray(loaded.array.shape),
            "original_channel_dim": "no_channel",
        }
        return MetaTensor(loaded.array[None], meta=meta)


class LoadUltrasoundImaged(MapTransform):
    """Dictionary version of :class:`LoadUltrasoundImage`.

    When the datalist gives no ``pixel_spacing_mm`` (missing or null) the file's spacing is copied
    into the item; when both exist the datalist wins (it is what the user curated).

    Args:
        keys: keys holding file paths to load.
        frame: frame index for multi-frame DICOM files.
        spacing_key: item key for the pixel spacing, or None to leave the item alone.
        allow_missing_keys: don't raise when a key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection,
        frame: int | None = None,
        spacing_key: str | None = "pixel_spacing_mm",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadUltrasoundImage(frame)
        self.spacing_key = spacing_key

    def __call__(self, data: dict) -> dict:
        """Load every key of ``data``; see the class docstring."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
            if self.spacing_key is not None and d.get(self.spacing_key) is None:
                d[self.spacing_key] = [float(v) for v in d[key].meta["pixel_spacing_mm"]]
        return d


class RandGainGammad(Randomizable, MapTransform):
    """Random gain and gamma on [0, 1] images: a scanner's gain and dynamic-range setting.

    ``out = clip(gain * image ** gamma, 0, 1)`` with ``gain`` and ``gamma`` drawn log-uniformly;
    zero (the letterbox padding and the black outside the sector) stays zero. Sites differ mostly
    in these settings, so training through them makes the model reproduce intensities instead of
    one site's look.

    Args:
        keys: image keys (the same draw for all keys of an item).
        gain_range: (low, high) multiplicative gain.
        gamma_range: (low, high) exponent.
        prob: probability of applying.
        allow_missing_keys: don't raise when a key is absent.

    Example::

        RandGainGammad(keys="image", gain_range=(0.75, 1.33), gamma_range=(0.7, 1.4), prob=0.8)
    """

    def __init__(
        self,
        keys: KeysCollection,
        gain_range: tuple[float, float] = (0.75, 1.33),
        gamma_range: tuple[float, float] = (0.7, 1.4),
        prob: float = 0.8,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.gain_range = gain_range
        self.gamma_range = gamma_range
        self.prob = prob

    def randomize(self, data: object = None) -> None:
        """Draw whether to apply, the gain and the gamma."""
        self._apply = self.R.rand() < self.prob
        self._gain = float(np.exp(self.R.uniform(*np.log(self.gain_range))))
        self._gamma = float(np.exp(self.R.uniform(*np.log(self.gamma_range))))

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        """Apply one random draw to every key."""
        d = dict(data)
        self.randomize()
        if not self._apply:
            return d
        for key in self.key_iterator(d):
            d[key] = (self._gain * d[key].clamp_min(0) ** self._gamma).clamp(0, 1)
        return d


class RandROIJitterd(Randomizable, MapTransform):
    """Randomly shift and scale the NT box and rebuild its mask: training with imprecise boxes.

    Args:
        keys: box key(s) (canvas pixels), normally ``"roi"``.
        mask_key: mask rebuilt from the first jittered box.
        reference_key: image whose (H, W) the mask takes.
        max_shift_px: largest shift along each axis (uniform in [-max, max]).
        scale_range: (low, high) scale of the box about its centre.
        prob: probability of applying.
        allow_missing_keys: don't raise when a key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection = "roi",
        mask_key: str = "roi_mask",
        reference_key: str = "image",
        max_shift_px: float = 4.0,
        scale_range: tuple[float, float] = (0.8, 1.2),
        prob: float = 0.5,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mask_key = mask_key
        self.reference_key = reference_key
        self.max_shift_px = max_shift_px
        self.scale_range = scale_range
        self.prob = prob

    def randomize(self, data: object = None) -> None:
        """Draw whether to apply, the shift and the scale."""
        self._apply = self.R.rand() < self.prob
        self._shift = self.R.uniform(-self.max_shift_px, self.max_shift_px, size=2)
        self._scale = float(self.R.uniform(*self.scale_range))

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        """Jitter the box(es) and rebuild the mask."""
        d = dict(data)
        self.randomize()
        if not self._apply or self.max_shift_px <= 0 and self.scale_range == (1.0, 1.0):
            return d
        height, width = d[self.reference_key].shape[-2:]
        for i, key in enumerate(self.key_iterator(d)):
            x0, y0, x1, y1 = as_box_list(d[key])
            cx, cy = 0.5 * (x0 + x1) + self._shift[0], 0.5 * (y0 + y1) + self._shift[1]
            hw, hh = 0.5 * self._scale * (x1 - x0), 0.5 * self._scale * (y1 - y0)
            box = [cx - hw, cy - hh, cx + hw, cy + hh]
            d[key] = torch.as_tensor(box, dtype=torch.float64)
            if i == 0:
                d[self.mask_key] = roi_mask(box, int(height), int(width))
        return d
