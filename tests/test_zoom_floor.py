"""``zoom-floor``: the NT fidelity the ROI-zoom view allows, on hand-made bands (no network)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from bundle.cli import main
from bundle.data.roi_zoom import ROIZoomGeometry
from bundle.evaluation.zoom_floor import zoom_floor, zoom_floor_markdown, zoom_round_trips
from PIL import Image
from test_fidelity import BOX, SPACING


def band_image(thickness_px: int, top: int = 88, line_px: int = 12) -> np.ndarray:
    """Grey tissue, a dark band of ``thickness_px`` rows between two bright lines of ``line_px`` rows."""
    image = np.full((200, 200), 0.35)
    image[top - line_px : top] = 0.9
    image[top : top + thickness_px] = 0.05
    image[top + thickness_px : top + thickness_px + line_px] = 0.9
    return image


def _entries(thicknesses: list[int]) -> tuple[list[dict], dict]:
    images = {f"case{i}": band_image(t) for i, t in enumerate(thicknesses)}
    entries = [
        {"image": case, "roi": BOX, "site": 0, "pixel_spacing_mm": SPACING, "meta": {"nt_mm": t * SPACING[0]}}
        for case, t in zip(images, thicknesses, strict=True)
    ]
    return entries, images


def test_round_trip_leaves_the_image_outside_the_zoom_region_alone() -> None:
    image = band_image(12)
    geometry = ROIZoomGeometry.compute(BOX, 200, 200, 64, 0.5)
    trips = zoom_round_trips(image, geometry, [0.0, 1.0])
    cx0, cy0, cx1, cy1 = geometry.crop_box
    outside = np.ones_like(image, dtype=bool)
    outside[max(cy0, 0) : cy1, max(cx0, 0) : cx1] = False
    for trip in trips.values():
        assert trip.shape == image.shape
        np.testing.assert_allclose(trip[outside], image[outside], atol=1e-6)
    assert not np.allclose(trips[0.0], trips[1.0])


def test_the_floor_is_close_and_blur_widens_the_band() -> None:
    entries, images = _entries([8, 12, 16, 20])
    result = zoom_floor(entries, 64, 0.5, sigmas=[1.5, 3.0], reader=lambda e: images[e["image"]])
    floor, mild, strong = (row["standard_planes"] for row in result["rows"])
    assert [row["sigma_px"] for row in result["rows"]] == [0.0, 1.5, 3.0]
    assert result["n_images"] == 4
    assert result["mm_per_zoom_row"] == pytest.approx((130 - 70) * 2 / 64 * 0.1, rel=0.05)
    assert floor["measurable_pct"] == 100.0
    assert floor["abs_diff_median_mm"] < 0.1
    # a blurred dark band between bright lines is measured wider, more so the stronger the blur
    assert strong["bias_mm"] > mild["bias_mm"] > floor["bias_mm"]
    table = zoom_floor_markdown(result)
    assert "as is (floor)" in table and "sigma 3 px" in table and table.count("\n| ") == 4


def test_entries_without_spacing_are_skipped_and_none_at_all_is_refused() -> None:
    entries, images = _entries([12])
    kept = zoom_floor([*entries, {**entries[0], "pixel_spacing_mm": None}], reader=lambda e: images[e["image"]])
    assert kept["n_images"] == 1
    with pytest.raises(ValueError, match="pixel_spacing_mm"):
        zoom_floor([{**entries[0], "pixel_spacing_mm": None}], reader=lambda e: images[e["image"]])


def test_command_prints_the_table_and_writes_json(tmp_path, capsys) -> None:
    entries, images = _entries([12, 20])
    for entry in entries:
        Image.fromarray((images[entry["image"]] * 255).astype(np.uint8)).save(tmp_path / f"{entry['image']}.png")
        entry["image"] = f"{entry['image']}.png"
        entry["case_id"] = entry["image"][:-4]
    (tmp_path / "datalist.json").write_text(json.dumps({"data": entries}))
    out = tmp_path / "floor.json"
    assert main(["zoom-floor", str(tmp_path / "datalist.json"), "--blur", "1", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "as is (floor)" in printed and "sigma 1 px" in printed
    assert [row["sigma_px"] for row in json.loads(out.read_text())["rows"]] == [0.0, 1.0]
