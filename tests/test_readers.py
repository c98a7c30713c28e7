"""Readers for PNG/JPG, DICOM and NIfTI (SPEC 1.2)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pydicom
import pytest
from bundle.data.readers import ImageReadError, read_image
from bundle.data.transforms import LoadUltrasoundImage, LoadUltrasoundImaged
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_color_lut


def _entries(datalist_path):
    return json.loads(datalist_path.read_text())["data"]


def test_png_grey_is_scaled_by_255_with_rows_as_height(tmp_path):
    array = np.arange(12 * 20, dtype=np.uint8).reshape(12, 20)
    Image.fromarray(array).save(tmp_path / "a.png")
    loaded = read_image(tmp_path / "a.png")
    assert loaded.array.shape == (12, 20) and loaded.array.dtype == np.float32
    assert np.allclose(loaded.array, array / 255.0)
    assert loaded.pixel_spacing_mm is None


def test_png_16_bit_is_scaled_by_65535(tmp_path):
    array = np.array([[0, 1000], [30000, 65535]], dtype=np.uint16)
    Image.fromarray(array).save(tmp_path / "a.png")
    assert np.allclose(read_image(tmp_path / "a.png").array, array / 65535.0, atol=1e-6)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P"])
def test_colour_alpha_and_palette_pngs_become_luminance(tmp_path, mode):
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    image = Image.fromarray(rgb)
    image = image.convert(mode) if mode != "P" else image.convert("P", palette=Image.Palette.ADAPTIVE)
    image.save(tmp_path / "c.png")
    expected = (0.299 * 200 + 0.587 * 100 + 0.114 * 50) / 255.0
    assert np.allclose(read_image(tmp_path / "c.png").array, expected, atol=2e-3)


def test_jpeg_is_read(tmp_path):
    Image.fromarray(np.full((8, 8), 128, np.uint8)).save(tmp_path / "a.jpg")
    assert read_image(tmp_path / "a.jpg").array.mean() == pytest.approx(128 / 255, abs=0.01)


def test_zero_byte_and_truncated_files_raise_clear_errors(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty.png: file is empty"):
        read_image(tmp_path / "empty.png")
    Image.fromarray(np.zeros((64, 64), np.uint8) + 7).save(tmp_path / "full.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "full.png").read_bytes()[:60])
    with pytest.raises(ImageReadError, match="cut.png"):
        read_image(tmp_path / "cut.png")


def test_pydicom_palette_example_goes_through_its_lookup_table_with_region_spacing():
    path = get_testdata_file("examples_palette.dcm", download=False)
    ds = pydicom.dcmread(path)
    rgb = apply_color_lut(ds.pixel_array, ds).astype(np.float64)
    expected = rgb @ np.array([0.299, 0.587, 0.114]) / (2 ** int(ds.RedPaletteColorLookupTableDescriptor[2]) - 1)
    loaded = read_image(path)
    assert loaded.array.shape == (ds.Rows, ds.Columns)
    assert np.allclose(loaded.array, expected, atol=1e-5)
    # Not palette indices: a palette index image would differ from its luminance.
    assert not np.allclose(loaded.array, ds.pixel_array / 255.0, atol=1e-2)
    delta_cm = float(ds.SequenceOfUltrasoundRegions[0].PhysicalDeltaX)
    assert loaded.pixel_spacing_mm == pytest.approx((delta_cm * 10, delta_cm * 10))


def test_multi_frame_ybr_dicom_needs_a_frame_and_keeps_the_y_channel():
    path = get_testdata_file("examples_ybr_color.dcm", download=False)
    with pytest.raises(ImageReadError, match="multi-frame DICOM with 30 frames"):
        read_image(path)
    with pytest.raises(ImageReadError, match="frame 30 requested but the file has 30"):
        read_image(path, frame=30)
    from pydicom.pixels import pixel_array

    raw = pixel_array(path, index=2, raw=True)
    assert np.allclose(read_image(path, frame=2).array, raw[..., 0] / 255.0)


def test_dicom_without_pixel_data_is_rejected(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("examples_palette.dcm", download=False))
    del ds.PixelData
    ds.save_as(tmp_path / "nopix.dcm")
    with pytest.raises(ImageReadError, match="no pixel data"):
        read_image(tmp_path / "nopix.dcm")


def test_generated_dicom_and_nifti_match_the_png_with_spacing(synthetic_dataset):
    root = synthetic_dataset.parent
    for entry in _entries(synthetic_dataset)[::5]:
        files = entry["meta"]["files"]
        png = read_image(root / files["png"])
        dcm = read_image(root / files["dcm"])
        nii = read_image(root / files["nii"])
        assert png.array.shape == dcm.array.shape == nii.array.shape
        assert np.allclose(png.array, dcm.array, atol=1e-6)
        assert np.allclose(png.array, nii.array, atol=3 / 255)  # NIfTI stores rounded luminance
        assert dcm.pixel_spacing_mm == pytest.approx(entry["pixel_spacing_mm"], rel=1e-5)
        assert nii.pixel_spacing_mm == pytest.approx(entry["pixel_spacing_mm"], rel=1e-5)


def test_dicom_spacing_falls_back_to_ultrasound_regions(synthetic_dataset, tmp_path):
    entry = _entries(synthetic_dataset)[0]
    ds = pydicom.dcmread(synthetic_dataset.parent / entry["meta"]["files"]["dcm"])
    del ds.PixelSpacing
    ds.save_as(tmp_path / "regions.dcm")
    assert read_image(tmp_path / "regions.dcm").pixel_spacing_mm == pytest.approx(entry["pixel_spacing_mm"], rel=1e-5)


def test_nifti_with_singleton_third_dim_is_read_and_3d_is_rejected(tmp_path):
    data = np.random.default_rng(0).integers(0, 255, (20, 10, 1), dtype=np.uint8)  # (X, Y, 1)
    nib.save(nib.Nifti1Image(data, np.diag([0.2, 0.3, 1, 1])), str(tmp_path / "a.nii.gz"))
    loaded = read_image(tmp_path / "a.nii.gz")
    assert loaded.array.shape == (10, 20)
    assert np.allclose(loaded.array, data[..., 0].T / 255.0)
    assert loaded.pixel_spacing_mm == pytest.approx((0.3, 0.2))
    nib.save(nib.Nifti1Image(np.zeros((5, 6, 3), np.float32), np.eye(4)), str(tmp_path / "b.nii"))
    with pytest.raises(ImageReadError, match="not 2-D"):
        read_image(tmp_path / "b.nii")


def test_nan_pixels_are_rejected(tmp_path):
    data = np.zeros((4, 4), np.float32)
    data[1, 1] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "nan.nii"))
    with pytest.raises(ImageReadError, match="NaN or infinite"):
        read_image(tmp_path / "nan.nii")


def test_load_transforms_give_channel_first_metatensors_and_fill_missing_spacing(synthetic_dataset):
    entry = _entries(synthetic_dataset)[0]
    path = synthetic_dataset.parent / entry["meta"]["files"]["dcm"]
    image = LoadUltrasoundImage()(path)
    assert image.shape[0] == 1 and image.ndim == 3
    assert image.meta["filename_or_obj"] == str(path)
    item = LoadUltrasoundImaged("image")({"image": path, "pixel_spacing_mm": None})
    assert item["pixel_spacing_mm"] == pytest.approx(entry["pixel_spacing_mm"], rel=1e-5)
    kept = LoadUltrasoundImaged("image")({"image": path, "pixel_spacing_mm": [0.5, 0.5]})
    assert kept["pixel_spacing_mm"] == [0.5, 0.5]
