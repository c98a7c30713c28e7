"""Evaluation helpers: metrics against scikit-image, statistics on known inputs, NT measurement."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bundle.data.synthetic.generator import generate_case
from bundle.data.transforms import LetterboxGeometry, letterbox_image, unletterbox_image
from bundle.evaluation.nt_measure import measure_nt_in_roi
from bundle.evaluation.statistics import bootstrap_ci, paired_comparison, seed_spread
from bundle.model.metrics import (
    PER_IMAGE_METRICS,
    ROI_METRICS,
    WHOLE_VIEW_METRICS,
    gaussian_blur,
    psnr,
    roi_blur_px,
    ssim,
    view_metrics,
)
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def test_view_metrics_is_the_one_per_image_table():
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(3, 1, 64, 64, generator=generator)
    pred = (image + 0.1 * torch.randn(image.shape, generator=generator)).clamp(0, 1)
    mask = torch.zeros_like(image)
    mask[..., 20:40, 16:48] = 1
    rows = view_metrics(pred, image, mask, prefix="zoom_")
    assert list(rows) == [f"zoom_{name}" for name in PER_IMAGE_METRICS]
    for name, fn in PER_IMAGE_METRICS.items():
        torch.testing.assert_close(rows[f"zoom_{name}"], fn(pred, image, mask))
        assert rows[f"zoom_{name}"].shape == (3,)
    assert set(view_metrics(pred, image)) == set(WHOLE_VIEW_METRICS)
    with pytest.raises(ValueError, match="need an ROI mask"):
        view_metrics(pred, image, names=[next(iter(ROI_METRICS))])


def test_roi_blur_px_recovers_a_known_blur():
    generator = torch.Generator().manual_seed(1)
    image = torch.rand(4, 1, 48, 48, generator=generator)
    mask = torch.zeros_like(image)
    mask[..., 12:36, 8:40] = 1
    sigmas = [0.0, 0.5, 1.25, 2.0]
    blurred = torch.cat([gaussian_blur(image[i : i + 1], s) for i, s in enumerate(sigmas)])
    torch.testing.assert_close(roi_blur_px(blurred, image, mask), torch.tensor(sigmas))
    # a uniform grey (the blurriest possible reconstruction) reads as the largest blur tried
    assert roi_blur_px(torch.full_like(image, 0.5), image, mask).min() == 3.0
    # the blur matches the SciPy filter it stands for (away from the border)
    from scipy import ndimage

    reference = ndimage.gaussian_filter(image[0, 0].numpy(), 1.0, mode="nearest", truncate=3.0)
    np.testing.assert_allclose(gaussian_blur(image[:1], 1.0)[0, 0].numpy(), reference, atol=1e-5)


def test_psnr_and_ssim_match_scikit_image():
    rng = np.random.default_rng(0)
    a = rng.random((96, 128))
    b = np.clip(a + 0.05 * rng.standard_normal(a.shape), 0, 1)
    ta, tb = (torch.tensor(x, dtype=torch.float64)[None, None] for x in (a, b))
    assert psnr(tb, ta).item() == pytest.approx(peak_signal_noise_ratio(a, b, data_range=1.0), rel=1e-6)
    options = {"data_range": 1.0, "gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}
    expected = structural_similarity(a, b, **options)
    assert ssim(tb, ta).item() == pytest.approx(expected, abs=1e-4)


def test_bootstrap_ci_brackets_the_mean_and_is_reproducible():
    values = np.random.default_rng(1).normal(5.0, 1.0, size=400)
    low, high = bootstrap_ci(values, seed=3)
    assert low < values.mean() < high
    assert high - low == pytest.approx(2 * 1.96 / np.sqrt(400), rel=0.2)  # normal theory width
    assert bootstrap_ci(values, seed=3) == (low, high)
    assert bootstrap_ci([2.5]) == (2.5, 2.5)


def test_paired_comparison_on_known_inputs():
    before = {f"c{i}": float(i) for i in range(20)}
    shifted = paired_comparison(before, {k: v + 1.0 for k, v in before.items()})
    assert shifted["mean_difference"] == pytest.approx(1.0) and shifted["ci_low"] == pytest.approx(1.0)
    assert shifted["p_value"] < 1e-4  # every pair improves: exact two-sided p = 2 / 2**20
    assert shifted["relative_pct"] == pytest.approx(100 * 1.0 / 9.5)
    assert paired_comparison(before, dict(before))["p_value"] == 1.0
    mixed = paired_comparison(before, {k: v + (1 if i % 2 else -1) for i, (k, v) in enumerate(before.items())})
    assert mixed["p_value"] > 0.5
    with pytest.raises(ValueError, match="no image id"):
        paired_comparison({"a": 1.0}, {"b": 2.0})


def test_seed_spread():
    spread = seed_spread([1.0, 2.0, 3.0])
    assert spread == {"mean": 2.0, "std": 1.0, "min": 1.0, "max": 3.0, "n": 3}


def test_nt_measurement_in_the_roi_tracks_known_thickness_at_native_size():
    truth, measured = [], []
    for site in range(3):
        for index, nt_mm in enumerate([1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0]):
            case = generate_case(17, site, index, None, nt_mm=nt_mm, standard_plane=True, calipers=False)
            grey = case.image if case.image.ndim == 2 else case.image @ np.array([0.299, 0.587, 0.114])
            result = measure_nt_in_roi(grey, case.annotation["roi"], case.annotation["pixel_spacing_mm"])
            assert result is not None
            truth.append(nt_mm)
            measured.append(result["nt_mm"])
    truth, measured = np.array(truth), np.array(measured)
    assert np.mean(np.abs(measured - truth)) <= max(0.3, 0.2 * truth.mean())
    assert 0.7 <= np.polyfit(truth, measured, 1)[0] <= 1.2


def test_reconstruction_maps_back_to_the_original_geometry():
    # A canvas "reconstruction" equal to the letterboxed input maps back close to the input.
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 300), torch.linspace(0, 1, 520), indexing="ij")
    original = (0.4 + 0.3 * torch.sin(4 * xx) * torch.cos(3 * yy))[None]
    geometry = LetterboxGeometry.compute(520, 300, 256)
    canvas = letterbox_image(original, geometry)
    back = unletterbox_image(canvas, geometry)
    assert back.shape == original.shape
    assert (back - original).abs()[:, 4:-4, 4:-4].max() < 0.01
    box = [100.0, 120.0, 220.0, 160.0]  # a box drawn on the canvas lands where the original's was
    assert geometry.unmap_box(geometry.map_box(box)) == pytest.approx(box)
