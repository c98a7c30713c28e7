"""Letterbox with ROI offset correction and the ROI mask (SPEC 2): property tests."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from bundle.data.transforms import Letterbox, LetterboxGeometry, LetterboxROId, ROIMaskd, letterbox_image, roi_mask
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.data import MetaTensor

sizes = st.integers(min_value=1, max_value=2000)
canvases = st.sampled_from([64, 128, 256])


@st.composite
def image_and_box(draw):
    width, height = draw(sizes), draw(sizes)
    x0 = draw(st.floats(0, width - 0.01, allow_nan=False))
    y0 = draw(st.floats(0, height - 0.01, allow_nan=False))
    x1 = draw(st.floats(min_value=x0 + 0.01, max_value=float(width)))
    y1 = draw(st.floats(min_value=y0 + 0.01, max_value=float(height)))
    return width, height, [x0, y0, x1, y1]


@settings(max_examples=300, deadline=None)
@given(image_and_box(), canvases)
def test_forward_then_inverse_box_is_within_half_a_pixel(case, canvas):
    width, height, box = case
    geometry = LetterboxGeometry.compute(width, height, canvas)
    back = geometry.unmap_box(geometry.map_box(box))
    assert np.allclose(back, box, atol=0.5)
    assert np.allclose(back, box, atol=1e-6 * max(width, height))


@settings(max_examples=300, deadline=None)
@given(image_and_box(), canvases)
def test_mapped_box_follows_the_spec_formula_and_stays_in_the_content(case, canvas):
    width, height, box = case
    g = LetterboxGeometry.compute(width, height, canvas)
    s = min(canvas / width, canvas / height)
    assert g.scale == pytest.approx(s)
    assert g.dx == math.floor((canvas - g.resized_size[0]) / 2) and g.dy == math.floor((canvas - g.resized_size[1]) / 2)
    mapped = g.map_box(box)
    assert mapped == pytest.approx([s * box[0] + g.dx, s * box[1] + g.dy, s * box[2] + g.dx, s * box[3] + g.dy])
    cx0, cy0, cx1, cy1 = g.content_box()
    # Rounding round(sW) moves the content edge by at most half a pixel.
    assert cx0 - 1e-9 <= mapped[0] and mapped[2] <= cx1 + 0.5 + 1e-9
    assert cy0 - 1e-9 <= mapped[1] and mapped[3] <= cy1 + 0.5 + 1e-9


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 400), st.integers(1, 400), canvases)
def test_padding_never_covers_content(width, height, canvas):
    image = torch.rand(1, height, width) * 0.9 + 0.1  # strictly positive content
    out, g = Letterbox(canvas)(image)
    x0, y0, x1, y1 = g.content_box()
    assert 0 <= x0 < x1 <= canvas and 0 <= y0 < y1 <= canvas
    assert (out[:, y0:y1, x0:x1] > 0).all()
    padding = torch.ones(canvas, canvas, dtype=torch.bool)
    padding[y0:y1, x0:x1] = False
    assert (out[0][padding] == 0).all()
    assert max(x1 - x0, y1 - y0) == canvas  # the long side fills the canvas


def _covered(low: float, high: float, size: int) -> np.ndarray:
    centres = np.arange(size) + 0.5
    inside = (centres >= low) & (centres < high)
    if not inside.any():  # a box between pixel centres keeps the pixel holding its centre
        inside[min(size - 1, max(0, int(np.floor(0.5 * (low + high)))))] = True
    return inside


@settings(max_examples=300, deadline=None)
@given(st.floats(-5, 140), st.floats(-5, 140), st.floats(0.01, 80), st.floats(0.01, 80))
def test_mask_covers_exactly_the_pixels_whose_centres_lie_in_the_box(x0, y0, w, h):
    box = [x0, y0, x0 + w, y0 + h]
    mask = roi_mask(box, 128, 128)[0].numpy().astype(bool)
    expected = _covered(box[1], box[3], 128)[:, None] & _covered(box[0], box[2], 128)[None, :]
    assert np.array_equal(mask, expected)


def test_dictionary_transform_maps_box_adds_mask_and_inverts():
    image = MetaTensor(torch.rand(1, 720, 960))
    box = [412.0, 398.5, 583.0, 452.0]
    transform = LetterboxROId(keys="image", canvas_size=128)
    out = ROIMaskd(keys="roi", reference_key="image")(transform({"image": image, "roi": box}))
    assert out["image"].shape == (1, 128, 128)
    s = 128 / 960
    assert out["roi"].tolist() == pytest.approx([s * 412, s * 398.5 + 16, s * 583, s * 452 + 16])
    assert out["letterbox"] == {
        "scale": s,
        "dx": 0,
        "dy": 16,
        "original_size": [960, 720],
        "resized_size": [128, 96],
        "canvas_size": 128,
    }
    assert out["roi_mask"].sum() == roi_mask(out["roi"], 128, 128).sum() > 0
    back = transform.inverse(out)
    assert back["image"].shape == (1, 720, 960)
    assert back["roi"].tolist() == pytest.approx(box)


def test_inverse_reconstructs_a_smooth_image():
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 300), torch.linspace(0, 1, 500), indexing="ij")
    image = MetaTensor((0.3 + 0.5 * torch.sin(3 * xx) * torch.cos(2 * yy))[None])
    transform = LetterboxROId(keys="image", canvas_size=256, roi_key=None)
    back = transform.inverse(transform({"image": image}))["image"]
    assert (back - image).abs()[:, 5:-5, 5:-5].max() < 0.02


def test_label_maps_use_nearest_resampling():
    labels = torch.zeros(1, 40, 80)
    labels[:, 10:30, 20:60] = 7
    g = LetterboxGeometry.compute(80, 40, 64)
    assert set(letterbox_image(labels, g, mode="nearest").unique().tolist()) == {0.0, 7.0}


def test_random_gain_gamma_keeps_zero_padding_and_range():
    from bundle.data.transforms import RandGainGammad

    image = torch.zeros(1, 32, 32)
    image[:, 8:24, 8:24] = torch.rand(1, 16, 16)
    transform = RandGainGammad(keys="image", prob=1.0)
    transform.set_random_state(3)
    out = transform({"image": image})["image"]
    assert (out[:, :8] == 0).all() and out.min() >= 0 and out.max() <= 1
    assert not torch.allclose(out, image)


def test_roi_jitter_moves_the_box_and_rebuilds_its_mask():
    from bundle.data.transforms import RandROIJitterd

    transform = RandROIJitterd(max_shift_px=4, scale_range=(0.8, 1.2), prob=1.0)
    transform.set_random_state(0)
    item = {
        "image": torch.zeros(1, 64, 64),
        "roi": torch.tensor([10.0, 10.0, 30.0, 20.0]),
        "roi_mask": torch.zeros(1, 64, 64),
    }
    out = transform(item)
    assert not torch.allclose(out["roi"], item["roi"].double())
    assert torch.equal(out["roi_mask"], roi_mask(out["roi"], 64, 64))
