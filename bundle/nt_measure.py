"""Nuchal translucency thickness from an intensity profile across the band.

The profile runs through a given measurement point perpendicular to the band (for synthetic data:
through the ground-truth caliper points). The translucency is the darkest stretch near the point;
its borders are where the profile climbs halfway from that minimum to the bright line on each
side (the inner borders of the skin line and of the nuchal soft tissue, as calipers are placed).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage


def _half_level_crossing(profile: np.ndarray, start: int, stop: int, level: float) -> float | None:
    """First fractional index from ``start`` towards ``stop`` where ``profile`` reaches ``level``."""
    step = 1 if stop > start else -1
    for i in range(start, stop, step):
        a, b = profile[i], profile[i + step]
        if a < level <= b:
            return i + step * (level - a) / (b - a)
    return None


def measure_nt_profile(
    image: np.ndarray,
    outer_point: Sequence[float],
    inner_point: Sequence[float],
    pixel_spacing_mm: Sequence[float],
    samples_per_pixel: int = 4,
    edge_fraction: float = 0.8,
) -> float | None:
    """Measure the NT thickness (mm) along the line through two points across the band.

    Args:
        image: (H, W) grey image.
        outer_point: (column, row) near the skin line side of the translucency.
        inner_point: (column, row) near the nuchal soft tissue side.
        pixel_spacing_mm: (row, column) spacing.
        samples_per_pixel: profile sampling density.
        edge_fraction: where between the band minimum (0) and the line peak (1) a border lies.

    Returns:
        the thickness in mm, or None when no dark band with bright borders is found.
    """
    p0, p1 = np.asarray(outer_point, float), np.asarray(inner_point, float)
    direction = p1 - p0
    length = float(np.hypot(*direction))
    if length == 0:
        return None
    direction /= length
    row_mm, col_mm = (float(v) for v in pixel_spacing_mm)
    mm_per_pixel_along = float(np.hypot(direction[0] * col_mm, direction[1] * row_mm))
    half = max(2.5 * length, 1.5 / mm_per_pixel_along)
    t = np.arange(-half, half, 1.0 / samples_per_pixel)
    centre = 0.5 * (p0 + p1)
    cols, rows = centre[0] + t * direction[0], centre[1] + t * direction[1]
    # Sample pixel centres: pixel (i, j) is centred at (j + 0.5, i + 0.5).
    profile = ndimage.map_coordinates(image.astype(np.float64), [rows - 0.5, cols - 0.5], order=1, mode="nearest")
    profile = ndimage.gaussian_filter1d(profile, 0.5 * samples_per_pixel)
    central = np.abs(t) <= 0.5 * length + 1.0
    i_min = int(np.flatnonzero(central)[np.argmin(profile[central])])
    left_peak = int(np.argmax(profile[: i_min + 1]))
    right_peak = i_min + int(np.argmax(profile[i_min:]))
    bottom = profile[i_min]
    if profile[left_peak] - bottom <= 1e-6 or profile[right_peak] - bottom <= 1e-6:
        return None
    left = _half_level_crossing(profile, i_min, left_peak, bottom + edge_fraction * (profile[left_peak] - bottom))
    right = _half_level_crossing(profile, i_min, right_peak, bottom + edge_fraction * (profile[right_peak] - bottom))
    if left is None or right is None:
        return None
    return float((right - left) / samples_per_pixel * mm_per_pixel_along)
