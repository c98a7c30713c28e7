"""The training augmentation of the ROI-CAE (SPEC 4, docs/training.md): NT-box jitter, gain/gamma, an affine per view.

``train#augmentation`` of ``configs/train.json`` is :func:`training_augmentation`; its settings are top-level
keys (``augment_prob``, ``augment_gain_range``, ...). Any MONAI ``Compose`` over the same keys can replace it.
"""

from __future__ import annotations

from collections.abc import Sequence

from bundle.data.transforms import RandGainGammad, RandROIJitterd
from monai.transforms import Compose, RandAffined

__all__ = ["training_augmentation"]


def training_augmentation(
    prob: float = 0.8,
    gain_range: Sequence[float] = (0.75, 1.33),
    gamma_range: Sequence[float] = (0.7, 1.4),
    scale: float = 0.1,
    translate_px: float = 6,
    zoom_translate_px: float = 2,
    roi_jitter_px: float = 0,
    roi_jitter_scale: Sequence[float] = (0.8, 1.2),
    zoom_mode: str = "bilinear",
) -> Compose:
    """The augmentation chain applied after preprocessing, in this order (its random streams are seeded in order).

    1. :class:`~bundle.data.transforms.RandROIJitterd` on ``roi`` (always when ``roi_jitter_px > 0``, else never).
    2. :class:`~bundle.data.transforms.RandGainGammad` on ``image`` and ``roi_view``.
    3. ``RandAffined`` on the canvas (``image`` bilinear, ``roi_mask`` nearest): scale and translation.
    4. ``RandAffined`` on the zoomed ROI view (``roi_view``, ``roi_view_mask``): translation only.

    Args:
        prob: probability of each of steps 2-4.
        gain_range: multiplicative gain range.
        gamma_range: gamma range.
        scale: affine scale range of the canvas (``1 +- scale``).
        translate_px: affine translation range of the canvas, in pixels.
        zoom_translate_px: affine translation range of the ROI view, in pixels.
        roi_jitter_px: largest NT-box shift, in pixels (0 turns the jitter off).
        roi_jitter_scale: NT-box scale range of the jitter.
        zoom_mode: interpolation of the ROI view's shift (``"nearest"``: whole-pixel shifts, no blur).

    Returns:
        the ``Compose`` of the four transforms.
    """
    common = {"prob": prob, "padding_mode": "zeros"}
    return Compose(
        [
            RandROIJitterd(
                "roi", max_shift_px=roi_jitter_px, scale_range=roi_jitter_scale, prob=1.0 if roi_jitter_px > 0 else 0.0
            ),
            RandGainGammad(["image", "roi_view"], gain_range=gain_range, gamma_range=gamma_range, prob=prob),
            RandAffined(
                ["image", "roi_mask"],
                mode=["bilinear", "nearest"],
                scale_range=scale,
                translate_range=translate_px,
                **common,
            ),
            RandAffined(
                ["roi_view", "roi_view_mask"], mode=[zoom_mode, "nearest"], translate_range=zoom_translate_px, **common
            ),
        ]
    )
