"""NT measurement fidelity (issue 15): the figures of the report on hand-made bands and rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bundle.data.roi_zoom import ROIZoomGeometry, zoom_image
from bundle.data.transforms import LetterboxGeometry, letterbox_image
from bundle.evaluation.fidelity import canvas_to_zoom, fidelity_summary, native_reconstruction, nt_fidelity_row
from scipy import ndimage

SPACING = [0.1, 0.1]
BOX = [40.0, 70.0, 160.0, 130.0]


def band_image(thickness_px: int, top: int = 90) -> np.ndarray:
    """Grey tissue, a bright skin line, a dark band of ``thickness_px`` rows, a bright soft-tissue line."""
    image = np.full((200, 200), 0.35)
    image[top - 4 : top, :] = 0.9
    image[top : top + thickness_px, :] = 0.05
    image[top + thickness_px : top + thickness_px + 4, :] = 0.9
    return image


def entry(nt_mm: float | None = None) -> dict:
    return {"roi": BOX, "pixel_spacing_mm": SPACING, "meta": {"nt_mm": nt_mm}}


def test_an_identical_reconstruction_measures_the_same_nt():
    image = band_image(15)
    row = nt_fidelity_row(image, image.copy(), entry(1.5))
    assert row["nt_original_mm"] == pytest.approx(row["nt_recon_mm"])
    assert row["nt_original_mm"] == pytest.approx(1.5, abs=0.2)  # 80 % edges of a smoothed sharp band


def test_a_blurred_band_still_measures_but_drifts():
    image = band_image(15)
    row = nt_fidelity_row(image, ndimage.gaussian_filter(image, 3.0), entry(1.5))
    assert row["nt_recon_mm"] is not None
    assert abs(row["nt_recon_mm"] - row["nt_original_mm"]) > 0.05


def test_a_reconstruction_without_a_band_is_not_measurable():
    image = band_image(15)
    row = nt_fidelity_row(image, np.full_like(image, 0.35), entry(1.5))
    assert row["nt_recon_mm"] is None
    assert fidelity_summary([row])["measurable_pct"] == 0.0


def test_summary_figures_follow_their_definitions():
    rows = [
        {"nt_true_mm": 1.5, "nt_original_mm": 1.5, "nt_recon_mm": 1.6},
        {"nt_true_mm": 2.0, "nt_original_mm": 2.1, "nt_recon_mm": 1.8},
        {"nt_true_mm": 1.0, "nt_original_mm": 1.0, "nt_recon_mm": None},
        {"nt_true_mm": None, "nt_original_mm": None, "nt_recon_mm": 1.2},
    ]
    s = fidelity_summary(rows)
    assert s["n"] == 4
    assert s["original_measurable_pct"] == pytest.approx(75.0)
    assert s["measurable_pct"] == pytest.approx(100 * 2 / 3)
    assert s["abs_diff_median_mm"] == pytest.approx(0.2)  # |+0.1| and |-0.3|
    assert s["within_0.2mm_pct"] == pytest.approx(50.0)
    assert s["bias_mm"] == pytest.approx(-0.1)
    assert s["recon_mae_vs_truth_mm"] == pytest.approx((0.1 + 0.2) / 2)
    assert s["original_mae_vs_truth_mm"] == pytest.approx((0.0 + 0.1 + 0.0) / 3)


def test_the_zoom_view_pasted_back_measures_like_the_original():
    image = band_image(15)
    zoom = ROIZoomGeometry.compute(BOX, 200, 200, 64, 0.5)
    letterbox = LetterboxGeometry.compute(200, 200, 64)
    views = {
        "global": letterbox_image(torch.from_numpy(image).float()[None], letterbox),
        "roi": zoom_image(torch.from_numpy(image).float()[None], zoom),
    }
    native = native_reconstruction(views, letterbox, zoom)
    assert native.shape == image.shape
    row = nt_fidelity_row(image, native, entry(1.5))
    assert abs(row["nt_recon_mm"] - row["nt_original_mm"]) <= 0.25


def test_a_canvas_resampled_onto_the_zoom_grid_matches_the_zoom_view():
    rows, cols = np.meshgrid(np.arange(300.0), np.arange(400.0), indexing="ij")
    image = torch.from_numpy(0.5 + 0.4 * np.sin(rows / 40.0) * np.cos(cols / 50.0)).float()[None]
    letterbox = LetterboxGeometry.compute(400, 300, 256)
    zoom = ROIZoomGeometry.compute([150.0, 120.0, 250.0, 160.0], 400, 300, 32, 0.5)
    from_canvas = canvas_to_zoom(letterbox_image(image, letterbox), letterbox, zoom)
    assert from_canvas.shape == (1, 32, 32)
    assert float((from_canvas - zoom_image(image, zoom)).abs().max()) < 0.03


def test_rows_of_unknown_plane_count_as_standard_as_measured_and_as_read_back_from_csv():
    from bundle.evaluation.fidelity import is_standard_plane

    assert all(is_standard_plane({"standard_plane": v}) for v in (True, "True", None, ""))
    assert not any(is_standard_plane({"standard_plane": v}) for v in (False, "False"))
    assert is_standard_plane({})
