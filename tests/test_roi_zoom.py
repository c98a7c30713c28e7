"""ROI-zoom view (issue 15): invertible crop of the NT box with a margin onto a fixed canvas; property tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bundle.data.roi_zoom import ROIZoom, ROIZoomd, ROIZoomGeometry, unzoom_image, zoom_image
from bundle.data.transforms import roi_mask
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.data import MetaTensor


@st.composite
def image_box_margin(draw):
    width, height = draw(st.integers(8, 1500)), draw(st.integers(8, 1500))
    x0 = draw(st.floats(0, width - 2, allow_nan=False))
    y0 = draw(st.floats(0, height - 2, allow_nan=False))
    x1 = draw(st.floats(min_value=x0 + 1, max_value=float(width)))
    y1 = draw(st.floats(min_value=y0 + 1, max_value=float(height)))
    margin = draw(st.sampled_from([0.0, 0.25, 0.5, 1.0]))
    return width, height, [x0, y0, x1, y1], margin


@settings(max_examples=300, deadline=None)
@given(image_box_margin(), st.sampled_from([32, 64, 96]))
def test_forward_then_inverse_box_and_points_are_exact(case, canvas):
    width, height, box, margin = case
    g = ROIZoomGeometry.compute(box, width, height, canvas, margin)
    assert np.allclose(g.unmap_box(g.map_box(box)), box, atol=1e-6 * max(width, height))
    points = np.array([[box[0], box[1]], [box[2], box[3]], [0.5 * (box[0] + box[2]), box[1]]])
    assert np.allclose(g.unmap_points(g.map_points(points)), points, atol=1e-6 * max(width, height))


@settings(max_examples=300, deadline=None)
@given(image_box_margin(), st.sampled_from([32, 64]))
def test_the_box_with_its_margin_lies_inside_the_view(case, canvas):
    width, height, box, margin = case
    g = ROIZoomGeometry.compute(box, width, height, canvas, margin)
    u0, v0, u1, v1 = g.map_box(box)
    assert 0 <= u0 < u1 <= canvas and 0 <= v0 < v1 <= canvas
    # The crop is the box plus margin, snapped outwards to whole pixels: the box keeps its share of the view.
    share_x = (u1 - u0) / canvas
    assert share_x <= 1 / (1 + 2 * margin) + 1e-9
    assert share_x >= (box[2] - box[0]) / ((box[2] - box[0]) * (1 + 2 * margin) + 2) - 1e-9


@settings(max_examples=200, deadline=None)
@given(image_box_margin(), st.sampled_from([32, 64]))
def test_mask_covers_exactly_the_mapped_box(case, canvas):
    width, height, box, margin = case
    g = ROIZoomGeometry.compute(box, width, height, canvas, margin)
    u0, v0, u1, v1 = g.map_box(box)
    mask = roi_mask([u0, v0, u1, v1], canvas, canvas)[0].numpy()
    centres = np.arange(canvas) + 0.5
    inside = ((centres[:, None] >= v0) & (centres[:, None] < v1)) & ((centres[None, :] >= u0) & (centres[None, :] < u1))
    if inside.any():
        assert np.array_equal(mask.astype(bool), inside)


def test_a_bright_point_lands_where_map_points_says():
    image = torch.zeros(1, 300, 400)
    image[0, 160, 230] = 1.0  # pixel (row 160, column 230), centre (230.5, 160.5)
    box = [200.0, 150.0, 260.0, 175.0]
    view, g = ROIZoom(64, 0.5)(image, box)
    u, v = g.map_points([[230.5, 160.5]])[0]
    row, col = np.unravel_index(int(torch.argmax(view[0])), view.shape[-2:])
    assert abs((col + 0.5) - u) <= 1.0 and abs((row + 0.5) - v) <= 1.0


def test_zoom_then_unzoom_restores_a_smooth_image_inside_the_crop():
    rows, cols = torch.meshgrid(torch.arange(240.0), torch.arange(320.0), indexing="ij")
    image = (0.5 + 0.4 * torch.sin(rows / 25.0) * torch.cos(cols / 30.0))[None]
    g = ROIZoomGeometry.compute([120.0, 90.0, 200.0, 130.0], 320, 240, 64, 0.5)
    restored = unzoom_image(zoom_image(image, g), g)
    cx0, cy0, cx1, cy1 = g.crop_box
    inner = (slice(None), slice(cy0 + 2, cy1 - 2), slice(cx0 + 2, cx1 - 2))
    assert float((restored[inner] - image[inner]).abs().max()) < 0.02
    assert float(restored[:, :cy0].abs().max()) == 0.0  # outside the crop: nothing pasted


def test_a_crop_past_the_image_edge_is_zero_there():
    image = torch.ones(1, 100, 100)
    view, g = ROIZoom(32, 1.0)(image, [0.0, 0.0, 20.0, 20.0])
    assert g.crop_box[0] < 0 and g.crop_box[1] < 0
    assert float(view[0, 0, 0]) == 0.0 and float(view[0, -1, -1]) == pytest.approx(1.0)


def test_dictionary_version_adds_view_mask_geometry_and_inverts():
    image = MetaTensor(torch.rand(1, 180, 240), meta={"filename_or_obj": "scan.png"})
    t = ROIZoomd(keys="image", canvas_size=32, margin=0.5)
    out = t({"image": image, "roi": [100.0, 80.0, 140.0, 100.0]})
    assert out["roi_view"].shape == (1, 32, 32)
    assert out["roi_view_mask"].shape == (1, 32, 32)
    assert int(out["roi_view_mask"].sum()) == 16 * 16  # the box is the central half of a 50 % margin view
    assert ROIZoomGeometry.from_dict(out["roi_zoom"]).crop_box == (80, 70, 160, 110)
    assert t.inverse(out)["roi_view"].shape == (1, 180, 240)


def test_an_image_without_a_box_is_refused_by_name():
    image = MetaTensor(torch.rand(1, 50, 50), meta={"filename_or_obj": "/data/no_box.png"})
    with pytest.raises(ValueError, match="no_box.png.*no NT box.*train_localizer"):
        ROIZoomd(keys="image")({"image": image, "roi": None})


@pytest.mark.parametrize("box", [[10, 10, 10, 20], [5, 5, 1, 1], [0, 0, float("nan"), 4]])
def test_empty_or_non_finite_boxes_are_refused(box):
    with pytest.raises(ValueError, match="empty or not finite"):
        ROIZoomGeometry.compute(box, 100, 100, 64)


def test_feathered_unzoom_fades_at_the_crop_edge_and_leaves_the_box_alone():
    box = [120.0, 90.0, 200.0, 130.0]
    g = ROIZoomGeometry.compute(box, 320, 240, 64, 0.5)
    background, view = torch.zeros(1, 240, 320), torch.ones(1, 64, 64)
    hard = unzoom_image(view, g, background=background)
    soft = unzoom_image(view, g, background=background, feather=0.1)
    cx0, cy0, cx1, cy1 = g.crop_box
    x0, y0, x1, y1 = (int(v) for v in box)
    assert torch.equal(soft[:, y0:y1, x0:x1], hard[:, y0:y1, x0:x1])  # the NT box holds the view unchanged
    edge = soft[0, (cy0 + cy1) // 2, cx0 : cx0 + 20]  # across the left edge of the crop (160 px: 16 px fade)
    assert 0.0 < float(edge[0]) < 0.2 and bool((edge.diff() >= 0).all()) and float(edge[-1]) == 1.0
    assert float(hard[0, (cy0 + cy1) // 2, cx0]) == 1.0  # no fade: the hard edge
