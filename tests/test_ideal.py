"""The speckle-free ideal of synthetic images and ``zoom-floor --ideal`` (what a perfect reconstruction allows)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from bundle.cli import main
from bundle.data.datalist import load_validated_datalist
from bundle.data.readers import read_image
from bundle.data.synthetic.anatomy import LABELS
from bundle.data.synthetic.generator import generate_case
from bundle.data.synthetic.ideal import ideal_image, ideal_reader
from bundle.evaluation.zoom_floor import zoom_floor, zoom_floor_markdown
from scipy import ndimage
from test_zoom_floor import _entries


def _spread_in_soft_tissue(case) -> float:
    """Grey-level standard deviation inside the (eroded) soft tissue: speckle, mostly."""
    tissue = ndimage.binary_erosion(case.labels == LABELS["soft_tissue"], iterations=3)
    return float(case.image.astype(np.float64).mean(axis=-1)[tissue].std())


def test_ideal_lies_on_the_plain_image_and_removes_its_speckle() -> None:
    plain = generate_case(4, 1, 3, (256, 256))
    ideal = generate_case(4, 1, 3, (256, 256), speckle_average=6)
    assert ideal.annotation == plain.annotation  # the same scene, gains, interface and ground truth
    assert ideal.image.shape == plain.image.shape
    # outside the sector (past the scan conversion's 1-pixel interpolation seam): identical, burnt-in text too
    surround = ~ndimage.binary_dilation(plain.sector, iterations=2)
    np.testing.assert_array_equal(ideal.image[surround], plain.image[surround])
    assert _spread_in_soft_tissue(ideal) < 0.5 * _spread_in_soft_tissue(plain)
    # the flag does not disturb the plain image's own random draws
    np.testing.assert_array_equal(generate_case(4, 1, 3, (256, 256)).image, plain.image)


def test_ideal_image_matches_the_written_file_outside_the_sector(synthetic_dataset) -> None:
    datalist = json.loads(synthetic_dataset.read_text())
    entry = load_validated_datalist(synthetic_dataset, check_images=False)[7]
    original = read_image(entry["image"]).array
    ideal = ideal_reader(datalist, 2)(entry)
    assert ideal.dtype == np.float32 and ideal.shape == original.shape
    assert 0.0 <= ideal.min() and ideal.max() <= 1.0
    assert np.isclose(ideal, original, atol=1e-6).mean() > 0.3  # black surround and interface text agree
    assert not np.allclose(ideal, original)


def test_ideal_refuses_entries_and_datalists_the_generator_did_not_write() -> None:
    with pytest.raises(ValueError, match="meta.synthetic"):
        ideal_image({"image": "scan.png", "meta": {}}, {"version": "1.0"})
    entry = {"image": "s0.png", "meta": {"synthetic": {"seed": 0, "site": 0, "index": 0}}}
    with pytest.raises(ValueError, match="generator version '0.1'"):
        ideal_image(entry, {"version": "0.1"})
    with pytest.raises(ValueError, match="no 'generator' block"):
        ideal_reader({"data": []})


def test_zoom_floor_measures_the_ideal_beside_the_original() -> None:
    entries, clean = _entries([8, 12, 16, 20])
    rng = np.random.default_rng(0)
    noisy = {k: np.clip(v + rng.normal(0, 0.08, v.shape), 0, 1) for k, v in clean.items()}
    result = zoom_floor(
        entries, 64, 0.5, sigmas=[2.0], reader=lambda e: noisy[e["image"]], ideal_reader=lambda e: clean[e["image"]]
    )
    assert [(row["source"], row["sigma_px"]) for row in result["rows"]] == [
        ("original", 0.0),
        ("original", 2.0),
        ("ideal", 0.0),
        ("ideal", 2.0),
    ]
    ideal, ideal_blurred = (row["standard_planes"] for row in result["rows"][2:])
    assert ideal["measurable_pct"] == 100.0 and ideal["abs_diff_median_mm"] < 0.2
    assert ideal_blurred["bias_mm"] > ideal["bias_mm"]  # blur of the ideal widens the band too
    table = zoom_floor_markdown(result)
    assert "| ideal (speckle-free) |" in table and "| ideal, blurred, sigma 2 px |" in table


def test_zoom_floor_refuses_an_ideal_of_another_size() -> None:
    entries, clean = _entries([12])
    with pytest.raises(ValueError, match="was the image resized"):
        zoom_floor(entries, reader=lambda e: clean[e["image"]], ideal_reader=lambda e: clean[e["image"]][:-1])


def test_command_measures_the_ideal_of_a_synthetic_datalist(synthetic_dataset, capsys) -> None:
    code = main(["zoom-floor", str(synthetic_dataset), "--sites", "0", "--blur", "1", "--ideal", "2"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "as is (floor)" in printed and "ideal (speckle-free)" in printed and "ideal, blurred, sigma 1 px" in printed
