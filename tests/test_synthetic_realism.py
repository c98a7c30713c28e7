"""Realism checks of the synthetic generator (SPEC 1.3, step 7)."""

from __future__ import annotations

import numpy as np
import pytest
from bundle.data.synthetic.acoustics import psf_sigmas_mm, speckle_envelope
from bundle.data.synthetic.anatomy import LABELS
from bundle.data.synthetic.generator import generate_case
from bundle.data.synthetic.sites import site_style
from bundle.evaluation.nt_measure import measure_nt_profile
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score


def _grey(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float64) if image.ndim == 2 else image @ np.array([0.299, 0.587, 0.114])


@pytest.mark.parametrize("site", [0, 1, 2])
def test_speckle_snr_of_pre_log_envelope_in_a_homogeneous_patch_is_rayleigh(site):
    # A homogeneous soft-tissue patch through the same acoustic model, with the site's PSF at
    # its native sampling; fully developed speckle has mean / std = 1.91.
    style = site_style(site)
    case = generate_case(3, site, 0, None, keep_intermediates=True)
    step_mm = case.intermediates["layout"].pixel_mm
    axial, lateral = psf_sigmas_mm(style.frequency_mhz, style.lateral_psf_factor)
    labels = np.full((600, 600), LABELS["soft_tissue"], dtype=np.uint8)
    envelope = speckle_envelope(labels, (axial / step_mm, lateral / step_mm), np.random.default_rng(site))
    values = envelope[50:-50, 50:-50]
    assert values.mean() / values.std() == pytest.approx(1.91, abs=0.1)


@pytest.mark.parametrize("site", [0, 1, 2])
def test_fluid_is_dark_and_nt_darker_than_both_bounding_lines(site):
    case = generate_case(11, site, 1, None, standard_plane=True, calipers=False)
    grey, labels = _grey(case.image), case.labels
    assert np.median(grey[labels == LABELS["amniotic_fluid"]]) < 15
    x0, y0, x1, y1 = (int(v) for v in case.annotation["roi"])
    box = np.zeros_like(labels, dtype=bool)
    box[y0:y1, x0:x1] = True
    nt = np.median(grey[box & (labels == LABELS["nt"])])
    assert nt < np.median(grey[box & (labels == LABELS["skin"])])
    assert nt < np.median(grey[box & (labels == LABELS["nuchal_tissue"])])


def test_profile_measurement_tracks_ground_truth_nt_at_native_size():
    truth, measured = [], []
    for site in range(3):
        for index, nt_mm in enumerate([1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0]):
            case = generate_case(7, site, index, None, nt_mm=nt_mm, standard_plane=True, calipers=False)
            outer, inner = case.annotation["meta"]["nt_points"]
            value = measure_nt_profile(_grey(case.image), outer, inner, case.annotation["pixel_spacing_mm"])
            assert value is not None
            truth.append(nt_mm)
            measured.append(value)
    truth, measured = np.array(truth), np.array(measured)
    slope = np.polyfit(truth, measured, 1)[0]
    assert 0.7 <= slope <= 1.1
    assert np.mean(np.abs(measured - truth)) <= max(0.3, 0.2 * truth.mean())


def test_ground_truth_nt_points_are_nt_mm_apart():
    case = generate_case(5, 0, 2, None, nt_mm=2.345)
    (c0, r0), (c1, r1) = case.annotation["meta"]["nt_points"]
    row_mm, col_mm = case.annotation["pixel_spacing_mm"]
    assert np.hypot((c1 - c0) * col_mm, (r1 - r0) * row_mm) == pytest.approx(2.345, abs=2e-3)
    assert case.annotation["meta"]["nt_mm"] == pytest.approx(2.345)


def _site_features(image: np.ndarray) -> np.ndarray:
    grey = _grey(image) / 255.0
    content = grey[grey > 0.02]
    hist, _ = np.histogram(content, bins=12, range=(0, 1), density=True)
    gradient = np.abs(np.diff(grey, axis=1)).mean() + np.abs(np.diff(grey, axis=0)).mean()
    return np.concatenate([hist, [content.mean(), content.std(), gradient]])


def test_simple_classifier_separates_sites_well_above_chance():
    features, sites = [], []
    for site in range(3):
        for index in range(15):
            features.append(_site_features(generate_case(21, site, index, (128, 128)).image))
            sites.append(site)
    accuracy = cross_val_score(LogisticRegression(max_iter=2000), np.array(features), np.array(sites), cv=5).mean()
    assert accuracy > 0.8  # chance is 1/3


@pytest.mark.parametrize("size", [(128, 128), None])
def test_every_box_lies_inside_the_image_and_the_nt_box_inside_the_sector(size):
    for site in range(3):
        for index in range(4):
            case = generate_case(13, site, index, size)
            height, width = case.sector.shape
            for box in case.annotation["meta"]["structures"].values():
                x0, y0, x1, y1 = box
                assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
            x0, y0, x1, y1 = case.annotation["roi"]
            corners = [(x0, y0), (x1 - 1, y0), (x0, y1 - 1), (x1 - 1, y1 - 1)]
            assert all(case.sector[int(y), int(x)] for x, y in corners)


def test_generation_is_deterministic_per_seed_site_index():
    a = generate_case(9, 1, 4, (128, 128))
    b = generate_case(9, 1, 4, (128, 128))
    c = generate_case(9, 1, 5, (128, 128))
    assert np.array_equal(a.image, b.image) and a.annotation == b.annotation
    assert not np.array_equal(a.image, c.image)


def test_sites_keep_their_own_aspect_ratio_within_the_size_bound():
    shapes = {site: generate_case(0, site, 0, (128, 128)).sector.shape for site in range(3)}
    assert shapes[0] == (96, 128) and shapes[2] == (72, 128)
    assert all(h <= 128 and w <= 128 for h, w in shapes.values())


def test_non_standard_planes_are_flagged_and_oblique_ones_miss_the_face():
    case = generate_case(2, 0, 0, (256, 256), standard_plane=False)
    meta = case.annotation["meta"]
    assert meta["standard_plane"] is False and meta["nonstandard_reason"] in ("oblique", "blurred", "tilted")
    reasons = {}
    for index in range(40):
        meta = generate_case(2, 0, index, (256, 256), standard_plane=False).annotation["meta"]
        reasons.setdefault(meta["nonstandard_reason"], meta)
    assert "nasal tip" not in reasons["oblique"]["structures"] and "palate" not in reasons["oblique"]["structures"]
    standard = generate_case(2, 0, 1, (256, 256), standard_plane=True).annotation["meta"]["structures"]
    assert {"NT", "thalami", "palate", "nasal bone"} <= set(standard)
